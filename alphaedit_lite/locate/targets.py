"""Target values V1: the residual vector z = h + δ that makes the model say the new object.

MEMIT (Meng et al. 2023, Eq. 16-17; ROME's compute_v) and AlphaEdit (Fang et al., ICLR 2025, the
V1 of Eq. 3, used in Eq. 11-14) find, for every request i, a vector δ_i that, ADDED TO THE OUTPUT OF THE LAST
EDITED LAYER L at the subject's last token, makes the model predict the new object:

    min_δ  (1/T) Σ_templates −log p(o* | prefix_j ⊕ prompt(s))              (NLL, teacher forcing)
         + kl_factor · KL( p_δ(· | "s is a") ‖ p(· | "s is a") )            (keep what s "is")
         + v_weight_decay · ‖δ‖ / ‖h‖²                                     (MEMIT's norm penalty)
    subject to ‖δ‖ ≤ clamp_norm_factor · ‖h‖                               (MEMIT's clamp)

With ``kl_relation_prompts`` ({relation_id: template}) the KL term is instead the mean over the
subject's OTHER relations' prompts, each read at its last token, where that relation's answer is
predicted: the target must change one fact and keep the subject's others. This is the kit's addition
for its organisms, whose subjects have several facts on one key (data/subword_world/README.md).

The optimisation runs with Adam (``v_lr``, at most ``v_num_grad_steps`` steps) and MEMIT's early
stop (a request stops as soon as its loss is below ``v_early_stop_loss``, 5e-2). The result is
z_i = h_i + δ_i, where h_i is layer L's output at the subject's last token of the plain prompt.

Cost. All requests of a call share ONE forward pass per step (a request that has stopped drops
out of the batch). The layers below L never change while δ is optimised, so their output — the
residual stream leaving layer L, with the attention mask and rotary position embeddings the
decoder layers receive — is computed ONCE (:class:`ResidualRunner`); each step runs only layers
L+1..N−1, then the final norm and the unembedding ONLY at the positions the loss reads (the
target tokens and the KL token). The runner calls each decoder layer exactly as the model's own
forward does (it records the keyword arguments of that call), so it works for transformers 5.x
Llama-family layers (``position_embeddings=(cos, sin)`` from ``model.model.rotary_emb``, a 4-D
or ``None`` attention mask) and for GPT-2/GPT-J blocks alike.

Prefix reuse (:class:`SuffixRunner`, the default). Attention is causal, so every position BEFORE
the one that receives δ (the subject's last token) keeps the same hidden states in every layer
while δ changes. Their keys and values are computed once (one pass with the model's own KV cache);
each step then runs layers L+1..N−1 only on the positions from the δ position to the end of each
row — the rest of the prompt and the target tokens, typically 3-6 positions instead of the ~20 of
a prefixed rewriting prompt — attending to the cached prefix. The loss, its gradient and hence δ
are the same as with the full rows up to float32 rounding (the matrix products are split
differently). Before a model's first use the route is checked once against the full route (logits
at every position the loss reads, δ = 0); if that check fails, or the model's layers do not accept
a key/value cache, the full route is used (``cache_prefix=False`` forces it).
"""
from __future__ import annotations

import inspect
import time
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from alphaedit_lite.locate.keys import build_sentences, locate_subject, right_pad
from alphaedit_lite.model.arch import (arch_spec, attention_implementation, check_layers, final_norm, get_module,
                                      mixed_attention, num_layers, unembed)
from alphaedit_lite.model.hooks import block_inputs, per_block_kwargs, run_blocks
from alphaedit_lite.locate.requests import as_request
from alphaedit_lite.model.tokens import pad_id
from alphaedit_lite.util.device import resolve_compute_dtype

