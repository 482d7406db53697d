"""What a model says before and after an edit: next-token probabilities, preserved facts, request checks.

Plain functions over a model and a tokenizer (no widgets), used by the edit explorer
(:mod:`alphaedit_lite.widgets.editing`) and by tests: :func:`next_token_probs`,
:func:`top_next_tokens`, :func:`measure_model` (a :class:`ModelView`: top tokens, a greedy
generation, the probabilities of a few preserved facts) and :func:`check_edit_input`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from alphaedit_lite.experiments.evaluate import generate_texts, target_logprobs
from alphaedit_lite.locate.requests import EditRequest

__all__ = ["TokenProb", "next_token_probs", "top_next_tokens", "ModelView", "measure_model", "check_edit_input",
           "DEFAULT_PRESERVED"]


#: Facts most pretrained English models know; their answers should survive a good edit.
DEFAULT_PRESERVED: tuple[tuple[str, str], ...] = (
    ("The capital of France is", "Paris"),
    ("The Colosseum is located in the city of", "Rome"),
    ("Microsoft was founded by", "Bill Gates"),
    ("The mother tongue of Danielle Darrieux is", "French"),
)


# ============================================================================================
# edit explorer: plain functions
# ============================================================================================
def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _prompt_ids(tok, prompt: str) -> list[int]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty; type a sentence the model should continue, e.g. 'The capital of France is'")
    ids = tok(prompt).input_ids
    ids = list(ids[0] if ids and isinstance(ids[0], list) else ids)
    if not ids:
        raise ValueError(f"the prompt {prompt!r} tokenizes to nothing; type some words")
    return ids


@torch.no_grad()
def next_token_probs(model, tok, prompt: str) -> torch.Tensor:
    """The model's next-token distribution after `prompt`: (V,) float32 probabilities on the CPU."""
    ids = torch.tensor([_prompt_ids(tok, prompt)], device=_device(model))   # (1, T)
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids).logits[0, -1]                       # (V,)
    finally:
        model.train(was_training)
    return torch.softmax(logits.float(), dim=-1).cpu()


@dataclass
class TokenProb:
    """One candidate next token: its text (with its leading space, if any), id and probability."""

    token: str
    token_id: int
    prob: float

    @property
    def label(self) -> str:
        return repr(self.token)  # quotes make a leading space visible: ' Paris'


def top_next_tokens(model, tok, prompt: str, k: int = 8, *, probs: torch.Tensor | None = None) -> list[TokenProb]:
    """The `k` most probable next tokens after `prompt`, most probable first.

    `probs` (V,) reuses a distribution from `next_token_probs` instead of running the model.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (how many tokens to list), got {k!r}")
    p = next_token_probs(model, tok, prompt) if probs is None else probs
    vals, idx = torch.topk(p, min(k, p.numel()))
    return [TokenProb(tok.decode([int(i)]), int(i), float(v)) for v, i in zip(vals, idx)]


def _target_tokens(tok, request: EditRequest) -> dict[int, tuple[str, str]]:
    """{first token id of " " + target: (its text, "new" or "true")} for the request's targets."""
    out: dict[int, tuple[str, str]] = {}
    for role, target in (("true", request.target_true), ("new", request.target_new)):
        if target:
            ids = tok(" " + target, add_special_tokens=False).input_ids
            if ids:
                out[int(ids[0])] = (tok.decode([int(ids[0])]), role)
    return out


@dataclass
class ModelView:
    """What the model does on one edit prompt, at one moment (before or after an edit)."""

    prompt: str                      # the filled prompt (subject written in)
    top: list[TokenProb]             # the k most probable next tokens
    probs: torch.Tensor = field(repr=False)   # (V,) next-token distribution, float32, CPU
    generation: str                  # greedy continuation (without the prompt)
    p_new: float                     # P(target_new | prompt), product over the target's tokens
    p_true: float | None             # P(target_true | prompt), or None when no true answer is given
    preserved: list[float]           # P(answer | prompt) for each preserved fact

    def prob_of(self, token_id: int) -> float:
        return float(self.probs[token_id])


