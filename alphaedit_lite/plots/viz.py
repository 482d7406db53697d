"""Figures for the notebooks: thin layers over the null-space core (the slider explorers built on them are
:mod:`alphaedit_lite.widgets.nullspace`).

Nothing here is new mathematics. Projectors come from `nullspace.null_space_projector`
(AlphaEdit, Fang et al. ICLR 2025, Eq. 8-9: P = Û Ûᵀ from the eigenvectors of K0 K0ᵀ / n with
small eigenvalues), updates from `solvers.memit_delta` (MEMIT Eq. 14) and
`solvers.alphaedit_delta` (AlphaEdit Eq. 14), leaks from `verify.preserved_change`. This module
only arranges their numbers into pictures:

* `plot_keys_3d`         plotly 3-D figure (turnable): preserved keys on a plane, the null
                         direction, an update row δ and its projection δP.
* `plotly_to_matplotlib` static matplotlib copy of such a figure, for PNG export where no browser
                         (and so no kaleido) is available.
* `plot_spectrum`        eigenvalues of C on a log scale, the threshold, the kept (editable) block;
                         `spectrum_slider` the same in plotly for several corpus sizes, one slider step each.
* `lambda_sweep`, `lambda_sweep_plot`
                         MEMIT's soft constraint ‖ΔK0‖ as λ varies, against AlphaEdit's.
* `plot_trace`           causal-tracing heatmaps (ROME, Fig. 1); `plot_trace_interactive` the same
                         in plotly, with the token, layer and value under the mouse.
* `convergence_plot`     distance of gradient-descent iterates to a closed form, log scale.

Conventions (CONTRIBUTING.md): keys are columns, K0 has shape (d, n); an update Δ has shape
(d_out, d). Static figures use matplotlib's object API (`matplotlib.figure.Figure`, no pyplot
state), so building them never opens windows and never shows a figure twice in a notebook.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from alphaedit_lite.core.validate import as_matrix, check_same
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.nullspace import Projector
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta
from alphaedit_lite.plots.style import COLORS, figure_to_png

__all__ = [
    "plot_keys_3d", "plotly_to_matplotlib", "plot_spectrum", "convergence_plot",
    "lambda_sweep", "LambdaSweep", "lambda_sweep_plot", "plot_trace", "plot_trace_interactive", "spectrum_slider", "COLORS",
    "figure_to_png",
]

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _np(x, name: str, ndim: int | None = None) -> np.ndarray:
    """A float64 numpy copy of a tensor / array, with a clear error for the wrong rank."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}") from exc
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def _new_figure(ax=None, figsize=(6.4, 4.0)):
    """(figure, axes): the given axes' figure, or a fresh pyplot-free Figure with one axes.

    Fixed margins instead of a layout engine: these figures are redrawn on every slider move.
    """
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.9)
    return fig, fig.add_subplot(1, 1, 1)


# --------------------------------------------------------------------------------------------
# 3-D geometry (plotly)
# --------------------------------------------------------------------------------------------
def _arrow(tip: np.ndarray, name: str, color: str, dash: str = "solid", start: np.ndarray | None = None,
           width: int = 7):
    """A 3-D segment start → tip (start = origin by default) with a marker on the tip."""
    import plotly.graph_objects as go

    start = np.zeros(3) if start is None else start
    return go.Scatter3d(x=[start[0], tip[0]], y=[start[1], tip[1]], z=[start[2], tip[2]], mode="lines+markers",
                        name=name, line=dict(color=color, width=width, dash=dash),
                        marker=dict(size=[0, 6], color=color, symbol="diamond"),
                        hovertemplate=f"{name}<br>(%{{x:.2f}}, %{{y:.2f}}, %{{z:.2f}})<extra></extra>")