__all__ = ["ResidualRunner", "SuffixRunner", "TargetResult", "compute_targets", "target_token_ids", "frozen_params"]


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
        block = self.blocks[0] if start < n else get_module(model, spec.layer_name(n - 1))
        self.block_kwargs = None
        with torch.no_grad():
            if start < n and mixed_attention(model, range(start, n)):
                # sliding-window and full-attention blocks get different masks: record each block's own
                self.hidden, self.block_kwargs = per_block_kwargs(model, self.blocks, input_ids=self.input_ids,
                                                                  attention_mask=self.attention_mask, use_cache=False)
                self.kwargs = self.block_kwargs[0]
            else:
                self.hidden, _, self.kwargs = block_inputs(model, block, output=start == n, input_ids=self.input_ids,
                                                           attention_mask=self.attention_mask, use_cache=False)
        # self.hidden: (b, seq, d_model), no grad
        self.norm = final_norm(model)
        self.head = unembed(model)

    def run(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks start..N−1 on ``hidden`` ((b', seq, d)); ``rows`` says which batch rows it holds."""
        def sel(kw):
            return kw if rows is None else {k: _rows(v, rows, self.batch) for k, v in kw.items()}
        if self.block_kwargs is not None:
            return run_blocks(self.blocks, hidden, block_kwargs=[sel(kw) for kw in self.block_kwargs])
        return run_blocks(self.blocks, hidden, **sel(self.kwargs))

    def logits_at(self, hidden: torch.Tensor, row_idx: torch.Tensor, pos_idx: torch.Tensor,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(k, vocab)`` at positions ``(row_idx[j], pos_idx[j])`` of the final hidden state.

        ``row_idx`` indexes the rows of ``hidden`` (not of the full batch).
        """
        h = self.run(hidden, rows)
        sel = h[row_idx, pos_idx]                 # (k, d_model)
        return self.head(self.norm(sel))          # (k, vocab)



# ------------------------------------------------------------------------------------------------
# Prefix reuse: run the layers above L only from the δ position on
# ------------------------------------------------------------------------------------------------
def _rows_nd(x: Any, idx: torch.Tensor, full: int) -> Any:
    """Like :func:`_rows`, but only tensors with a batch AND a further dimension are subset.

    (A 1-D tensor such as ``cache_position`` is never per-row, even when its length equals the batch.)
    """
    if isinstance(x, torch.Tensor):
        return x[idx] if x.dim() > 1 and x.shape[0] == full else x
    if isinstance(x, tuple):
        return tuple(_rows_nd(v, idx, full) for v in x)
    if isinstance(x, list):
        return [_rows_nd(v, idx, full) for v in x]
    return x


class _FrozenPrefixCache:
    """A read-only key/value cache: ``update`` returns the cached prefix followed by the new states.

    It stores nothing, so the same prefix serves every optimisation step (and autograd never reaches
    into an earlier step). Keys/values are ``(b, heads, P, head_dim)``; ``rows`` selects batch rows.
    """

    def __init__(self, kv: dict[int, tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor | None = None):
        self.kv = kv
        self.rows = rows

    def with_rows(self, rows: torch.Tensor | None) -> "_FrozenPrefixCache":
        return _FrozenPrefixCache(self.kv, rows)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.kv[int(layer_idx)]
        if self.rows is not None:
            k, v = k[self.rows], v[self.rows]
        return torch.cat([k, key_states], dim=-2), torch.cat([v, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(next(iter(self.kv.values()))[0].shape[-2])


def _layer_kv(cache: Any, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of layer ``i`` held by a transformers cache (5.x, 4.4x) or a legacy tuple."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[i].keys, layers[i].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[i], cache.value_cache[i]
    return cache[i][0], cache[i][1]


def _cache_kwarg(model: torch.nn.Module) -> str | None:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


class SuffixRunner:
    """Run blocks ``start..N−1`` only on the positions from ``offsets[i]`` to the end of each row.

    ``input_ids`` / ``attention_mask`` are right-padded full rows ``(b, S)``; row ``i`` is split at
    ``offsets[i]`` into a prefix (positions ``< offsets[i]``, which nothing the runner is given can
    change) and a suffix. On construction the prefixes run once through the whole model with its
    own key/value cache, and the suffixes once through blocks ``0..start−1`` on top of that cache;
    the pass stops at block ``start``. :attr:`hidden` is then ``(b, Q, d)`` with ``Q`` the longest
    suffix: suffix position ``j`` of row ``i`` is full position ``offsets[i] + j``. :meth:`logits_at`
    takes positions in these suffix coordinates. ``start`` must be < N (number of layers).
    Raises ``RuntimeError`` when the model does not accept or return a key/value cache.
    """

    def __init__(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 offsets: Sequence[int] | torch.Tensor, start: int):
        n = num_layers(model)
        if not 0 <= start < n:
            raise ValueError(f"start must be in 0..{n - 1} (a block to run from), got {start}")
        offsets = torch.as_tensor(offsets, dtype=torch.long).cpu()
        lengths = attention_mask.sum(1).cpu()
        if offsets.shape != (input_ids.shape[0],) or bool((offsets < 0).any()) or bool((offsets >= lengths).any()):
            raise ValueError("offsets must hold one position per row, inside the row's real tokens")
        name = _cache_kwarg(model)
        if name is None:
            raise RuntimeError("this model's forward() takes no key/value cache")
        self.model, self.start, self.batch = model, start, input_ids.shape[0]
        spec = arch_spec(model)
        self.blocks = [get_module(model, spec.layer_name(i)) for i in range(start, n)]
        device = next(model.parameters()).device
        b = self.batch
        P = int(offsets.max())
        Q = int((lengths - offsets).max())
        # prefix rows: right-padded; suffix rows: right-padded and placed after slot P (a masked gap
        # separates a short prefix from its suffix; positions come from position_ids, not slots)
        pre_ids = torch.full((b, max(P, 1)), int(input_ids[0, 0]), dtype=torch.long)
        pre_mask = torch.zeros((b, max(P, 1)), dtype=torch.long)
        suf_ids = torch.full((b, Q), int(input_ids[0, 0]), dtype=torch.long)
        suf_mask = torch.zeros((b, Q), dtype=torch.long)
        for i in range(b):
            p, L = int(offsets[i]), int(lengths[i])
            pre_ids[i, :p] = input_ids[i, :p].cpu()
            pre_mask[i, :p] = 1
            suf_ids[i, :L - p] = input_ids[i, p:L].cpu()
            suf_mask[i, :L - p] = 1
        suf_pos = offsets[:, None] + torch.arange(Q)[None, :]              # (b, Q) true positions
        self.offsets = offsets.to(device)
        self.Q = Q
        kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            if P > 0:
                kw: dict[str, Any] = dict(input_ids=pre_ids.to(device), attention_mask=pre_mask.to(device),
                                          position_ids=torch.arange(P, device=device)[None].expand(b, P),
                                          use_cache=True)
                try:
                    out = model(**kw, logits_to_keep=1)
                except TypeError:
                    out = model(**kw)
                cache = getattr(out, "cache", None)
                if cache is None:
                    cache = getattr(out, "past_key_values", None)
                if cache is None:
                    raise RuntimeError("the model returned no key/value cache")
                for i in range(start, n):
                    k, v = _layer_kv(cache, i)
                    if k.shape[-2] != P or k.shape[0] != b:
                        raise RuntimeError(f"unexpected cached key shape {tuple(k.shape)} at layer {i}")
                    # fully padded prefix rows (a subject at position 0) may hold NaNs; they are masked
                    kv[i] = (torch.nan_to_num(k.detach()), torch.nan_to_num(v.detach()))
                mask = torch.cat([pre_mask, suf_mask], 1)
            else:   # nothing before the δ position in any row: the suffix is the whole row
                cache, mask = None, suf_mask
            kw = dict(input_ids=suf_ids.to(device), attention_mask=mask.to(device), position_ids=suf_pos.to(device),
                      use_cache=cache is not None)
            if cache is not None:
                kw[name] = cache
            # GPT-2 passes the cache and the mask positionally: keep the positional arguments too
            self.hidden, args, kwargs = block_inputs(model, self.blocks[0], **kw)     # hidden: (b, Q, d), no grad
        args = list(args)
        if cache is not None:
            frozen = _FrozenPrefixCache(kv)
            where = [i for i, v in enumerate(args) if v is cache]
            names = [k for k, v in kwargs.items() if v is cache]
            if len(where) + len(names) != 1:
                raise RuntimeError("the blocks do not receive the key/value cache the model was given")
            for i in where:
                args[i] = frozen
            for k in names:
                kwargs[k] = frozen
        self.args = tuple(args)
        self.kwargs = kwargs
        self.norm = final_norm(model)
        self.head = unembed(model)

    def run(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks start..N−1 on ``hidden`` ((b', Q, d)); ``rows`` says which batch rows it holds."""
        def sel(v):
            if isinstance(v, _FrozenPrefixCache):
                return v.with_rows(rows)
            return v if rows is None else _rows_nd(v, rows, self.batch)
        args = tuple(sel(v) for v in self.args)
        kwargs = {k: sel(v) for k, v in self.kwargs.items()}
        return run_blocks(self.blocks, hidden, *args, **kwargs)

    def logits_at(self, hidden: torch.Tensor, row_idx: torch.Tensor, pos_idx: torch.Tensor,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(k, vocab)`` at suffix positions ``(row_idx[j], pos_idx[j])``; see :meth:`ResidualRunner.logits_at`."""
        h = self.run(hidden, rows)
        return self.head(self.norm(h[row_idx, pos_idx]))


#: models on which the prefix route was checked against the full route (True: it agrees)
_SUFFIX_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def _suffix_runner(model, ids, mask, offsets, start, rows, pos) -> SuffixRunner | None:
    """A :class:`SuffixRunner`, or None where the prefix route is unavailable or disagrees.

    The first time for a model, logits at ``(rows, pos)`` (full-row coordinates, δ = 0) are
    compared with the full route's; the verdict is remembered for that model object.
    """
    ok = _SUFFIX_CHECKED.get(model)
    if ok is False or mixed_attention(model, range(start, num_layers(model))):
        return None         # per-block attention masks (sliding and full layers): the full route handles them
    try:
        runner = SuffixRunner(model, ids, mask, offsets, start)
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        _SUFFIX_CHECKED[model] = False
        warnings.warn(f"alphaedit_lite.locate.targets: the prefix-reuse route is unavailable for this model "
                      f"({type(e).__name__}: {e}); using the full route (slower, same result)", stacklevel=3)
        return None
    if ok is None:
        with torch.no_grad():
            full = ResidualRunner(model, ids, mask, start=num_layers(model))
            ref = full.logits_at(full.hidden, rows, pos).float()
            got = runner.logits_at(runner.hidden, rows, pos - runner.offsets[rows]).float()
        err = float((got - ref).abs().max())
        good = bool(torch.isfinite(got).all()) and err <= 1e-3 * (1.0 + float(ref.abs().max()))
        _SUFFIX_CHECKED[model] = good
        if not good:
            warnings.warn(f"alphaedit_lite.locate.targets: the prefix-reuse route disagrees with the full forward pass "
                          f"on this model (max |Δlogit| = {err:.3g}); using the full route", stacklevel=3)
            return None
    return runner


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


def _kl_rows(requests, kl_prompt: str, kl_relation_prompts: Mapping[str, str] | None,
             fact_token: str) -> list[list[tuple[str, bool]]]:
    """Per request, its KL prompts as (template, read at the subject's last token?).

    ROME's one prompt (``kl_prompt``, read at the subject's last token as its reference code does), or,
    with ``kl_relation_prompts``, the templates of every relation but the request's own, read at
    the prompt's last token, where the relation's answer is predicted.
    """
    def check(template: str, what: str) -> str:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"{what} must be a template with exactly one '{{}}' for the subject, got {template!r}")
        return template

    if not kl_relation_prompts:
        return [[(check(kl_prompt, "kl_prompt"), fact_token == "subject_last")] for _ in requests]
    if not isinstance(kl_relation_prompts, Mapping):
        raise ValueError("kl_relation_prompts must map relation ids to templates, e.g. "
                         f"{{'P19': '{{}} was born in'}}, got {type(kl_relation_prompts).__name__}")
    prompts = {rel: check(t, f"kl_relation_prompts[{rel!r}]") for rel, t in kl_relation_prompts.items()}
    out = []
    for i, r in enumerate(requests):
        if r.relation_id is None:
            raise ValueError(f"request #{i} ({r.label}) has no relation_id, so kl_relation_prompts cannot tell "
                             "which of its prompts are the subject's OTHER relations; give each request a "
                             "relation_id or leave kl_relation_prompts empty (ROME's one KL prompt)")
        out.append([(t, False) for rel, t in prompts.items() if rel != r.relation_id])
    return out


def compute_targets(model, tok, requests, layer: int, templates: Sequence[str] = ("{}",), *,
                    v_num_grad_steps: int = 25, v_lr: float = 0.5, v_weight_decay: float = 0.5,
                    clamp_norm_factor: float = 0.75, kl_factor: float = 0.0625,
                    v_early_stop_loss: float = 5e-2, kl_prompt: str = "{} is a",
                    kl_relation_prompts: Mapping[str, str] | None = None,
                    fact_token: str = "subject_last", verbose: bool = False,
                    cache_prefix: bool = True, v_stop: str = "loss", v_dtype: str = "float32",
                    max_requests: int | None = 25) -> TargetResult:
    """Optimise δ_i for every request at the output of block ``layer``; see the module docstring.

    ``cache_prefix=False`` runs the full rows through layers L+1..N−1 at every step instead of only
    the positions from the δ position on (same result up to float32 rounding, several times slower).
    ``v_stop="most_probable"`` also stops a request as soon as every token of its new object is the
    most probable token on every rewriting prompt (ENCORE's "most-probable early stopping", Gupta et
    al. 2025) — typically after a few steps instead of 25. ``v_dtype="bfloat16"`` runs the layers
    above L and the unembedding under bfloat16 autocast (δ, the loss and Adam stay in float32);
    ``v_dtype="auto"`` does so only where bf16 is fast on the model's device (``has_fast_bfloat16``).

    ``kl_relation_prompts`` ({relation_id: template}) replaces ROME's one KL prompt by the subject's
    OTHER relations: request i keeps, at the LAST token of each template whose relation is not its
    own, the model's distribution over that relation's answer (KL(p_δ ‖ p_0), averaged over those
    prompts, weighted by ``kl_factor``). The δ then has to change its own relation's answer while
    leaving the subject's other facts where they were (see the module docstring).

    Memory: the requests are optimised in groups of at most ``max_requests`` (None: all at once).
    Each δ_i has its own loss, early stop and Adam state, so grouping changes nothing but rounding;
    it bounds the activations kept for the backward pass (SmolLM2, 100 requests in one group: about
    14 GB, which a 24 GB machine cannot hold twice) at no cost in time (the work is compute-bound).
    """
    if v_stop not in ("loss", "most_probable"):
        raise ValueError(f"v_stop must be 'loss' or 'most_probable', got {v_stop!r}")
    v_dtype = resolve_compute_dtype(v_dtype, next(model.parameters()).device, "v_dtype")
    requests = [as_request(r) for r in requests]
    if not requests:
        raise ValueError("no requests given")
    kl_rows_of = _kl_rows(requests, kl_prompt, kl_relation_prompts, fact_token)
    check_layers(model, layer, what="layer")
    n = num_layers(model)
    if not templates or templates[0] != "{}":
        raise ValueError("templates[0] must be the plain template '{}'")
    kw = dict(v_num_grad_steps=v_num_grad_steps, v_lr=v_lr, v_weight_decay=v_weight_decay,
              clamp_norm_factor=clamp_norm_factor, kl_factor=kl_factor, v_early_stop_loss=v_early_stop_loss,
              kl_prompt=kl_prompt, kl_relation_prompts=kl_relation_prompts, fact_token=fact_token,
              verbose=verbose, cache_prefix=cache_prefix, v_stop=v_stop, v_dtype=v_dtype)
    device = next(model.parameters()).device
    if v_dtype == "bfloat16" and device.type == "cpu" and \
            getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa":
        # bf16 SDPA's backward is slow on the CPU: eager attention for this call (see attention_implementation)
        with attention_implementation(model, "eager"):
            return compute_targets(model, tok, requests, layer, templates, max_requests=max_requests, **kw)
    if max_requests is not None and len(requests) > max_requests > 0:
        parts = [compute_targets(model, tok, requests[i:i + max_requests], layer, templates, max_requests=None, **kw)
                 for i in range(0, len(requests), max_requests)]
        return TargetResult(z=torch.cat([p.z for p in parts], 1), h=torch.cat([p.h for p in parts], 1),
                            delta=torch.cat([p.delta for p in parts], 1), layer=layer,
                            stats=[st for p in parts for st in p.stats], seconds=sum(p.seconds for p in parts))
    t0 = time.perf_counter()
    u, T = len(requests), len(templates)

    # ---- sequences: T rewriting rows + the KL rows of each request ----------------------------
    sents = build_sentences(tok, requests, templates, fact_token)
    seqs, lookup, owner, kind, read = [], [], [], [], []
    tgt_rows, tgt_pos, tgt_tok = [], [], []
    targets = [target_token_ids(tok, r.target_new) for r in requests]
    for i, (r, row) in enumerate(zip(requests, sents)):
        tg = targets[i]
        for s in row:
            b = len(seqs)
            seqs.append(s.ids + tg[:-1])
            lookup.append(s.key_pos)
            read.append(s.key_pos)
            owner.append(i)
            kind.append("rw")
            for k, t in enumerate(tg):      # token t is predicted at position len(prompt) − 1 + k
                tgt_rows.append(b)
                tgt_pos.append(len(s.ids) - 1 + k)
                tgt_tok.append(t)
        for template, at_subject in kl_rows_of[i]:
            ks = locate_subject(tok, template.replace("{}", r.subject, 1), r.subject,
                                subject_start=template.index("{}"), where=f"request #{i} ({r.label}) KL prompt")
            last = len(ks.ids) - 1
            seqs.append(ks.ids)
            lookup.append(ks.subject_last if fact_token == "subject_last" else last)
            read.append(lookup[-1] if at_subject else last)           # where the KL's distribution is read
            owner.append(i)
            kind.append("kl")
    ids, mask = right_pad(seqs, pad_id(tok))
    B = len(seqs)
    owner_t = torch.tensor(owner, device=device)
    lookup_t = torch.tensor(lookup, device=device)
    read_t = torch.tensor(read, device=device)
    is_kl = torch.tensor([k == "kl" for k in kind], device=device)
    kl_rows = is_kl.nonzero().squeeze(1)
    kl_index = torch.full((B,), -1, device=device, dtype=torch.long)   # row -> its index among the KL rows
    kl_index[kl_rows] = torch.arange(len(kl_rows), device=device)
    n_kl = torch.bincount(owner_t[kl_rows], minlength=u).clamp(min=1).float()   # KL rows per request
    tgt_rows_t = torch.tensor(tgt_rows, device=device)
    tgt_pos_t = torch.tensor(tgt_pos, device=device)
    tgt_tok_t = torch.tensor(tgt_tok, device=device)
    n_tgt = torch.tensor([len(t) for t in targets], device=device, dtype=torch.float32)

    runner: ResidualRunner | SuffixRunner | None = None
    if cache_prefix and layer + 1 < n:
        runner = _suffix_runner(model, ids, mask, lookup, layer + 1, torch.cat([tgt_rows_t, kl_rows]),
                                torch.cat([tgt_pos_t, read_t[kl_rows]]))
    if runner is None:
        runner = ResidualRunner(model, ids, mask, start=layer + 1)
        offset = torch.zeros(B, dtype=torch.long, device=device)
    else:
        offset = runner.offsets                                        # (B,) row i starts at its δ position
    lookup_t = lookup_t - offset                                       # positions in the runner's coordinates
    read_t = read_t - offset
    tgt_pos_t = tgt_pos_t - offset[tgt_rows_t]
    H = runner.hidden                                                  # (B, S or Q, d)
    plain_rows = torch.tensor([owner.index(i) for i in range(u)], device=device)   # each request's "{}" row
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
            p_idx = torch.cat([tgt_pos_t[t_sel], read_t[kl_sel]])
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=v_dtype == "bfloat16"):
                logits = runner.logits_at(hidden, r_idx, p_idx, rows=row_sel)
            logits = logits.float()
            logp = torch.log_softmax(logits, -1)
            n_t = len(t_sel)
            tok_lp = logp[torch.arange(n_t, device=device), tgt_tok_t[t_sel]]   # (n_t,) log p of target tokens
            kl_lp = logp[n_t:]                                                   # (active KL rows, vocab), row order
            row_nll = -torch.zeros(B, device=device).index_add(0, tgt_rows_t[t_sel], tok_lp)
            row_nll = row_nll / n_tgt[owner_t]                                   # per-token NLL of each row
            rw = row_sel[~is_kl[row_sel]]                                        # active rewriting rows
            req_nll = torch.zeros(u, device=device).index_add(0, owner_t[rw], row_nll[rw]) / T
            req_prob = torch.zeros(u, device=device).index_add(0, owner_t[rw], torch.exp(-row_nll[rw].detach())) / T
            if kl_init is None:                                                  # step 0: every request active
                kl_init = kl_lp.detach().clone()
            kl_row = (kl_lp.exp() * (kl_lp - kl_init[kl_index[kl_sel]])).sum(-1)  # KL(p_δ ‖ p_0) per KL row
            kl = kl_factor * (torch.zeros(u, device=device).index_add(0, owner_t[kl_sel], kl_row) / n_kl)[act]
            D_act = D[act]
            wd = v_weight_decay * D_act.norm(dim=1) / h_norm[act] ** 2
            loss_vec = req_nll[act] + kl + wd                                    # (n_active,)
            losses = list(loss_vec)
            for a, i in enumerate(active):
                st = stats[i]
                st.update(steps=it + 1, forward=st["forward"] + 1, nll=req_nll[i].item(),
                          loss=loss_vec[a].item(), prob=req_prob[i].item(), kl=kl[a].item(), weight_decay=wd[a].item())
            done = [i for i, loss in zip(active, losses) if loss.item() < v_early_stop_loss]
            if v_stop == "most_probable":
                with torch.no_grad():                   # a request whose target tokens are all argmax
                    miss = (logits[:n_t].argmax(-1) != tgt_tok_t[t_sel]).float()
                    misses = torch.zeros(u, device=device).index_add(0, owner_t[tgt_rows_t[t_sel]], miss)
                done += [i for i in active if i not in done and misses[i].item() == 0]
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
