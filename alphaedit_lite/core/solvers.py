"""Closed-form updates of one rewrite matrix W (d_out, d_in): MEMIT and AlphaEdit.

Notation (keys are columns): K1 (d_in, u) keys of the new facts, R = V1 − W K1 (d_out, u) the
residual the update must add, Kp Kpᵀ (d_in, d_in) the keys of earlier edits (sequential editing),
C0 = K0 K0ᵀ / n (d_in, d_in) the preserved keys' second moment, P the null-space projector.

MEMIT (Meng et al. 2023, Eq. 14, with previous edits added to the preserved set):
    Δ = R K1ᵀ (λ C0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹
minimises ‖Δ K1 − R‖² + λ ‖Δ K0'‖² + ‖Δ Kp‖² where K0' K0'ᵀ = C0.

AlphaEdit (Fang et al. 2025, Eq. 14):
    Δ = R K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹
is the stationary point of J(Δ) = ‖Δ K1 − R‖² + α ‖Δ‖² + ‖Δ Kp‖² over updates of the form Δ P.
It satisfies Δ = Δ P exactly: with Q = I − P, M = (Kp Kpᵀ + K1 K1ᵀ) P + α I gives M Q = α Q.

Low-rank routes (:func:`lowrank_memit_delta`, :func:`lowrank_alphaedit_delta`): while the m
previous and new keys K = [Kp, K1] (d_in, m) number at most d_in / 2, the Woodbury identity gives
the same Δ (up to float64 rounding) for O(d_in² m) instead of O(d_in³):

    MEMIT:     (λC0 + K Kᵀ)⁻¹ K1 = Y1 − Y (I + N)⁻¹ N1,   Y = (λC0)⁻¹ K (one cached Cholesky
               factor of λ C0, :func:`memit_cholesky`), N = Kᵀ Y; Δ = R [(λC0 + K Kᵀ)⁻¹ K1]ᵀ;
    AlphaEdit: Δ = (1/α) [B − (B K) S⁻¹ (P K)ᵀ],   B = R K1ᵀ P,   S = α I_m + Kᵀ P K (SPD, ≥ α).

The dense forms are computed with a linear solve of the transposed system (never an explicit inverse):
Δ M = B  ⇔  Mᵀ Δᵀ = Bᵀ.

Input checks (`_prepare` and `_square`): shapes, finite values, a working `dtype` of float32 or
float64 (half precision cannot carry the solve), and for AlphaEdit that P is an orthogonal
projector, Pᵀ = P and P P = P. P is probed with k = 4 random vectors X (d, k) instead of forming
P P (O(k d²) rather than the O(d³) of the solve): it is accepted when
    ‖P(PX) − PX‖_F ≤ tol ‖X‖_F   and   ‖PᵀX − PX‖_F ≤ tol ‖X‖_F,
tol = max(1e-5, sqrt(eps)) with eps that of the lower precision among P's dtype and `dtype`
(float64: 1e-5, float32: 3.5e-4; a P computed in float32 and cast to float64 measures ~1e-6 at
d = 1024, one in float64 ~1e-15). For Gaussian X the left sides are about ‖P P − P‖_F / sqrt(d)
and ‖Pᵀ − P‖_F / sqrt(d) times ‖X‖_F, so this catches any matrix that is not a projector beyond
rounding (C0 itself, an oblique projector, an un-normalised basis product); a defect confined to
a single direction and smaller than tol · sqrt(d) could pass.
"""
from __future__ import annotations

import math
import weakref

import torch

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.validate import as_matrix, check_finite, check_same, edit_inputs


SOLVE_DTYPES = (torch.float32, torch.float64)
PROJECTOR_PROBES = 4


def _prepare(R, K1, dtype):
    """Checked R (d_out, u) and K1 (d_in, u) in the working `dtype` (float32 or float64)."""
    if dtype not in SOLVE_DTYPES:
        raise ValueError(
            f"dtype must be torch.float64 (the default) or torch.float32, got {dtype!r}; half precision keeps "
            "about 3 digits, fewer than the condition number of these systems leaves (and has no LU solve on "
            "the CPU). The inputs may be half precision: keep dtype=float64 and cast Δ afterwards with .to(...)")
    R = as_matrix("R (residuals V1 − W K1, shape (d_out, u))", R)
    K1 = as_matrix("K1 (new keys as columns, shape (d_in, u))", K1)
    check_same("R and K1", "R's number of columns (edits)", R.shape[1], "K1's number of columns (edits)", K1.shape[1])
    check_finite("R", R)
    check_finite("K1", K1)
    return R.to(dtype), K1.to(dtype)