def plot_keys_3d(K0, null_direction=None, update=None, projected=None, key_values=None, *,
                 key_values_label: str = "δ·k", title: str | None = None, plane_opacity: float = 0.25,
                 arrow_scale: float | str = "auto"):
    """A turnable plotly figure of 3-D keys and what a projection does to an update.

    K0              (3, n) preserved keys as columns.
    null_direction  (3,) direction the keys do not use (the normal of their plane); P = n nᵀ.
    update          (3,) one row δ of an update Δ (a direction in key space: the output changes by δ·k).
    projected       (3,) the same row after projection, δP (lies along the null direction).
    key_values      (n,) optional numbers to colour the keys by, e.g. δ·k (labelled key_values_label).
    arrow_scale     δ and δP are directions whose length is in other units than the keys'; both are
                    drawn multiplied by this one factor. "auto" makes δ 60 % as long as the largest
                    key coordinate; the factor is stated in the title when it is not 1.
    Traces, in order: "preserved keys K0", "plane of K0" and "null direction" (when
    null_direction is given), "update δ", "projected δP", and "removed δ(I−P)" (the in-plane part
    the projection drops, a dotted segment from δP to δ, when both are given).
    """
    import plotly.graph_objects as go

    K = _np(K0, "K0 (keys as columns, shape (3, n))", 2)
    if K.shape[0] != 3:
        raise ValueError(f"K0 must hold 3-D keys as columns, shape (3, n); got {K.shape}. "
                         "Transpose a (n, 3) batch of rows with K0.T")
    vectors = {}
    for nm, v in (("null_direction", null_direction), ("update", update), ("projected", projected)):
        if v is not None:
            a = _np(v, nm).reshape(-1)
            if a.shape != (3,):
                raise ValueError(f"{nm} must be a 3-vector, got {a.size} entries")
            vectors[nm] = a
    marker = dict(size=3, color=COLORS["keys"], opacity=0.8)
    if key_values is not None:
        kv = _np(key_values, "key_values").reshape(-1)
        check_same("key_values", "key_values' length", kv.size, "K0's number of keys (columns)", K.shape[1])
        m = float(np.abs(kv).max()) or 1.0
        marker.update(color=kv, colorscale="RdBu", cmin=-m, cmax=m, opacity=0.9,
                      colorbar=dict(title=key_values_label, thickness=12, len=0.6))
    traces = [go.Scatter3d(x=K[0], y=K[1], z=K[2], mode="markers", marker=marker, name="preserved keys K0")]
    span = float(np.abs(K).max()) or 1.0
    if "null_direction" in vectors:
        nvec = vectors["null_direction"]
        norm = float(np.linalg.norm(nvec))
        if norm == 0:
            raise ValueError("null_direction is the zero vector; pass the eigenvector of K0 K0ᵀ with the smallest eigenvalue")
        nvec = nvec / norm
        # Orthonormal basis (a, b) of the plane ⟂ n, and the keys' extent in it.
        _, _, vt = np.linalg.svd(np.eye(3) - np.outer(nvec, nvec))
        a, b = vt[0], vt[1]
        ca, cb = a @ K, b @ K
        s = np.linspace(min(ca.min(), -0.1 * span), max(ca.max(), 0.1 * span), 12)
        t = np.linspace(min(cb.min(), -0.1 * span), max(cb.max(), 0.1 * span), 12)
        S, T = np.meshgrid(s, t)
        grid = S[..., None] * a + T[..., None] * b  # (12, 12, 3)
        traces.append(go.Surface(x=grid[..., 0], y=grid[..., 1], z=grid[..., 2], opacity=plane_opacity,
                                 showscale=False, colorscale=[[0, COLORS["plane"]], [1, COLORS["plane"]]],
                                 name="plane of K0", showlegend=True, hoverinfo="skip"))
        traces.append(_arrow(nvec * span * 0.9, "null direction", COLORS["null"], "dash", start=-nvec * span * 0.9,
                             width=4))
    if arrow_scale == "auto":
        ref = vectors.get("update", vectors.get("projected"))
        ref_norm = float(np.linalg.norm(ref)) if ref is not None else 0.0
        scale = 0.6 * span / ref_norm if ref_norm > 0 else 1.0
    elif isinstance(arrow_scale, (int, float)) and arrow_scale > 0:
        scale = float(arrow_scale)
    else:
        raise ValueError(f"arrow_scale must be 'auto' or a positive number, got {arrow_scale!r}")
    upd = vectors["update"] * scale if "update" in vectors else None
    prj = vectors["projected"] * scale if "projected" in vectors else None
    if upd is not None:
        traces.append(_arrow(upd, "update δ", COLORS["update"]))
    if prj is not None:
        traces.append(_arrow(prj, "projected δP", COLORS["projected"], width=9))
    if upd is not None and prj is not None:
        traces.append(_arrow(upd, "removed δ(I−P)", "gray", "dot", start=prj, width=4))
    fig = go.Figure(traces)
    title = title or "Preserved keys, null direction, update δ and its projection δP"
    if (upd is not None or prj is not None) and not math.isclose(scale, 1.0):
        title += f" (δ, δP drawn ×{scale:.3g})"
    fig.update_layout(title=title,
                      scene=dict(xaxis_title="key dim 1", yaxis_title="key dim 2", zaxis_title="key dim 3",
                                 aspectmode="data"),
                      legend=dict(x=0.0, y=1.0), margin=dict(l=0, r=0, t=40, b=0), height=520)
    return fig


