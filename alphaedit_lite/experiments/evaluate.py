"""Evaluation metrics of the AlphaEdit / MEMIT / ROME papers for CounterFact- and zsRE-style edits.

Everything rests on one primitive, ``target_logprobs``: the log-probability of a target
continuation ``o`` (tokenized with a leading space, ``" Rome"``) after a prompt ``p``,

    log P(o | p) = Σ_j log softmax(f(p ⊕ o_<j))[o_j]          (sum over the target's tokens j)

computed in padded batches, one forward pass per batch, without gradients. From it:

CounterFact metrics (defined in ROME, Meng et al. 2022; used unchanged by MEMIT and AlphaEdit), per record:
- **Efficacy**: 1 if ``target_new`` is more likely than ``target_true`` on the rewrite prompt.
- **Generalization**: share of paraphrase prompts on which ``target_new`` is more likely.
- **Specificity**: share of neighbourhood prompts on which ``target_true`` is still more likely.
  "More likely" compares the *mean per-token* negative log-likelihood, exactly as the reference
  code does (``test_batch_prediction`` in ROME/MEMIT/AlphaEdit ``eval_utils_counterfact.py``
  divides the summed NLL by the target's token count); ``compare="sum"`` compares whole-sequence
  log-probabilities instead.
- **Magnitudes** (secondary): ``P(new) − P(true)`` on rewrite and paraphrase prompts and
  ``P(true) − P(new)`` on neighbourhood prompts, with ``P = exp(−mean NLL)`` (the reference
  ``summarize.py``; ``exp(sum log-prob)`` under ``compare="sum"``).
- **Fluency**: weighted bi-/tri-gram entropy of greedy generations (see ``ngram_entropy``).
- **Score**: harmonic mean of efficacy, generalization and specificity (MEMIT ``summarize.py``).

zsRE (MEMIT ``eval_utils_zsre.py``): token-level top-1 accuracy under teacher forcing — the share
of target tokens that are the model's argmax given the prompt and the previous target tokens —
of ``target_new`` on the rewrite prompt (Efficacy) and the paraphrase (Generalization), and of
the neighbourhood question's own answer (Specificity).

Summaries report means in percent, as the papers' tables do (Fluency ×100 too, e.g. 622 ≙ 6.22
bits, which is how MEMIT's ``summarize.py`` scales everything but time).
"""
from __future__ import annotations

import inspect
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from alphaedit_lite.locate.requests import EditRequest, as_requests
from alphaedit_lite.model.tokens import pad_id

__all__ = [
    "TargetScores",
    "encode_pair",
    "target_logprobs",
    "generate_texts",
    "ngram_entropy",
    "fluency",
    "counterfact_metrics",
    "zsre_metrics",
    "evaluate_requests",
    "summarize",
    "token_nll",
    "RATE_METRICS",
]

#: Metrics that are rates or probability differences (reported ×100 in summaries).
RATE_METRICS = (
    "efficacy", "generalization", "specificity",
    "efficacy_magnitude", "generalization_magnitude", "specificity_magnitude",
)


# ----------------------------------------------------------------------------------------------
# Tokenization of (prompt, target) pairs
# ----------------------------------------------------------------------------------------------
def _ids(enc: Any) -> list[int]:
    ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
    return list(ids)


