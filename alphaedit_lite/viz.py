"""Figures and slider widgets for the notebooks: thin layers over the null-space core.

Nothing here is new mathematics. Projectors come from `nullspace.null_space_projector`
(AlphaEdit, Fang et al. ICLR 2025, Eq. 5-7: P = Û Ûᵀ from the eigenvectors of K0 K0ᵀ / n with
small eigenvalues), updates from `solvers.memit_delta` (MEMIT Eq. 14) and
`solvers.alphaedit_delta` (AlphaEdit Eq. 14), leaks from `verify.preserved_change`. This module
only arranges their numbers into pictures:

* `plot_keys_3d`         plotly 3-D figure (turnable): preserved keys on a plane, the null
                         direction, an update row δ and its projection δP.
* `plotly_to_matplotlib` static matplotlib copy of such a figure, for PNG export where no browser
                         (and so no kaleido) is available.
* `plot_spectrum`        eigenvalues of C on a log scale, the threshold, the kept (editable) block.
* `null_space_explorer`  ipywidgets sliders (threshold, noise) → kept rank and ‖(ΔP)K0‖ live.
* `lambda_sweep`, `lambda_sweep_plot`, `lambda_explorer`
                         MEMIT's soft constraint ‖ΔK0‖ as λ varies, against AlphaEdit's.
* `convergence_plot`     distance of gradient-descent iterates to a closed form, log scale.

Conventions (CONTRIBUTING.md): keys are columns, K0 has shape (d, n); an update Δ has shape
(d_out, d). Static figures use matplotlib's object API (`matplotlib.figure.Figure`, no pyplot
state), so building them never opens windows and never shows a figure twice in a notebook.

Widgets degrade without a widget front end (plain nbconvert/nbclient, a terminal, pytest):
each explorer is an `ipywidgets.VBox` whose picture is an `Image` widget holding PNG bytes and
whose numbers are an `HTML` widget, both computed in Python at construction and on every
`update(...)` call, so they exist without any browser. Displayed where widgets cannot render,
the explorer's mime bundle also carries the current PNG, an HTML table and a text summary.
"""
from __future__ import annotations

import base64
import html
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch

from ._checks import as_matrix, check_same
from .covariance import SecondMoment
from .nullspace import MODES, Projector, null_space_projector
from .solvers import alphaedit_delta, memit_delta
from .verify import preserved_change

__all__ = [
    "plot_keys_3d", "plotly_to_matplotlib", "plot_spectrum", "convergence_plot",
    "null_space_explorer", "NullSpaceExplorer", "ExplorerReading",
    "lambda_sweep", "LambdaSweep", "lambda_sweep_plot", "lambda_explorer", "LambdaExplorer",
    "LambdaReading", "figure_to_png",
]

# Colours shared by the plotly and matplotlib figures (colour-blind safe, Okabe-Ito).
COLORS = {"keys": "#0072B2", "plane": "#56B4E9", "null": "#009E73", "update": "#D55E00",
          "projected": "#CC79A7", "memit": "#D55E00", "alphaedit": "#009E73", "cutoff": "#000000",
          "kept": "#F0E442"}


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


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (works with any backend, no display needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


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
def _html_table(rows: Mapping[str, str]) -> str:
    cells = "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>"
                    for k, v in rows.items())
    return f"<table>{cells}</table>"


class _Explorer:
    """Mixin for VBox explorers: an Image (PNG) + HTML readout and a static mime-bundle fallback."""

    _summary_text: str = ""

    def _set_outputs(self, fig, rows: dict[str, str], summary: str) -> None:
        self.image.value = figure_to_png(fig)
        self.readout.value = _html_table(rows)
        self._summary_text = summary

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        data = dict(data)
        # Front ends with widget support render the view; others fall back to these.
        data["text/plain"] = self._summary_text
        data["text/html"] = self.readout.value + f"<img src='data:image/png;base64,{base64.b64encode(self.image.value).decode()}'/>"
        data["image/png"] = base64.b64encode(self.image.value).decode()
        return data