def _plotly_array(v) -> np.ndarray:
    """A plotly data field as a numpy array; decodes plotly ≥ 6's typed-array JSON {dtype, bdata, shape}."""
    if isinstance(v, Mapping) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = v.get("shape")
        if shape is not None:
            arr = arr.reshape([int(x) for x in str(shape).split(",")] if isinstance(shape, str) else shape)
        return arr.astype(np.float64)
    return np.asarray(v, dtype=np.float64)


def plotly_to_matplotlib(fig, figsize=(7.0, 5.5)):
    """A static matplotlib copy of a plotly figure made of Scatter3d / Surface / Scatter traces.

    For PNG export and headless checks where plotly's own image export (kaleido, which needs a
    Chrome browser) is unavailable. Other trace types raise a TypeError naming them.
    """
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    if not isinstance(fig, go.Figure):
        raise TypeError(f"expected a plotly.graph_objects.Figure, got {type(fig).__name__}")
    kinds = {t.type for t in fig.data}
    unknown = kinds - {"scatter3d", "surface", "scatter"}
    if unknown:
        raise TypeError(f"plotly_to_matplotlib handles scatter3d, surface and scatter traces, not {sorted(unknown)}")
    three_d = bool(kinds & {"scatter3d", "surface"})
    out = Figure(figsize=figsize, layout="constrained")
    ax = out.add_subplot(1, 1, 1, projection="3d" if three_d else None)
    for t in fig.data:
        name = t.name or t.type
        if t.type == "surface":
            ax.plot_surface(_plotly_array(t.x), _plotly_array(t.y), _plotly_array(t.z), alpha=float(t.opacity or 0.3),
                            color=COLORS["plane"], linewidth=0, label=name)
            continue
        xyz = [_plotly_array(t.x), _plotly_array(t.y)]
        if t.type == "scatter3d":
            xyz.append(_plotly_array(t.z))
        mode = t.mode or "lines+markers"
        color = t.line.color if "lines" in mode and t.line.color else None
        if "lines" in mode:
            ax.plot(*xyz, color=color, lw=(t.line.width or 7) / 2.5,
                    ls={"dash": "--", "dot": ":"}.get(t.line.dash, "-"), label=name)
        if "markers" in mode:
            mc = t.marker.color
            sizes = t.marker.size
            if "lines" in mode:  # an arrow: mark only its tip
                ax.scatter(*[c[-1:] for c in xyz], color=color, marker="D", s=30)
            elif mc is not None and not isinstance(mc, str):
                mc = _plotly_array(mc)
                m = float(np.abs(mc).max()) or 1.0
                sc = ax.scatter(*xyz, c=mc, cmap="RdBu", vmin=-m, vmax=m,
                                s=8 if sizes is None or not np.isscalar(sizes) else float(sizes) * 3, label=name)
                out.colorbar(sc, ax=ax, shrink=0.6, label=getattr(t.marker.colorbar.title, "text", None) or "")
            else:
                ax.scatter(*xyz, color=mc or COLORS["keys"], s=8, label=name)
    lay = fig.layout
    if three_d:
        ax.set_xlabel(lay.scene.xaxis.title.text or "x")
        ax.set_ylabel(lay.scene.yaxis.title.text or "y")
        ax.set_zlabel(lay.scene.zaxis.title.text or "z")
        try:
            ax.set_box_aspect(None, zoom=0.9)
            ax.set_aspect("equal")
        except (NotImplementedError, ValueError, TypeError):  # old matplotlib: keep the default box
            pass
    else:
        ax.set_xlabel(lay.xaxis.title.text or "x")
        ax.set_ylabel(lay.yaxis.title.text or "y")
        if lay.xaxis.type == "log":
            ax.set_xscale("log")
        if lay.yaxis.type == "log":
            ax.set_yscale("log")
    ax.legend(loc="upper left", fontsize=8)
    if lay.title.text:
        ax.set_title(lay.title.text, fontsize=10)
    return out


