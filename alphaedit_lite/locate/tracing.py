"""Causal tracing: which hidden states carry a fact from the subject to the answer?

ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", Sec. 2.1) measures the
*indirect effect* of every hidden state on a factual prediction with three runs of the model:

1. **clean run** on the prompt ("The Eiffel Tower is located in the city of"): record every
   layer's decoder-block output ("hidden"), MLP output ("mlp") and attention output ("attn") at
   every position; ``p_clean`` = p(answer) at the last position.
2. **corrupted run**: add Gaussian noise of std ``noise × std(embedding matrix)`` (ROME: 3×) to the
   token embeddings of the SUBJECT's tokens only; the model mostly forgets the fact: ``p_corrupt``.
3. **corrupted-with-restoration runs**: the corrupted input again, with ONE state (kind, layer l,
   position t) set back to its clean value; ``p_restored``. The indirect effect is
   ``IE = p_restored − p_corrupt``. States with a large IE carry the fact; ROME finds the MLPs at
   the subject's last token in the middle layers (the layers MEMIT/AlphaEdit edit).

All restorations of one trace run as rows of a few batched forward passes (row r restores its
own (kind, l, t)); every row shares ONE noise sample (a seeded ``torch.Generator``), so the rows
differ only in what they restore. ``window > 1`` restores the MLP/attention outputs of a window
of layers centred on l at once (ROME's Fig. 1 uses windows of 10 in GPT-2 XL).

    from alphaedit_lite.locate.tracing import trace, average_indirect_effect
    r = trace(model, tok, "{} is located in the city of", "The Eiffel Tower")
    r.effects["mlp"]          # (n_layers, seq_len) p_restored;  r.indirect_effect("mlp") = IE
    aie = average_indirect_effect([r, ...], "mlp")   # ROME's per-layer curves, 5 position groups
    alphaedit_lite.plots.viz.plot_trace(r)                  # the three heatmaps of ROME's Fig. 1
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from alphaedit_lite.model.hooks import TraceDict
from alphaedit_lite.locate.keys import locate_subject
from alphaedit_lite.model.arch import arch_spec, check_layers, embed, num_layers

__all__ = ["KINDS", "GROUPS", "TraceResult", "trace", "average_indirect_effect", "patch_subject_state",
           "facts_the_model_knows"]

#: What can be restored: the decoder block's output, its MLP's output, its attention's output.
KINDS = ("hidden", "mlp", "attn")
#: Position groups of ROME's average-indirect-effect figures (Fig. 2), in plotting order.
GROUPS = ("subject_first", "subject_middle", "subject_last", "further", "last")


@dataclass
class TraceResult:
    """One causal trace. ``effects[kind][l, t]`` is **p_restored** (not the IE) for restoring
    ``kind``'s output of layer ``l`` at token ``t``; ``indirect_effect(kind)`` subtracts p_corrupt."""

    tokens: list[str]                 # decoded tokens of the prompt (BOS included when the tokenizer adds it)
    subject_range: tuple[int, int]    # (first, last) token index of the subject, inclusive
    answer: str
    answer_id: int
    p_clean: float
    p_corrupt: float
    effects: dict[str, torch.Tensor]  # kind -> (n_layers, seq_len) p_restored, float32 on CPU
    window: int = 1
    prompt: str = ""
    subject: str = ""
    meta: dict = field(default_factory=dict)

    def indirect_effect(self, kind: str) -> torch.Tensor:
        """(n_layers, seq_len) IE = p_restored − p_corrupt of ``kind``."""
        return self.effects[_check_kind(kind, self.effects)] - self.p_corrupt

    @property
    def indirect_effects(self) -> dict[str, torch.Tensor]:
        """kind -> (n_layers, seq_len) IE."""
        return {k: self.indirect_effect(k) for k in self.effects}

    def grouped(self, kind: str) -> torch.Tensor:
        """(len(GROUPS), n_layers) IE averaged over the token positions of each of :data:`GROUPS`.

        subject_middle is NaN when the subject has ≤ 2 tokens; further is NaN when the subject
        ends right before the last token (or at it).
        """
        ie = self.indirect_effect(kind)               # (L, T)
        first, last = self.subject_range
        T = ie.shape[1]
        spans = {"subject_first": range(first, first + 1), "subject_middle": range(first + 1, last),
                 "subject_last": range(last, last + 1), "further": range(last + 1, T - 1),
                 "last": range(T - 1, T)}
        nan = torch.full((ie.shape[0],), math.nan)
        return torch.stack([ie[:, list(spans[g])].mean(1) if len(spans[g]) else nan for g in GROUPS])


