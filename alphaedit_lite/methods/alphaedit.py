"""AlphaEdit (Fang et al., ICLR 2025): null-space constrained editing, Eq. 14.

For every edited layer l, with P_l the projector onto the (near-)null space of the preserved keys'
second moment C0 (Eq. 7-8, :func:`alphaedit_lite.stats.projectors`), Kp the keys of earlier edits
(the cache carried in :class:`~alphaedit_lite.methods.common.EditState` across sequential calls)
and α = ``hparams.L2``:

    Δ_l = R_l K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹,     R_l = (z − h_L) / (number of layers left)

The update satisfies Δ = Δ P exactly, so preserved outputs W K0 move only by the (tiny) part of
K0 inside the kept directions: ‖Δ K0‖ ≈ 0.

Low-rank route (:func:`lowrank_alphaedit_delta`, used while the m previous and new keys number at
most d_in / 2 and the state knows Kp): with K = [Kp, K1] (d_in, m) the bracket is
M = α I + K (P K)ᵀ, and the Woodbury identity gives

    Δ = (1/α) [B − (B K) S⁻¹ (P K)ᵀ],      B = R K1ᵀ P,   S = α I_m + Kᵀ P K  (m × m, SPD, ≥ α)

— the same Δ as :func:`alphaedit_lite.solvers.alphaedit_delta` (up to float64 rounding) for
O(d_in² m) instead of the O(d_in³) of forming P (KpKpᵀ + K1K1ᵀ) and factorising a d_in × d_in
matrix. Otherwise the dense solver runs.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .._checks import as_matrix, check_same, edit_inputs
from ..hparams import AlphaEditHParams
from ..solvers import alphaedit_delta
from .common import EditResult, EditState, resolve_stats, run_memit_family
from .memit import as_hparams, projection_post

__all__ = ["apply_alphaedit", "lowrank_alphaedit_delta"]


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


def apply_alphaedit(model, tok, requests, hparams: AlphaEditHParams, *, state: EditState | None = None,
                    stats=None, templates: Sequence[str] | None = None, verbose: bool = False, targets=None,
                    progress: bool = True) -> EditResult:
    """Edit ``model`` in place with AlphaEdit. Pass the same ``state`` to sequential calls.

    ``stats`` ({layer: SecondMoment}, e.g. from :func:`alphaedit_lite.stats.layer_stats`) are
    loaded or computed from ``hparams.mom2_*`` when omitted.
    """
    hp = as_hparams(hparams, AlphaEditHParams, "AlphaEdit")
    stats = resolve_stats(model, tok, hp, stats, progress=progress)
    pjs, _, info = projection_post(hp, stats)

    def solve(layer: int, R: torch.Tensor, K1: torch.Tensor) -> torch.Tensor:
        prev = state.prev(layer) if state is not None else None
        P = pjs[layer].P.to(K1.device)
        Kp = None if prev is None else state.prev_factor(layer)
        m = K1.shape[1] + (0 if Kp is None else Kp.shape[1])
        if (prev is None or Kp is not None) and m <= K1.shape[0] // 2:
            return lowrank_alphaedit_delta(R, K1, P, alpha=hp.L2,
                                           prev_keys=None if Kp is None else Kp.to(K1.device))
        return alphaedit_delta(R, K1, P, alpha=hp.L2, prev_cov=None if prev is None else prev.to(K1.device))

    if state is None:
        state = EditState()   # a fresh cache: the caller gets it back in result.state
    return run_memit_family("AlphaEdit", model, tok, requests, hp, solver=solve, state=state,
                            templates=templates, info=info, targets=targets, verbose=verbose)
