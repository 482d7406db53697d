"""Tests of `SecondMoment`, the streaming C = K0 K0ᵀ / n (AlphaEdit Eq. 8, MEMIT Eq. 14)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaedit_lite.core.covariance import SecondMoment

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = settings(max_examples=40, deadline=None)


def _rows(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 0.5).to(dtype)  # (n, d)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-12) -> bool:
    return float((a - b).abs().max()) <= tol * max(float(b.abs().max()), 1.0)


@FAST
@given(d=st.integers(1, 16), n=st.integers(1, 60), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_any_batching_gives_the_same_cov_as_one_batch(d, n, seed, data):
    X = _rows(n, d, seed)  # (n, d) keys as rows
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6), label="cuts"))
    bounds = [0, *cuts, n]
    acc = SecondMoment()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = X[lo:hi]
        if chunk.shape[0] == 1 and data.draw(st.booleans(), label="as_vector"):
            chunk = chunk[0]  # a single key as a (d,) vector
        acc.update(chunk)
    big = SecondMoment().update(X)
    assert acc.count == big.count == n
    assert acc.cov.dtype == torch.float64 and acc.cov.shape == (d, d)
    assert _close(acc.cov, big.cov)
    assert _close(big.cov, X.T @ X / n)  # the definition, computed independently
    assert torch.equal(acc.cov, acc.cov.T)


@FAST
@given(d=st.integers(1, 12), n1=st.integers(1, 40), n2=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_merge_equals_accumulating_everything(d, n1, n2, seed):
    X1, X2 = _rows(n1, d, seed), _rows(n2, d, seed + 1)
    a, b = SecondMoment().update(X1), SecondMoment().update(X2)
    both = SecondMoment().update(torch.cat([X1, X2]))
    assert a.merge(b) is a
    assert a.count == both.count == n1 + n2
    assert _close(a.cov, both.cov)
    assert _close(a.sum, both.sum)


def test_merge_into_empty_and_from_empty():
    X = _rows(20, 5, 0)
    full = SecondMoment().update(X)
    empty = SecondMoment().merge(full)
    assert empty.count == 20 and empty.dim == 5 and torch.equal(empty.cov, full.cov)
    empty.update(X)  # the merged copy is independent of `full`
    assert full.count == 20
    assert SecondMoment(dim=5).merge(full).count == 20
    full.merge(SecondMoment())  # merging nothing changes nothing
    assert full.count == 20


def test_merge_rejects_other_types_and_dimensions():
    a = SecondMoment().update(_rows(4, 3, 0))
    with pytest.raises(TypeError, match="SecondMoment"):
        a.merge(torch.eye(3))
    with pytest.raises(ValueError, match="dimension 4 into dimension 3"):
        a.merge(SecondMoment().update(_rows(4, 4, 0)))


def test_save_load_round_trip(tmp_path):
    acc = SecondMoment().update(_rows(30, 7, 3))
    path = acc.save(tmp_path / "sub" / "stats.pt")
    assert path.exists() and not list(path.parent.glob("*.tmp"))  # atomic: no leftovers
    back = SecondMoment.load(path)
    assert (back.dim, back.count) == (7, 30)
    assert torch.equal(back.sum, acc.sum) and torch.equal(back.cov, acc.cov)
    back.update(_rows(5, 7, 4))  # a loaded accumulator keeps accumulating
    assert back.count == 35
    SecondMoment().save(tmp_path / "empty.pt")
    assert SecondMoment.load(tmp_path / "empty.pt").count == 0


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"sum": torch.eye(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a SecondMoment file"):
        SecondMoment.load(tmp_path / "other.pt")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_keys_raise_and_leave_state_alone(bad):
    X = _rows(6, 4, 0)
    X[2, 1] = bad
    fresh = SecondMoment()
    with pytest.raises(ValueError, match="NaN|Inf"):
        fresh.update(X)
    assert fresh.count == 0 and fresh.dim is None  # a rejected first batch fixes no dimension
    fresh.update(_rows(3, 5, 0))  # so a later, valid batch of another width is still accepted
    assert fresh.dim == 5
    acc = SecondMoment().update(_rows(6, 4, 1))
    before = acc.sum.clone()
    with pytest.raises(ValueError, match="NaN|Inf"):
        acc.update(X)
    assert acc.count == 6 and torch.equal(acc.sum, before)


def test_wrong_dimension_and_ndim_raise():
    acc = SecondMoment().update(_rows(3, 4, 0))
    with pytest.raises(ValueError, match="dimension 5 but this accumulator holds dimension 4"):
        acc.update(_rows(3, 5, 0))
    with pytest.raises(ValueError, match=r"\(n, d\) batch"):
        acc.update(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="dimension"):
        SecondMoment(dim=3).update(_rows(2, 4, 0))


def test_empty_accumulator_has_no_cov():
    with pytest.raises(ValueError, match="no keys accumulated"):
        SecondMoment().cov
    with pytest.raises(ValueError, match="no keys accumulated"):
        SecondMoment(dim=4).cov
    with pytest.raises(ValueError, match="no keys accumulated"):
        SecondMoment().sum
    acc = SecondMoment().update(torch.zeros(0, 3))  # an empty batch is a no-op
    assert acc.count == 0


def test_from_keys_uses_columns():
    K = _rows(9, 4, 5).T.contiguous()  # (d=4, n=9): keys as columns
    acc = SecondMoment.from_keys(K)
    assert acc.dim == 4 and acc.count == 9
    assert _close(acc.cov, K @ K.T / 9)


def test_low_precision_and_array_inputs_accumulate_in_float64():
    X = _rows(50, 6, 2)
    acc32 = SecondMoment().update(X.float())
    assert acc32.cov.dtype == torch.float64
    X32 = X.float().double()  # what float32 keys hold exactly
    assert _close(acc32.cov, X32.T @ X32 / 50)
    acc_np = SecondMoment().update(np.asarray(X))  # a NumPy array of rows
    assert _close(acc_np.cov, SecondMoment().update(X).cov)


def test_float32_batches_match_float64_batches():
    g = torch.Generator().manual_seed(7)
    keys = [torch.randn(2048, 64, generator=g) * 3 + 1 for _ in range(3)]          # float32 keys, as a model gives
    a, b = SecondMoment(), SecondMoment()
    for k in keys:
        a.update(k)
        b.update(k, batch_dtype=torch.float32)
    assert a.count == b.count == 6144 and b.sum.dtype == torch.float64
    err = float((a.cov - b.cov).abs().max() / a.cov.abs().max())
    assert 0 <= err < 1e-5, err
    with pytest.raises(ValueError, match="batch_dtype"):
        a.update(keys[0], batch_dtype=torch.float16)


def test_float32_products_are_recorded_and_the_projector_tolerates_their_rounding(tmp_path):
    """A rank-deficient C from float32 batch products has eigenvalues of about −1e-7·λ_max: the float64
    PSD tolerance refuses it, the float32 one (which SecondMoment.product_dtype selects) accepts it."""
    from alphaedit_lite.core.nullspace import null_space_projector
    from alphaedit_lite.locate.cache import _read_stats, second_moment_sha256, write_stats_file

    keys = torch.randn(100, 256, generator=torch.Generator().manual_seed(0))     # rank 100 < d = 256
    exact = SecondMoment().update(keys)
    fast = SecondMoment().update(keys, batch_dtype=torch.float32)
    assert exact.product_dtype == torch.float64 and fast.product_dtype == torch.float32
    with pytest.raises(ValueError, match="not positive semi-definite"):
        null_space_projector(fast.cov, threshold=1e-3, mode="relative")
    pj = null_space_projector(fast.cov, threshold=1e-3, mode="relative", cov_precision=fast.product_dtype)
    assert null_space_projector(fast, threshold=1e-3, mode="relative").kept_rank == pj.kept_rank   # reads it itself
    assert pj.kept_rank == null_space_projector(exact.cov, threshold=1e-3, mode="relative").kept_rank == 156
    with pytest.raises(ValueError, match="cov_precision"):
        null_space_projector(fast.cov, cov_precision=torch.float16)
    # the least precise product wins when merging, and the record survives every file format
    assert SecondMoment().merge(exact).merge(fast).product_dtype == torch.float32
    assert SecondMoment().merge(exact).product_dtype == torch.float64
    assert SecondMoment.load(fast.save(tmp_path / "a.pt")).product_dtype == torch.float32
    assert SecondMoment.load(exact.save(tmp_path / "b.pt")).product_dtype == torch.float64
    for sm, name in ((fast, "c.pt"), (exact, "d.pt")):
        write_stats_file(tmp_path / name, sm, {"kind": "key-statistics", "dim": 256, "count": 100,
                                               "sha256": second_moment_sha256(sm)})
        assert _read_stats(tmp_path / name, {}).product_dtype == sm.product_dtype