@dataclass
class ExplorerReading:
    """What the null-space explorer shows for one (threshold, noise) setting."""

    threshold: float
    noise: float
    mode: str
    dim: int                 # d, key dimension
    kept_rank: int           # r, directions an update may use
    cutoff: float            # eigenvalue cutoff implied by the threshold
    change_before: float     # ‖Δ K0‖_F for the fixed random update, ‖Δ‖_F = 1
    change_after: float      # ‖(Δ P) K0‖_F
    leak_after: float        # ‖(ΔP) K0‖_F / (‖ΔP‖_F ‖K0‖_F), scale-free
    relative_leak: float     # ‖P K0‖_F / ‖K0‖_F, the projector's own bound on leak_after
    note: str = ""
    projector: Projector | None = field(default=None, repr=False)

    def summary(self) -> str:
        s = (f"{self.mode} threshold {self.threshold:.3g}, noise {self.noise:.3g}: kept rank {self.kept_rank}/{self.dim} "
             f"(eigenvalue cutoff {self.cutoff:.3g}); ‖ΔK0‖_F = {self.change_before:.3e} → ‖(ΔP)K0‖_F = "
             f"{self.change_after:.3e}; leak ‖(ΔP)K0‖/(‖ΔP‖‖K0‖) = {self.leak_after:.3e} ≤ ‖PK0‖/‖K0‖ = "
             f"{self.relative_leak:.3e}")
        return s + (f" [{self.note}]" if self.note else "")


_DEFAULT_RANGES = {"absolute": (1e-8, 1e2), "relative": (1e-12, 0.5), "energy": (1e-12, 0.5)}


def _log_slider(description, value, lo, hi):
    if not (lo > 0 and hi > lo):
        raise ValueError(f"{description} range must satisfy 0 < low < high, got ({lo}, {hi})")
    if not lo <= value <= hi:
        raise ValueError(f"{description} {value:g} is outside its slider range [{lo:g}, {hi:g}]; widen the range")
    return widgets.FloatLogSlider(value=value, base=10, min=math.log10(lo), max=math.log10(hi),
                                  step=0.05, description=description,  # 20 positions per decade
                                  readout_format=".2e", continuous_update=False,
                                  style={"description_width": "initial"}, layout=widgets.Layout(width="480px"))


def _set_slider(slider, value: float, what: str) -> None:
    """Move a slider to `value`, refusing values outside its range (a slider would silently clip)."""
    if isinstance(slider, widgets.FloatLogSlider):
        lo, hi = slider.base ** slider.min, slider.base ** slider.max
    else:
        lo, hi = slider.min, slider.max
    if not lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
        raise ValueError(f"{what} {value:g} is outside the slider range [{lo:.3g}, {hi:.3g}]; "
                         "pass a wider range when building the explorer")
    slider.value = value