def _check_kind(kind: str, available) -> str:
    if kind not in available:
        raise ValueError(f"kind {kind!r} was not traced; available: {', '.join(available)}")
    return kind


def _module_names(model, kind: str) -> list[str]:
    """Dotted names of the modules whose output ``kind`` restores, one per layer."""
    spec = arch_spec(model)
    name = {"hidden": spec.layer_name, "mlp": spec.mlp_name, "attn": spec.attn_name}[kind]
    return [name(i) for i in range(num_layers(model))]


def _subject_tokens(tok, prompt: str, subject: str) -> tuple[str, int]:
    """(text with the subject in it, character where the subject starts), or a clear ValueError."""
    if not isinstance(prompt, str) or not isinstance(subject, str):
        raise TypeError(f"prompt and subject must be strings, got {type(prompt).__name__} and "
                        f"{type(subject).__name__}")
    if not subject.strip():
        raise ValueError("subject is empty; give the subject's text, e.g. 'The Eiffel Tower'")
    if "{}" in prompt:
        start = prompt.index("{}")
        return prompt[:start] + subject + prompt[start + 2:], start
    start = prompt.find(subject)
    if start < 0:
        raise ValueError(f"the subject {subject!r} does not occur in the prompt {prompt!r}; write the subject "
                         "into the prompt or put '{}' where it goes")
    return prompt, start


def _first_subject_token(tok, text: str, start: int, subject_last: int) -> int:
    """Index of the token holding the subject's first character (offsets when the tokenizer has them)."""
    idx = None
    try:
        idx = tok(text).char_to_token(start)
    except (ValueError, AttributeError, NotImplementedError):
        idx = None
    if idx is None:  # slow tokenizer: count the tokens before the subject (a BPE space joins the subject)
        prefix = text[:start].rstrip()
        idx = len(tok(prefix).input_ids) if prefix else len(tok("").input_ids)
    return max(0, min(int(idx), subject_last))


