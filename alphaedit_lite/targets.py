"""Target values V1: the residual vector z = h + δ that makes the model say the new object.

MEMIT (Meng et al. 2023, Eq. 16-17; ROME's compute_v) and AlphaEdit (Fang et al., ICLR 2025, the
V1 of Eq. 9-14) find, for every request i, a vector δ_i that, ADDED TO THE OUTPUT OF THE LAST
EDITED LAYER L at the subject's last token, makes the model predict the new object:

    min_δ  (1/T) Σ_templates −log p(o* | prefix_j ⊕ prompt(s))              (NLL, teacher forcing)
         + kl_factor · KL( p_δ(· | "s is a") ‖ p(· | "s is a") )            (keep what s "is")
         + v_weight_decay · ‖δ‖ / ‖h‖²                                     (MEMIT's norm penalty)
    subject to ‖δ‖ ≤ clamp_norm_factor · ‖h‖                               (MEMIT's clamp)

with Adam (``v_lr``, at most ``v_num_grad_steps`` steps) and MEMIT's early stop (a request stops as
soon as its loss is below ``v_early_stop_loss``, 5e-2). The result is z_i = h_i + δ_i, where h_i
is layer L's output at the subject's last token of the plain prompt.

Cost. All requests of a call share ONE forward pass per step (a request that has stopped drops
out of the batch). The layers below L never change while δ is optimised, so their output — the
residual stream leaving layer L, with the attention mask and rotary position embeddings the
decoder layers receive — is computed ONCE (:class:`ResidualRunner`); each step runs only layers
L+1..N−1, then the final norm and the unembedding ONLY at the positions the loss reads (the
target tokens and the KL token). The runner calls each decoder layer exactly as the model's own
forward does (it records the keyword arguments of that call), so it works for transformers 5.x
Llama-family layers (``position_embeddings=(cos, sin)`` from ``model.model.rotary_emb``, a 4-D
or ``None`` attention mask) and for GPT-2/GPT-J blocks alike.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .keys import build_sentences, locate_subject, right_pad, _pad_id
from .models import arch_spec, final_norm, get_module, num_layers, unembed
from .requests import as_request

__all__ = ["ResidualRunner", "TargetResult", "compute_targets", "target_token_ids", "frozen_params"]


class _Stop(Exception):
    pass


@contextmanager
def frozen_params(model: torch.nn.Module):
    """Temporarily set ``requires_grad=False`` on every parameter (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _rows(x: Any, idx: torch.Tensor, full: int) -> Any:
    """Select batch rows of a recorded keyword argument (tensors whose first dim is the batch)."""
    if isinstance(x, torch.Tensor):
        return x[idx] if x.dim() > 0 and x.shape[0] == full and full > 1 else x
    if isinstance(x, tuple):
        return tuple(_rows(v, idx, full) for v in x)
    if isinstance(x, list):
        return [_rows(v, idx, full) for v in x]
    return x


class ResidualRunner:
    """Run a model from the residual stream entering block ``start`` to the logits.

    On construction one no-grad forward pass of ``input_ids`` (right-padded, with
    ``attention_mask``) records the hidden state entering block ``start`` (``start == N`` means:
    the output of the last block) and the keyword arguments the model passes to its blocks; the
    pass stops there. :meth:`logits_at` then runs blocks ``start..N−1`` on a (possibly modified)
    hidden state and applies the final norm and unembedding only at the requested positions.
    """

    def __init__(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 start: int):
        n = num_layers(model)
        if not 0 <= start <= n:
            raise ValueError(f"start must be in 0..{n} (number of layers), got {start}")
        self.model = model
        self.start = start
        spec = arch_spec(model)
        self.blocks = [get_module(model, spec.layer_name(i)) for i in range(start, n)]
        device = next(model.parameters()).device
        self.input_ids = input_ids.to(device)
        self.attention_mask = attention_mask.to(device)
        self.batch = input_ids.shape[0]
        rec: dict[str, Any] = {}
        if start < n:
            def hook(mod, args, kwargs):
                rec["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
                rec["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                raise _Stop
            handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        else:
            last = get_module(model, spec.layer_name(n - 1))

            def hook(mod, args, kwargs, out):
                o = out[0] if isinstance(out, (tuple, list)) else out
                rec["h"] = o.detach()
                rec["kwargs"] = {}
                raise _Stop
            handle = last.register_forward_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                model(input_ids=self.input_ids, attention_mask=self.attention_mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        if "h" not in rec:
            raise RuntimeError(f"block {start} was never called during the forward pass")
        self.hidden = rec["h"]              # (b, seq, d_model), no grad
        self.kwargs = rec["kwargs"]
        self.norm = final_norm(model)
        self.head = unembed(model)

    def run(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks start..N−1 on ``hidden`` ((b', seq, d)); ``rows`` says which batch rows it holds."""
        kwargs = self.kwargs if rows is None else {k: _rows(v, rows, self.batch) for k, v in self.kwargs.items()}
        h = hidden
        for blk in self.blocks:
            out = blk(h, **kwargs)
            h = out[0] if isinstance(out, (tuple, list)) else out
        return h

    def logits_at(self, hidden: torch.Tensor, row_idx: torch.Tensor, pos_idx: torch.Tensor,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(k, vocab)`` at positions ``(row_idx[j], pos_idx[j])`` of the final hidden state.

        ``row_idx`` indexes the rows of ``hidden`` (not of the full batch).
        """
        h = self.run(hidden, rows)
        sel = h[row_idx, pos_idx]                 # (k, d_model)
        return self.head(self.norm(sel))          # (k, vocab)


def target_token_ids(tok, target: str) -> list[int]:
    """Token ids of ``" " + target`` (no special tokens), as the reference code tokenises targets."""
    ids = tok(" " + target.strip(), add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the target {target!r} tokenises to nothing; give a non-empty target")
    return list(ids)


@dataclass
class TargetResult:
    """Target values of one call. Shapes: d = d_model, u = number of requests."""

    z: torch.Tensor            # (d, u) z = h + δ at the output of block `layer`
    h: torch.Tensor            # (d, u) the block's output before the edit (plain prompt)
    delta: torch.Tensor        # (d, u)
    layer: int
    stats: list[dict] = field(default_factory=list)   # per request: steps, nll, prob, kl, ...
    seconds: float = 0.0


def compute_targets(model, tok, requests, layer: int, templates: Sequence[str] = ("{}",), *,
                    v_num_grad_steps: int = 25, v_lr: float = 0.5, v_weight_decay: float = 0.5,
                    clamp_norm_factor: float = 0.75, kl_factor: float = 0.0625,
                    v_early_stop_loss: float = 5e-2, kl_prompt: str = "{} is a",
                    verbose: bool = False) -> TargetResult:
    """Optimise δ_i for every request at the output of block ``layer``; see the module docstring."""
    requests = [as_request(r) for r in requests]
    if not requests:
        raise ValueError("no requests given")
    n = num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer {layer!r} out of range: this model has {n} layers (0..{n - 1})")
    if not templates or templates[0] != "{}":
        raise ValueError("templates[0] must be the plain template '{}'")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    u, T = len(requests), len(templates)

    # ---- sequences: T rewriting rows + 1 KL row per request --------------------------------
    sents = build_sentences(tok, requests, templates)
    seqs, lookup, owner, kind = [], [], [], []
    tgt_rows, tgt_pos, tgt_tok = [], [], []
    targets = [target_token_ids(tok, r.target_new) for r in requests]
    for i, (r, row) in enumerate(zip(requests, sents)):
        tg = targets[i]
        for s in row:
            b = len(seqs)
            seqs.append(s.ids + tg[:-1])
            lookup.append(s.subject_last)
            owner.append(i)
            kind.append("rw")
            for k, t in enumerate(tg):      # token t is predicted at position len(prompt) − 1 + k
                tgt_rows.append(b)
                tgt_pos.append(len(s.ids) - 1 + k)
                tgt_tok.append(t)
        kl_text = kl_prompt.replace("{}", r.subject, 1)
        ks = locate_subject(tok, kl_text, r.subject, subject_start=kl_prompt.index("{}"),
                            where=f"request #{i} ({r.label}) KL prompt")
        seqs.append(ks.ids)
        lookup.append(ks.subject_last)
        owner.append(i)
        kind.append("kl")
    ids, mask = right_pad(seqs, _pad_id(tok))
    B = len(seqs)
    owner_t = torch.tensor(owner, device=device)
    lookup_t = torch.tensor(lookup, device=device)
    is_kl = torch.tensor([k == "kl" for k in kind], device=device)
    tgt_rows_t = torch.tensor(tgt_rows, device=device)
    tgt_pos_t = torch.tensor(tgt_pos, device=device)
    tgt_tok_t = torch.tensor(tgt_tok, device=device)
    n_tgt = torch.tensor([len(t) for t in targets], device=device, dtype=torch.float32)

    runner = ResidualRunner(model, ids, mask, start=layer + 1)
    H = runner.hidden                                                  # (B, S, d)
    plain_rows = torch.tensor([i * (T + 1) for i in range(u)], device=device)
    h_init = H[plain_rows, lookup_t[plain_rows]].float()               # (u, d): template "{}"
    h_norm = h_init.norm(dim=1)                                        # (u,)

    deltas = [torch.zeros(H.shape[-1], device=device, dtype=H.dtype, requires_grad=True) for _ in range(u)]
    opt = torch.optim.Adam(deltas, lr=v_lr)
    active = list(range(u))
    stats = [dict(steps=0, forward=0, backward=0, nll=float("nan"), prob=float("nan"), kl=0.0,
                  weight_decay=0.0, loss=float("nan"), stopped_early=False) for _ in range(u)]
    kl_init: torch.Tensor | None = None

    with frozen_params(model):
        for it in range(v_num_grad_steps):
            if not active:
                break
            act = torch.tensor(active, device=device)
            row_sel = torch.isin(owner_t, act).nonzero().squeeze(1)    # rows of active requests
            local = torch.full((B,), -1, device=device, dtype=torch.long)
            local[row_sel] = torch.arange(len(row_sel), device=device)
            D = torch.stack(deltas)                                     # (u, d)
            add = torch.zeros(len(row_sel), H.shape[1], H.shape[2], device=device, dtype=H.dtype)
            add[torch.arange(len(row_sel), device=device), lookup_t[row_sel]] = D[owner_t[row_sel]]
            hidden = H[row_sel] + add                                   # δ at the subject's last token

            t_sel = torch.isin(tgt_rows_t, row_sel).nonzero().squeeze(1)
            kl_sel = row_sel[is_kl[row_sel]]
            r_idx = torch.cat([local[tgt_rows_t[t_sel]], local[kl_sel]])
            p_idx = torch.cat([tgt_pos_t[t_sel], lookup_t[kl_sel]])
            logits = runner.logits_at(hidden, r_idx, p_idx, rows=row_sel).float()
            logp = torch.log_softmax(logits, -1)
            n_t = len(t_sel)
            tok_lp = logp[torch.arange(n_t, device=device), tgt_tok_t[t_sel]]   # (n_t,) log p of target tokens
            kl_lp = logp[n_t:]                                                   # (n_active, vocab), request order
            row_nll = -torch.zeros(B, device=device).index_add(0, tgt_rows_t[t_sel], tok_lp)
            row_nll = row_nll / n_tgt[owner_t]                                   # per-token NLL of each row
            rw = row_sel[~is_kl[row_sel]]                                        # active rewriting rows
            req_nll = torch.zeros(u, device=device).index_add(0, owner_t[rw], row_nll[rw]) / T
            req_prob = torch.zeros(u, device=device).index_add(0, owner_t[rw], torch.exp(-row_nll[rw].detach())) / T
            if kl_init is None:                                                  # step 0: every request active
                kl_init = kl_lp.detach().clone()
            kl = kl_factor * (kl_lp.exp() * (kl_lp - kl_init[act])).sum(-1)     # KL(p_δ ‖ p_0) per request
            D_act = D[act]
            wd = v_weight_decay * D_act.norm(dim=1) / h_norm[act] ** 2
            loss_vec = req_nll[act] + kl + wd                                    # (n_active,)
            losses = list(loss_vec)
            for a, i in enumerate(active):
                st = stats[i]
                st.update(steps=it + 1, forward=st["forward"] + 1, nll=req_nll[i].item(),
                          loss=loss_vec[a].item(), prob=req_prob[i].item(), kl=kl[a].item(), weight_decay=wd[a].item())
            done = [i for i, loss in zip(active, losses) if loss.item() < v_early_stop_loss]
            for i in done:
                stats[i]["stopped_early"] = True
            if verbose:
                print(f"step {it}: " + ", ".join(f"#{i} loss {stats[i]['loss']:.3f} p {stats[i]['prob']:.3f}"
                                                 for i in active))
            still = [(i, loss) for i, loss in zip(active, losses) if i not in done]
            if it == v_num_grad_steps - 1 or not still:
                break
            opt.zero_grad(set_to_none=True)
            torch.stack([loss for _, loss in still]).sum().backward()
            keep = {i for i, _ in still}
            for i in range(u):
                if i in keep:
                    stats[i]["backward"] += 1
                else:                                   # finished requests: no gradient, so Adam skips them
                    deltas[i].grad = None
            opt.step()
            with torch.no_grad():
                for i, _ in still:                      # MEMIT's clamp: ‖δ‖ ≤ factor · ‖h‖
                    max_norm = clamp_norm_factor * h_norm[i]
                    nrm = deltas[i].norm()
                    if nrm > max_norm:
                        deltas[i].mul_(max_norm / nrm)
            active = [i for i, _ in still]

    delta = torch.stack([d.detach() for d in deltas]).float()          # (u, d)
    for i in range(u):
        stats[i]["delta_norm"] = float(delta[i].norm())
        stats[i]["h_norm"] = float(h_norm[i])
    z = (h_init + delta).T.contiguous()
    return TargetResult(z=z, h=h_init.T.contiguous(), delta=delta.T.contiguous(), layer=layer, stats=stats,
                        seconds=time.perf_counter() - t0)