# --------------------------------------------------------------------------------------------
# spectra and convergence (matplotlib)
# --------------------------------------------------------------------------------------------
def plot_spectrum(eigenvalues, cutoff: float | None = None, kept_rank: int | None = None, *, ax=None,
                  label: str | None = None, color: str | None = None, title: str | None = None,
                  shade: bool = True):
    """Eigenvalues of C = K0 K0ᵀ / n on a log scale (largest first), the cutoff, the kept block.

    `eigenvalues` is a (d,) tensor/array in any order, or a `Projector` (its eigenvalues, cutoff
    and kept_rank are used unless given). The `kept_rank` smallest eigenvalues' directions form
    the null space P projects onto; they are shaded. Eigenvalues ≤ 0 (rounding) are drawn at a
    floor of 1e-18·λ_max and counted in the legend. Returns the matplotlib Figure; pass `ax` to
    overlay several spectra.
    """
    if isinstance(eigenvalues, Projector):
        proj = eigenvalues
        eigenvalues = proj.eigenvalues
        cutoff = proj.cutoff if cutoff is None else cutoff
        kept_rank = proj.kept_rank if kept_rank is None else kept_rank
    lam = np.sort(_np(eigenvalues, "eigenvalues", 1))[::-1]  # descending
    d = lam.size
    if d == 0:
        raise ValueError("eigenvalues is empty; pass the (d,) eigenvalues of a key covariance")
    if not np.isfinite(lam).all():
        raise ValueError("eigenvalues contain NaN/Inf; build the covariance in float64 from finite keys")
    if kept_rank is not None and not 0 <= int(kept_rank) <= d:
        raise ValueError(f"kept_rank must be in [0, {d}], got {kept_rank}")
    top = float(np.abs(lam).max()) or 1.0
    floor = top * 1e-18
    n_clamped = int((lam <= floor).sum())
    fig, ax = _new_figure(ax)
    x = np.arange(1, d + 1)
    lbl = label or "eigenvalues λ of C"
    if n_clamped:
        lbl += f" ({n_clamped} ≤ 0 drawn at floor)"
    ax.plot(x, np.maximum(lam, floor), color=color or COLORS["keys"], lw=1.6, label=lbl)
    if cutoff is not None and math.isfinite(cutoff) and cutoff > 0:
        ax.axhline(cutoff, color=COLORS["cutoff"], ls="--", lw=1.2, label=f"threshold {cutoff:.3g}")
    if kept_rank and shade:
        ax.axvspan(d - int(kept_rank) + 0.5, d + 0.5, color=COLORS["kept"], alpha=0.35,
                   label=f"kept (editable) directions: {int(kept_rank)}/{d}")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("eigenvalue of K0K0ᵀ/n")
    ax.set_xlim(0, d + 1)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def convergence_plot(distances, *, reference=None, ax=None, label: str = "gradient descent",
                     reference_label: str = "predicted rate", title: str | None = None):
    """Distance per step to a target (e.g. ‖Δ_t − Δ*‖_F / ‖Δ*‖_F) on a log scale.

    `distances` (T,) positive numbers; `reference` an optional (T,) curve drawn dashed, e.g. the
    linear rate (1 − ημ)^t that theory predicts. Returns the matplotlib Figure.
    """
    dist = _np(distances, "distances", 1)
    if dist.size == 0:
        raise ValueError("distances is empty; record at least one step")
    fig, ax = _new_figure(ax)
    floor = 1e-300
    ax.plot(np.arange(dist.size), np.maximum(dist, floor), color=COLORS["memit"], lw=1.8, label=label)
    if reference is not None:
        ref = _np(reference, "reference", 1)
        ax.plot(np.arange(ref.size), np.maximum(ref, floor), color="gray", ls="--", lw=1.2, label=reference_label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("distance to the closed form")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# explorers: ipywidgets with a PNG + HTML readout that exist without any front end
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# MEMIT's soft constraint against AlphaEdit's projection
# --------------------------------------------------------------------------------------------
@dataclass
class LambdaSweep:
    """MEMIT's update at several λ against AlphaEdit's, measured on the same edit.

    preserved: ‖Δ K0‖_F / sqrt(n), the rms change of a preserved output.
    edit_error: ‖Δ K1 − R‖_F / ‖R‖_F, the share of the requested change not delivered.
    """

    lams: np.ndarray                 # (L,)
    memit_preserved: np.ndarray      # (L,)
    memit_edit_error: np.ndarray     # (L,)
    alphaedit_preserved: float
    alphaedit_edit_error: float
    alpha: float

    def table(self) -> str:
        lines = [f"{'λ':>10} {'MEMIT ‖ΔK0‖/√n':>16} {'MEMIT edit err':>15}"]
        lines += [f"{lam:>10.3g} {p:>16.3e} {e:>15.3e}" for lam, p, e in
                  zip(self.lams, self.memit_preserved, self.memit_edit_error)]
        lines.append(f"{'AlphaEdit':>10} {self.alphaedit_preserved:>16.3e} {self.alphaedit_edit_error:>15.3e}"
                     f"   (α = {self.alpha:g}, any λ)")
        return "\n".join(lines)


def _edit_measures(delta, R, K1, K0):
    preserved = float(torch.linalg.matrix_norm(delta @ K0)) / math.sqrt(K0.shape[1])
    err = float(torch.linalg.matrix_norm(delta @ K1 - R)) / max(float(torch.linalg.matrix_norm(R)), 1e-300)
    return preserved, err


def _check_edit_inputs(R, K1, K0, P):
    R = as_matrix("R (residuals, shape (d_out, u))", R).to(torch.float64)
    K1 = as_matrix("K1 (new keys as columns, shape (d_in, u))", K1).to(torch.float64)
    K0 = as_matrix("K0 (preserved keys as columns, shape (d_in, n))", K0).to(torch.float64)
    P = as_matrix("P (projector, shape (d_in, d_in))", P.P if isinstance(P, Projector) else P).to(torch.float64)
    check_same("K0 vs K1", "K0's key dimension", K0.shape[0], "K1's key dimension", K1.shape[0])
    return R, K1, K0, P


def spectrum_slider(projectors_by_size: Mapping[int, Projector], *, title: str | None = None):
    """Eigenvalue spectra of C0 built from growing amounts of text, one per step of a plotly slider.

    ``projectors_by_size``: {number of tokens: Projector} (e.g. one layer's P for each prefix of
    :func:`alphaedit_lite.locate.stats.growing_second_moments`). Each step shows that spectrum
    (largest first, log scale), the threshold and the kept rank in its title. Returns a plotly
    Figure; the slider works in a static HTML page too (no kernel).
    """
    import plotly.graph_objects as go

    if not projectors_by_size:
        raise ValueError("projectors_by_size is empty; pass {n_tokens: Projector}")
    sizes = sorted(projectors_by_size)
    fig = go.Figure()
    top = max(float(projectors_by_size[n].eigenvalues.max()) for n in sizes)
    floor = top * 1e-18
    for i, n in enumerate(sizes):
        pj = projectors_by_size[n]
        lam = np.sort(_np(pj.eigenvalues, "eigenvalues", 1))[::-1].clip(min=floor)
        fig.add_trace(go.Scatter(x=np.arange(1, lam.size + 1), y=lam, mode="lines", visible=i == len(sizes) - 1,
                                 line=dict(color=COLORS["alphaedit"]), name=f"{n:,} tokens",
                                 hovertemplate="direction %{x}<br>λ = %{y:.2e}<extra></extra>"))
    steps = []
    for i, n in enumerate(sizes):
        pj = projectors_by_size[n]
        steps.append(dict(method="update", label=f"{n:,}",
                          args=[{"visible": [j == i for j in range(len(sizes))]},
                                {"title.text": f"{title or 'eigenvalues of C0'}: {n:,} tokens, "
                                               f"kept rank {pj.kept_rank}/{pj.dim} (λ < {pj.cutoff:.1e})"}]))
    last = projectors_by_size[sizes[-1]]
    fig.add_hline(y=last.cutoff, line=dict(dash="dash", color="grey"), annotation_text="threshold")
    fig.update_layout(
        title=dict(text=f"{title or 'eigenvalues of C0'}: {sizes[-1]:,} tokens, kept rank {last.kept_rank}/"
                        f"{last.dim} (λ < {last.cutoff:.1e})", font=dict(size=12)),
        yaxis=dict(type="log", title="eigenvalue λ"), xaxis=dict(title="direction (largest λ first)"),
        sliders=[dict(active=len(sizes) - 1, steps=steps, currentvalue=dict(prefix="tokens: "), pad=dict(t=40))],
        height=420, margin=dict(l=10, r=10, t=60, b=10), showlegend=False)
    return fig

def lambda_sweep(R, K1, K0, P, lams: Sequence[float], *, alpha: float = 10.0, prev_cov=None) -> LambdaSweep:
    """Measure MEMIT (Eq. 14, C0 = K0K0ᵀ/n) for each λ in `lams` and AlphaEdit (Eq. 14) once.

    R (d_out, u) residuals, K1 (d_in, u) new keys, K0 (d_in, n) preserved keys, P the projector
    (a tensor or a `Projector`), prev_cov = Kp Kpᵀ or None. Both solvers come from
    `alphaedit_lite.core.solvers`; this function only loops and measures.
    """
    R, K1, K0, P = _check_edit_inputs(R, K1, K0, P)
    lams_arr = _np(list(lams), "lams", 1)
    if lams_arr.size == 0 or (lams_arr < 0).any():
        raise ValueError(f"lams must be a non-empty list of λ ≥ 0, got {list(lams)}")
    C0 = SecondMoment.from_keys(K0).cov.to(K0.device)  # (d_in, d_in)
    mp, me = [], []
    for lam in lams_arr:
        p, e = _edit_measures(memit_delta(R, K1, C0, float(lam), prev_cov=prev_cov), R, K1, K0)
        mp.append(p)
        me.append(e)
    ap, ae = _edit_measures(alphaedit_delta(R, K1, P, alpha=alpha, prev_cov=prev_cov), R, K1, K0)
    return LambdaSweep(lams=lams_arr, memit_preserved=np.array(mp), memit_edit_error=np.array(me),
                       alphaedit_preserved=ap, alphaedit_edit_error=ae, alpha=float(alpha))


def lambda_sweep_plot(sweep: LambdaSweep, *, current: float | None = None, axes=None, title: str | None = None):
    """Two log–log panels against λ: preserved-output change and edit error, MEMIT vs AlphaEdit.

    AlphaEdit does not depend on λ and is drawn as a horizontal line. `current` marks one λ.
    Returns the matplotlib Figure (pass `axes`, a pair, to draw into existing axes).
    """
    if not isinstance(sweep, LambdaSweep):
        raise TypeError(f"sweep must be a LambdaSweep from lambda_sweep(...), got {type(sweep).__name__}")
    if axes is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.8))
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.88, wspace=0.28)
        axes = fig.subplots(1, 2)
    else:
        fig = axes[0].figure
    tiny = 1e-300
    lams = np.maximum(sweep.lams, tiny)
    panels = ((sweep.memit_preserved, sweep.alphaedit_preserved, "‖ΔK0‖_F / √n  (preserved outputs move)"),
              (sweep.memit_edit_error, sweep.alphaedit_edit_error, "‖ΔK1 − R‖_F / ‖R‖_F  (edit not delivered)"))
    for ax, (memit, ae, ylabel) in zip(axes, panels):
        ax.plot(lams, np.maximum(memit, tiny), "o-", color=COLORS["memit"], ms=3, label="MEMIT (soft constraint, λ)")
        ax.axhline(max(ae, tiny), color=COLORS["alphaedit"], lw=2, label=f"AlphaEdit (null space, α={sweep.alpha:g})")
        if current is not None:
            ax.axvline(current, color="gray", ls=":", label=f"λ = {current:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MEMIT's λ")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# causal tracing (ROME, Meng et al. 2022, Fig. 1 and Fig. 2)
