"""The edit explorer: type a subject, a prompt and a new target, apply MEMIT or AlphaEdit, compare, restore.

The logic is :class:`EditSession` (tests use it without widgets); :class:`EditExplorer` is the
ipywidgets shell. MEMIT (Meng et al. 2023, Eq. 14: Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹) or AlphaEdit (Fang et
al., ICLR 2025, Eq. 14: Δ = R K1ᵀ P (K1K1ᵀP + αI)⁻¹) is applied with
:func:`alphaedit_lite.methods.apply_method`, and the model before and after is measured by
:mod:`alphaedit_lite.experiments.probes`: top next-token probabilities, a greedy generation and the
probabilities of a few preserved facts. Restore puts the weights back bit for bit
(``EditResult.restore``), and the session checks it against its own snapshot. Bad input is answered
with a sentence in the message area, never a traceback, and leaves the weights untouched.
"""
from __future__ import annotations

import html
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch

from alphaedit_lite.model import arch as M
from alphaedit_lite.methods.hparams import BaseHParams, from_dict
from alphaedit_lite.methods import APPLY, EditResult, apply_method
from alphaedit_lite.locate.requests import EditRequest
from alphaedit_lite.experiments.probes import DEFAULT_PRESERVED, ModelView, _check_preserved, _target_tokens, check_edit_input, measure_model
from alphaedit_lite.plots.style import AFTER_COLOR, BEFORE_COLOR, html_table
from alphaedit_lite.widgets.base import StaticFallback, plotly_output

__all__ = ["EditReading", "EditSession", "EditExplorer", "edit_explorer"]


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
        self._snapshot = M.snapshot_weights(model, layers)   # (d_out, d_in) each
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
        M.restore_weights(self.model, self._snapshot)

    def _templates_for(self, hp) -> list[str] | None:
        if self._templates is not None:
            return self._templates
        n, t = getattr(hp, "context_n_prefixes", None), getattr(hp, "context_prefix_tokens", None)
        if n is None:
            return None
        if (n, t) not in self._template_cache:   # sampled from the unedited model (we are restored here)
            from alphaedit_lite.locate.keys import context_templates
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
class EditExplorer(StaticFallback, widgets.VBox):
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
        self.readout.value = html_table(reading.table_rows(), header=("", "before", "after"))
        self.plot.outputs = (plotly_output(reading.figure()),)
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
