"""The drift scrubber: a slider over the evaluated steps of finished sequential runs.

Over run folders (:mod:`alphaedit_lite.experiments.runner`: settings.json, metrics.jsonl,
baseline_hidden.pt, hidden/step_XXXXX.pt) it shows the metric and drift curves with a marker at the
chosen step, and the probe hidden states at that step against the unedited model's in a 2-D PCA view
(the paper's Fig. 5). The PCA (scikit-learn) is fitted once per run on the baseline and every saved
step together, so the axes stay fixed while the slider moves and a point's motion is the drift
itself. The logic is :class:`DriftTrack` / :func:`drift_reading` (tests use them without widgets).
Probe hidden states are rows (n_probes, d_model) as :mod:`alphaedit_lite.experiments.drift` stores them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import numpy as np

from alphaedit_lite.plots.style import BEFORE_COLOR, RUN_COLORS, html_table
from alphaedit_lite.widgets.base import StaticFallback, plotly_output

__all__ = ["DriftTrack", "load_drift_track", "DriftReading", "drift_reading", "DriftScrubber", "drift_scrubber"]


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

    from alphaedit_lite.experiments.records import load_hidden, load_run

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


class DriftScrubber(StaticFallback, widgets.VBox):
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
        self.readout.value = html_table(reading.table_rows(), header=DriftReading.HEADER)
        self.plot.outputs = (plotly_output(reading.figure()),)
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
        return html_table(rows, header=DriftReading.HEADER, highlight=hi)

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