class NullSpaceExplorer(_Explorer, widgets.VBox):
    """Sliders for the threshold and the key noise; readout of the kept rank and ‖(ΔP)K0‖."""

    def __init__(self, keys_fn, threshold, noise, mode, threshold_range, noise_range, d_out, seed, cache_size):
        self.keys_fn, self.mode, self.d_out, self.seed = keys_fn, mode, d_out, seed
        self._cache: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}       # noise → (K0, C)
        self._proj_cache: dict[tuple[float, float], tuple[Projector, str]] = {}  # (noise, threshold) → P
        self._cache_size = cache_size
        self._delta: torch.Tensor | None = None
        self._busy = False
        self.keys_fn_calls = 0
        K0, _ = self._keys(noise)
        d = K0.shape[0]
        if mode == "rank":
            lo, hi = threshold_range or (0, d)
            if not (0 <= lo <= threshold <= hi <= d) or int(threshold) != threshold:
                raise ValueError(f"rank threshold must be an integer in [{lo}, {hi}] ⊆ [0, {d}], got {threshold}")
            self.threshold_slider = widgets.IntSlider(value=int(threshold), min=int(lo), max=int(hi),
                                                      description="kept rank", continuous_update=False,
                                                      layout=widgets.Layout(width="480px"))
        else:
            lo, hi = threshold_range or _DEFAULT_RANGES[mode]
            self.threshold_slider = _log_slider(f"{mode} threshold", threshold, lo, hi)
        self.noise_slider = _log_slider("key noise σ", noise, *noise_range)
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="640px"))
        self.readout = widgets.HTML()
        self.last: ExplorerReading | None = None
        super().__init__([widgets.HBox([self.threshold_slider, self.noise_slider]), self.readout, self.image])
        self.threshold_slider.observe(self._on_slider, names="value")
        self.noise_slider.observe(self._on_slider, names="value")
        self.update()

    def _keys(self, noise: float):
        key = float(noise)
        if key not in self._cache:
            K0 = as_matrix("keys_fn(noise) (keys as columns, shape (d, n))", self.keys_fn(key)).to(torch.float64)
            self.keys_fn_calls += 1
            if len(self._cache) >= self._cache_size:
                old = next(iter(self._cache))
                self._cache.pop(old)
                self._proj_cache = {k: v for k, v in self._proj_cache.items() if k[0] != old}
            self._cache[key] = (K0, SecondMoment.from_keys(K0).cov)  # (d, n), (d, d)
        return self._cache[key]

    def _projector(self, noise: float, threshold: float, C: torch.Tensor) -> tuple[Projector, str]:
        """null_space_projector(C, threshold, mode), remembered per (noise, threshold); and a note."""
        key = (float(noise), float(threshold))
        if key not in self._proj_cache:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                proj = null_space_projector(C, threshold=threshold, mode=self.mode, allow_empty=True)
            note = ""
            if proj.kept_rank == 0:
                note = "no room to edit: P = 0"
            elif caught:
                note = "P = I: nothing is preserved"
            if len(self._proj_cache) >= 4 * self._cache_size:
                self._proj_cache.pop(next(iter(self._proj_cache)))
            self._proj_cache[key] = (proj, note)
        return self._proj_cache[key]

    def _update_delta(self, d: int, device) -> torch.Tensor:
        if self._delta is None or self._delta.shape[1] != d:
            g = torch.Generator().manual_seed(self.seed)
            delta = torch.randn(self.d_out, d, generator=g, dtype=torch.float64)
            self._delta = delta / torch.linalg.matrix_norm(delta)  # ‖Δ‖_F = 1, (d_out, d)
        return self._delta.to(device)

    def _on_slider(self, _change):
        if not self._busy:
            self.update()

    def update(self, threshold: float | None = None, noise: float | None = None) -> ExplorerReading:
        """Recompute at these values (the sliders' current ones when None); move the sliders."""
        self._busy = True
        try:
            if self.mode == "rank" and threshold is not None and int(threshold) != threshold:
                raise ValueError(f"rank threshold must be an integer, got {threshold}")
            if threshold is not None:
                _set_slider(self.threshold_slider, threshold, f"{self.mode} threshold")
            if noise is not None:
                _set_slider(self.noise_slider, noise, "noise")
        finally:
            self._busy = False
        thr, sig = self.threshold_slider.value, float(self.noise_slider.value)
        K0, C = self._keys(sig)
        proj, note = self._projector(sig, thr, C)
        delta = self._update_delta(K0.shape[0], K0.device)
        dP = delta @ proj.P.to(delta)  # (d_out, d)
        reading = ExplorerReading(
            threshold=float(thr), noise=sig, mode=self.mode, dim=proj.dim, kept_rank=proj.kept_rank,
            cutoff=proj.cutoff, change_before=float(torch.linalg.matrix_norm(delta @ K0)),
            change_after=float(torch.linalg.matrix_norm(dP @ K0)), leak_after=preserved_change(dP, K0),
            relative_leak=proj.relative_leak, note=note, projector=proj)
        fig = plot_spectrum(proj, title=f"kept rank {proj.kept_rank}/{proj.dim}, ‖(ΔP)K0‖_F = {reading.change_after:.2e}")
        rows = {"threshold": f"{self.mode} {reading.threshold:.3g} (eigenvalue cutoff {reading.cutoff:.3g})",
                "key noise σ": f"{sig:.3g}",
                "kept rank r": f"{reading.kept_rank} / {reading.dim}",
                "‖ΔK0‖_F (‖Δ‖_F = 1)": f"{reading.change_before:.3e}",
                "‖(ΔP)K0‖_F": f"{reading.change_after:.3e}",
                "‖(ΔP)K0‖/(‖ΔP‖‖K0‖)": f"{reading.leak_after:.3e}",
                "bound ‖PK0‖/‖K0‖": f"{reading.relative_leak:.3e}"}
        if note:
            rows["note"] = note
        self._set_outputs(fig, rows, "Null-space explorer (sliders need a widget front end). " + reading.summary())
        self.last = reading
        return reading


def null_space_explorer(keys_fn: Callable[[float], torch.Tensor], *, threshold: float = 2e-2, noise: float = 1e-2,
                        mode: str = "absolute", threshold_range: tuple[float, float] | None = None,
                        noise_range: tuple[float, float] = (1e-4, 1e-1), d_out: int = 8, seed: int = 0,
                        cache_size: int = 8):
    """Slider widget: threshold and key noise → kept rank and ‖(ΔP)K0‖ for a fixed random update.

    keys_fn(noise) returns preserved keys as columns, (d, n); results are cached per noise level.
    The update Δ (d_out, d) is Gaussian with ‖Δ‖_F = 1 (seeded). Returns an ipywidgets VBox with
    `.update(threshold=None, noise=None) -> ExplorerReading` (also moves the sliders), `.last`,
    `.image` (PNG of the spectrum) and `.readout` (HTML numbers), all computed at construction,
    so a headless run has them without a widget front end.
    """
    if not callable(keys_fn):
        raise TypeError(f"keys_fn must be a function noise -> K0 (d, n), got {type(keys_fn).__name__}")
    if mode not in MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; choose one of {MODES}")
    if d_out < 1 or cache_size < 1:
        raise ValueError(f"d_out and cache_size must be ≥ 1, got {d_out} and {cache_size}")
    return NullSpaceExplorer(keys_fn, threshold, noise, mode, threshold_range, noise_range, d_out, seed, cache_size)


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