def _check_preserved(preserved) -> list[tuple[str, str]]:
    if preserved is None:
        return []
    try:
        items = [tuple(x) for x in preserved]
    except TypeError as exc:
        raise TypeError("preserved_prompts must be a list of (prompt, true answer) pairs, e.g. "
                        "[('The capital of France is', 'Paris')]") from exc
    for i, it in enumerate(items):
        if len(it) != 2 or not all(isinstance(s, str) and s.strip() for s in it):
            raise ValueError(f"preserved_prompts[{i}] = {it!r} must be a (prompt, true answer) pair of non-empty strings")
        if it[0] != it[0].rstrip():
            raise ValueError(f"preserved_prompts[{i}]: the prompt {it[0]!r} ends with whitespace; remove it (the "
                             "answer is appended as ' ' + answer)")
    return items  # type: ignore[return-value]


def measure_model(model, tok, prompt: str, target_new: str, target_true: str | None = None,
                  preserved: Sequence[tuple[str, str]] = (), *, k: int = 8, max_new_tokens: int = 12) -> ModelView:
    """Top-k next tokens, a greedy generation, P(new), P(true) and P(answer) of each preserved fact."""
    preserved = _check_preserved(preserved)
    probs = next_token_probs(model, tok, prompt)
    gen = generate_texts(model, tok, [prompt], max_new_tokens=max_new_tokens, include_prompt=False)[0]
    prompts = [prompt, prompt] + [p for p, _ in preserved]
    targets = [target_new, target_true or target_new] + [a for _, a in preserved]
    lp = target_logprobs(model, tok, prompts, targets).sum.exp().tolist()   # (2 + n_preserved,)
    return ModelView(prompt=prompt, top=top_next_tokens(model, tok, prompt, k, probs=probs), probs=probs,
                     generation=gen, p_new=lp[0], p_true=lp[1] if target_true else None, preserved=lp[2:])


def check_edit_input(subject: str, prompt: str, target_new: str, target_true: str | None = None) -> EditRequest:
    """The EditRequest for typed input, or ValueError with one sentence saying what to fix.

    `prompt` is a template with "{}" once where the subject goes ("{} is located in the city of").
    """
    subject = subject.strip() if isinstance(subject, str) else subject
    target_new = target_new.strip() if isinstance(target_new, str) else target_new
    prompt = prompt.strip() if isinstance(prompt, str) else prompt
    if not isinstance(subject, str) or not subject:
        raise ValueError("the subject is empty: type who or what the fact is about, e.g. 'The Eiffel Tower'")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("the prompt is empty: type a sentence with {} where the subject goes, e.g. "
                         "'{} is located in the city of'")
    if not isinstance(target_new, str) or not target_new:
        raise ValueError("the new target is empty: type what the model should say instead, e.g. 'Rome'")
    slots = prompt.count("{}")
    if slots == 0:
        if subject in prompt:
            raise ValueError(f"the prompt has no {{}}: mark where the subject goes, e.g. "
                             f"{prompt.replace(subject, '{}', 1)!r}")
        raise ValueError(f"the subject {subject!r} is not in the prompt {prompt!r}: write the prompt with {{}} where "
                         "the subject goes, e.g. '{} is located in the city of'")
    if slots > 1:
        raise ValueError(f"the prompt {prompt!r} has {{}} {slots} times: keep exactly one, where the subject goes")
    if prompt.replace("{}", "").strip() == "":
        raise ValueError("the prompt is only {}: add the words around the subject, e.g. '{} is located in the city of'")
    if target_true is not None and isinstance(target_true, str):
        target_true = target_true.strip() or None
    try:
        return EditRequest(prompt=prompt, subject=subject, target_new=target_new, target_true=target_true)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"this edit cannot be made: {exc}") from exc
