"""PRUNE (Ma et al., 2024, "Perturbation-Restrained Sequential Model Editing") on top of MEMIT.

Sequential edits add up: W_n = W_0 + ΔΣ with ΔΣ = Σ_j Δ_j. PRUNE bounds the condition number of the
edited matrix by restraining the large singular values of the ACCUMULATED update: with
ΔΣ = U diag(σ) Vᵀ and σ̄ = σ_max(W_0) the largest singular value of the ORIGINAL weight,

    F(σ) = log_b(σ) + σ̄ − log_b(σ̄)   for σ ≥ σ̄,        F(σ) = σ otherwise,

and the weight becomes W_0 + U diag(F(σ)) Vᵀ (b = ``prune_log_base``; the paper's "log"). F never
enlarges a singular value here (``min(σ, F(σ))``), which the formula alone does not guarantee when
σ̄ < 1 / ln b. The running sum ΔΣ and σ̄ are kept in the :class:`EditState`; each call applies the
difference between the new and the previous restrained sums. Each new MEMIT update enters the sum
as computed (or as Δ P with ``project=True``, AlphaEdit's plug-in; the restraint keeps U and V,
so the sum stays inside the null space).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from alphaedit_lite.methods.hparams import PRUNEHParams
from alphaedit_lite.methods.common import EditResult, EditState, resolve_stats, run_memit_family
from alphaedit_lite.methods.memit import as_hparams, memit_solver, projection_post

__all__ = ["apply_prune", "restrain_singular_values"]


def restrain_singular_values(delta: torch.Tensor, sigma_bar: float, base: float = math.e) -> torch.Tensor:
    """U diag(F(σ)) Vᵀ for ``delta`` (d_out, d_in); see the module docstring. float64 in, float64 out."""
    if not sigma_bar > 0:
        raise ValueError(f"sigma_bar (σ_max of the original weight) must be > 0, got {sigma_bar}")
    d = delta.to(torch.float64)
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)          # (d_out, r), (r,), (r, d_in)
    big = S >= sigma_bar
    if not bool(big.any()):
        return d
    lb = math.log(base)
    F = torch.log(S.clamp_min(1e-300)) / lb + sigma_bar - math.log(sigma_bar) / lb
    S2 = torch.where(big, torch.minimum(F, S), S)
    return (U * S2) @ Vh


def apply_prune(model, tok, requests, hparams: PRUNEHParams, *, state: EditState | None = None,
                stats=None, templates: Sequence[str] | None = None, verbose: bool = False, targets=None,
                progress: bool = True) -> EditResult:
    """Edit ``model`` in place with MEMIT + PRUNE. Pass the same ``state`` to sequential calls."""
    hp = as_hparams(hparams, PRUNEHParams, "PRUNE")
    stats = resolve_stats(model, tok, hp, stats, progress=progress)
    if state is None:
        state = EditState()
    proj, info = None, {}
    if hp.project:
        _, proj, info = projection_post(hp, stats)
    sigma_now: dict[int, float] = {}
    restrained: dict[int, int] = {}

    def post(layer: int, delta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        if proj is not None:
            delta = proj(layer, delta, W)
        prev = state.accumulated.get(layer)
        prev = torch.zeros_like(delta) if prev is None else prev.to(delta.device, torch.float64)
        if layer in state.sigma_max:
            sigma = state.sigma_max[layer]
        else:  # first edit of this layer: W minus the running sum is the original weight
            sigma = float(torch.linalg.matrix_norm((W.to(torch.float64) - prev), ord=2))
        sigma_now[layer] = sigma
        total = prev + delta.to(torch.float64)
        new_total = restrain_singular_values(total, sigma, hp.prune_log_base)
        restrained[layer] = int((torch.linalg.svdvals(total) >= sigma).sum())
        return new_total - prev

    def commit(deltas: dict[int, torch.Tensor]) -> None:
        for layer, d in deltas.items():
            prev = state.accumulated.get(layer)
            d64 = d.detach().to("cpu", torch.float64)
            state.accumulated[layer] = d64 if prev is None else prev + d64
            state.sigma_max.setdefault(layer, sigma_now[layer])

    info = {**info, "restrained_singular_values": restrained}
    return run_memit_family("PRUNE+P" if hp.project else "PRUNE", model, tok, requests, hp,
                            solver=memit_solver(hp, stats, state), post=post, state=state, on_commit=commit,
                            templates=templates, info=info, targets=targets, verbose=verbose)