def _condition_estimate(A: torch.Tensor, LU: torch.Tensor, pivots: torch.Tensor, iters: int = 8) -> float:
    """κ₂(A) = ‖A‖₂ ‖A⁻¹‖₂ estimated by power iteration, O(iters · d²) given A's LU factors.

    Power iteration approaches both norms from below, and an exactly singular A shows up at
    once: its rounding-level pivots make ‖A⁻¹‖ of order 1/eps or larger.
    """
    g = torch.Generator(device=A.device).manual_seed(0)
    v = torch.randn(A.shape[0], 1, generator=g, dtype=A.dtype, device=A.device)  # (d, 1)
    w = v.clone()
    inv_sq = a_sq = 0.0
    for _ in range(iters):
        v = v / torch.linalg.vector_norm(v)
        v = torch.linalg.lu_solve(LU, pivots, torch.linalg.lu_solve(LU, pivots, v), adjoint=True)  # A⁻ᵀ A⁻¹ v
        inv_sq = float(torch.linalg.vector_norm(v))
        w = w / torch.linalg.vector_norm(w)
        w = A.T @ (A @ w)                                                                            # Aᵀ A w
        a_sq = float(torch.linalg.vector_norm(w))
    return (a_sq * inv_sq) ** 0.5


def _solve_checked(what: str, A: torch.Tensor, Bt: torch.Tensor) -> torch.Tensor:
    """Solve A X = Bt and refuse a silent wrong answer when A is (numerically) singular.

    A small residual alone does not prove the answer right: for a singular but consistent system
    (MEMIT with λ = 0 and fewer edits than dimensions) LU returns one of infinitely many exact fits,
    picked by rounding. So the condition number is estimated too, and the solve refused when
    κ(A) · eps leaves less than one reliable digit.
    """
    try:
        LU, pivots, _ = torch.linalg.lu_factor_ex(A)
        X = torch.linalg.lu_solve(LU, pivots, Bt)
        kappa = _condition_estimate(A, LU, pivots)
    except (NotImplementedError, RuntimeError):  # a backend without LU factors (some MPS builds)
        X, kappa = torch.linalg.solve(A, Bt), float("nan")
    resid = float(torch.linalg.matrix_norm(A @ X - Bt)) / max(float(torch.linalg.matrix_norm(Bt)), 1e-300)
    tol = 1e-6 if A.dtype == torch.float64 else 1e-2
    unknown = math.isnan(kappa)  # only when the backend had no LU factors
    ill = not unknown and not kappa * torch.finfo(A.dtype).eps <= 0.1  # an infinite κ is ill too
    if not torch.isfinite(X).all() or not resid <= tol or ill:
        raise ValueError(
            f"the {what} system is singular or too ill-conditioned to solve (estimated condition number "
            f"{kappa:.2e}, relative residual {resid:.2e}); add regularisation (a larger λ with a "
            "full-rank C0, or α > 0) or use float64")
    return X


def _check_projector(P: torch.Tensor, given_dtype: torch.dtype) -> None:
    """Raise unless P (d, d) is symmetric and idempotent within the probe tolerance (module docstring)."""
    d = P.shape[0]
    g = torch.Generator(device=P.device).manual_seed(0)
    X = torch.randn(d, PROJECTOR_PROBES, generator=g, dtype=P.dtype, device=P.device)   # (d, k)
    PX = P @ X                                                                           # (d, k)
    nx = float(torch.linalg.matrix_norm(X))
    idem = float(torch.linalg.matrix_norm(P @ PX - PX)) / nx
    sym = float(torch.linalg.matrix_norm(P.T @ X - PX)) / nx
    tol = max(1e-5, math.sqrt(max(torch.finfo(given_dtype).eps, torch.finfo(P.dtype).eps)))
    if not (idem <= tol and sym <= tol):  # `not <=` also catches NaN
        raise ValueError(
            f"P is not an orthogonal projector (Pᵀ = P and P P = P): on {PROJECTOR_PROBES} random probe "
            f"vectors X, ‖P(PX) − PX‖/‖X‖ = {idem:.2e} and ‖PᵀX − PX‖/‖X‖ = {sym:.2e}, tolerance {tol:.1e}. "
            "alphaedit_delta needs the null-space projector P = Û Ûᵀ with orthonormal Û, e.g. "
            "null_space_projector(C0).P; check that you did not pass the covariance C0, I − C0, or a basis "
            "product Û Ûᵀ whose columns are not orthonormal")


