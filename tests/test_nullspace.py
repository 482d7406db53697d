"""Tests of the null-space projector P = Û Ûᵀ (AlphaEdit, Fang et al. 2025, Sec. 3.2, Eq. 8-9).

Keys are built with a known spectrum (see conftest.make_keys): `rank` eigenvalues of C in
[1, 100] and d - rank eigenvalues that are zero plus noise² (noise ≤ 0.1 keeps them below 0.03
for n ≥ 2d), so a threshold of 0.3 sits in a clear gap.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from alphaedit_lite.core.nullspace import MODES, Projector, null_space_projector, projector_from_keys
from alphaedit_lite.core.solvers import alphaedit_delta
from alphaedit_lite.core.verify import preserved_change, projector_errors

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = settings(max_examples=30, deadline=None)
NOISES = [0.0, 1e-8, 1e-4, 1e-2, 1e-1]
GAP_THRESHOLD = 0.3  # between the noise eigenvalues (< 0.03) and the signal ones (≥ 1)


@st.composite
def key_shapes(draw, min_rank=1):
    d = draw(st.integers(3, 64), label="d")
    rank = draw(st.integers(min_rank, d - 1), label="rank")
    n = draw(st.integers(2 * d, 3 * d), label="n")
    noise = draw(st.sampled_from(NOISES), label="noise")
    seed = draw(st.integers(0, 2**31 - 1), label="seed")
    return d, rank, n, noise, seed


def _cov(K0: torch.Tensor) -> torch.Tensor:
    return K0 @ K0.T / K0.shape[1]  # (d, d)


def _svdvals_ascending(C: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(C).flip(0)  # singular values of the PSD C, ascending


def _threshold_for(mode: str, C: torch.Tensor, u: float) -> float:
    """Map u ∈ (0, 1) to a valid threshold of `mode` spread over the spectrum's range."""
    d = C.shape[0]
    lam_max = float(torch.linalg.svdvals(C)[0])
    if mode == "absolute":
        return lam_max * 10 ** (-12 + 12.5 * u)   # from far below to just above λ_max
    if mode == "relative":
        return 10 ** (-12 + 12 * u) * 0.999       # in (0, 1)
    if mode == "energy":
        return 0.999 * u                          # in [0, 1)
    return float(round(u * d))                   # rank in [0, d]


def _expected_rank(mode: str, thr: float, lam: torch.Tensor) -> tuple[int, float]:
    """Kept rank and the cutoff it implies, from ascending eigenvalues computed independently."""
    d = lam.numel()
    if mode == "absolute":
        return int((lam < thr).sum()), thr
    if mode == "relative":
        cut = thr * float(lam.max())
        return int((lam < cut).sum()), cut
    if mode == "energy":
        pos = lam.clamp_min(0).tolist()
        budget, acc, r = thr * sum(pos), 0.0, 0
        while r < d and acc + pos[r] <= budget:
            acc, r = acc + pos[r], r + 1
        return r, float(lam[r]) if r < d else math.inf
    return int(thr), float(lam[int(thr)]) if int(thr) < d else math.inf