# --------------------------------------------------------------------------------------------
__all__ += ["plot_trace", "TRACE_CMAPS"]  # this section was appended after the list at the top

#: One colour map per traced kind, as in ROME's Fig. 1 (hidden purple, MLP green, attention red).
TRACE_CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
_TRACE_TITLES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}


def _trace_panels(result_or_aie, kinds):
    """[(kind, (rows, layers) array, row labels, colour label, vmin)] and a figure title."""
    if hasattr(result_or_aie, "effects") and hasattr(result_or_aie, "tokens"):  # a TraceResult
        r = result_or_aie
        first, last = r.subject_range
        labels = [(t.strip() or repr(t)) + ("*" if first <= i <= last else "") for i, t in enumerate(r.tokens)]
        kinds = list(r.effects) if kinds is None else list(kinds)
        panels = [(k, _np(r.effects[k], f"effects[{k!r}]", 2).T, labels,  # (seq_len, n_layers)
                   f"p({r.answer.strip()})", min(r.p_corrupt, float(r.effects[k].min()))) for k in kinds]
        title = (f"causal trace of {r.prompt!r} → {r.answer!r}: p clean {r.p_clean:.3f}, "
                 f"corrupted {r.p_corrupt:.3f}  (* = subject token, noise on the subject)")
        return panels, title, getattr(r, "window", 1)
    aies = result_or_aie
    if isinstance(aies, Mapping) and "aie" in aies:  # one average_indirect_effect(...) dict
        aies = {aies.get("kind", "mlp"): aies}
    if not isinstance(aies, Mapping) or not aies:
        raise TypeError("plot_trace takes a TraceResult, an average_indirect_effect(...) dict, or a dict "
                        f"kind -> such dicts; got {type(result_or_aie).__name__}")
    kinds = list(aies) if kinds is None else list(kinds)
    panels = []
    for k in kinds:
        a = aies[k]
        data = _np(a["aie"], f"aie[{k!r}]", 2)  # (n_groups, n_layers)
        panels.append((k, data, [g.replace("_", " ") for g in a["groups"]], "AIE",
                       min(0.0, float(np.nanmin(data))) if np.isfinite(data).any() else 0.0))
    n = next(iter(aies.values())).get("n_traces", "?")
    return panels, f"average indirect effect over {n} traces", 1


