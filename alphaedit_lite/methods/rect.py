"""RECT (Gu et al., EMNLP 2024, "Model Editing Harms General Abilities of LLMs: Regularization to the Rescue").

RECT regularises each MEMIT update by its RElative Change in weighT: only the top-k% entries of
|Δ| / (|W| + ε) are kept (the "principal editing information"), all other entries of Δ are set to
zero. k = ``rect_top_percent`` (40 in the AlphaEdit authors' baseline code). With ``project=True``
(AlphaEdit's plug-in) the sparsified update is then projected, Δ ← (mask ⊙ Δ) P, so that the
applied update lies in the null space of the preserved keys (it is no longer sparse).

Applied inside the MEMIT layer loop, so later layers see (and compensate for) what was dropped.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from alphaedit_lite.methods.hparams import RECTHParams
from alphaedit_lite.methods.common import EditResult, EditState, resolve_stats, run_memit_family
from alphaedit_lite.methods.memit import as_hparams, memit_solver, projection_post

__all__ = ["apply_rect", "rect_mask"]


def rect_mask(delta: torch.Tensor, W: torch.Tensor, top_percent: float, eps: float = 1e-8) -> torch.Tensor:
    """Boolean mask (W's shape) of the ``top_percent`` % largest relative changes |Δ| / (|W| + ε)."""
    if delta.shape != W.shape:
        raise ValueError(f"delta {tuple(delta.shape)} and W {tuple(W.shape)} must have the same shape")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}")
    rel = (delta.abs() / (W.to(delta.dtype).abs() + eps)).reshape(-1)
    k = max(1, math.ceil(rel.numel() * top_percent / 100.0))
    mask = torch.zeros(rel.numel(), dtype=torch.bool, device=rel.device)
    mask[torch.topk(rel, k, sorted=False).indices] = True
    return mask.reshape(W.shape)


def apply_rect(model, tok, requests, hparams: RECTHParams, *, state: EditState | None = None,
               stats=None, templates: Sequence[str] | None = None, verbose: bool = False, targets=None,
               progress: bool = True) -> EditResult:
    """Edit ``model`` in place with MEMIT + RECT."""
    hp = as_hparams(hparams, RECTHParams, "RECT")
    stats = resolve_stats(model, tok, hp, stats, progress=progress)
    proj, info = None, {}
    if hp.project:
        _, proj, info = projection_post(hp, stats)

    def post(layer: int, delta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        m = rect_mask(delta, W.to(delta.device), hp.rect_top_percent, hp.rect_eps)
        out = delta * m
        return proj(layer, out, W) if proj is not None else out

    return run_memit_family("RECT+P" if hp.project else "RECT", model, tok, requests, hp,
                            solver=memit_solver(hp, stats, state), post=post, state=state,
                            templates=templates, info=info, targets=targets, verbose=verbose)
