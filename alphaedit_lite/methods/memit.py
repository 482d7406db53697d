"""MEMIT (Meng et al., ICLR 2023), with the optional AlphaEdit projection (Fang et al. 2025).

For every edited layer l (MEMIT Eq. 14, previous edits' keys added to the preserved set as in the
AlphaEdit paper's sequential baseline):

    Δ_l = R_l K1ᵀ (λ C0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹,      R_l = (z − h_L) / (number of layers left)

with C0 = K0 K0ᵀ / n the corpus key statistics and λ = ``mom2_update_weight``. ``Kp Kpᵀ`` is used
only when ``hparams.keep_prev_keys`` and a ``state`` is passed. With ``hparams.project`` the
update is replaced by Δ P (AlphaEdit's one-line plug-in: the update is projected onto the null
space of the preserved keys before it is applied), so that Δ K0 ≈ 0.

Low-rank route (:func:`lowrank_memit_delta`): with L the Cholesky factor of λ C0 (computed once per
statistics object and λ, then cached) and K = [Kp, K1] (d_in, m), Y = (λC0)⁻¹ K and N = Kᵀ Y,
the Woodbury identity gives (λC0 + K Kᵀ)⁻¹ K1 = Y1 − Y (I + N)⁻¹ N1 (Y1, N1: the columns of K1),
so Δ = R [(λC0 + K Kᵀ)⁻¹ K1]ᵀ for O(d_in² m) per call instead of a fresh O(d_in³) factorisation —
the same Δ as :func:`alphaedit_lite.solvers.memit_delta` up to float64 rounding. Used while
m ≤ d_in / 2 and λ C0 is positive definite; otherwise the dense solver runs.
"""
from __future__ import annotations

import weakref
from typing import Sequence

import torch

from .._checks import as_matrix, check_same, edit_inputs
from ..covariance import SecondMoment
from ..hparams import MEMITHParams, from_dict
from ..solvers import memit_delta
from ..stats import LayerStats, projectors
from .common import EditResult, EditState, resolve_stats, run_memit_family

__all__ = ["apply_memit", "projection_post", "as_hparams", "lowrank_memit_delta"]


def as_hparams(hparams, cls, method: str):
    """Accept the method's dataclass (or a subclass) or a plain dict of its fields."""
    if isinstance(hparams, dict):
        return from_dict(method, hparams)
    if not isinstance(hparams, cls):
        raise TypeError(f"{method} needs {cls.__name__} hyper-parameters (alphaedit_lite.hparams.load_hparams("
                        f"{method!r}, model_name)), got {type(hparams).__name__}")
    hparams.validate()
    return hparams


def projection_post(hp: MEMITHParams, stats):
    """AlphaEdit's plug-in ``Δ ← Δ P`` with P_l from ``stats`` (hp's threshold and mode).

    Returns ``(projectors, post, info)``; ``post(layer, Δ, W)`` is the hook of the MEMIT engine.
    """
    sub = {x: stats[x] for x in hp.layers}
    if isinstance(stats, LayerStats):  # keep the provenance so that projectors are cached on disk
        sub = LayerStats(sub, model_id=stats.model_id, corpus_id=stats.corpus_id, n_tokens=stats.n_tokens,
                         module_names={x: stats.module_names[x] for x in hp.layers})
    pjs = projectors(sub, hp.nullspace_threshold, hp.nullspace_mode)

    def post(layer: int, delta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return delta @ pjs[layer].P.to(device=delta.device, dtype=delta.dtype)   # (d_out, d_in) @ (d_in, d_in)

    info = {"projector_rank": {x: pjs[x].kept_rank for x in hp.layers},
            "projector_relative_leak": {x: pjs[x].relative_leak for x in hp.layers}}
    return pjs, post, info


#: Cholesky factors of λ C0, per statistics object: {SecondMoment: {(λ, count, device): L or None}}
_CHOL: "weakref.WeakKeyDictionary[SecondMoment, dict]" = weakref.WeakKeyDictionary()


def _chol_of(sm: SecondMoment, lam: float, device) -> torch.Tensor | None:
    """Lower Cholesky factor of λ C0 (float64), cached; None when λ C0 is not positive definite."""
    key = (float(lam), sm.count, str(device))
    memo = _CHOL.setdefault(sm, {})
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


def memit_solver(hp: MEMITHParams, stats, state: EditState | None):
    def solve(layer: int, R: torch.Tensor, K1: torch.Tensor) -> torch.Tensor:
        prev = state.prev(layer) if (state is not None and hp.keep_prev_keys) else None
        Kp = None if prev is None else state.prev_factor(layer)
        m = K1.shape[1] + (0 if Kp is None else Kp.shape[1])
        if (prev is None or Kp is not None) and m <= K1.shape[0] // 2 and isinstance(stats[layer], SecondMoment):
            L = _chol_of(stats[layer], hp.mom2_update_weight, K1.device)
            if L is not None:
                return lowrank_memit_delta(R, K1, L, prev_keys=None if Kp is None else Kp.to(K1.device))
        C0 = stats[layer].cov.to(K1.device)
        return memit_delta(R, K1, C0, hp.mom2_update_weight,
                           prev_cov=None if prev is None else prev.to(K1.device))
    return solve


def apply_memit(model, tok, requests, hparams: MEMITHParams, *, state: EditState | None = None,
                stats=None, templates: Sequence[str] | None = None, verbose: bool = False, targets=None,
                progress: bool = True) -> EditResult:
    """Edit ``model`` in place with MEMIT; see the module docstring. Returns an :class:`EditResult`."""
    hp = as_hparams(hparams, MEMITHParams, "MEMIT")
    stats = resolve_stats(model, tok, hp, stats, progress=progress)
    post, info = None, {}
    if hp.project:
        _, post, info = projection_post(hp, stats)
    return run_memit_family("MEMIT+P" if hp.project else "MEMIT", model, tok, requests, hp,
                            solver=memit_solver(hp, stats, state), post=post, state=state,
                            templates=templates, info=info, targets=targets, verbose=verbose)
