"""Figures of sequential-run folders (see :mod:`alphaedit_lite.experiments.runner`).

One function per view, each taking ``{label: run_dir}`` so MEMIT, AlphaEdit and plug-in variants
sit side by side: metric curves, hidden-state drift and update-norm growth (matplotlib PNG and
interactive plotly HTML), and the paper's Figure-5 view of hidden states before/after (PCA/t-SNE).
Tables and records of the same folders are :mod:`alphaedit_lite.experiments.records`.
"""
from __future__ import annotations

from pathlib import Path

from alphaedit_lite.experiments.records import METRICS, drift_keys, load_hidden, load_run, series, update_norm_total
from alphaedit_lite.plots.style import RUN_COLORS


def _metric_panels(data: dict) -> list[tuple[str, str]]:
    """The four metric panels: Table 1's three rates, then what the runs measured of the rest of the
    model: the accuracy on unedited facts (the organisms), else the held-out perplexity ratio (real
    models), else fluency."""
    def has(key):
        return any(r.get(key) is not None for run in data.values() for r in run["metrics"])
    if has("unedited_acc"):
        return METRICS[:3] + [("unedited_acc", "Unedited facts: top-1 accuracy (%)")]
    if has("perplexity_ratio"):
        return METRICS[:3] + [("perplexity_ratio", "Held-out perplexity ÷ unedited")]
    return METRICS[:4]


def _x_range(data: dict) -> tuple[float, float] | None:
    """One x range (edits so far) for every panel, so that a metric measured only at the end
    (fluency) is a point at the right, not a lone point on an axis of its own."""
    edits = [r["edits"] for run in data.values() for r in run["metrics"] if "edits" in r]
    if not edits:
        return None
    lo, hi = min(edits), max(edits)
    pad = max(1.0, 0.03 * (hi - lo))
    return lo - pad, hi + pad


def plot_runs_png(runs: dict, path, title: str = "") -> Path:
    """Metric curves, drift and update norm vs number of edits, one line per run, as a PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = {k: load_run(v) for k, v in runs.items()}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat[:4], _metric_panels(data)):
        drawn = 0
        for i, (name, run) in enumerate(data.items()):
            xs, ys = series(run["metrics"], key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=name,
                        color=RUN_COLORS[i % len(RUN_COLORS)])
                drawn += 1
        if not drawn:  # e.g. requests without paraphrase/neighbourhood/generation prompts
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_title(label)
        ax.set_xlabel("edits so far")
        ax.grid(alpha=0.3)
    ax = axes.flat[4]
    colors = RUN_COLORS
    for i, (name, run) in enumerate(data.items()):   # one colour per run, as in the other panels
        for k in drift_keys(run["metrics"]):
            xs, ys = series(run["metrics"], k)
            where = "final layer" if k.endswith("final") else f"layer {k.split('/', 1)[1]}"
            ax.plot(xs, [max(y, 1e-12) for y in ys], label=f"{name}, {where}", color=colors[i % len(colors)],
                    ls="-" if k.endswith("final") else "--", marker="o" if len(xs) < 30 else None, ms=3)
    ax.set_yscale("log")
    ax.set_title("Hidden-state drift ‖h − h₀‖/‖h₀‖ (probes)")
    ax.set_xlabel("edits so far")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes.flat[5]
    for i, (name, run) in enumerate(data.items()):
        rows = run["metrics"]
        ax.plot([r["edits"] for r in rows], [max(update_norm_total(r), 1e-12) for r in rows], label=name,
                color=RUN_COLORS[i % len(RUN_COLORS)], marker="o" if len(rows) < 30 else None, ms=3)
    ax.set_yscale("log")
    ax.set_title("Accumulated update ‖W − W₀‖_F (all edited layers)")
    ax.set_xlabel("edits so far")
    ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=8)
    xlim = _x_range(data)
    from matplotlib.ticker import FixedLocator, MaxNLocator
    counts = sorted({r["edits"] for run in data.values() for r in run["metrics"] if "edits" in r})
    for ax in axes.flat:
        # edits are counted: no "99.25 edits"; with few evaluations, ticks exactly at the evaluated counts
        # (a run evaluated after 20 and 40 edits would otherwise read 21, 24, 27, ...)
        ax.xaxis.set_major_locator(FixedLocator(counts) if 0 < len(counts) <= 8 else MaxNLocator(integer=True))
        if xlim is not None:
            ax.set_xlim(*xlim)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def runs_figure(runs: dict, title: str = ""):
    """The same views as an interactive plotly figure."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    data = {k: load_run(v) for k, v in runs.items()}
    panels = _metric_panels(data)
    titles = [m[1] for m in panels] + ["Hidden-state drift (log)", "‖W − W₀‖_F (log)"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles)
    palette = RUN_COLORS
    for i, (name, run) in enumerate(data.items()):
        color = palette[i % len(palette)]
        rows = run["metrics"]
        for j, (key, _) in enumerate(panels):
            xs, ys = series(rows, key)
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, legendgroup=name, showlegend=j == 0,
                                     line=dict(color=color)), row=1 + j // 3, col=1 + j % 3)
        for k in drift_keys(rows):
            xs, ys = series(rows, k)
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} {k}", legendgroup=name, showlegend=False,
                                     line=dict(color=color, dash="solid" if k.endswith("final") else "dash")),
                          row=2, col=2)
        fig.add_trace(go.Scatter(x=[r["edits"] for r in rows], y=[update_norm_total(r) for r in rows], name=name,
                                 legendgroup=name, showlegend=False, line=dict(color=color)), row=2, col=3)
    fig.update_yaxes(type="log", row=2, col=2)
    fig.update_yaxes(type="log", row=2, col=3)
    fig.update_xaxes(title_text="edits so far")
    xlim = _x_range(data)
    if xlim is not None:
        fig.update_xaxes(range=list(xlim))
    fig.update_layout(height=700, title=title or None)
    return fig


def write_runs_html(runs: dict, path, title: str = "") -> Path:
    """Interactive HTML (plotly.js written once beside it, so it opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs_figure(runs, title).write_html(path, include_plotlyjs="directory")
    return path


def plot_embedding_png(runs: dict, path, key="final", method: str = "pca", step: int | None = None) -> Path:
    """The paper's Figure 5: probe hidden states before (grey) and after (colour) editing, 2-D."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from alphaedit_lite.experiments.drift import embed_2d, shift_measures

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.5), constrained_layout=True, squeeze=False)
    for ax, (name, d) in zip(axes[0], runs.items()):
        base, after = load_hidden(d, step)
        k = key if key in base else list(base)[0]
        za, zb = embed_2d(base[k].numpy(), after[k].numpy(), method=method)
        m = shift_measures(base[k], after[k], method=method)
        ax.scatter(za[:, 0], za[:, 1], s=8, c="0.6", label="before editing")
        ax.scatter(zb[:, 0], zb[:, 1], s=8, alpha=0.7, label="after editing")
        ax.set_title(f"{name} ({method.upper()}, {k})\noverlap {m['marginal_overlap']:.2f}, "
                     f"Hausdorff {m['hausdorff']:.2f}, inside {100 * m['share_inside']:.0f}%", fontsize=9)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