def _answer_token(tok, answer: str) -> int:
    """The answer's first token, tokenised with a leading space (as the kit's targets are)."""
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer must be a non-empty word like 'Paris' (or None for the model's top-1 "
                         f"token), got {answer!r}")
    ids = tok(" " + answer.strip(), add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the answer {answer!r} tokenises to no tokens; give a word the tokenizer knows")
    return int(ids[0])


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def trace(model, tok, prompt: str, subject: str, answer: str | None = None, *,
          kinds: Sequence[str] = KINDS, noise: float = 3.0, seed: int = 0, window: int = 1,
          batch_size: int = 256) -> TraceResult:
    """Causal trace of one prompt (ROME Sec. 2.1); see the module docstring.

    prompt: contains ``"{}"`` (the subject is put there) or the subject's text itself.
    answer: the expected next word; its FIRST token (tokenised with a leading space) is scored.
        None: the model's clean top-1 token.
    kinds: any of "hidden", "mlp", "attn". noise: noise std in units of std(embedding matrix).
    seed: seeds the noise (same seed → same result). window: number of consecutive MLP/attention
        layers restored together, centred on l (ROME's window; hidden states always use 1).
    batch_size: restoration rows per forward pass (lower it if memory is short).
    """
    kinds = tuple(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {kinds}")
    if not (isinstance(window, int) and window >= 1) or not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"window and batch_size must be positive ints, got {window!r} and {batch_size!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be ≥ 0 (ROME uses 3.0), got {noise!r}")
    text, start = _subject_tokens(tok, prompt, subject)
    answer_id = None if answer is None else _answer_token(tok, answer)
    sent = locate_subject(tok, text, subject, subject_start=start, where="trace")
    ids, last = sent.ids, sent.subject_last
    first = _first_subject_token(tok, text, start, last)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)    # (1, T)
    T, L = len(ids), num_layers(model)
    names = {k: _module_names(model, k) for k in kinds}
    all_names = [n for k in kinds for n in names[k]]
    logits_kw = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}

    was_training = model.training
    model.eval()
    try:
        # 1. clean run: every state of every traced module at every position
        with torch.no_grad(), TraceDict(model, all_names, clone=True) as tr:
            probs = torch.softmax(model(input_ids=input_ids, **logits_kw).logits[0, -1].float(), -1)  # (V,)
        clean = {n: tr[n].output[0] for n in all_names}  # name -> (T, d)

        if answer is None:
            answer_id = int(probs.argmax())
            answer = tok.decode([answer_id]).strip()
        p_clean = float(probs[answer_id])

        # 2. one noise sample for the subject's tokens, shared by every row
        E = embed(model).weight.detach()
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(last - first + 1, E.shape[1], generator=gen)  # (n_subject_tokens, d)
        eps = (eps * noise * float(E.float().std())).to(device=device, dtype=E.dtype)

        def corrupt(out, name):  # out: (B, T, d) token embeddings
            out = out.clone()
            out[:, first:last + 1] += eps
            return out

        # 3. rows: None = the plain corrupted run; (kind, l, t) = restore that state
        rows = [None] + [(k, layer, t) for k in kinds for layer in range(L) for t in range(T)]
        p = torch.empty(len(rows))  # p(answer) of every row
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            # module name -> (row indices, positions) to restore in this forward pass
            where: dict[str, tuple[list[int], list[int]]] = {n: ([], []) for n in all_names}
            for r, row in enumerate(chunk):
                if row is None:
                    continue
                k, layer, t = row
                w = 1 if k == "hidden" else window
                for j in range(max(0, layer - w // 2), min(L, layer - w // 2 + w)):  # window centred on layer
                    where[names[k][j]][0].append(r)
                    where[names[k][j]][1].append(t)

            def restore(out, name):  # out: (B, T, d); put the clean state back in the listed rows
                rs, ts = where[name]
                if not rs:
                    return None
                out = out.clone()
                out[rs, ts] = clean[name][ts].to(out.dtype)
                return out

            batch = input_ids.expand(len(chunk), T)
            with torch.no_grad(), TraceDict(model, [arch_spec(model).embed], edit_output=corrupt,
                                            retain_output=False), \
                    TraceDict(model, all_names, edit_output=restore, retain_output=False):
                logits = model(input_ids=batch, **logits_kw).logits[:, -1].float()  # (B, V)
            p[lo:lo + len(chunk)] = torch.softmax(logits, -1)[:, answer_id].cpu()
    finally:
        model.train(was_training)

    effects = {k: p[1 + i * L * T: 1 + (i + 1) * L * T].reshape(L, T) for i, k in enumerate(kinds)}
    return TraceResult(tokens=[tok.decode([i]) for i in ids], subject_range=(first, last), answer=answer,
                       answer_id=answer_id, p_clean=p_clean, p_corrupt=float(p[0]), effects=effects,
                       window=window, prompt=text, subject=subject,
                       meta={"noise": noise, "seed": seed, "kinds": kinds})


def facts_the_model_knows(model, tok, facts, n: int, max_tokens: int | None = None) -> list[tuple[str, str, str]]:
    """The first ``n`` facts whose answer's first token is the model's top-1 next token.

    ``facts``: (prompt, subject, answer) triples or objects with ``.prompt``, ``.subject`` and
    ``.attribute`` (ROME's known facts, :func:`alphaedit_lite.locate.requests.load_knowns`). Causal
    tracing only makes sense on facts the model knows: ROME traces its known-facts set for this
    reason. ``max_tokens``: skip prompts longer than this many tokens (a trace of a T-token prompt
    runs about 3·T·n_layers restorations of T tokens each, so its cost grows as T²; small modes use
    this to stay quick). Returns (prompt, subject, answer) triples, fewer than ``n`` if the facts
    run out.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 (how many known facts to return), got {n}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be None or >= 1 (the longest prompt to keep, in tokens), got {max_tokens}")
    device = next(model.parameters()).device
    out = []
    for f in facts:
        prompt, subject, answer = f if isinstance(f, tuple) else (f.prompt, f.subject, f.attribute)
        ids = tok(prompt, return_tensors="pt").input_ids.to(device)
        if max_tokens is not None and ids.shape[1] > max_tokens:
            continue
        with torch.no_grad():
            top = int(model(input_ids=ids).logits[0, -1].argmax())
        if top == _answer_token(tok, answer):
            out.append((prompt, subject, answer.strip()))
            if len(out) == n:
                break
    return out


def average_indirect_effect(results: Sequence[TraceResult], kind: str) -> dict:
    """ROME's average indirect effect (AIE, Fig. 2) of ``kind`` over several traces.

    Returns a dict with ``"aie"``: (len(GROUPS), n_layers) tensor, the mean over traces of the IE
    averaged within each position group (NaN-aware: a trace without inner subject tokens does not
    count for "subject_middle"); ``"groups"``: the group names (:data:`GROUPS`, row order);
    ``"kind"``; ``"n_traces"``; and the mean ``"p_clean"`` / ``"p_corrupt"``.
    """
    results = list(results)
    if not results:
        raise ValueError("average_indirect_effect needs at least one TraceResult")
    per = torch.stack([r.grouped(kind) for r in results])  # (n, G, L)
    return {"aie": per.nanmean(0), "groups": list(GROUPS), "kind": kind, "n_traces": len(results),
            "p_clean": sum(r.p_clean for r in results) / len(results),
            "p_corrupt": sum(r.p_corrupt for r in results) / len(results)}


# ------------------------------------------------------------------------------------------------
# Interchange patching: does the answer follow the subject's hidden state?
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def patch_subject_state(model, tok, pairs: Sequence[tuple[str, str, str, str]], layer: int) -> dict:
    """Swap the subject's-last-token state at one layer between two prompts; count changed answers.

    ``pairs``: ``(prompt_a, subject_a, prompt_b, subject_b)`` with the subjects written into the
    prompts. For each pair, the output of block ``layer`` at subject a's last token in prompt a is
    replaced by the same state from prompt b (its subject's last token), and the top-1 answer of
    prompt a is compared with a's and b's clean answers. Returns ``{"changed": share of answers
    that differ from a's clean answer, "became_b": share equal to b's clean answer, "n": pairs}``.
    If the model recalls facts from the subject's position (ROME's picture), ``became_b`` is high
    at the early layers that build the subject's representation.
    """
    check_layers(model, layer, what="layer")
    if not pairs:
        raise ValueError("patch_subject_state got no pairs")
    block = arch_spec(model).layer_name(layer)
    dev = next(model.parameters()).device
    changed = became = 0
    for i, (pa, sa, pb, sb) in enumerate(pairs):
        a = locate_subject(tok, pa, sa, where=f"pair #{i} (a)")
        b = locate_subject(tok, pb, sb, where=f"pair #{i} (b)")
        ids_a, ids_b = torch.tensor([a.ids], device=dev), torch.tensor([b.ids], device=dev)
        clean_a = int(model(input_ids=ids_a).logits[0, -1].argmax())
        with TraceDict(model, [block], retain_output=True) as tr:
            clean_b = int(model(input_ids=ids_b).logits[0, -1].argmax())
        donor = tr[block].output[0, b.subject_last].clone()            # (d,)

        def put(out, name, _pos=a.subject_last, _v=donor):              # out: (1, T, d)
            out = out.clone()
            out[0, _pos] = _v
            return out
        with TraceDict(model, [block], edit_output=put, retain_output=False):
            patched = int(model(input_ids=ids_a).logits[0, -1].argmax())
        changed += patched != clean_a
        became += patched == clean_b and clean_b != clean_a
    return {"changed": changed / len(pairs), "became_b": became / len(pairs), "n": len(pairs)}