def lambda_sweep(R, K1, K0, P, lams: Sequence[float], *, alpha: float = 10.0, prev_cov=None) -> LambdaSweep:
    """Measure MEMIT (Eq. 14, C0 = K0K0ᵀ/n) for each λ in `lams` and AlphaEdit (Eq. 14) once.

    R (d_out, u) residuals, K1 (d_in, u) new keys, K0 (d_in, n) preserved keys, P the projector
    (a tensor or a `Projector`), prev_cov = Kp Kpᵀ or None. Both solvers come from
    `alphaedit_lite.solvers`; this function only loops and measures.
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


@dataclass
class LambdaReading:
    lam: float
    memit_preserved: float
    memit_edit_error: float
    alphaedit_preserved: float
    alphaedit_edit_error: float

    def summary(self) -> str:
        return (f"λ = {self.lam:.3g}: MEMIT ‖ΔK0‖/√n = {self.memit_preserved:.3e}, edit error {self.memit_edit_error:.3e}; "
                f"AlphaEdit ‖ΔK0‖/√n = {self.alphaedit_preserved:.3e}, edit error {self.alphaedit_edit_error:.3e}")


class LambdaExplorer(_Explorer, widgets.VBox):
    """A λ slider: MEMIT's update recomputed live, marked on the static sweep."""

    def __init__(self, R, K1, K0, sweep, lam, prev_cov, lam_range):
        self.R, self.K1, self.K0, self.sweep, self.prev_cov = R, K1, K0, sweep, prev_cov
        self.C0 = SecondMoment.from_keys(K0).cov.to(K0.device)
        self._busy = False
        self.slider = _log_slider("MEMIT λ", lam, *lam_range)
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="900px"))
        self.readout = widgets.HTML()
        self.last: LambdaReading | None = None
        super().__init__([self.slider, self.readout, self.image])
        self.slider.observe(lambda _c: None if self._busy else self.update(), names="value")
        self.update()

    def update(self, lam: float | None = None) -> LambdaReading:
        """Recompute MEMIT at λ (the slider's value when None) and move the slider."""
        if lam is not None:
            self._busy = True
            try:
                _set_slider(self.slider, lam, "λ")
            finally:
                self._busy = False
        lam = float(self.slider.value)
        delta = memit_delta(self.R, self.K1, self.C0, lam, prev_cov=self.prev_cov)
        p, e = _edit_measures(delta, self.R, self.K1, self.K0)
        reading = LambdaReading(lam, p, e, self.sweep.alphaedit_preserved, self.sweep.alphaedit_edit_error)
        fig = lambda_sweep_plot(self.sweep, current=lam)
        rows = {"λ": f"{lam:.3g}", "MEMIT ‖ΔK0‖/√n": f"{p:.3e}", "MEMIT edit error": f"{e:.3e}",
                "AlphaEdit ‖ΔK0‖/√n": f"{reading.alphaedit_preserved:.3e}",
                "AlphaEdit edit error": f"{reading.alphaedit_edit_error:.3e}"}
        self._set_outputs(fig, rows, "λ explorer (slider needs a widget front end). " + reading.summary())
        self.last = reading
        return reading


def lambda_explorer(R, K1, K0, P, *, alpha: float = 10.0, prev_cov=None, lam: float = 1.0,
                    lam_range: tuple[float, float] = (1e-3, 1e6), sweep: LambdaSweep | None = None,
                    sweep_points: int = 19):
    """Slider widget over MEMIT's λ: ‖ΔK0‖ and edit error live, against AlphaEdit's (fixed).

    The static curve is `sweep` (computed with `lambda_sweep` over `lam_range` when None). Returns
    an ipywidgets VBox with `.update(lam=None) -> LambdaReading`, `.last`, `.image`, `.readout`.
    """
    R, K1, K0, P = _check_edit_inputs(R, K1, K0, P)
    if sweep is None:
        lo, hi = lam_range
        if not 0 < lo < hi:
            raise ValueError(f"lam_range must satisfy 0 < low < high, got {lam_range}")
        sweep = lambda_sweep(R, K1, K0, P, np.geomspace(lo, hi, sweep_points), alpha=alpha, prev_cov=prev_cov)
    return LambdaExplorer(R, K1, K0, sweep, lam, prev_cov, lam_range)


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
