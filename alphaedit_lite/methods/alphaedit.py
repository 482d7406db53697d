"""AlphaEdit (Fang et al., ICLR 2025): null-space constrained editing, Eq. 14.

For every edited layer l, with P_l the projector onto the (near-)null space of the preserved keys'
second moment C0 (Eq. 8-9, :func:`alphaedit_lite.locate.stats.projectors`), Kp the keys of earlier edits
(the cache carried in :class:`~alphaedit_lite.methods.common.EditState` across sequential calls)
and α = ``hparams.L2``:

    Δ_l = R_l K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹,     R_l = (z − h_L) / (number of layers left)

The update satisfies Δ = Δ P exactly, so preserved outputs W K0 move only by the (tiny) part of
K0 inside the kept directions: ‖Δ K0‖ ≈ 0.

The low-rank route (Woodbury identity, :func:`alphaedit_lite.core.solvers.lowrank_alphaedit_delta`) runs while
the previous and new keys number at most d_in / 2 and the state knows Kp; otherwise the dense solver.
"""
from __future__ import annotations

from typing import Sequence

import torch

from alphaedit_lite.methods.hparams import AlphaEditHParams
from alphaedit_lite.core.solvers import alphaedit_delta, lowrank_alphaedit_delta
from alphaedit_lite.methods.common import EditResult, EditState, resolve_stats, run_memit_family
from alphaedit_lite.methods.memit import as_hparams, projection_post

__all__ = ["apply_alphaedit"]


def apply_alphaedit(model, tok, requests, hparams: AlphaEditHParams, *, state: EditState | None = None,
                    stats=None, templates: Sequence[str] | None = None, verbose: bool = False, targets=None,
                    progress: bool = True) -> EditResult:
    """Edit ``model`` in place with AlphaEdit. Pass the same ``state`` to sequential calls.

    ``stats`` ({layer: SecondMoment}, e.g. from :func:`alphaedit_lite.locate.stats.layer_stats`) are
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
