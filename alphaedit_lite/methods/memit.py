"""MEMIT (Meng et al., ICLR 2023), with the optional AlphaEdit projection (Fang et al. 2025).

For every edited layer l (MEMIT Eq. 14, previous edits' keys added to the preserved set as in the
AlphaEdit paper's sequential baseline):

    Δ_l = R_l K1ᵀ (λ C0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹,      R_l = (z − h_L) / (number of layers left)

with C0 = K0 K0ᵀ / n the corpus key statistics and λ = ``mom2_update_weight``. ``Kp Kpᵀ`` is used
only when ``hparams.keep_prev_keys`` and a ``state`` is passed. With ``hparams.project`` the
update is replaced by Δ P (AlphaEdit's one-line plug-in: the update is projected onto the null
space of the preserved keys before it is applied), so that Δ K0 ≈ 0.

The low-rank route (Woodbury identity) is :func:`alphaedit_lite.core.solvers.lowrank_memit_delta`,
used while m ≤ d_in / 2 and λ C0 is positive definite; otherwise the dense solver runs.
"""
from __future__ import annotations

from typing import Sequence

import torch

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.methods.hparams import MEMITHParams, from_dict
from alphaedit_lite.core.solvers import lowrank_memit_delta, memit_cholesky, memit_delta
from alphaedit_lite.locate.stats import LayerStats, projectors
from alphaedit_lite.methods.common import EditResult, EditState, resolve_stats, run_memit_family

__all__ = ["apply_memit", "projection_post", "as_hparams", "memit_solver"]


def as_hparams(hparams, cls, method: str):
    """Accept the method's dataclass (or a subclass) or a plain dict of its fields."""
    if isinstance(hparams, dict):
        return from_dict(method, hparams)
    if not isinstance(hparams, cls):
        raise TypeError(f"{method} needs {cls.__name__} hyper-parameters (alphaedit_lite.methods.hparams.load_hparams("
                        f"{method!r}, model_name)), got {type(hparams).__name__}")
    hparams.validate()
    return hparams


def projection_post(hp: MEMITHParams, stats):
    """AlphaEdit's plug-in ``Δ ← Δ P`` with P_l from ``stats`` (hp's threshold and mode).

    Returns ``(projectors, post, info)``; ``post(layer, Δ, W)`` is the hook of the MEMIT engine.
    """
    # a LayerStats keeps its provenance, so that projectors are cached on disk
    sub = stats.subset(hp.layers) if isinstance(stats, LayerStats) else {x: stats[x] for x in hp.layers}
    pjs = projectors(sub, hp.nullspace_threshold, hp.nullspace_mode)

    def post(layer: int, delta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return delta @ pjs[layer].P.to(device=delta.device, dtype=delta.dtype)   # (d_out, d_in) @ (d_in, d_in)

    info = {"projector_rank": {x: pjs[x].kept_rank for x in hp.layers},
            "projector_relative_leak": {x: pjs[x].relative_leak for x in hp.layers}}
    return pjs, post, info


def memit_solver(hp: MEMITHParams, stats, state: EditState | None):
    def solve(layer: int, R: torch.Tensor, K1: torch.Tensor) -> torch.Tensor:
        prev = state.prev(layer) if (state is not None and hp.keep_prev_keys) else None
        Kp = None if prev is None else state.prev_factor(layer)
        m = K1.shape[1] + (0 if Kp is None else Kp.shape[1])
        if (prev is None or Kp is not None) and m <= K1.shape[0] // 2 and isinstance(stats[layer], SecondMoment):
            L = memit_cholesky(stats[layer], hp.mom2_update_weight, K1.device)
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
