"""ROME (Meng et al., NeurIPS 2022): a rank-one update of one layer's MLP output projection.

For one request, with k̄ the key averaged over the context templates, k the key of the plain
prompt, C = K0 K0ᵀ / n the corpus key statistics (C = I with ``mom2_adjustment=False``) and the
residual r = z − h (z from :func:`alphaedit_lite.locate.targets.compute_targets` at the edited layer,
h the layer's current output at the subject's last token):

    Δ = r (C⁻¹ k̄)ᵀ / ((C⁻¹ k̄)ᵀ k)          (ROME Eq. 2; Δ k = r exactly)

Several requests are edited one after another, each on the model already holding the previous
ones (as ROME's own loop does); the result records their sum. ROME has no sequential state.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from alphaedit_lite.model import arch as M
from alphaedit_lite.methods.hparams import ROMEHParams
from alphaedit_lite.locate.keys import context_templates, keys_and_values
from alphaedit_lite.locate.targets import compute_targets
from alphaedit_lite.methods.common import (EditResult, EditState, apply_all, check_layers, make_result, prepare_requests,
                     resolve_stats, )
from alphaedit_lite.methods.memit import as_hparams

__all__ = ["apply_rome", "rome_delta"]


def rome_delta(r: torch.Tensor, k_avg: torch.Tensor, k_plain: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """Δ = r (C⁻¹k̄)ᵀ / ((C⁻¹k̄)ᵀ k), float64 (d_out, d_in). ``C=None`` means the identity."""
    r, k_avg, k_plain = (x.to(torch.float64).reshape(-1) for x in (r, k_avg, k_plain))
    if C is None:
        u = k_avg
    else:
        C = C.to(device=k_avg.device, dtype=torch.float64)
        if C.shape != (k_avg.numel(), k_avg.numel()):
            raise ValueError(f"C has shape {tuple(C.shape)} but keys have dimension {k_avg.numel()}")
        u = torch.linalg.solve(C, k_avg)                      # C⁻¹ k̄ (d_in,)
        if not torch.isfinite(u).all():
            raise ValueError("C is singular: collect key statistics over more tokens than the key dimension")
    denom = torch.dot(u, k_plain)
    if not torch.isfinite(denom) or abs(float(denom)) < 1e-12:
        raise ValueError("ROME's denominator (C⁻¹k̄)ᵀk is zero: the key is degenerate for this layer")
    return torch.outer(r, u) / denom


def apply_rome(model, tok, requests, hparams: ROMEHParams, *, state: EditState | None = None,
               stats=None, templates: Sequence[str] | None = None, verbose: bool = False,
               progress: bool = True) -> EditResult:
    """Edit ``model`` in place with ROME (one layer, requests one after another)."""
    t0 = time.perf_counter()
    hp = as_hparams(hparams, ROMEHParams, "ROME")
    requests = prepare_requests(requests)
    (layer,) = check_layers(model, hp.layers)
    C = None
    if hp.mom2_adjustment:
        stats = resolve_stats(model, tok, hp, stats, progress=progress)
        C = stats[layer].cov
    if templates is None:
        templates = context_templates(model, tok, hp.context_n_prefixes, hp.context_prefix_tokens)
    device = next(model.parameters()).device
    snap = M.snapshot_weights(model, [layer])
    total = None
    target_stats = []
    t_targets = 0.0
    try:
        for req in requests:
            tr = compute_targets(model, tok, [req], layer, templates, v_num_grad_steps=hp.v_num_grad_steps,
                                 v_lr=hp.v_lr, v_weight_decay=hp.v_weight_decay,
                                 clamp_norm_factor=hp.clamp_norm_factor, kl_factor=hp.kl_factor,
                                 kl_relation_prompts=hp.kl_relation_prompts,
                                 v_early_stop_loss=hp.v_early_stop_loss, v_stop=hp.v_stop,
                                 v_dtype=hp.v_dtype, fact_token=hp.fact_token, verbose=verbose)
            t_targets += tr.seconds
            target_stats.extend(tr.stats)
            k_avg = keys_and_values(model, tok, [req], [layer], templates, weighting="uniform",
                                    fact_token=hp.fact_token)[0][layer]
            k_plain, h = keys_and_values(model, tok, [req], [layer], ["{}"], value_layer=layer,
                                          fact_token=hp.fact_token)
            r = tr.z.to(device)[:, 0] - h[:, 0]
            d = rome_delta(r, k_avg[:, 0], k_plain[layer][:, 0], C).to(torch.float32)
            M.apply_weight_delta(model, layer, d)      # the next request sees this one
            total = d if total is None else total + d
    finally:
        M.restore_weights(model, snap)
    deltas = {layer: total}
    apply_all(model, deltas, snap)
    timing = {"targets": t_targets, "total": time.perf_counter() - t0}
    return make_result("ROME", model, deltas, snap, target_stats, timing,
                       {"layer": layer, "mom2_adjustment": hp.mom2_adjustment, "templates": list(templates)}, state)
