"""Classroom widgets over a real model and over finished runs: the edit explorer and the drift scrubber.

Nothing here is new mathematics; both widgets are thin shells over tested library functions.

* **Edit explorer** (`edit_explorer`, logic in `EditSession`): type a subject, a prompt with
  "{}" and a new target, pick MEMIT (Meng et al. 2023, Eq. 14: Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹) or
  AlphaEdit (Fang et al., ICLR 2025, Eq. 14: Δ = R K1ᵀ P (K1K1ᵀP + αI)⁻¹), apply the edit with
  `alphaedit_lite.methods.apply_method` and compare the model before and after: the top
  next-token probabilities (`top_next_tokens`), a greedy generation
  (`evaluate.generate_texts`) and the probabilities of a few preserved facts
  (`evaluate.target_logprobs`). Restore puts the weights back bit for bit
  (`EditResult.restore`), and the session checks it against its own snapshot.
* **Drift scrubber** (`drift_scrubber`, logic in `DriftTrack` / `drift_reading`): over finished
  sequential-run folders (`alphaedit_lite.runner`: settings.json, metrics.jsonl,
  baseline_hidden.pt, hidden/step_XXXXX.pt), a slider over the evaluated steps shows the metric
  and drift curves with a marker at the chosen step, and the probe hidden states at that step
  against the unedited model's in a 2-D PCA view (the paper's Fig. 5). The PCA (scikit-learn) is
  fitted once per run on the baseline and every saved step together, so the axes stay fixed
  while the slider moves and a point's motion is the drift itself.

Widgets degrade like those of `alphaedit_lite.viz`: every number and figure is computed in Python
(the readings are plain objects that tests use without widgets); with a widget front end the
figures are interactive plotly charts inside an `Output` widget, and where widgets cannot render
(nbclient/nbconvert, a terminal) the explorer's mime bundle carries a static PNG (matplotlib), an
HTML table and a text summary. Bad input to the edit explorer is answered with a sentence in its
message area, never a traceback, and leaves the weights untouched.

Shapes: a next-token distribution is (V,), a rewrite weight W is (d_out, d_in) as everywhere in the
kit; probe hidden states are rows (n_probes, d_model) as `alphaedit_lite.drift` stores them.
"""
from __future__ import annotations

import base64
import html
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch

from . import models as M
from .evaluate import generate_texts, target_logprobs
from .hparams import BaseHParams, from_dict
from .methods import APPLY, EditResult, apply_method
from .requests import EditRequest
from .viz import COLORS, figure_to_png

__all__ = [
    "TokenProb", "next_token_probs", "top_next_tokens", "ModelView", "measure_model", "check_edit_input",
    "EditReading", "EditSession", "EditExplorer", "edit_explorer", "DEFAULT_PRESERVED",
    "DriftTrack", "load_drift_track", "DriftReading", "drift_reading", "DriftScrubber", "drift_scrubber",
]

#: Facts most pretrained English models know; their answers should survive a good edit.
DEFAULT_PRESERVED: tuple[tuple[str, str], ...] = (
    ("The capital of France is", "Paris"),
    ("The Colosseum is located in the city of", "Rome"),
    ("Microsoft was founded by", "Bill Gates"),
    ("The mother tongue of Danielle Darrieux is", "French"),
)
BEFORE_COLOR, AFTER_COLOR = "#999999", COLORS["update"]   # grey before, vermillion after (Okabe-Ito)
RUN_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]


# ============================================================================================
# shared: plotly figure inside an Output widget, static PNG + table where widgets cannot render
# ============================================================================================
def _plotly_output(fig) -> dict:
    """One display_data output holding a plotly figure (JupyterLab's plotly renderer, or HTML)."""
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                     "text/html": fig.to_html(include_plotlyjs="cdn", full_html=False),
                     "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"}}


