"""The keys K1 of the facts to edit: the rewrite module's input at the subject's last token.

MEMIT (Meng et al. 2023, Eq. 19) and AlphaEdit (Fang et al., ICLR 2025, K1 of Eq. 3, used in Eq. 11-14) write a new
fact (s, r, o*) into the linear memory V = W K of a layer's MLP output projection at the key
``k = σ(W_in γ(h))`` that the subject's LAST token produces. Because the same subject appears after
many different contexts, the key is averaged over a few short context prefixes (MEMIT's "context
templates"): ``"{}"`` itself plus ~10 prefixes of 5-10 tokens sampled from the model (seeded and
cached per model). As in MEMIT's ``compute_ks``, the plain template and the group of prefixed
templates each get half the weight (``weighting="memit"``); ROME averages all templates equally
(``weighting="uniform"``).

Finding the subject's last token: the filled sentence is tokenised, and so is its prefix up to the
end of the subject; the subject's last token is the last token of that prefix (ROME's method). This
is right for tokenizers whose subject tokens change when preceded by a space (BPE: "Paris" vs
" Paris"), because the prefix is tokenised in its real context. When the prefix's tokens are not a
prefix of the sentence's tokens (a merge across the subject's end), the fast tokenizer's offset
mapping decides instead.

Shapes: keys are returned as COLUMNS, ``K1`` of shape ``(d_in, u)`` for ``u`` requests.
Batches are right-padded (token ``j`` of every row sits at position ``j``).

Repeated reads (:class:`KeyReader`). MEMIT's loop reads the keys of layer l and the output of the
last edited layer L once per edited layer, each time after the layers below l were edited. The
blocks below the FIRST edited layer never change during that loop, so the reader runs them once
(recording the hidden state entering that block and the keyword arguments the model passes to its
blocks) and every read runs only the blocks from the first edited layer up to the deepest module
it needs; :func:`keys_and_values` is the one-shot form.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import torch

from alphaedit_lite.model.hooks import TraceDict, block_inputs, get_module, per_block_kwargs, run_blocks
from alphaedit_lite.model.arch import arch_spec, check_layers, mixed_attention, num_layers
from alphaedit_lite.util.paths import cache_dir
from alphaedit_lite.locate.requests import EditRequest, as_request
from alphaedit_lite.util.files import atomic_json_save
from alphaedit_lite.model.tokens import pad_id

__all__ = [
    "context_templates", "Sentence", "locate_subject", "build_sentences", "right_pad", "compute_keys",
    "keys_and_values", "KeyReader", "sample_from_model",
]

_STARTERS = ["The", "Therefore", "Because", "I", "You"]


# ------------------------------------------------------------------------------------------------
# Sampling and context templates
# ------------------------------------------------------------------------------------------------
def sample_from_model(model, tok, starters: Sequence[str], n_new: int, *, seed: int = 0, top_k: int | None = 5,
                      add_bos: bool = True) -> list[list[int]]:
    """Sample exactly ``n_new`` tokens after each starter word (seeded, top-k), in one batch.

    Uses ``model.generate`` inside a forked RNG (the global random state is left untouched).
    Returns the token ids of every row (starter included, BOS excluded).
    """
    device = next(model.parameters()).device
    firsts = [tok(s, add_special_tokens=False).input_ids[:1] for s in starters]  # one token each: rows align
    x = torch.tensor(firsts, dtype=torch.long)
    bos = getattr(tok, "bos_token_id", None)
    lead = 0
    if add_bos and bos is not None and tok("a").input_ids[:1] == [bos]:
        x = torch.cat([torch.full((x.shape[0], 1), bos), x], 1)
        lead = 1
    if n_new <= 0:
        return [row[lead:].tolist() for row in x]
    x = x.to(device)
    pad = pad_id(tok)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                             top_k=top_k if top_k is not None else 0, top_p=1.0, temperature=1.0,
                             max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=pad)
    return [row[lead:].tolist() for row in out.cpu()]


def context_templates(model, tok, n_prefixes: int = 10, prefix_tokens: int = 10, *, seed: int = 0,
                      cache: bool = True) -> list[str]:
    """``["{}", "<prefix 1>. {}", ...]``: MEMIT's context templates, sampled from the model.

    ``n_prefixes`` prefixes of ``prefix_tokens`` tokens (starter word included) are sampled with
    top-k 5 from the starters "The", "Therefore", "Because", "I", "You" (cycled), seeded by ``seed``,
    and cached in ``cache_dir()/context_templates/<model-id>/``. Braces and newlines are removed.
    """
    from alphaedit_lite.locate.cache import model_id  # local import: stats imports nothing from here

    if n_prefixes < 0 or prefix_tokens < 1:
        raise ValueError(f"n_prefixes must be ≥ 0 and prefix_tokens ≥ 1, got {n_prefixes}, {prefix_tokens}")
    if n_prefixes == 0:
        return ["{}"]
    path = cache_dir() / "context_templates" / model_id(model) / f"n{n_prefixes}_t{prefix_tokens}_seed{seed}.json"
    if cache and path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, list) and len(data) == n_prefixes + 1 and data[0] == "{}":
                return data
        except (OSError, ValueError):
            pass
    starters = [_STARTERS[i % len(_STARTERS)] for i in range(n_prefixes)]
    rows = sample_from_model(model, tok, starters, max(prefix_tokens - 1, 0), seed=seed)
    out = ["{}"]
    for row in rows:
        text = tok.decode(row, skip_special_tokens=True)
        text = " ".join(text.replace("{", " ").replace("}", " ").split())
        out.append(f"{text}. {{}}")
    if cache:
        atomic_json_save(out, path, indent=1)
    return out


# ------------------------------------------------------------------------------------------------
# Subject positions
# ------------------------------------------------------------------------------------------------
@dataclass
class Sentence:
    """A tokenised sentence, the index of its subject's last token, and the key position.

    ``key_pos`` is where keys are read and the target is placed: the subject's last token
    (``fact_token="subject_last"``, the papers' choice) or the sentence's last token
    (``fact_token="last"``, ROME's alternative, for models that look facts up at the last token).
    """

    text: str
    ids: list[int]
    subject_last: int   # index into ids
    key_pos: int = -1   # index into ids; -1: same as subject_last

    def __post_init__(self):
        if self.key_pos < 0:
            self.key_pos = self.subject_last


def locate_subject(tok, text: str, subject: str, *, subject_start: int | None = None,
                   where: str = "sentence") -> Sentence:
    """Tokenise ``text`` and find the last token of ``subject`` in it.

    ``subject_start`` is the character where the subject begins (default: its first occurrence).
    Raises ``ValueError`` naming ``where`` when the subject is not in the text.
    """
    if not isinstance(text, str) or not isinstance(subject, str) or not subject:
        raise TypeError(f"{where}: text and subject must be non-empty strings")
    if subject_start is None:
        subject_start = text.find(subject)
    if subject_start < 0 or text[subject_start:subject_start + len(subject)] != subject:
        raise ValueError(f"{where}: the subject {subject!r} does not occur in {text!r}; the prompt must "
                         "contain the subject (write its place as '{}' in request prompts)")
    end = subject_start + len(subject)
    enc = tok(text)
    ids = list(enc.input_ids)
    prefix_ids = list(tok(text[:end]).input_ids)
    if ids[:len(prefix_ids)] == prefix_ids:
        idx = len(prefix_ids) - 1
    else:  # the tokens merge across the subject's end: ask the offsets which token holds its last char
        idx = None
        try:
            idx = enc.char_to_token(end - 1)
        except (ValueError, AttributeError, NotImplementedError):
            idx = None
        if idx is None:
            idx = len(prefix_ids) - 1
    if not 0 <= idx < len(ids):
        raise ValueError(f"{where}: could not place the subject {subject!r} in the tokens of {text!r}")
    return Sentence(text=text, ids=ids, subject_last=idx)


def _fill(template: str, request: EditRequest) -> tuple[str, int]:
    """template ("{}" or "<prefix>. {}") ∘ request prompt ∘ subject → (text, subject start)."""
    ctx = template.replace("{}", request.prompt, 1)
    start = ctx.index("{}")
    return ctx[:start] + request.subject + ctx[start + 2:], start


FACT_TOKENS = ("subject_last", "last")


def check_fact_token(fact_token: str) -> str:
    if fact_token not in FACT_TOKENS:
        raise ValueError(f"fact_token {fact_token!r} is not supported; use 'subject_last' (the subject's last "
                         "token, as ROME/MEMIT/AlphaEdit do) or 'last' (the prompt's last token)")
    return fact_token


def build_sentences(tok, requests, templates: Sequence[str], fact_token: str = "subject_last") -> list[list[Sentence]]:
    """For every request, one :class:`Sentence` per template (the request prompt with subject).

    ``fact_token`` picks each sentence's ``key_pos``: ``"subject_last"`` or ``"last"``.
    """
    check_fact_token(fact_token)
    out = []
    for i, r in enumerate(requests):
        req = as_request(r)
        row = []
        for t in templates:
            text, start = _fill(t, req)
            s = locate_subject(tok, text, req.subject, subject_start=start, where=f"request #{i} ({req.label})")
            if fact_token == "last":
                s.key_pos = len(s.ids) - 1
            row.append(s)
        out.append(row)
    return out


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask)``, both ``(b, max_len)`` long tensors."""
    if not seqs:
        raise ValueError("nothing to pad: the batch is empty")
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


# ------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------
def _weights(n_templates: int, weighting: str) -> torch.Tensor:
    if weighting == "uniform" or n_templates == 1:
        return torch.full((n_templates,), 1.0 / n_templates)
    if weighting == "memit":  # "{}" is one group, the prefixed templates the other
        w = torch.full((n_templates,), 0.5 / (n_templates - 1))
        w[0] = 0.5
        return w
    raise ValueError(f"weighting must be 'memit' or 'uniform', got {weighting!r}")


def keys_and_values(model, tok, requests, layers: Sequence[int], templates: Sequence[str] = ("{}",), *,
                    value_layer: int | None = None, weighting: str = "memit", batch_size: int = 64,
                    fact_token: str = "subject_last") -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """Keys of ``layers`` and, optionally, the residual output of ``value_layer`` (one pass per batch).

    Returns ``({layer: K1 (d_in, u)}, H (d_model, u) or None)`` where ``H`` is the output of block
    ``value_layer`` at the subject's last token of the PLAIN prompt (template ``"{}"``, which must
    be ``templates[0]``). The forward pass stops after the deepest module it needs.
    ``fact_token="last"`` reads both at the prompt's last token instead of the subject's last.
    """
    layers = sorted(set(check_layers(model, layers)))
    n = num_layers(model)
    if value_layer is not None and not 0 <= value_layer < n:
        raise ValueError(f"value_layer {value_layer} out of range (0..{n - 1})")
    if not templates or templates[0] != "{}":
        raise ValueError("templates[0] must be the plain template '{}' (context_templates() returns it first)")
    requests = [as_request(r) for r in requests]
    if not requests:
        raise ValueError("no requests given")
    spec = arch_spec(model)
    sents = build_sentences(tok, requests, templates, fact_token)
    flat = [s for row in sents for s in row]                       # request-major
    T = len(templates)
    key_names = {layer: spec.rewrite_name(layer) for layer in layers}
    names = list(key_names.values())
    if value_layer is not None:
        names.append(spec.layer_name(value_layer))
    device = next(model.parameters()).device
    pad = pad_id(tok)
    rows_k = {layer: [] for layer in layers}
    rows_v = []
    with torch.no_grad():
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            ids, mask = right_pad([s.ids for s in chunk], pad)
            with TraceDict(model, names, retain_input=True, retain_output=True, stop=True) as tr:
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            pos = torch.tensor([s.key_pos for s in chunk], device=device)
            ar = torch.arange(len(chunk), device=device)
            for layer, name in key_names.items():
                rows_k[layer].append(tr[name].input[ar, pos].float())          # (b, d_in)
            if value_layer is not None:
                rows_v.append(tr[spec.layer_name(value_layer)].output[ar, pos].float())  # (b, d_model)
    w = _weights(T, weighting).to(device)
    keys = {}
    for layer in layers:
        k = torch.cat(rows_k[layer]).reshape(len(requests), T, -1)     # (u, T, d_in)
        keys[layer] = torch.einsum("utd,t->du", k, w).contiguous()   # (d_in, u)
    values = None
    if value_layer is not None:
        v = torch.cat(rows_v).reshape(len(requests), T, -1)
        values = v[:, 0, :].T.contiguous()                             # (d_model, u): plain prompt
    return keys, values


class KeyReader:
    """:func:`keys_and_values` for a fixed set of requests, read many times while layers ≥ ``start`` change.

    On construction the sentences are built and tokenised once, and one pass per batch stops at
    block ``start``, recording the residual stream entering it and the keyword arguments (attention
    mask, position embeddings) the model passes to its blocks. :meth:`read` then runs blocks
    ``start..`` up to the deepest module it needs. Valid as long as no layer below ``start``
    changes; layers and ``value_layer`` must be ≥ ``start``. Same results as :func:`keys_and_values`.
    """

    def __init__(self, model, tok, requests, templates: Sequence[str] = ("{}",), start: int = 0, *,
                 weighting: str = "memit", batch_size: int = 64, fact_token: str = "subject_last"):
        n = num_layers(model)
        check_layers(model, start, what="start")
        if not templates or templates[0] != "{}":
            raise ValueError("templates[0] must be the plain template '{}' (context_templates() returns it first)")
        requests = [as_request(r) for r in requests]
        if not requests:
            raise ValueError("no requests given")
        self.model, self.start, self.n_requests, self.T = model, start, len(requests), len(templates)
        self.w = _weights(len(templates), weighting)
        self.spec = arch_spec(model)
        self.blocks = [get_module(model, self.spec.layer_name(i)) for i in range(n)]
        sents = build_sentences(tok, requests, templates, fact_token)
        flat = [s for row in sents for s in row]                       # request-major
        device = next(model.parameters()).device
        pad = pad_id(tok)
        self.batches = []            # (hidden entering block `start` (b, S, d), kwargs, key positions (b,))
        with torch.no_grad():
            for b0 in range(0, len(flat), batch_size):
                chunk = flat[b0:b0 + batch_size]
                ids, mask = right_pad([s.ids for s in chunk], pad)
                if mixed_attention(model, range(start, n)):    # each block its own mask (sliding / full): a list
                    h, kwargs = per_block_kwargs(model, self.blocks[start:], input_ids=ids.to(device),
                                                 attention_mask=mask.to(device), use_cache=False)
                else:
                    h, _, kwargs = block_inputs(model, self.blocks[start], input_ids=ids.to(device),
                                                attention_mask=mask.to(device), use_cache=False)
                pos = torch.tensor([s.key_pos for s in chunk], device=device)
                self.batches.append((h, kwargs, pos))

    def read(self, layers: Sequence[int], value_layer: int | None = None
             ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """``({layer: K1 (d_in, u)}, H (d_model, u) or None)`` from the CURRENT weights; see :func:`keys_and_values`."""
        layers = sorted({int(x) for x in layers})
        n = len(self.blocks)
        if not layers or any(not self.start <= x < n for x in layers) or (
                value_layer is not None and not self.start <= value_layer < n):
            raise ValueError(f"layers {layers} / value_layer {value_layer} must lie in {self.start}..{n - 1}: "
                             f"this reader starts at block {self.start}")
        key_names = {layer: self.spec.rewrite_name(layer) for layer in layers}
        names = list(key_names.values())
        vname = self.spec.layer_name(value_layer) if value_layer is not None else None
        if vname is not None:
            names.append(vname)
        last = max(layers + ([value_layer] if value_layer is not None else []))
        rows_k = {layer: [] for layer in layers}
        rows_v = []
        with torch.no_grad():
            for h, kwargs, pos in self.batches:
                ar = torch.arange(h.shape[0], device=h.device)
                with TraceDict(self.model, names, retain_input=True, retain_output=True, stop=True) as tr:
                    if isinstance(kwargs, list):
                        run_blocks(self.blocks[self.start:last + 1], h, block_kwargs=kwargs[:last + 1 - self.start])
                    else:
                        run_blocks(self.blocks[self.start:last + 1], h, **kwargs)
                for layer, name in key_names.items():
                    rows_k[layer].append(tr[name].input[ar, pos].float())          # (b, d_in)
                if vname is not None:
                    rows_v.append(tr[vname].output[ar, pos].float())               # (b, d_model)
        u, T = self.n_requests, self.T
        w = self.w.to(self.batches[0][0].device)
        keys = {}
        for layer in layers:
            k = torch.cat(rows_k[layer]).reshape(u, T, -1)                  # (u, T, d_in)
            keys[layer] = torch.einsum("utd,t->du", k, w).contiguous()   # (d_in, u)
        values = None
        if vname is not None:
            values = torch.cat(rows_v).reshape(u, T, -1)[:, 0, :].T.contiguous()   # (d_model, u): plain prompt
        return keys, values


def compute_keys(model, tok, requests, layers: Sequence[int] | int, templates: Sequence[str] = ("{}",), *,
                 weighting: str = "memit", batch_size: int = 64) -> dict[int, torch.Tensor]:
    """``{layer: K1}`` with ``K1 (d_in, u)`` the template-averaged key of each request (columns)."""
    if isinstance(layers, int):
        layers = [layers]
    keys, _ = keys_and_values(model, tok, requests, layers, templates, weighting=weighting, batch_size=batch_size)
    return keys
