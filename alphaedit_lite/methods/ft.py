"""FT-L: norm-constrained fine-tuning of the rewrite weight (Zhu et al. 2020, as run by ROME/MEMIT).

Adam minimises the NLL of the new target (teacher forcing, all target tokens) on the request
prompts with respect to the rewrite weights W_l of ``hparams.layers`` only; after every step each
weight is clamped to an L∞ ball around its original value, ``‖W − W0‖∞ ≤ norm_constraint``
(``norm_constraint ≤ 0``: unconstrained FT). Stops early once the loss is below
``early_stop_loss``. As in targets.py, the layers below the first edited layer run once
(:class:`~alphaedit_lite.locate.targets.ResidualRunner`) and the unembedding is applied only where the
loss reads it. The weights are changed during the optimisation and restored afterwards; the
final differences are then applied like every other method's Δ.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch

from alphaedit_lite.model import arch as M
from alphaedit_lite.methods.hparams import FTHParams
from alphaedit_lite.locate.keys import build_sentences, context_templates, right_pad
from alphaedit_lite.locate.targets import ResidualRunner, frozen_params, target_token_ids
from alphaedit_lite.methods.common import (EditResult, EditState, apply_all, check_layers, make_result, prepare_requests,
                     )
from alphaedit_lite.methods.memit import as_hparams
from alphaedit_lite.model.tokens import pad_id

__all__ = ["apply_ft"]


def apply_ft(model, tok, requests, hparams: FTHParams, *, state: EditState | None = None, stats=None,
             templates: Sequence[str] | None = None, verbose: bool = False, progress: bool = True) -> EditResult:
    """Edit ``model`` in place by constrained fine-tuning; ``stats`` are not used."""
    t0 = time.perf_counter()
    hp = as_hparams(hparams, FTHParams, "FT")
    requests = prepare_requests(requests)
    layers = check_layers(model, hp.layers)
    if templates is None:
        templates = context_templates(model, tok, hp.context_n_prefixes, hp.context_prefix_tokens)
    device = next(model.parameters()).device
    u, T = len(requests), len(templates)

    sents = build_sentences(tok, requests, templates)
    seqs, t_row, t_pos, t_tok, t_req = [], [], [], [], []
    n_tgt = []
    for i, (r, row) in enumerate(zip(requests, sents)):
        tg = target_token_ids(tok, r.target_new)
        n_tgt.append(len(tg))
        for s in row:
            b = len(seqs)
            seqs.append(s.ids + tg[:-1])
            for k, t in enumerate(tg):
                t_row.append(b)
                t_pos.append(len(s.ids) - 1 + k)
                t_tok.append(t)
                t_req.append(i)
    ids, mask = right_pad(seqs, pad_id(tok))
    t_row, t_pos, t_tok, t_req = (torch.tensor(x, device=device) for x in (t_row, t_pos, t_tok, t_req))
    n_tgt_t = torch.tensor(n_tgt, device=device, dtype=torch.float32)

    snap = M.snapshot_weights(model, layers)
    params = [M.rewrite_module(model, x).weight for x in layers]
    originals = [p.detach().clone() for p in params]
    runner = ResidualRunner(model, ids, mask, start=min(layers))
    stats_out = [dict(steps=0, forward=0, backward=0, nll=float("nan"), prob=float("nan"), stopped_early=False)
                 for _ in range(u)]
    deltas = {}
    try:
        with frozen_params(model):
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
            for it in range(hp.num_steps):
                logits = runner.logits_at(runner.hidden, t_row, t_pos).float()
                lp = torch.log_softmax(logits, -1)[torch.arange(len(t_tok), device=device), t_tok]
                req_nll = torch.zeros(u, device=device).index_add(0, t_req, -lp) / (n_tgt_t * T)
                loss = req_nll.mean()
                for i in range(u):
                    st = stats_out[i]
                    st.update(steps=it + 1, forward=st["forward"] + 1, nll=req_nll[i].item(),
                              prob=float(torch.exp(-req_nll[i].detach())))
                if verbose:
                    print(f"FT step {it}: loss {loss.item():.4f}")
                if loss.item() < hp.early_stop_loss:
                    for st in stats_out:
                        st["stopped_early"] = True
                    break
                if it == hp.num_steps - 1:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for st in stats_out:
                    st["backward"] += 1
                if hp.norm_constraint > 0:
                    with torch.no_grad():
                        for p, p0 in zip(params, originals):
                            p.copy_(torch.clamp(p, p0 - hp.norm_constraint, p0 + hp.norm_constraint))
            for x in layers:
                deltas[x] = (M.get_rewrite_weight(model, x).to(torch.float32) - snap[x].to(torch.float32)).clone()
    finally:
        M.restore_weights(model, snap)
        for p in params:
            p.grad = None
    apply_all(model, deltas, snap)
    timing = {"total": time.perf_counter() - t0}
    return make_result("FT", model, deltas, snap, stats_out, timing,
                       {"norm_constraint": hp.norm_constraint, "templates": list(templates)}, state)