def _html_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, highlight: int | None = None) -> str:
    def cell(tag, v):
        return f"<{tag} style='padding:1px 10px 1px 0;text-align:left'>{html.escape(str(v))}</{tag}>"

    out = ["<table style='border-collapse:collapse'>"]
    if header:
        out.append("<tr>" + "".join(cell("th", h) for h in header) + "</tr>")
    for i, r in enumerate(rows):
        style = " style='background:#fff3b0'" if highlight is not None and i == highlight else ""
        out.append(f"<tr{style}>" + "".join(cell("td", v) for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


class _StaticFallback:
    """Mixin for VBox widgets: where no widget front end exists, show a PNG, a table and text.

    Subclasses provide `_static_figure()` (a matplotlib Figure or None), `_table_html()` and
    `_summary_text()`; the PNG is rendered lazily and remembered until `_invalidate()`.
    """

    _png: bytes | None = None

    def _invalidate(self) -> None:
        self._png = None

    def static_png(self) -> bytes:
        """PNG bytes of the current static figure (b"" when there is nothing to draw)."""
        if self._png is None:
            fig = self._static_figure()
            self._png = figure_to_png(fig) if fig is not None else b""
        return self._png

    def _repr_mimebundle_(self, **kwargs):
        data = dict(super()._repr_mimebundle_(**kwargs) or {})
        png = self.static_png()
        img = f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'/>" if png else ""
        data["text/plain"] = self._summary_text()
        data["text/html"] = self._table_html() + img
        if png:
            data["image/png"] = base64.b64encode(png).decode()
        return data


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


@dataclass
class EditReading:
    """One edit, measured: the model before and after (after is None for a preview)."""

    request: EditRequest
    method: str
    before: ModelView
    after: ModelView | None = None
    preserved_facts: list[tuple[str, str]] = field(default_factory=list)
    result_summary: str = ""
    seconds: float = 0.0
    restored: bool = False
    target_tokens: dict[int, tuple[str, str]] = field(default_factory=dict)   # token id -> (text, "new"/"true")

    # ------------------------------------------------------------------ numbers
    def token_rows(self, k: int | None = None) -> list[tuple[str, float, float | None]]:
        """(token label, p before, p after) for the union of both top lists and the targets' first tokens.

        The first token of the new (true) target is labelled "← new" ("← true"), so it shows even
        when it is not among the most probable tokens.
        """
        views = [self.before] + ([self.after] if self.after is not None else [])
        text = {t.token_id: t.token for v in views for t in v.top}
        text.update({i: t for i, (t, _) in self.target_tokens.items()})
        ids = list(dict.fromkeys([t.token_id for v in views for t in v.top[:k]] + list(self.target_tokens)))
        rows = []
        for i in ids:
            role = self.target_tokens.get(i, ("", ""))[1]
            label = repr(text[i]) + (f" ← {role}" if role else "")
            rows.append((label, self.before.prob_of(i), self.after.prob_of(i) if self.after is not None else None))
        return sorted(rows, key=lambda r: -max(r[1], r[2] or 0.0))   # most probable (before or after) first

    def summary(self) -> str:
        r = self.request
        if self.after is None:
            return (f"before editing: {r.filled_prompt!r} → {self.before.generation!r}; "
                    f"P({r.target_new!r}) = {self.before.p_new:.2e}")
        pres = ", ".join(f"{b:.2g}→{a:.2g}" for b, a in zip(self.before.preserved, self.after.preserved))
        s = (f"{self.method}: {r.subject!r} → {r.target_new!r}; P(new) {self.before.p_new:.2e} → {self.after.p_new:.3f}; "
             f"greedy {self.before.generation!r} → {self.after.generation!r}; preserved facts {pres or 'none'}")
        return s + (" [weights restored]" if self.restored else "")

    def table_rows(self) -> list[tuple[str, str, str]]:
        r, b, a = self.request, self.before, self.after

        def f(x, fmt="{:.3f}"):
            return "–" if x is None else fmt.format(x)
        rows = [("prompt", r.filled_prompt, ""),
                (f"P({r.target_new!r}) (new)", f(b.p_new, "{:.2e}"), f(a.p_new if a else None, "{:.2e}"))]
        if r.target_true:
            rows.append((f"P({r.target_true!r}) (true)", f(b.p_true, "{:.2e}"), f(a.p_true if a else None, "{:.2e}")))
        rows.append(("greedy generation", b.generation, a.generation if a else "–"))
        for (p, ans), pb, pa in zip(self.preserved_facts, b.preserved,
                                    a.preserved if a else [None] * len(b.preserved)):
            rows.append((f"preserved: {p} → {ans}", f(pb), f(pa)))
        return rows

    # ------------------------------------------------------------------ figures
    def _fact_label(self, i: int, width: int = 30, sep: str = "\n") -> str:
        """'prompt → answer' on at most two lines of `width` characters (joined by `sep`)."""
        import textwrap

        p, ans = self.preserved_facts[i]
        lines = textwrap.wrap(f"{p} → {ans}", width)
        if len(lines) > 2:
            lines = [lines[0], "…" + f"{p} → {ans}"[-(width - 1):]]
        return sep.join(lines)

    def title(self, sep: str = "   ") -> str:
        """'METHOD: subject → target' (or 'before editing'), the prompt, and whether it was restored."""
        r = self.request
        head = f"{self.method}: {r.subject} → {r.target_new}" if self.after is not None else "before editing"
        return f"{head}{sep}(prompt: {r.filled_prompt!r})" + ("   [restored]" if self.restored else "")

    def figure(self):
        """A plotly figure: next-token probabilities and preserved facts' probabilities, before/after."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.28,
                            subplot_titles=("next token after the prompt", "preserved facts: P(true answer)"))
        rows = self.token_rows()[::-1]   # most probable on top
        labels = [t for t, _, _ in rows]
        fig.add_trace(go.Bar(y=labels, x=[b for _, b, _ in rows], orientation="h", name="before",
                             marker_color=BEFORE_COLOR, legendgroup="before"), row=1, col=1)
        if self.after is not None:
            fig.add_trace(go.Bar(y=labels, x=[a for _, _, a in rows], orientation="h", name=f"after {self.method}",
                                 marker_color=AFTER_COLOR, legendgroup="after"), row=1, col=1)
        if self.preserved_facts:
            flabels = [self._fact_label(i, 34, "<br>") for i in range(len(self.preserved_facts))][::-1]
            fig.add_trace(go.Bar(y=flabels, x=self.before.preserved[::-1], orientation="h", name="before",
                                 marker_color=BEFORE_COLOR, legendgroup="before", showlegend=False), row=1, col=2)
            if self.after is not None:
                fig.add_trace(go.Bar(y=flabels, x=self.after.preserved[::-1], orientation="h",
                                     name=f"after {self.method}", marker_color=AFTER_COLOR, legendgroup="after",
                                     showlegend=False), row=1, col=2)
        fig.update_xaxes(title_text="probability", rangemode="tozero")
        fig.update_layout(barmode="group", title=self.title("<br><sup>") + "</sup>", height=400 + 12 * max(len(rows), 1),
                          margin=dict(l=10, r=10, t=70, b=40), legend=dict(orientation="h", y=-0.15))
        return fig

    def static_figure(self):
        """The same two panels as a matplotlib Figure, with the greedy generations written under them."""
        from matplotlib.figure import Figure

        rows = self.token_rows()[::-1]
        n_bars = max(len(rows), len(self.preserved_facts), 1)
        fig = Figure(figsize=(11, 1.9 + 0.26 * n_bars), layout="constrained")
        gs = fig.add_gridspec(2, 2, height_ratios=[0.26 * n_bars + 0.6, 0.75])
        ax1, ax2 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        two = self.after is not None
        h = 0.4 if two else 0.8
        y = np.arange(len(rows))
        ax1.barh(y + (h / 2 if two else 0), [b for _, b, _ in rows], h, color=BEFORE_COLOR, label="before")
        if two:
            ax1.barh(y - h / 2, [a for _, _, a in rows], h, color=AFTER_COLOR, label=f"after {self.method}")
        ax1.set_yticks(y, [t for t, _, _ in rows], fontsize=8)
        ax1.set(xlim=(0, _xmax(v for r in rows for v in r[1:])), xlabel="probability",
                title="next token after the prompt")
        ax1.legend(fontsize=8, loc="lower right")
        if self.preserved_facts:
            yf = np.arange(len(self.preserved_facts))
            pb = self.before.preserved[::-1]
            pa = self.after.preserved[::-1] if two else []
            ax2.barh(yf + (h / 2 if two else 0), pb, h, color=BEFORE_COLOR)
            if two:
                ax2.barh(yf - h / 2, pa, h, color=AFTER_COLOR)
            ax2.set_yticks(yf, [self._fact_label(i) for i in range(len(self.preserved_facts))][::-1], fontsize=8)
            ax2.set_xlim(0, _xmax(list(pb) + list(pa)))
        else:
            ax2.text(0.5, 0.5, "no preserved facts given", ha="center", va="center", transform=ax2.transAxes)
        ax2.set(xlabel="probability", title="preserved facts: P(true answer)")
        for a in (ax1, ax2):
            a.title.set_fontsize(10)
            a.grid(axis="x", alpha=0.3)
        fig.suptitle(self.title(), fontsize=10)
        lines = [f"greedy before: {self.request.filled_prompt}▸{self.before.generation}"]
        if two:
            lines.append(f"greedy after:  {self.request.filled_prompt}▸{self.after.generation}")
            lines.append(f"P(new {self.request.target_new!r}): {self.before.p_new:.2e} → {self.after.p_new:.3f}"
                         + (f";  P(true {self.request.target_true!r}): {self.before.p_true:.3f} → "
                            f"{self.after.p_true:.2e}" if self.request.target_true else ""))
        ax3 = fig.add_subplot(gs[1, :])
        ax3.axis("off")
        ax3.text(0, 1, "\n".join(_clip(s, 140) for s in lines).replace("$", r"\$"), fontsize=8.5,
                 family="monospace", va="top", transform=ax3.transAxes)
        return fig


def _xmax(values) -> float:
    """An x-axis end that shows small probabilities: 1.15 × the largest value, at most 1."""
    m = max([float(v) for v in values if v is not None] or [0.0])
    return min(1.0, max(1.15 * m, 0.02))


def _clip(s: str, n: int) -> str:
    s = s.replace("\n", "⏎")
    return s if len(s) <= n else s[: n - 1] + "…"


class EditSession:
    """Apply one edit at a time to `model` and measure it; restore the original weights exactly.

    `hparams_by_method`: {method name: hyper-parameters (dataclass or dict)}, e.g.
    {"MEMIT": load_hparams("MEMIT", "smollm2-135m"), "AlphaEdit": ...}. `stats` ({layer:
    SecondMoment}) are passed to every method (computed from the hyper-parameters' corpus when
    None). `templates` are MEMIT's context templates; when None they are sampled once per
    (n_prefixes, prefix_tokens) from the unedited model and reused. Every `apply` starts from the
    original weights (an earlier edit is restored first), so "before" is always the unedited model.
    """

    def __init__(self, model, tok, hparams_by_method: Mapping[str, Any], *, stats=None,
                 preserved_prompts: Iterable[tuple[str, str]] | None = DEFAULT_PRESERVED,
                 templates: Sequence[str] | None = None, k: int = 8, max_new_tokens: int = 12):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a causal LM), got {type(model).__name__}")
        if not isinstance(hparams_by_method, Mapping) or not hparams_by_method:
            raise TypeError("hparams_by_method must be a non-empty dict {method name: hyper-parameters}, e.g. "
                            "{'MEMIT': load_hparams('MEMIT', 'smollm2-135m')}")
        canon = {m.lower(): m for m in APPLY}
        self.hparams: dict[str, BaseHParams] = {}
        for name, hp in hparams_by_method.items():
            if not isinstance(name, str) or name.lower() not in canon:
                raise ValueError(f"unknown method {name!r} in hparams_by_method; choose from {list(APPLY)}")
            method = canon[name.lower()]
            hp = from_dict(method, hp) if isinstance(hp, dict) else hp
            if not isinstance(hp, BaseHParams):
                raise TypeError(f"hparams_by_method[{name!r}] must be hyper-parameters (load_hparams(...)) or a dict, "
                                f"got {type(hp).__name__}")
            hp.validate()
            n = M.num_layers(model)
            if any(not 0 <= x < n for x in hp.layers):
                raise ValueError(f"{method} edits layers {hp.layers} but the model has layers 0..{n - 1}; fix the "
                                 "hyper-parameters' layers")
            self.hparams[method] = hp
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.model, self.tok, self.stats, self.k, self.max_new_tokens = model, tok, stats, k, max_new_tokens
        self.preserved = _check_preserved(preserved_prompts)
        self._templates = None if templates is None else list(templates)
        self._template_cache: dict[tuple[int, int], list[str]] = {}
        layers = sorted({x for hp in self.hparams.values() for x in hp.layers})
        self._snapshot = {x: M.get_rewrite_weight(model, x).detach().clone() for x in layers}   # (d_out, d_in) each
        self.current: EditResult | None = None
        self.last: EditReading | None = None

    @property
    def methods(self) -> list[str]:
        return list(self.hparams)

    def _method(self, method: str) -> str:
        canon = {m.lower(): m for m in self.hparams}
        if not isinstance(method, str) or method.lower() not in canon:
            raise ValueError(f"method {method!r} is not available here; choose one of {self.methods}")
        return canon[method.lower()]

    def weights_are_original(self) -> bool:
        """True when every weight this session may edit equals its snapshot bit for bit."""
        return all(torch.equal(M.get_rewrite_weight(self.model, x), W) for x, W in self._snapshot.items())

    def _restore_snapshot(self) -> None:
        for x, W in self._snapshot.items():
            M.set_rewrite_weight(self.model, x, W)

    def _templates_for(self, hp) -> list[str] | None:
        if self._templates is not None:
            return self._templates
        n, t = getattr(hp, "context_n_prefixes", None), getattr(hp, "context_prefix_tokens", None)
        if n is None:
            return None
        if (n, t) not in self._template_cache:   # sampled from the unedited model (we are restored here)
            from .keys import context_templates
            self._template_cache[(n, t)] = list(context_templates(self.model, self.tok, n, t))
        return self._template_cache[(n, t)]

    def _measure(self, req: EditRequest) -> ModelView:
        return measure_model(self.model, self.tok, req.filled_prompt, req.target_new, req.target_true,
                             self.preserved, k=self.k, max_new_tokens=self.max_new_tokens)

    def preview(self, subject: str, prompt: str, target_new: str, target_true: str | None = None) -> EditReading:
        """Measure the unedited model on the typed edit (restores an earlier edit first); no edit is made."""
        req = check_edit_input(subject, prompt, target_new, target_true)
        self.restore()
        reading = EditReading(req, "", self._measure(req), None, list(self.preserved),
                              target_tokens=_target_tokens(self.tok, req))
        self.last = reading
        return reading

    def apply(self, subject: str, prompt: str, target_new: str, method: str,
              target_true: str | None = None) -> EditReading:
        """Edit the model (from its original weights) and measure before/after.

        Raises ValueError with one sentence for bad input; if the method fails, the weights are
        checked against the session's snapshot (and put back if needed) before the error is raised.
        """
        req = check_edit_input(subject, prompt, target_new, target_true)
        method = self._method(method)
        hp = self.hparams[method]
        self.restore()
        t0 = time.perf_counter()
        before = self._measure(req)
        kwargs: dict[str, Any] = {"stats": self.stats}
        params = inspect.signature(APPLY[method]).parameters
        if "templates" in params:
            kwargs["templates"] = self._templates_for(hp)
        if "progress" in params:
            kwargs["progress"] = False
        try:
            result = apply_method(method, self.model, self.tok, [req], hp, **kwargs)
        except BaseException:
            if not self.weights_are_original():   # the methods promise this; check rather than trust
                self._restore_snapshot()
            raise
        self.current = result
        after = self._measure(req)
        reading = EditReading(req, method, before, after, list(self.preserved), result.summary(),
                              time.perf_counter() - t0, target_tokens=_target_tokens(self.tok, req))
        self.last = reading
        return reading

    def restore(self) -> bool:
        """Undo the current edit (EditResult.restore) and check every weight against the snapshot.

        Returns True when an edit was undone, False when there was none.
        """
        if self.current is None:
            return False
        self.current.restore(self.model)
        self.current = None
        if not self.weights_are_original():
            self._restore_snapshot()
            raise RuntimeError("EditResult.restore did not give back the original weights; the session put its "
                               "own snapshot back (please report this)")
        if self.last is not None and self.last.after is not None:
            self.last.restored = True
        return True


# ============================================================================================
# edit explorer: the widget
# ============================================================================================
class EditExplorer(_StaticFallback, widgets.VBox):
    """Text boxes, a method switch and Apply/Restore buttons over an `EditSession`."""

    def __init__(self, session: EditSession, subject: str, prompt: str, target: str, target_true: str,
                 method: str, preview: bool):
        self.session = session
        text = dict(style={"description_width": "110px"}, layout=widgets.Layout(width="560px"))
        self.subject = widgets.Text(value=subject, description="subject", placeholder="The Eiffel Tower", **text)
        self.prompt = widgets.Text(value=prompt, description="prompt with {}", placeholder="{} is located in the city of",
                                   **text)
        self.target = widgets.Text(value=target, description="new target", placeholder="Rome", **text)
        self.target_true = widgets.Text(value=target_true, description="true answer", placeholder="(optional) Paris",
                                        **text)
        self.method = widgets.ToggleButtons(options=session.methods, value=session._method(method) if method
                                            else session.methods[-1], description="method")
        self.apply_button = widgets.Button(description="Apply edit", button_style="primary", icon="pencil")
        self.restore_button = widgets.Button(description="Restore weights", icon="undo")
        self.message = widgets.HTML()
        self.readout = widgets.HTML()
        self.plot = widgets.Output()
        super().__init__([self.subject, self.prompt, self.target, self.target_true, self.method,
                          widgets.HBox([self.apply_button, self.restore_button]), self.message, self.readout,
                          self.plot])
        self.apply_button.on_click(lambda _b: self.apply())
        self.restore_button.on_click(lambda _b: self.restore())
        self.reading: EditReading | None = None
        self.message_text = ""
        if preview:
            try:
                self._show(session.preview(subject, prompt, target, target_true or None),
                           "Unedited model. Press “Apply edit” to write the new fact.")
            except ValueError as exc:
                self._say(str(exc), error=True)

    # ------------------------------------------------------------------ output
    def _say(self, text: str, error: bool = False) -> None:
        self.message_text = text
        color = "#b00020" if error else "#205020"
        self.message.value = f"<div style='color:{color};margin:4px 0'>{html.escape(text)}</div>"

    def _show(self, reading: EditReading, message: str) -> None:
        self.reading = reading
        self._invalidate()
        self.readout.value = _html_table(reading.table_rows(), header=("", "before", "after"))
        self.plot.outputs = (_plotly_output(reading.figure()),)
        self._say(message)

    def _static_figure(self):
        return self.reading.static_figure() if self.reading is not None else None

    def _table_html(self) -> str:
        return self.message.value + self.readout.value

    def _summary_text(self) -> str:
        body = self.reading.summary() if self.reading is not None else ""
        return f"Edit explorer (buttons need a widget front end). {self.message_text} {body}".strip()

    # ------------------------------------------------------------------ actions
    def _set_busy(self, busy: bool) -> None:
        self.apply_button.disabled = self.restore_button.disabled = busy

    def apply(self, subject: str | None = None, prompt: str | None = None, target: str | None = None,
              method: str | None = None, target_true: str | None = None) -> EditReading | None:
        """Apply the typed edit (arguments given here are typed into the boxes first).

        Returns the reading, or None when the input was bad or the edit failed; the message area
        then says why in one sentence and the weights are the original ones.
        """
        for box, value in ((self.subject, subject), (self.prompt, prompt), (self.target, target),
                           (self.target_true, target_true)):
            if value is not None:
                box.value = value
        if method is not None:
            try:
                self.method.value = self.session._method(method)
            except ValueError as exc:
                self._say(str(exc), error=True)
                return None
        self._set_busy(True)
        self._say(f"applying {self.method.value}… (finding the target vector takes a few seconds to a minute on a CPU)")
        try:
            reading = self.session.apply(self.subject.value, self.prompt.value, self.target.value, self.method.value,
                                         self.target_true.value or None)
        except ValueError as exc:
            self._say(f"{str(exc).rstrip('. ')}. The weights are unchanged.", error=True)
            return None
        except Exception as exc:  # noqa: BLE001 - a widget callback must answer in a sentence, not a traceback
            self._say(f"the edit failed ({type(exc).__name__}: {exc}); the weights are the original ones.", error=True)
            return None
        finally:
            self._set_busy(False)
        self._show(reading, f"{reading.method} applied in {reading.seconds:.1f} s. “Restore weights” undoes it exactly.")
        return reading

    def restore(self) -> bool:
        """Undo the current edit; says so in the message area. Returns whether an edit was undone."""
        try:
            undone = self.session.restore()
        except RuntimeError as exc:
            self._say(str(exc), error=True)
            return False
        if undone:
            same = self.session.weights_are_original()
            if self.reading is not None:
                self._show(self.reading, "")
            self._say("weights restored: every edited weight equals the original bit for bit." if same else
                      "weights restored, but they differ from the snapshot (please report this).", error=not same)
        else:
            self._say("nothing to restore: the model has its original weights.")
        return undone


def edit_explorer(model, tok, hparams_by_method: Mapping[str, Any], stats=None, *,
                  preserved_prompts: Iterable[tuple[str, str]] | None = DEFAULT_PRESERVED,
                  subject: str = "The Eiffel Tower", prompt: str = "{} is located in the city of",
                  target: str = "Rome", target_true: str = "Paris", method: str | None = None,
                  templates: Sequence[str] | None = None, k: int = 8, max_new_tokens: int = 12,
                  preview: bool = True) -> EditExplorer:
    """The edit explorer widget: type an edit, pick a method, Apply, compare, Restore.

    Returns an ipywidgets VBox with `.apply(subject=None, prompt=None, target=None, method=None,
    target_true=None) -> EditReading | None`, `.restore() -> bool`, `.reading` (the last
    `EditReading`), `.session` (the `EditSession`), `.message` (an HTML widget showing the last
    sentence) and `.message_text` (that sentence as plain text). `preview=True` measures the unedited model on the pre-filled edit at once, so a
    headless run shows a figure. See `EditSession` for the arguments.
    """
    session = EditSession(model, tok, hparams_by_method, stats=stats, preserved_prompts=preserved_prompts,
                          templates=templates, k=k, max_new_tokens=max_new_tokens)
    return EditExplorer(session, subject, prompt, target, target_true or "", method or "", preview)


# ============================================================================================
# drift scrubber: plain functions
# ============================================================================================
RATE_KEYS = (("efficacy", "Eff."), ("generalization", "Gen."), ("specificity", "Spe."))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class DriftTrack:
    """One finished run folder, loaded once: its metric rows and the probes' fixed-frame PCA.

    `coords[batch]` is (n_probes, 2): the probe hidden states of hidden/step_<batch>.pt in the
    run's PCA frame; `baseline` the same for baseline_hidden.pt. `edits_of[batch]` maps a batch to
    the number of edits applied so far.
    """

    label: str
    run_dir: Path
    metrics: list[dict]
    key: str | int | None
    baseline: np.ndarray | None                       # (n_probes, 2)
    coords: dict[int, np.ndarray] = field(default_factory=dict)   # batch -> (n_probes, 2)
    explained: tuple[float, float] = (float("nan"), float("nan"))
    edits_of: dict[int, int] = field(default_factory=dict)

    @property
    def drift_keys(self) -> list[str]:
        keys: list[str] = []
        for r in self.metrics:
            keys += [k for k in r if k.startswith("drift/") and k not in keys]
        return keys

    def row_at(self, edits: int) -> dict:
        """The last evaluated row with at most `edits` edits (the first row when none)."""
        best = self.metrics[0]
        for r in self.metrics:
            if r["edits"] <= edits:
                best = r
        return best

    def hidden_at(self, edits: int) -> int | None:
        """The last batch with saved hidden states and at most `edits` edits (the first saved when none)."""
        if not self.coords:
            return None
        saved = sorted(self.coords)
        best = saved[0]
        for b in saved:
            if self.edits_of.get(b, 10**12) <= edits:
                best = b
        return best


def _drift_name(key) -> str:
    """'drift/3' or 3 -> 'layer 3'; 'drift/final' or 'final' -> 'final'."""
    k = str(key).split("/", 1)[-1]
    return "final" if k == "final" else f"layer {k}"


def _pick_key(hidden: dict, key) -> Any:
    if key in hidden:
        return key
    if key is None or key == "final":
        return "final" if "final" in hidden else list(hidden)[-1]
    raise ValueError(f"hidden-state key {key!r} is not in this run; it saved {list(hidden)} (layer numbers "
                     "and 'final')")


def load_drift_track(run_dir, label: str | None = None, key: str | int = "final") -> DriftTrack:
    """Read a run folder (report.load_run / load_hidden) and embed its probe states in one PCA frame."""
    from sklearn.decomposition import PCA

    from .report import load_hidden, load_run

    run = load_run(run_dir)
    if not run["metrics"]:
        raise ValueError(f"{run_dir} has no evaluated steps yet (metrics.jsonl is empty): let the run evaluate "
                         "at least once")
    label = label or run["settings"].get("method") or Path(run_dir).name
    edits_of = {int(r["batch"]): int(r["edits"]) for r in run["metrics"]}
    track = DriftTrack(label=label, run_dir=Path(run_dir), metrics=run["metrics"], key=None, baseline=None,
                       edits_of=edits_of)
    if not run["hidden_steps"] or not (Path(run_dir) / "baseline_hidden.pt").exists():
        return track   # a run without probe prompts: curves only
    base, _ = load_hidden(run_dir, run["hidden_steps"][0])
    k = _pick_key(base, key)
    states = {b: load_hidden(run_dir, b)[1][k].double().numpy() for b in run["hidden_steps"]}   # (n, d) rows
    X0 = base[k].double().numpy()                                                            # (n, d)
    stack = np.concatenate([X0] + [states[b] for b in sorted(states)])
    if stack.shape[0] < 2:
        raise ValueError(f"{run_dir}: a PCA needs at least two probe states; the run saved {stack.shape[0]}")
    pca = PCA(n_components=min(2, stack.shape[0], stack.shape[1])).fit(stack)
    def emb(X):
        z = pca.transform(X)
        return np.pad(z, ((0, 0), (0, 2 - z.shape[1])))   # (n, 2) even for a 1-component fit
    track.key = k
    track.baseline = emb(X0)
    track.coords = {b: emb(X) for b, X in states.items()}
    ev = list(pca.explained_variance_ratio_) + [float("nan")]
    track.explained = (float(ev[0]), float(ev[1]))
    return track


@dataclass
class DriftReading:
    """What the scrubber shows at one step (`edits` so far) for every run."""

    edits: int
    tracks: list[DriftTrack] = field(repr=False)
    rows: list[dict]                 # per run: its metrics row at this step
    hidden_batches: list[int | None] # per run: the batch whose hidden states are drawn

    def displacement(self, i: int) -> float | None:
        """Mean distance of the probes from their unedited position in run i's PCA plane."""
        t, b = self.tracks[i], self.hidden_batches[i]
        if b is None or t.baseline is None:
            return None
        return float(np.linalg.norm(t.coords[b] - t.baseline, axis=1).mean())

    def table_rows(self) -> list[tuple[str, ...]]:
        out = []
        for i, (t, r) in enumerate(zip(self.tracks, self.rows)):
            def f(key, fmt="{:.1f}"):
                v = r.get(key)
                return fmt.format(v) if _finite(v) else "–"
            dk = t.drift_keys
            drift = "; ".join(f"{_drift_name(k)} {r[k]:.2e}" for k in dk if _finite(r.get(k))) or "–"
            disp = self.displacement(i)
            out.append((t.label, str(r["edits"]), f("efficacy"), f("generalization"), f("specificity"), drift,
                        "–" if disp is None else f"{disp:.3g} (batch {self.hidden_batches[i]})"))
        return out

    HEADER = ("run", "edits", "Eff. %", "Gen. %", "Spe. %", "drift ‖h − h₀‖/‖h₀‖", "PCA shift of probes")

    def summary(self) -> str:
        return f"after {self.edits} edits: " + " | ".join(
            f"{r[0]}: Eff {r[2]}, Gen {r[3]}, Spe {r[4]}, drift {r[5]}" for r in self.table_rows())

    # ------------------------------------------------------------------ figures
    def _limits(self, t: DriftTrack):
        pts = np.concatenate([t.baseline] + list(t.coords.values()))
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.08 * np.maximum(hi - lo, 1e-9)
        return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])

    def figure(self):
        """Plotly: metric curves and drift curves with a marker at this step, and each run's PCA view."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        n = len(self.tracks)
        cols = max(2, n)
        a = cols // 2
        specs = [[{"colspan": a}] + [None] * (a - 1) + [{"colspan": cols - a}] + [None] * (cols - a - 1),
                 [{} for _ in range(n)] + [None] * (cols - n)]
        titles = ["metrics (%) vs edits", "hidden-state drift (log) vs edits"] + [
            f"{t.label}: probes ({_drift_name(t.key)}) after {t.edits_of.get(b, '?')} edits" if b is not None
            else f"{t.label}: no probe states"
            for t, b in zip(self.tracks, self.hidden_batches)]
        fig = make_subplots(rows=2, cols=cols, specs=specs, subplot_titles=titles, vertical_spacing=0.14)
        dashes = {"efficacy": "solid", "generalization": "dash", "specificity": "dot"}
        for i, (t, row) in enumerate(zip(self.tracks, self.rows)):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            for key, short in RATE_KEYS:
                pts = [(r["edits"], r[key]) for r in t.metrics if _finite(r.get(key))]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{t.label} {short}", legendgroup=t.label,
                                         line=dict(color=color, dash=dashes[key])), row=1, col=1)
                if _finite(row.get(key)):
                    fig.add_trace(go.Scatter(x=[row["edits"]], y=[row[key]], mode="markers", showlegend=False,
                                             name=f"{t.label} {short} now", marker=dict(color=color, size=10)),
                                  row=1, col=1)
            for j, dk in enumerate(t.drift_keys):
                pts = [(r["edits"], max(r[dk], 1e-12)) for r in t.metrics if _finite(r.get(dk))]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{t.label}, {_drift_name(dk)}",
                                         legendgroup=t.label,
                                         line=dict(color=color, dash="solid" if dk.endswith("final") else "dash")),
                              row=1, col=1 + a)
                if _finite(row.get(dk)):
                    fig.add_trace(go.Scatter(x=[row["edits"]], y=[max(row[dk], 1e-12)], mode="markers",
                                             showlegend=False, name=f"{t.label} {dk} now",
                                             marker=dict(color=color, size=10)), row=1, col=1 + a)
            b = self.hidden_batches[i]
            if b is not None and t.baseline is not None:
                cur = t.coords[b]
                lx, ly = [], []
                for p0, p1 in zip(t.baseline, cur):
                    lx += [p0[0], p1[0], None]
                    ly += [p0[1], p1[1], None]
                fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color=color, width=1), opacity=0.5,
                                         showlegend=False, name=f"{t.label} shift", hoverinfo="skip"), row=2, col=1 + i)
                fig.add_trace(go.Scatter(x=t.baseline[:, 0], y=t.baseline[:, 1], mode="markers", name="unedited",
                                         showlegend=i == 0, marker=dict(color=BEFORE_COLOR, size=10)), row=2, col=1 + i)
                fig.add_trace(go.Scatter(x=cur[:, 0], y=cur[:, 1], mode="markers", name=f"{t.label} at batch {b}",
                                         showlegend=False, marker=dict(color=color, size=6)), row=2, col=1 + i)
                (x0, x1), (y0, y1) = self._limits(t)
                fig.update_xaxes(range=[x0, x1], title_text=f"PC1 ({100 * t.explained[0]:.0f}%)", row=2, col=1 + i)
                fig.update_yaxes(range=[y0, y1], title_text=f"PC2 ({100 * t.explained[1]:.0f}%)", row=2, col=1 + i)
        for c in (1, 1 + a):
            fig.add_vline(x=self.edits, line=dict(color="black", dash="dot", width=1), row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=1 + a)
        fig.update_yaxes(range=[-3, 103], row=1, col=1)
        fig.update_xaxes(title_text="edits so far", row=1, col=1)
        fig.update_xaxes(title_text="edits so far", row=1, col=1 + a)
        fig.update_layout(title=f"after {self.edits} edits", height=720, margin=dict(l=10, r=10, t=70, b=40))
        return fig

    def static_figure(self):
        """The same views as a matplotlib Figure (for the static fallback and PNG export)."""
        from matplotlib.figure import Figure

        n = len(self.tracks)
        cols = max(2, n)
        fig = Figure(figsize=(5 * cols, 8.2))
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.07, hspace=0.38, wspace=0.3)
        gs = fig.add_gridspec(2, 2 * cols)
        ax_m = fig.add_subplot(gs[0, :cols])
        ax_d = fig.add_subplot(gs[0, cols:])
        styles = {"efficacy": "-", "generalization": "--", "specificity": ":"}
        for i, (t, row) in enumerate(zip(self.tracks, self.rows)):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            for key, short in RATE_KEYS:
                pts = [(r["edits"], r[key]) for r in t.metrics if _finite(r.get(key))]
                if pts:
                    ax_m.plot(*zip(*pts), styles[key], color=color, label=f"{t.label} {short}")
                    if _finite(row.get(key)):
                        ax_m.plot([row["edits"]], [row[key]], "o", color=color, ms=7)
            for dk in t.drift_keys:
                pts = [(r["edits"], max(r[dk], 1e-12)) for r in t.metrics if _finite(r.get(dk))]
                if pts:
                    ax_d.plot(*zip(*pts), "-" if dk.endswith("final") else "--", color=color,
                              label=f"{t.label}, {_drift_name(dk)}")
                    if _finite(row.get(dk)):
                        ax_d.plot([row["edits"]], [max(row[dk], 1e-12)], "o", color=color, ms=7)
        for ax in (ax_m, ax_d):
            ax.axvline(self.edits, color="black", ls=":", lw=1)
            ax.set_xlabel("edits so far")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        ax_m.set(ylim=(-3, 103), title="metrics (%) vs edits")
        ax_d.set(yscale="log", title="hidden-state drift ‖h − h₀‖/‖h₀‖ vs edits")
        for i, t in enumerate(self.tracks):
            ax = fig.add_subplot(gs[1, 2 * i:2 * i + 2])
            b = self.hidden_batches[i]
            color = RUN_COLORS[i % len(RUN_COLORS)]
            if b is None or t.baseline is None:
                ax.text(0.5, 0.5, "no probe hidden states in this run", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(t.label, fontsize=10)
                continue
            cur = t.coords[b]
            for p0, p1 in zip(t.baseline, cur):
                ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color=color, lw=0.8, alpha=0.5)
            ax.scatter(t.baseline[:, 0], t.baseline[:, 1], s=42, color=BEFORE_COLOR, label="unedited")
            ax.scatter(cur[:, 0], cur[:, 1], s=16, color=color, label=f"after {t.edits_of.get(b, '?')} edits")
            (x0, x1), (y0, y1) = self._limits(t)
            ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=f"PC1 ({100 * t.explained[0]:.0f}%)",
                   ylabel=f"PC2 ({100 * t.explained[1]:.0f}%)")
            ax.set_title(f"{t.label}: probe states ({_drift_name(t.key)}) after {t.edits_of.get(b, '?')} edits "
                         f"(batch {b})", fontsize=10)
            ax.legend(fontsize=7)
        fig.suptitle(f"after {self.edits} edits", fontsize=11)
        return fig


def drift_reading(tracks: Sequence[DriftTrack], edits: int) -> DriftReading:
    """Every run's state at `edits` edits so far (its last evaluated step at or before it)."""
    if not tracks:
        raise ValueError("no runs given; pass at least one run folder")
    return DriftReading(edits=int(edits), tracks=list(tracks), rows=[t.row_at(edits) for t in tracks],
                        hidden_batches=[t.hidden_at(edits) for t in tracks])