def encode_pair(tok, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` (with the tokenizer's own special tokens, e.g. BOS) and of the
    target continuation ``" " + target``.

    The target ids are taken from the joint tokenization of ``prompt + " " + target`` whenever
    the prompt's ids are a prefix of it (true for byte-level BPE such as GPT-2/SmolLM2, for
    SentencePiece/Llama, and for word-level tokenizers), so the target is scored exactly as the
    model would see it in running text; otherwise ``tok(" " + target)`` without special tokens
    is appended. Assumes the tokenizer adds at most a prefix (BOS), never a trailing EOS.
    """
    if not isinstance(prompt, str) or not isinstance(target, str):
        raise TypeError(f"prompt and target must be strings, got {type(prompt).__name__} and {type(target).__name__}.")
    target = target.strip()
    if not target:
        raise ValueError(f"empty target after prompt {prompt!r}; give a non-empty answer string.")
    p_ids = _ids(tok(prompt))
    if not p_ids:
        raise ValueError(
            f"the prompt {prompt!r} tokenizes to nothing and the tokenizer adds no BOS token, so nothing "
            f"predicts the first target token; use a non-empty prompt."
        )
    joint = _ids(tok(prompt + " " + target))
    if len(joint) > len(p_ids) and joint[: len(p_ids)] == p_ids:
        return p_ids, joint[len(p_ids):]
    t_ids = _ids(tok(" " + target, add_special_tokens=False))
    if not t_ids:
        raise ValueError(f"the target {target!r} tokenizes to nothing; check the tokenizer.")
    return p_ids, t_ids


# ----------------------------------------------------------------------------------------------
# The primitive
# ----------------------------------------------------------------------------------------------
@dataclass
class TargetScores:
    """Scores of ``n`` (prompt, target) pairs, on the CPU.

    - ``sum``: (n,) float64, Σ_j log P(o_j | p, o_<j)  (log-probability of the whole target)
    - ``mean``: (n,) float64, ``sum / n_tokens``  (minus the mean per-token NLL the papers compare)
    - ``n_tokens``: (n,) int64, number of target tokens
    - ``token_logprobs``: list of n tensors (T_i,), per-token log-probabilities
    - ``token_correct``: list of n bool tensors (T_i,), whether each target token is the argmax
      under teacher forcing (zsRE accuracy)
    """

    sum: torch.Tensor
    mean: torch.Tensor
    n_tokens: torch.Tensor
    token_logprobs: list[torch.Tensor]
    token_correct: list[torch.Tensor]

    def __len__(self) -> int:
        return int(self.sum.shape[0])


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # a parameter-less wrapper
        return torch.device("cpu")


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _eval_mode:
    """Put the model in eval mode (no dropout) and restore its training flag afterwards."""

    def __init__(self, model):
        self.model, self.was_training = model, bool(getattr(model, "training", False))

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()
        return False


def _pad_batch(seqs: Sequence[list[int]], pad_id: int, side: str, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad token-id lists to one tensor. Returns ids (B, L), mask (B, L), positions (B, L), offsets."""
    L = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    offsets = []
    for b, s in enumerate(seqs):
        off = L - len(s) if side == "left" else 0
        ids[b, off: off + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, off: off + len(s)] = 1
        offsets.append(off)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L): 0..len-1 on real tokens, whichever side is padded
    return ids.to(device), mask.to(device), pos.to(device), offsets


def _plan_jobs(pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[list[int], int, list[int]]]:
    """Group pairs into forward-pass jobs that share a prompt.

    A job is ``(sequence, P, members)``: the sequence is ``prompt + target[:-1]`` of its longest
    member (the last target token is never an input), ``P`` the prompt length. A pair joins a job
    with the same prompt whose sequence continues with the pair's target minus its last token, so
    e.g. every one-token target of a prompt is read off the same forward pass.
    """
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (p, _) in enumerate(pairs):
        by_prompt.setdefault(tuple(p), []).append(i)
    jobs: list[tuple[list[int], int, list[int]]] = []
    for p, members in by_prompt.items():
        P = len(p)
        mine: list[tuple[list[int], int, list[int]]] = []
        for i in sorted(members, key=lambda i: -len(pairs[i][1])):
            need = pairs[i][1][:-1]
            for seq, _, ms in mine:
                if seq[P: P + len(need)] == need:
                    ms.append(i)
                    break
            else:
                mine.append((list(p) + need, P, [i]))
        jobs.extend(mine)
    return jobs


def target_logprobs(model, tok, prompts: Sequence[str] | str, targets: Sequence[str] | str,
                    batch_size: int = 32, padding_side: str = "left") -> TargetScores:
    """Log-probability of each ``targets[i]`` (as ``" " + target``) after ``prompts[i]``.

    Teacher forcing: target token j is scored by the logits at the position of the token before
    it, ``log softmax(logits[P + j − 1])[o_j]`` with ``P`` the prompt length. Pairs that share a
    prompt share a forward pass where possible (all one-token targets of a prompt cost one
    sequence), sequences are sorted by length and run in padded batches of up to ``batch_size``,
    one forward pass per batch, on the model's own device, under ``torch.no_grad()`` and in eval
    mode. Padding is done here, not by the tokenizer: ``padding_side="left"`` (default; lets the
    model compute logits for the last few positions only, via ``logits_to_keep``, when it
    supports that) or ``"right"``; position ids come from the attention mask, so both sides give
    the unbatched result. A single string for ``prompts`` or ``targets`` is broadcast.
    """
    if isinstance(prompts, str):
        prompts = [prompts] * (1 if isinstance(targets, str) else len(targets))
    if isinstance(targets, str):
        targets = [targets] * len(prompts)
    prompts, targets = list(prompts), list(targets)
    if len(prompts) != len(targets):
        raise ValueError(f"got {len(prompts)} prompts and {len(targets)} targets; give one target per prompt.")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    n = len(prompts)
    if n == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return TargetScores(empty, empty.clone(), torch.zeros(0, dtype=torch.long), [], [])

    pairs = [encode_pair(tok, p, t) for p, t in zip(prompts, targets)]
    jobs = sorted(_plan_jobs(pairs), key=lambda j: -len(j[0]))
    device = _model_device(model)
    use_pos = _accepts(model, "position_ids")
    if padding_side == "left" and not use_pos:
        raise ValueError("this model's forward() takes no position_ids, so left padding would shift positions; "
                         "use padding_side='right'.")
    keep_tail = padding_side == "left" and _accepts(model, "logits_to_keep")
    pad = pad_id(tok)
    tok_lp: list[torch.Tensor | None] = [None] * n
    tok_ok: list[torch.Tensor | None] = [None] * n

    with torch.no_grad(), _eval_mode(model):
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start: start + batch_size]
            ids, mask, pos, offsets = _pad_batch([j[0] for j in batch], pad, padding_side, device)
            L = ids.shape[1]
            kwargs = {"input_ids": ids, "attention_mask": mask}
            if use_pos:
                kwargs["position_ids"] = pos
            # Left padding aligns every sequence's end at L-1: only its last len(seq)-P+1 rows are read.
            k = max(len(seq) - P + 1 for seq, P, _ in batch) if keep_tail else L
            if keep_tail:
                kwargs["logits_to_keep"] = k
            logits = model(**kwargs).logits  # (B, k, V): rows L-k .. L-1 of the padded batch
            for b, (seq, P, members) in enumerate(batch):
                for i in members:
                    T = len(pairs[i][1])
                    rows = torch.arange(P - 1, P + T - 1, device=device) + offsets[b] - (L - k)  # (T,)
                    lp = torch.log_softmax(logits[b, rows].float(), dim=-1)  # (T, V)
                    tgt = torch.tensor(pairs[i][1], device=device)  # (T,)
                    tok_lp[i] = lp.gather(1, tgt[:, None])[:, 0].double().cpu()  # (T,)
                    tok_ok[i] = (lp.argmax(-1) == tgt).cpu()  # (T,)

    sums = torch.stack([t.sum() for t in tok_lp])  # (n,)
    counts = torch.tensor([len(t) for t in tok_lp], dtype=torch.long)
    return TargetScores(sums, sums / counts, counts, tok_lp, tok_ok)  # type: ignore[arg-type]


@torch.no_grad()
def token_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token negative log-likelihood (nats) of right-padded rows, from each row's second token on.

    ``exp`` of it is the perplexity. Used for "is the model still intact" figures: the held-out
    WikiText-2 perplexity of an edited SmolLM2 and the organisms' held-out background text.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"token_nll needs (rows, length ≥ 2) ids and an equal mask, got {tuple(input_ids.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    dev = _model_device(model)
    total, count = 0.0, 0.0
    with _eval_mode(model):
        for i in range(0, input_ids.shape[0], batch_size):
            x, m = input_ids[i:i + batch_size].to(dev), attention_mask[i:i + batch_size].to(dev)
            logits = model(input_ids=x, attention_mask=m).logits[:, :-1].float()      # (b, T-1, V)
            lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0]     # (b, T-1)
            w = m[:, 1:].float() * m[:, :-1].float()
            total += float(-(lp * w).sum())
            count += float(w.sum())
    if count == 0:
        raise ValueError("token_nll got rows without two consecutive real tokens")
    return total / count


# ----------------------------------------------------------------------------------------------
# Generation and fluency
# ----------------------------------------------------------------------------------------------
def generate_texts(model, tok, prompts: Sequence[str], max_new_tokens: int = 100,
                   batch_size: int = 64, include_prompt: bool = True) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches, fixed ``max_new_tokens``).

    Batches of 64 decode 64 CounterFact generation prompts on SmolLM2 2.1x faster than batches of 16
    (2 CPU threads, the same 64 texts; benchmarks/README.md): each step's cost is mostly overhead.

    Returns prompt + continuation (``include_prompt=True``, as ROME's ``generate_fast`` does) or
    the continuation only. ROME samples with top-k=5 and caps the total length at 100 tokens; the
    kit decodes greedily so that results are reproducible.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    device = _model_device(model)
    pad = pad_id(tok)
    eos = getattr(tok, "eos_token_id", None)
    # A fresh config, so the model's own defaults (sampling, repetition penalty, ...) do not apply.
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=eos)
    out: list[str] = []
    with torch.no_grad(), _eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start: start + batch_size])
            seqs = [_ids(tok(p)) for p in chunk]
            if any(len(s) == 0 for s in seqs):
                raise ValueError("a generation prompt tokenizes to nothing; use non-empty prompts.")
            ids, mask, _, _ = _pad_batch(seqs, pad, "left", device)
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new = gen[:, ids.shape[1]:]  # (B, ≤ max_new_tokens)
            for b, p in enumerate(chunk):
                cont = tok.decode(new[b].tolist(), skip_special_tokens=True)
                out.append(p + cont if include_prompt else cont)
    return out


_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def _words(text: str) -> list[str]:
    """Word and punctuation tokens (a dependency-free stand-in for ``nltk.word_tokenize``)."""
    return _WORD.findall(text)


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted n-gram entropy of one text, in bits, as ROME defines it.

    For each n, ``H_n = −Σ f log2 f`` over the relative frequencies ``f`` of the text's word
    n-grams; the result is the arithmetic mean of ``w_n · H_n``. With ROME's defaults
    (``compute_n_gram_entropy`` in ``experiments/py/eval_utils_counterfact.py`` of
    kmeng01/rome, copied unchanged into MEMIT and AlphaEdit: ``ns=[2, 3]``,
    ``weights=[2/3, 4/3]``, ``agg="arith"``) that is ``(2/3·H2 + 4/3·H3)/2 = H2/3 + 2·H3/3``.
    (The weights are 2/3 and 4/3, not 2/18 and 4/18.) A text with no n-grams of some order
    contributes 0 for it. Words are split by a regex instead of ``nltk.word_tokenize``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}.")
    if len(ns) != len(weights):
        raise ValueError(f"{len(ns)} n-gram orders but {len(weights)} weights; give one weight per order.")
    words = _words(text)
    terms = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        h = 0.0
        for c in counts.values():
            f = c / total
            h -= f * math.log2(f)
        terms.append(w * h)
    return float(np.mean(terms))


def fluency(texts: Iterable[str]) -> float:
    """Mean ``ngram_entropy`` over texts (ROME's ``n_gram_entropy`` with ``agg="arith"``)."""
    vals = [ngram_entropy(t) for t in texts]
    if not vals:
        raise ValueError("fluency needs at least one text.")
    return float(np.mean(vals))


_fluency_of = fluency  # evaluate_requests has a parameter named ``fluency``


# ----------------------------------------------------------------------------------------------
# Per-record metrics
# ----------------------------------------------------------------------------------------------
def _style(r: EditRequest, style: str) -> str:
    if style == "auto":
        return "zsre" if (r.neighborhood_targets is not None or r.target_true is None) else "counterfact"
    if style == "counterfact" and r.target_true is None:
        raise ValueError(f"request {r.label} has no target_true, so CounterFact metrics are undefined; use style='zsre'.")
    return style


def _score(s: TargetScores, i: int, compare: str) -> float:
    return float(s.mean[i] if compare == "mean" else s.sum[i])


def _nanmean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def counterfact_metrics(new: Sequence[float], true: Sequence[float], kinds: Sequence[str]) -> dict:
    """Efficacy/generalization/specificity (+ magnitudes) of one record from its scores.

    ``new[k]``, ``true[k]`` are comparable log-scores (mean or sum log-prob) of ``target_new`` and
    ``target_true`` on prompt k; ``kinds[k]`` is ``"rewrite"``, ``"paraphrase"`` or
    ``"neighborhood"``. Probabilities for the magnitudes are ``exp(score)``.
    """
    by: dict[str, list[tuple[float, float]]] = {"rewrite": [], "paraphrase": [], "neighborhood": []}
    for a, b, k in zip(new, true, kinds):
        by[k].append((a, b))
    out = {
        "efficacy": _nanmean([float(a > b) for a, b in by["rewrite"]]),
        "generalization": _nanmean([float(a > b) for a, b in by["paraphrase"]]),
        "specificity": _nanmean([float(b > a) for a, b in by["neighborhood"]]),
        "efficacy_magnitude": _nanmean([math.exp(a) - math.exp(b) for a, b in by["rewrite"]]),
        "generalization_magnitude": _nanmean([math.exp(a) - math.exp(b) for a, b in by["paraphrase"]]),
        "specificity_magnitude": _nanmean([math.exp(b) - math.exp(a) for a, b in by["neighborhood"]]),
    }
    return out


def zsre_metrics(correct: Sequence[torch.Tensor], kinds: Sequence[str]) -> dict:
    """Token-level top-1 accuracies of one zsRE-style record (tokens pooled per prompt kind)."""
    pooled: dict[str, list[float]] = {"rewrite": [], "paraphrase": [], "neighborhood": []}
    for c, k in zip(correct, kinds):
        pooled[k].extend(c.float().tolist())
    return {"efficacy": _nanmean(pooled["rewrite"]),
            "generalization": _nanmean(pooled["paraphrase"]),
            "specificity": _nanmean(pooled["neighborhood"])}


def evaluate_requests(model, tok, requests, fluency: bool = False, batch_size: int = 32,
                      compare: str = "mean", style: str = "auto", max_new_tokens: int = 100,
                      keep_texts: bool = False) -> dict:
    """Evaluate ``requests`` (EditRequests or ROME-style dicts) on ``model``.

    All (prompt, target) pairs of all records go through ``target_logprobs`` together, so the
    cost is about ``#pairs / batch_size`` forward passes. ``style="auto"`` uses the CounterFact
    metrics for requests with a ``target_true`` and no ``neighborhood_targets``, and the zsRE
    token accuracies otherwise (``"counterfact"``/``"zsre"`` force one). ``compare`` is ``"mean"``
    (per-token NLL, as the papers' code) or ``"sum"``. ``fluency=True`` also generates greedily
    from each record's ``generation_prompts`` and reports the n-gram entropy.

    Returns ``{"rows": [one dict per record], "summary": summarize(rows)}``; rows hold
    ``case_id``, ``subject``, ``style`` and metric values in [0, 1] (fluency in bits).
    """
    if compare not in ("mean", "sum"):
        raise ValueError(f"compare must be 'mean' or 'sum', got {compare!r}.")
    if style not in ("auto", "counterfact", "zsre"):
        raise ValueError(f"style must be 'auto', 'counterfact' or 'zsre', got {style!r}.")
    reqs = as_requests(requests)
    if not reqs:
        raise ValueError("no requests to evaluate.")

    # Flatten every (prompt, target) pair; remember where each record's pairs are.
    prompts: list[str] = []
    targets: list[str] = []
    plan = []  # per record: (style, [(kind, idx_new, idx_true or None)])
    for r in reqs:
        st = _style(r, style)
        items = []
        kinds = [("rewrite", r.filled_prompt)] + [("paraphrase", p) for p in r.paraphrase_prompts] + \
                [("neighborhood", p) for p in r.neighborhood_prompts]
        for j, (kind, p) in enumerate(kinds):
            if st == "counterfact":
                prompts += [p, p]
                targets += [r.target_new, r.target_true]
                items.append((kind, len(prompts) - 2, len(prompts) - 1))
            else:
                if kind == "neighborhood":
                    if r.neighborhood_targets is None:
                        continue  # no answer to check: specificity stays NaN
                    tgt = r.neighborhood_targets[j - 1 - len(r.paraphrase_prompts)]
                else:
                    tgt = r.target_new
                prompts.append(p)
                targets.append(tgt)
                items.append((kind, len(prompts) - 1, None))
        plan.append((st, items))

    scores = target_logprobs(model, tok, prompts, targets, batch_size=batch_size)

    rows = []
    for r, (st, items) in zip(reqs, plan):
        row: dict[str, Any] = {"case_id": r.case_id, "subject": r.subject, "style": st}
        if st == "counterfact":
            new = [_score(scores, a, compare) for _, a, _ in items]
            true = [_score(scores, b, compare) for _, _, b in items]
            row.update(counterfact_metrics(new, true, [k for k, _, _ in items]))
            row["rewrite_logprob_new"], row["rewrite_logprob_true"] = new[0], true[0]
        else:
            row.update(zsre_metrics([scores.token_correct[a] for _, a, _ in items], [k for k, _, _ in items]))
        rows.append(row)

    if fluency:
        gen_prompts = [p for r in reqs for p in r.generation_prompts]
        texts = generate_texts(model, tok, gen_prompts, max_new_tokens=max_new_tokens) if gen_prompts else []
        k = 0
        for r, row in zip(reqs, rows):
            mine = texts[k: k + len(r.generation_prompts)]
            k += len(r.generation_prompts)
            row["fluency"] = _fluency_of(mine) if mine else float("nan")
            if keep_texts:
                row["texts"] = mine
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: Sequence[dict]) -> dict:
    """Means over records, in percent as in the papers' tables.

    Rates and magnitudes are ×100; ``fluency`` is ×100 too (MEMIT's ``summarize.py`` scales the
    entropy that way, which is why tables show Fluency ≈ 600). NaNs (e.g. a record without
    paraphrases) are left out of each mean. ``score`` is the harmonic mean of efficacy,
    generalization and specificity. Mixing CounterFact and zsRE rows is refused.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("summarize needs at least one row.")
    styles = {r.get("style", "counterfact") for r in rows}
    if len(styles) > 1:
        raise ValueError(f"rows mix metric styles {sorted(styles)}; summarize CounterFact and zsRE rows separately.")
    out: dict[str, Any] = {"n": len(rows), "style": styles.pop()}
    keys = [k for k in (*RATE_METRICS, "fluency") if any(k in r for r in rows)]
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r and r[k] is not None], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[k] = float(vals.mean() * 100) if vals.size else float("nan")
    parts = [out.get(k, float("nan")) for k in ("efficacy", "generalization", "specificity")]
    if all(np.isfinite(parts)):
        out["score"] = 0.0 if min(parts) <= 0 else float(len(parts) / sum(1 / p for p in parts))
    return out