def _square(name, M, d, dtype, device, projector: bool = False):
    """Checked (d, d) `M` in `dtype` on `device` (zeros when None); `projector=True` also checks Pᵀ = P = P P."""
    if M is None:
        return torch.zeros(d, d, dtype=dtype, device=device)
    M = as_matrix(name, M)
    check_same(name, f"{name} rows", M.shape[0], "K1's key dimension d_in", d)
    check_same(name, f"{name} columns", M.shape[1], "K1's key dimension d_in", d)
    check_finite(name, M)
    out = M.to(dtype=dtype, device=device)
    if projector:
        _check_projector(out, M.dtype)
    return out


def memit_delta(R: torch.Tensor, K1: torch.Tensor, C0: torch.Tensor, lam: float,
                prev_cov: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """MEMIT's Δ = R K1ᵀ (λ C0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹, shape (d_out, d_in).

    `prev_cov` is Kp Kpᵀ (unnormalised) or None; `lam` the preservation weight λ ≥ 0
    (the paper: 15 000–20 000 with C0 normalised by n).
    """
    R, K1 = _prepare(R, K1, dtype)
    d = K1.shape[0]
    if not lam >= 0:  # `not >=` also rejects NaN
        raise ValueError(f"lam must be ≥ 0 (the preservation weight λ), got {lam}")
    C0 = _square("C0", C0, d, dtype, K1.device)
    Kp = _square("prev_cov (Kp Kpᵀ)", prev_cov, d, dtype, K1.device)
    A = lam * C0 + Kp + K1 @ K1.T            # (d_in, d_in), symmetric
    B = R @ K1.T                             # (d_out, d_in)
    return _solve_checked("MEMIT (λC0 + KpKpᵀ + K1K1ᵀ)", A, B.T).T  # Δ A = B, A symmetric


def alphaedit_delta(R: torch.Tensor, K1: torch.Tensor, P: torch.Tensor, alpha: float = 10.0,
                    prev_cov: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """AlphaEdit's Δ = R K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹, shape (d_out, d_in).

    `P` is the null-space projector (d_in, d_in), `prev_cov` is Kp Kpᵀ (unnormalised) or None,
    `alpha` > 0 the ridge weight (the paper: 10). `dtype` (float64 or float32) is the working
    precision. P is checked to be symmetric and idempotent (module docstring); a matrix that is
    not a projector raises ValueError.
    """
    R, K1 = _prepare(R, K1, dtype)
    d = K1.shape[0]
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (it keeps the system invertible), got {alpha}")
    P = _square("P", P, d, dtype, K1.device, projector=True)
    Kp = _square("prev_cov (Kp Kpᵀ)", prev_cov, d, dtype, K1.device)
    eye = torch.eye(d, dtype=dtype, device=K1.device)
    Mt = P @ (Kp + K1 @ K1.T) + alpha * eye  # Mᵀ where M = (Kp Kpᵀ + K1 K1ᵀ) P + α I
    Bt = P @ K1 @ R.T                        # (R K1ᵀ P)ᵀ, (d_in, d_out)
    return _solve_checked("AlphaEdit (KpKpᵀP + K1K1ᵀP + αI)", Mt, Bt).T


def lowrank_alphaedit_delta(R: torch.Tensor, K1: torch.Tensor, P: torch.Tensor, alpha: float = 10.0,
                            prev_keys: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 14, Δ = R K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹, by the Woodbury identity (module docstring).

    ``R`` (d_out, u), ``K1`` (d_in, u), ``P`` (d_in, d_in), ``prev_keys`` = Kp (d_in, m) or None.
    Float64; returns Δ (d_out, d_in). Cost O(d_in² (m + u)): meant for m + u ≪ d_in.
    """
    R, K1, K = edit_inputs(R, K1, prev_keys)                         # K = [Kp, K1], (d_in, m + u)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (it keeps the system invertible), got {alpha}")
    d = K1.shape[0]
    P = as_matrix("P", P).to(device=K1.device, dtype=torch.float64)
    check_same("P", "P's rows", P.shape[0], "K1's key dimension d_in", d)
    PK = P @ K                                                       # (d_in, m + u)
    S = K.T @ PK                                                     # Kᵀ P K, (m + u, m + u)
    S = (S + S.T) / 2 + alpha * torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    B = R @ PK[:, K.shape[1] - K1.shape[1]:].T                       # R K1ᵀ P = R (P K1)ᵀ, (d_out, d_in)
    X = torch.linalg.solve(S, (B @ K).T)                             # S⁻¹ (B K)ᵀ, (m + u, d_out)
    delta = (B - X.T @ PK.T) / alpha                                 # (d_out, d_in)
    if not torch.isfinite(delta).all():
        raise ValueError("the AlphaEdit update is not finite; check the keys and residuals for huge values")
    return delta


#: Cholesky factors of λ C0, per statistics object: {SecondMoment: {(λ, count, device): L or None}}
_CHOLESKY: "weakref.WeakKeyDictionary[SecondMoment, dict]" = weakref.WeakKeyDictionary()


def memit_cholesky(sm: SecondMoment, lam: float, device) -> torch.Tensor | None:
    """Lower Cholesky factor of λ C0 (float64), cached; None when λ C0 is not positive definite."""
    key = (float(lam), sm.count, str(device))
    memo = _CHOLESKY.setdefault(sm, {})
    if key not in memo:
        L = None
        if lam > 0:
            L, info = torch.linalg.cholesky_ex(lam * sm.cov.to(device=device, dtype=torch.float64))
            diag = L.diagonal()
            # κ(λC0) ≥ (max diag / min diag)²: leave nearly singular C0 to the dense solver and its checks
            ok = int(info) == 0 and float(diag.min()) > 0
            if not ok or (float(diag.max()) / float(diag.min())) ** 2 * torch.finfo(torch.float64).eps > 1e-6:
                L = None
        memo.clear()                 # keep one factor per statistics object
        memo[key] = L
    return memo[key]


def lowrank_memit_delta(R: torch.Tensor, K1: torch.Tensor, chol: torch.Tensor,
                        prev_keys: torch.Tensor | None = None) -> torch.Tensor:
    """MEMIT's Δ = R K1ᵀ (λC0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹ given ``chol`` = the Cholesky factor of λ C0.

    ``R`` (d_out, u), ``K1`` (d_in, u), ``chol`` (d_in, d_in) lower triangular, ``prev_keys`` = Kp
    (d_in, m) or None. Float64; returns Δ (d_out, d_in). See the module docstring.
    """
    R, K1, K = edit_inputs(R, K1, prev_keys)                          # K = [Kp, K1], (d_in, m + u)
    d, u = K1.shape
    L = as_matrix("chol", chol).to(device=K1.device, dtype=torch.float64)
    check_same("chol", "chol's rows", L.shape[0], "K1's key dimension d_in", d)
    Y = torch.cholesky_solve(K, L)                                    # (λC0)⁻¹ K, (d_in, m + u)
    N = K.T @ Y                                                       # (m + u, m + u), PSD
    N = (N + N.T) / 2
    S = N + torch.eye(N.shape[0], dtype=N.dtype, device=N.device)     # I + Kᵀ (λC0)⁻¹ K, ≥ I
    AK1 = Y[:, -u:] - Y @ torch.linalg.solve(S, N[:, -u:])            # (λC0 + K Kᵀ)⁻¹ K1, (d_in, u)
    delta = R @ AK1.T                                                 # (d_out, d_in)
    if not torch.isfinite(delta).all():
        raise ValueError("the MEMIT update is not finite; check the keys and residuals for huge values")
    return delta