def _build(C, thr, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # P = I warnings are tested separately
        return null_space_projector(C, thr, mode=mode, allow_empty=True)


@FAST
@given(shape=key_shapes(), mode=st.sampled_from(MODES), u=st.floats(0.01, 0.99))
def test_projector_is_symmetric_idempotent_and_kept_rank_matches_mode(make_keys, shape, mode, u):
    d, rank, n, noise, seed = shape
    K0 = make_keys(d, rank, n, noise, seed)
    C = _cov(K0)
    thr = _threshold_for(mode, C, u)
    lam_ref = _svdvals_ascending(C)
    r_exp, cut = _expected_rank(mode, thr, lam_ref)
    # skip draws whose cutoff lands within rounding of an eigenvalue (the count is then ambiguous)
    scale = float(lam_ref[-1])
    assume(math.isinf(cut) or float((lam_ref - cut).abs().min()) > 1e-9 * scale)
    if mode == "energy":
        total = float(lam_ref.clamp_min(0).sum())
        partial = torch.cumsum(lam_ref.clamp_min(0), 0) - thr * total
        assume(float(partial.abs().min()) > 1e-9 * total)

    proj = _build(C, thr, mode)
    assert isinstance(proj, Projector)
    assert proj.kept_rank == r_exp, (mode, thr, lam_ref)
    assert proj.P.shape == (d, d) and proj.basis.shape == (d, r_exp) and proj.dim == d
    assert proj.P.dtype == torch.float64
    if r_exp:
        errs = projector_errors(proj.P)
        assert errs["symmetry"] <= 1e-10 and errs["idempotence"] <= 1e-10, errs
    assert abs(float(torch.trace(proj.P)) - r_exp) <= 1e-9  # rank of an orthogonal projector
    # the kept directions are the ones with the smallest eigenvalues: trace(P C) = Σ of the r smallest
    assert abs(float(torch.trace(proj.P @ C)) - float(lam_ref[:r_exp].sum())) <= 1e-10 * scale * d
    if mode == "energy":  # respects its budget: the kept directions hold at most thr of the energy
        assert proj.kept_energy_share <= thr + 1e-12
        PK = proj.P @ K0
        assert float((PK**2).sum() / (K0**2).sum()) <= thr + 1e-10


@FAST
@given(shape=key_shapes())
def test_eigenvalues_match_svd_singular_values(make_keys, shape):
    d, rank, n, noise, seed = shape
    C = _cov(make_keys(d, rank, n, noise, seed))
    proj = null_space_projector(C, GAP_THRESHOLD)
    lam_ref = _svdvals_ascending(C)
    assert torch.all(proj.eigenvalues[1:] >= proj.eigenvalues[:-1])  # ascending
    assert float((proj.eigenvalues - lam_ref).abs().max()) <= 1e-12 * float(lam_ref[-1]) * d


@FAST
@given(shape=key_shapes())
def test_projector_equals_the_reference_svd_route_when_gaps_are_clear(make_keys, shape):
    d, rank, n, noise, seed = shape
    C = _cov(make_keys(d, rank, n, noise, seed))
    proj = null_space_projector(C, GAP_THRESHOLD)
    U, S, _ = torch.linalg.svd(C)           # the AlphaEdit reference code's route
    keep = U[:, S < GAP_THRESHOLD]          # (d, r)
    P_svd = keep @ keep.T
    assert proj.kept_rank == keep.shape[1] == d - rank
    assert float((proj.P - P_svd).abs().max()) <= 1e-10


@FAST
@given(shape=key_shapes(), u=st.integers(1, 6), d_out=st.integers(1, 12))
def test_alphaedit_update_leaves_exactly_rank_deficient_keys_alone(make_keys, shape, u, d_out):
    d, rank, n, _, seed = shape
    K0 = make_keys(d, rank, n, 0.0, seed)  # exactly rank `rank` < d: a true null space exists
    # "just above rounding": rounding leaves eigenvalues ~1e-16 λ_max, the signal starts at 1e-2 λ_max
    proj = null_space_projector(_cov(K0), 1e-10, mode="relative")
    assert proj.kept_rank == d - rank
    g = torch.Generator().manual_seed(seed + 1)
    K1 = torch.randn(d, u, generator=g, dtype=torch.float64)        # (d_in, u) new keys
    R = torch.randn(d_out, u, generator=g, dtype=torch.float64)     # (d_out, u) residuals
    delta = alphaedit_delta(R, K1, proj.P, alpha=10.0)
    assert float(torch.linalg.matrix_norm(delta)) > 1e-6  # a real update, not a trivial zero
    assert preserved_change(delta, K0) <= 1e-10
    # the same without a known-exact structure: the projector from keys gives the same answer
    assert preserved_change(alphaedit_delta(R, K1, projector_from_keys(K0, threshold=1e-10, mode="relative").P),
                            K0) <= 1e-10


@FAST
@given(shape=key_shapes(), mode=st.sampled_from(MODES), u=st.floats(0.05, 0.95))
def test_diagnostics_are_consistent_with_the_keys(make_keys, shape, mode, u):
    d, rank, n, noise, seed = shape
    K0 = make_keys(d, rank, n, noise, seed)
    C = _cov(K0)
    proj = _build(C, _threshold_for(mode, C, u), mode)
    # The diagnostics are read off C's eigenvalues, so they are exact up to C's rounding,
    # ~d·eps·λ_max per eigenvalue; compared here with the keys themselves. Squared quantities are
    # linear in that rounding; their square roots are compared to 1e-8 once they exceed it.
    lam_max, trace = float(proj.eigenvalues[-1]), float(torch.trace(C))
    rounding = 1e-13 * d * lam_max                                  # absolute, on the λ scale
    PK = proj.P @ K0                                               # (d, n)
    ratio_sq = float((PK**2).sum() / (K0**2).sum())                # (‖P K0‖_F / ‖K0‖_F)²
    assert abs(ratio_sq - proj.relative_leak**2) <= 1e-10 * ratio_sq + rounding / trace
    if ratio_sq > 1e-8:
        assert abs(math.sqrt(ratio_sq) - proj.relative_leak) <= 1e-8
    mean_sq = float((PK**2).sum(0).mean())                         # mean_k ‖P k‖²
    assert abs(mean_sq - proj.rms_leak**2) <= 1e-10 * mean_sq + rounding
    assert abs(proj.kept_energy_share - proj.relative_leak**2) <= 1e-15
    if proj.kept_rank:
        worst_sq = float(torch.linalg.matrix_norm(PK, ord=2)) ** 2 / n  # ‖P K0‖₂² / n
        assert abs(worst_sq - proj.max_leak**2) <= 1e-10 * worst_sq + rounding
    else:
        assert proj.max_leak == 0.0
    assert f"{proj.kept_rank}/{d}" in proj.summary()


def test_projector_from_keys_matches_covariance_route(make_keys):
    K0 = make_keys(10, 6, 25, 1e-3, 7)
    a = projector_from_keys(K0, threshold=GAP_THRESHOLD)
    b = null_space_projector(K0 @ K0.T / 25, GAP_THRESHOLD)
    assert a.kept_rank == b.kept_rank == 4
    assert float((a.P - b.P).abs().max()) <= 1e-12


def test_float32_projector_is_close_to_float64(make_keys):
    C = _cov(make_keys(24, 16, 60, 1e-3, 3))
    p64 = null_space_projector(C, GAP_THRESHOLD)
    p32 = null_space_projector(C, GAP_THRESHOLD, dtype=torch.float32)
    assert p32.P.dtype == torch.float32 and p32.kept_rank == p64.kept_rank == 8
    assert float((p32.P.double() - p64.P).abs().max()) <= 1e-4


@pytest.mark.parametrize("mode, thr, kept, cutoff", [
    ("absolute", 0.1, 2, 0.1),          # strictly below: the eigenvalue 0.1 itself is not kept
    ("absolute", 0.1000001, 3, 0.1000001),
    ("relative", 0.01, 2, 0.1),         # 0.01 · λ_max = 0.1
    ("relative", 0.0101, 3, 0.101),
    ("energy", 0.11 / 12.1015, 3, 1.0),  # cumulative 0.0005, 0.0015, 0.1015 ≤ 0.11 < 1.1015
    ("rank", 4, 4, 1.0),                # cutoff = the 5th smallest eigenvalue (the second 1.0)
])
def test_cutoffs_on_a_known_spectrum(mode, thr, kept, cutoff):
    lam = [0.0005, 0.001, 0.1, 1.0, 10.0, 1.0]  # Σλ = 12.1015, λ_max = 10
    C = torch.diag(torch.tensor(lam, dtype=torch.float64))
    proj = null_space_projector(C, thr, mode=mode)
    sorted_lam = sorted(lam)
    assert proj.kept_rank == kept
    assert proj.cutoff == pytest.approx(cutoff, rel=1e-12)
    assert float(torch.trace(proj.P @ C)) == pytest.approx(sum(sorted_lam[:kept]), rel=1e-12)


def test_energy_budget_is_inclusive():
    lam = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # Σλ = 10
    C = torch.diag(lam)
    assert null_space_projector(C, 0.3, mode="energy").kept_rank == 2    # 1 + 2 = 3 ≤ 0.3 · 10
    assert null_space_projector(C, 0.2999, mode="energy").kept_rank == 1
    assert null_space_projector(C, 0.0, mode="energy", allow_empty=True).kept_rank == 0


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_covariance_raises(bad):
    C = torch.eye(4, dtype=torch.float64)
    C[1, 2] = C[2, 1] = bad
    with pytest.raises(ValueError, match="covariance contains"):
        null_space_projector(C, 0.5)


def test_non_symmetric_and_non_square_covariances_raise():
    C = torch.eye(4, dtype=torch.float64)
    C[0, 3] = 0.5
    with pytest.raises(ValueError, match="not symmetric"):
        null_space_projector(C, 0.5)
    with pytest.raises(ValueError, match="must be square"):
        null_space_projector(torch.ones(3, 4, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="2-D"):
        null_space_projector(torch.ones(4, dtype=torch.float64), 0.5)
    with pytest.raises(TypeError, match="covariance must be a torch.Tensor"):
        null_space_projector("not a matrix", 0.5)


def test_rounding_level_asymmetry_is_accepted():
    C = torch.diag(torch.tensor([1e-3, 2.0, 3.0], dtype=torch.float64))
    C[0, 1], C[1, 0] = 1e-14, 0.0
    assert null_space_projector(C, 0.5).kept_rank == 1


def test_threshold_that_keeps_nothing_says_no_room_to_edit(make_keys):
    C = _cov(make_keys(8, 8, 20, 0.0, 0))  # full rank, λ ∈ [1, 100]
    with pytest.raises(ValueError, match="no room to edit"):
        null_space_projector(C, 0.5)
    with pytest.raises(ValueError, match="no room to edit"):
        null_space_projector(C, 0, mode="rank")
    empty = null_space_projector(C, 0.5, allow_empty=True)
    assert empty.kept_rank == 0 and float(empty.P.abs().max()) == 0.0
    assert empty.rms_leak == 0.0 and empty.relative_leak == 0.0


def test_threshold_that_keeps_everything_warns(make_keys):
    C = _cov(make_keys(6, 3, 20, 1e-3, 0)) + torch.eye(6, dtype=torch.float64)  # λ ∈ [1, 101]
    for thr, mode in [(1e3, "absolute"), (6, "rank")]:
        with pytest.warns(UserWarning, match="keeps all 6 directions"):
            proj = null_space_projector(C, thr, mode=mode)
        assert proj.kept_rank == 6
        assert float((proj.P - torch.eye(6, dtype=torch.float64)).abs().max()) <= 1e-12


@pytest.mark.parametrize("mode, thr", [
    ("absolute", 0.0), ("absolute", -1.0), ("absolute", float("nan")),
    ("relative", 0.0), ("relative", 1.0), ("relative", 1.5), ("relative", -0.1), ("relative", float("nan")),
    ("energy", -0.1), ("energy", 1.0), ("energy", float("nan")),
    ("rank", 2.5), ("rank", -1), ("rank", 7), ("rank", float("nan")), ("rank", float("inf")),
])
def test_invalid_thresholds_per_mode_raise(mode, thr):
    C = torch.diag(torch.tensor([1e-6, 1e-3, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=f"{mode} threshold must be"):
        null_space_projector(C, thr, mode=mode)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown threshold mode 'svd'"):
        null_space_projector(torch.eye(3, dtype=torch.float64), 0.5, mode="svd")


def test_zero_covariance_means_everything_is_editable():
    """No preserved keys: every direction is free in every mode (with the P = I warning)."""
    Z = torch.zeros(5, 5, dtype=torch.float64)
    for mode, thr in [("absolute", 1e-3), ("relative", 1e-2), ("energy", 0.1), ("rank", 5)]:
        with pytest.warns(UserWarning, match="keeps all 5"):
            assert null_space_projector(Z, thr, mode=mode).kept_rank == 5


def test_subset_route_gives_the_same_projector():
    """route="subset" (all eigenvalues, then only the kept eigenvectors) equals one full eigh."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(80, 80, generator=g, dtype=torch.float64)
    C = A @ A.T / 80
    lam = torch.linalg.eigvalsh(C)
    thr = float((lam[24] + lam[25]) / 2)  # a threshold between two eigenvalues: no ties
    full = null_space_projector(C, thr, route="full")
    sub = null_space_projector(C, thr, route="subset")
    assert full.kept_rank == sub.kept_rank == 25
    assert torch.allclose(full.P, sub.P, atol=1e-10)
    with pytest.raises(ValueError, match="route"):
        null_space_projector(C, thr, route="fast")
