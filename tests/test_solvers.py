"""Tests of the closed forms: MEMIT (Meng et al. 2023, Eq. 14) and AlphaEdit (Fang et al. 2025, Eq. 14).

Each closed form is checked against its own objective, independently of the formula:
  AlphaEdit  J(Δ) = ‖Δ K1 − R‖² + α ‖Δ‖² + ‖Δ Kp‖²  over Δ = X P  (autograd gradient in X ≈ 0);
  MEMIT      J(Δ) = ‖Δ K1 − R‖² + λ ‖Δ K0'‖² + ‖Δ Kp‖², with K0' K0'ᵀ = C0 (gradient ≈ 0, and the
             least-squares solution of the stacked system Δ [K1, √λ K0', Kp] ≈ [R, 0, 0]).
Here ‖Δ Kp‖² is written tr(Δ Cp Δᵀ) with Cp = Kp Kpᵀ, the `prev_cov` argument.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta
from alphaedit_lite.core.verify import nullspace_residual

pytestmark = pytest.mark.usefixtures("single_thread")
FAST = settings(max_examples=30, deadline=None)
F64 = torch.float64


@st.composite
def problems(draw):
    """A random editing problem: shapes, a projector with a real null space, optional earlier edits."""
    d = draw(st.integers(3, 40), label="d_in")
    return dict(
        d=d,
        d_out=draw(st.integers(1, 20), label="d_out"),
        u=draw(st.integers(1, 8), label="u"),
        rank=draw(st.integers(1, d - 1), label="rank of K0"),
        n_prev=draw(st.sampled_from([0, 1, 5]), label="previous edits"),
        alpha=draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]), label="alpha"),
        lam=draw(st.sampled_from([0.1, 1.0, 10.0, 1e3, 1.5e4]), label="lambda"),
        seed=draw(st.integers(0, 2**31 - 1), label="seed"),
    )


def _make(p, make_keys):
    g = torch.Generator().manual_seed(p["seed"])
    d, u = p["d"], p["u"]
    K1 = torch.randn(d, u, generator=g, dtype=F64)              # (d_in, u) new keys
    R = torch.randn(p["d_out"], u, generator=g, dtype=F64)      # (d_out, u) residuals
    Kp = torch.randn(d, p["n_prev"], generator=g, dtype=F64)    # (d_in, n_prev) earlier edits' keys
    K0 = make_keys(d, p["rank"], 3 * d, 0.05, p["seed"] + 1)    # (d_in, n) preserved keys
    C0 = K0 @ K0.T / K0.shape[1]                                # (d_in, d_in), full rank (noise)
    P = null_space_projector(C0, 0.3).P                         # (d_in, d_in), rank d - rank
    Cp = Kp @ Kp.T if p["n_prev"] else None                     # (d_in, d_in) or None
    return K1, R, Kp, K0, C0, P, Cp


def _alphaedit_grad(X, K1, R, P, alpha, Cp):
    """∂J(X P)/∂X by autograd, J(Δ) = ‖Δ K1 − R‖² + α‖Δ‖² + tr(Δ Cp Δᵀ)."""
    X = X.detach().clone().requires_grad_(True)
    D = X @ P
    J = ((D @ K1 - R) ** 2).sum() + alpha * (D**2).sum()
    if Cp is not None:
        J = J + torch.trace(D @ Cp @ D.T)
    (g,) = torch.autograd.grad(J, X)
    return g


def _memit_objective(D, K1, R, C0, lam, Cp):
    J = ((D @ K1 - R) ** 2).sum() + lam * torch.trace(D @ C0 @ D.T)
    if Cp is not None:
        J = J + torch.trace(D @ Cp @ D.T)
    return J


def _memit_grad(X, K1, R, C0, lam, Cp):
    X = X.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_memit_objective(X, K1, R, C0, lam, Cp), X)
    return g


def _fro(x):
    return float(torch.linalg.matrix_norm(x))


# ---------------------------------------------------------------- AlphaEdit

@FAST
@given(p=problems())
def test_alphaedit_update_lies_in_the_null_space(make_keys, p):
    K1, R, _, _, _, P, Cp = _make(p, make_keys)
    delta = alphaedit_delta(R, K1, P, alpha=p["alpha"], prev_cov=Cp)
    assert delta.shape == (p["d_out"], p["d"]) and delta.dtype == F64
    assert _fro(delta) > 0
    assert nullspace_residual(delta, P) <= 1e-10


@FAST
@given(p=problems())
def test_alphaedit_is_the_stationary_point_of_its_objective_in_the_null_space(make_keys, p):
    K1, R, _, _, _, P, Cp = _make(p, make_keys)
    delta = alphaedit_delta(R, K1, P, alpha=p["alpha"], prev_cov=Cp)
    g_at_delta = _alphaedit_grad(delta, K1, R, P, p["alpha"], Cp)
    X = torch.randn(delta.shape, generator=torch.Generator().manual_seed(p["seed"] + 7), dtype=F64)
    X = X * (_fro(delta) / _fro(X))                 # a random point of the same size as Δ
    g_random = _alphaedit_grad(X, K1, R, P, p["alpha"], Cp)
    assert _fro(g_random) > 0
    assert _fro(g_at_delta) <= 1e-9 * _fro(g_random)


def test_alphaedit_prev_cov_changes_the_answer_and_is_honoured(make_keys):
    p = dict(d=12, d_out=5, u=3, rank=6, n_prev=4, alpha=10.0, lam=1.0, seed=11)
    K1, R, _, _, _, P, Cp = _make(p, make_keys)
    with_prev = alphaedit_delta(R, K1, P, alpha=10.0, prev_cov=Cp)
    without = alphaedit_delta(R, K1, P, alpha=10.0)
    assert _fro(with_prev - without) > 1e-3 * _fro(without)
    assert _fro(_alphaedit_grad(with_prev, K1, R, P, 10.0, Cp)) <= 1e-9 * _fro(_alphaedit_grad(without, K1, R, P, 10.0, Cp))


def test_alphaedit_with_identity_projector_is_ridge_regression(gen):
    """P = I (nothing preserved): Δ = R K1ᵀ (K1 K1ᵀ + α I)⁻¹, solved here via the normal equations."""
    K1, R = torch.randn(7, 3, generator=gen, dtype=F64), torch.randn(4, 3, generator=gen, dtype=F64)
    expected = torch.linalg.lstsq(
        torch.cat([K1.T, math.sqrt(2.0) * torch.eye(7, dtype=F64)]),   # stacked (u + d, d)
        torch.cat([R.T, torch.zeros(7, 4, dtype=F64)])).solution.T     # ((u + d), d_out) -> (d_out, d)
    got = alphaedit_delta(R, K1, torch.eye(7, dtype=F64), alpha=2.0)
    assert _fro(got - expected) <= 1e-10 * _fro(expected)


def test_alphaedit_float32_agrees_with_float64(make_keys):
    p = dict(d=32, d_out=16, u=4, rank=20, n_prev=3, alpha=10.0, lam=1.0, seed=5)
    K1, R, _, _, _, P, Cp = _make(p, make_keys)
    d64 = alphaedit_delta(R, K1, P, alpha=10.0, prev_cov=Cp)
    d32 = alphaedit_delta(R, K1, P, alpha=10.0, prev_cov=Cp, dtype=torch.float32)
    assert d32.dtype == torch.float32
    assert _fro(d32.double() - d64) <= 1e-4 * _fro(d64)


# ---------------------------------------------------------------- MEMIT

@FAST
@given(p=problems())
def test_memit_matches_least_squares_on_the_stacked_system(make_keys, p):
    K1, R, Kp, K0, C0, _, Cp = _make(p, make_keys)
    delta = memit_delta(R, K1, C0, p["lam"], prev_cov=Cp)
    assert delta.shape == (p["d_out"], p["d"]) and delta.dtype == F64
    # independent route: min ‖Δ S − T‖ with S = [K1, √λ K0/√n, Kp], T = [R, 0, 0]
    n = K0.shape[1]
    S = torch.cat([K1, math.sqrt(p["lam"] / n) * K0, Kp], dim=1)            # (d_in, u + n + n_prev)
    T = torch.cat([R, torch.zeros(p["d_out"], n + p["n_prev"], dtype=F64)], dim=1)
    expected = torch.linalg.lstsq(S.T, T.T).solution.T                     # (d_out, d_in)
    assert _fro(delta - expected) <= 1e-7 * _fro(expected)
    # and the autograd gradient of MEMIT's objective vanishes at Δ
    X = torch.randn(delta.shape, generator=torch.Generator().manual_seed(p["seed"] + 3), dtype=F64)
    g_random = _memit_grad(X * (_fro(delta) / _fro(X)), K1, R, C0, p["lam"], Cp)
    assert _fro(_memit_grad(delta, K1, R, C0, p["lam"], Cp)) <= 1e-9 * _fro(g_random)


def test_memit_is_reached_by_lbfgs_from_zero(make_keys):
    p = dict(d=10, d_out=4, u=3, rank=6, n_prev=2, alpha=1.0, lam=5.0, seed=2)
    K1, R, _, _, C0, _, Cp = _make(p, make_keys)
    closed = memit_delta(R, K1, C0, 5.0, prev_cov=Cp)
    X = torch.zeros_like(closed, requires_grad=True)
    opt = torch.optim.LBFGS([X], lr=1.0, max_iter=300, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        J = _memit_objective(X, K1, R, C0, 5.0, Cp)
        J.backward()
        return J

    opt.step(closure)
    assert _fro(X.detach() - closed) <= 1e-6 * _fro(closed)
    assert float(_memit_objective(closed, K1, R, C0, 5.0, Cp)) <= float(_memit_objective(X.detach(), K1, R, C0, 5.0, Cp)) + 1e-12


def test_memit_float32_agrees_with_float64(make_keys):
    p = dict(d=32, d_out=16, u=4, rank=20, n_prev=3, alpha=1.0, lam=10.0, seed=9)
    K1, R, _, _, C0, _, Cp = _make(p, make_keys)
    d64 = memit_delta(R, K1, C0, 10.0, prev_cov=Cp)
    d32 = memit_delta(R, K1, C0, 10.0, prev_cov=Cp, dtype=torch.float32)
    assert d32.dtype == torch.float32
    # a linear solve loses up to κ(A) · eps: here λC0's noise eigenvalues (~0.025) against its
    # signal ones (~1000) give κ ≈ 4e4, so float32 keeps ~3 digits, not 7
    A = 10.0 * C0 + Cp + K1 @ K1.T
    kappa = float(torch.linalg.cond(A))
    assert 1e3 < kappa < 1e6
    assert _fro(d32.double() - d64) <= 10 * kappa * torch.finfo(torch.float32).eps * _fro(d64)


def test_memit_singular_system_raises_instead_of_returning_garbage(gen):
    K1, R = torch.randn(8, 2, generator=gen, dtype=F64), torch.randn(3, 2, generator=gen, dtype=F64)
    # λ = 0: A = K1 K1ᵀ has rank 2 < 8, yet the system is consistent, so LU alone returns a
    # rounding-dependent exact fit with a small residual; the condition estimate refuses it
    for dtype in (F64, torch.float32):
        with pytest.raises(ValueError, match="singular or too ill-conditioned.*condition number"):
            memit_delta(R, K1, torch.zeros(8, 8, dtype=F64), 0.0, dtype=dtype)
    with pytest.raises(ValueError, match="singular or too ill-conditioned"):
        memit_delta(R, K1, torch.eye(8, dtype=F64) * 1e-30, 1.0)  # λ C0 too small to help
    # ... while many edits (u ≥ d) make λ = 0 well posed: the plain least-squares fit
    K1w, Rw = torch.randn(8, 20, generator=gen, dtype=F64), torch.randn(3, 20, generator=gen, dtype=F64)
    expected = torch.linalg.lstsq(K1w.T, Rw.T).solution.T
    assert _fro(memit_delta(Rw, K1w, torch.zeros(8, 8, dtype=F64), 0.0) - expected) <= 1e-10 * _fro(expected)


# ---------------------------------------------------------------- bad input (both solvers)

def _small(gen, d=6, d_out=4, u=3):
    return (torch.randn(d_out, u, generator=gen, dtype=F64), torch.randn(d, u, generator=gen, dtype=F64),
            torch.eye(d, dtype=F64))


def test_shape_mismatches_name_the_operands(gen):
    R, K1, I6 = _small(gen)
    with pytest.raises(ValueError, match=r"R's number of columns \(edits\) is 2 but K1's number of columns \(edits\) is 3"):
        alphaedit_delta(R[:, :2], K1, I6)
    with pytest.raises(ValueError, match=r"R's number of columns .* K1's number of columns"):
        memit_delta(R[:, :2], K1, I6, 1.0)
    with pytest.raises(ValueError, match=r"P rows is 5 but K1's key dimension d_in is 6"):
        alphaedit_delta(R, K1, torch.eye(5, dtype=F64))
    with pytest.raises(ValueError, match=r"P columns is 7"):
        alphaedit_delta(R, K1, torch.ones(6, 7, dtype=F64))
    with pytest.raises(ValueError, match=r"C0 rows is 5 but K1's key dimension d_in is 6"):
        memit_delta(R, K1, torch.eye(5, dtype=F64), 1.0)
    with pytest.raises(ValueError, match=r"prev_cov \(Kp Kpᵀ\) rows is 4"):
        alphaedit_delta(R, K1, I6, prev_cov=torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match=r"prev_cov \(Kp Kpᵀ\) rows is 4"):
        memit_delta(R, K1, I6, 1.0, prev_cov=torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match=r"K1 \(new keys as columns.* must be 2-D"):
        alphaedit_delta(R, K1[:, 0], I6)


@pytest.mark.parametrize("where", ["R", "K1", "P", "prev_cov"])
def test_non_finite_inputs_raise(gen, where):
    R, K1, P = _small(gen)
    Cp = torch.eye(6, dtype=F64)
    target = {"R": R, "K1": K1, "P": P, "prev_cov": Cp}[where]
    target[0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains 1 NaN"):
        alphaedit_delta(R, K1, P, prev_cov=Cp)
    if where != "P":
        with pytest.raises(ValueError, match="contains 1 NaN"):
            memit_delta(R, K1, torch.eye(6, dtype=F64), 1.0, prev_cov=Cp)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_alphaedit_rejects_non_positive_alpha(gen, alpha):
    R, K1, P = _small(gen)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        alphaedit_delta(R, K1, P, alpha=alpha)


@pytest.mark.parametrize("lam", [-1.0, float("nan")])
def test_memit_rejects_negative_or_nan_lambda(gen, lam):
    R, K1, P = _small(gen)
    with pytest.raises(ValueError, match="lam must be"):
        memit_delta(R, K1, P, lam)