def _as_run_list(run_dirs) -> list[tuple[str | None, Path]]:
    """[(label or None, folder)] from one folder, a list of folders or {label: folder}."""
    if isinstance(run_dirs, (str, Path)):
        return [(None, Path(run_dirs))]
    if isinstance(run_dirs, Mapping):
        return [(str(k), Path(v)) for k, v in run_dirs.items()]
    try:
        return [(None, Path(p)) for p in run_dirs]
    except TypeError as exc:
        raise TypeError("run_dirs must be a run folder, a list of run folders or {label: run folder}, got "
                        f"{type(run_dirs).__name__}") from exc


class DriftScrubber(_StaticFallback, widgets.VBox):
    """A slider over the evaluated steps of one or more runs; curves, marker and PCA view follow it."""

    def __init__(self, tracks: list[DriftTrack], edits: int | None):
        self.tracks = tracks
        self.steps = sorted({int(r["edits"]) for t in tracks for r in t.metrics})
        start = self.steps[-1] if edits is None else int(edits)
        if start not in self.steps:
            raise ValueError(f"edits={start} is not an evaluated step; the runs were evaluated after {self.steps} edits")
        self.slider = widgets.SelectionSlider(options=self.steps, value=start, description="edits so far",
                                              continuous_update=False, style={"description_width": "initial"},
                                              layout=widgets.Layout(width="600px"))
        self.readout = widgets.HTML()
        self.plot = widgets.Output()
        self.reading: DriftReading | None = None
        super().__init__([self.slider, self.readout, self.plot])
        self._busy = False
        self.slider.observe(lambda _c: None if self._busy else self.update(), names="value")
        self.update()

    def update(self, edits: int | None = None) -> DriftReading:
        """Show the step with `edits` edits (the slider's value when None) and move the slider there."""
        if edits is not None:
            if int(edits) not in self.steps:
                raise ValueError(f"edits={edits} is not an evaluated step; choose one of {self.steps}")
            self._busy = True
            try:
                self.slider.value = int(edits)
            finally:
                self._busy = False
        reading = drift_reading(self.tracks, self.slider.value)
        self.reading = reading
        self._invalidate()
        self.readout.value = _html_table(reading.table_rows(), header=DriftReading.HEADER)
        self.plot.outputs = (_plotly_output(reading.figure()),)
        return reading

    def all_steps_table(self) -> str:
        """HTML table of every evaluated step of every run, the current step highlighted."""
        rows, hi = [], None
        for e in self.steps:
            r = drift_reading(self.tracks, e)
            for row in r.table_rows():
                if e == self.slider.value and hi is None:
                    hi = len(rows)
                rows.append(row)
        return _html_table(rows, header=DriftReading.HEADER, highlight=hi)

    def _static_figure(self):
        return self.reading.static_figure() if self.reading is not None else None

    def _table_html(self) -> str:
        return self.all_steps_table()

    def _summary_text(self) -> str:
        return "Drift scrubber (the slider needs a widget front end). " + (self.reading.summary() if self.reading else "")


def drift_scrubber(run_dirs, *, key: str | int = "final", edits: int | None = None) -> DriftScrubber:
    """Slider widget over finished run folders (runner.py format): curves + marker + PCA of probes.

    `run_dirs`: one folder, a list of folders (labelled by their method) or {label: folder}.
    `key`: which probe hidden states to embed ("final" or a drift layer number). `edits`: the
    step to show first (default: the last). Returns an ipywidgets VBox with
    `.update(edits=None) -> DriftReading`, `.slider`, `.reading`, `.tracks`, `.steps`.
    """
    runs = _as_run_list(run_dirs)
    if not runs:
        raise ValueError("no run folders given; pass at least one folder written by runner.run_sequential")
    tracks, seen = [], set()
    for label, d in runs:
        t = load_drift_track(d, label, key)
        if t.label in seen:   # two runs of one method: tell them apart by their folder
            t.label = f"{t.label} ({d.name})"
        seen.add(t.label)
        tracks.append(t)
    return DriftScrubber(tracks, edits)