def plot_trace(result_or_aie, *, kinds: Sequence[str] | None = None, title: str | None = None,
               figsize: tuple[float, float] | None = None, cmaps: Mapping[str, str] | None = None):
    """ROME's Fig. 1: one heatmap per traced kind (hidden / MLP / attention), side by side.

    `result_or_aie`: a `tracing.TraceResult` (rows = token positions labelled with the tokens,
    subject tokens marked '*'; colour = p(answer) after restoring that state, from p_corrupt up),
    or what `tracing.average_indirect_effect` returns, alone or as a dict kind -> result (rows =
    the position groups; colour = AIE). Columns are layers. `kinds` selects/orders the panels.
    Returns a matplotlib Figure whose `axes` are the heatmaps only (one per kind); each colour
    bar is an inset of its heatmap.
    """
    from matplotlib.figure import Figure

    panels, auto_title, window = _trace_panels(result_or_aie, kinds)
    cmaps = {**TRACE_CMAPS, **(cmaps or {})}
    n_rows = panels[0][1].shape[0]
    width, height = figsize or (4.2 * len(panels), 1.6 + 0.32 * n_rows)
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.12, right=0.93, bottom=0.6 / height, top=1 - 0.75 / height, wspace=0.75)
    for i, (kind, data, labels, clabel, vmin) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        im = ax.imshow(data, aspect="auto", cmap=cmaps.get(kind, "viridis"), vmin=vmin, interpolation="nearest")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if i == 0 else [""] * len(labels), fontsize=8)
        L = data.shape[1]
        ax.set_xticks(range(0, L, max(1, L // 8)))
        w = 1 if kind == "hidden" else window
        ax.set_xlabel("layer" if w == 1 else f"centre of {w} restored layers", fontsize=9)
        ax.set_title(f"restoring {_TRACE_TITLES.get(kind, kind)}", fontsize=10)
        cax = ax.inset_axes([1.03, 0.0, 0.05, 1.0])  # a child of ax: fig.axes stays one per kind
        cbar = fig.colorbar(im, cax=cax)
        cbar.set_label(clabel, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    fig.suptitle(title or auto_title, fontsize=9)
    return fig



_PLOTLY_SCALES = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}


def plot_trace_interactive(result_or_aie, *, kinds: Sequence[str] | None = None, title: str | None = None,
                           height: int | None = None):
    """:func:`plot_trace` as a plotly figure: the same panels (same inputs, same rows and colours), and
    hovering a cell shows its token (or position group), layer and value. Returns a
    ``plotly.graph_objects.Figure`` with one heatmap trace per kind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels, auto_title, window = _trace_panels(result_or_aie, kinds)
    n_rows = panels[0][1].shape[0]
    titles = [f"restoring {_TRACE_TITLES.get(k, k)}" for k, *_ in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.12)
    for i, (kind, data, labels, clabel, vmin) in enumerate(panels):
        right = fig.layout[f"xaxis{'' if i == 0 else i + 1}"].domain[1]        # the panel's right edge (paper units)
        # rows are numbered so that repeated tokens stay separate rows; the labels are the tick text
        ys = list(range(len(labels)))
        vmax = float(np.nanmax(data)) if np.isfinite(data).any() else 1.0
        fig.add_trace(go.Heatmap(
            z=data, x=list(range(data.shape[1])), y=ys, zmin=vmin, zmax=max(vmax, vmin + 1e-9),
            colorscale=_PLOTLY_SCALES.get(kind, "Viridis"), customdata=[[lab] * data.shape[1] for lab in labels],
            hovertemplate=f"%{{customdata}}<br>layer %{{x}}<br>{clabel} = %{{z:.3f}}<extra>{kind}</extra>",
            colorbar=dict(title=dict(text=clabel, side="right"), len=0.9, thickness=10, x=right + 0.005,
                          xanchor="left")), row=1, col=i + 1)
        w = 1 if kind == "hidden" else window
        fig.update_xaxes(title_text="layer" if w == 1 else f"centre of {w} layers", row=1, col=i + 1)
    fig.update_yaxes(tickvals=list(range(n_rows)), ticktext=panels[0][2], autorange="reversed", row=1, col=1)
    fig.update_layout(title=dict(text=title or auto_title, font=dict(size=12)),
                      height=height or int(160 + 26 * n_rows), margin=dict(l=10, r=10, t=70, b=40))
    return fig