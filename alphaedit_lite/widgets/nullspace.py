"""Slider explorers over the null-space core: the threshold/noise explorer and MEMIT's λ explorer.

* :func:`null_space_explorer`  ipywidgets sliders (threshold, noise) → kept rank and ‖(ΔP)K0‖ live
  (AlphaEdit, Fang et al. ICLR 2025, Eq. 8-9: P = Û Ûᵀ from the eigenvectors of K0 K0ᵀ / n with
  small eigenvalues);
* :func:`lambda_explorer`      a λ slider: MEMIT's update (Meng et al. 2023, Eq. 14) recomputed
  live and marked on the static sweep of :func:`alphaedit_lite.plots.viz.lambda_sweep`.

Each explorer is an ``ipywidgets.VBox`` whose picture is an ``Image`` widget holding PNG bytes and
whose numbers are an ``HTML`` widget, both computed in Python at construction and on every
``update(...)`` call, so they exist without any browser; where widgets cannot render, the mime
bundle carries the PNG, an HTML table and a text summary (:class:`~alphaedit_lite.widgets.base.ImageReadout`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import ipywidgets as widgets
import numpy as np
import torch

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.nullspace import MODES, Projector, null_space_projector
from alphaedit_lite.core.solvers import memit_delta
from alphaedit_lite.core.validate import as_matrix
from alphaedit_lite.core.verify import preserved_change
from alphaedit_lite.plots.viz import LambdaSweep, _check_edit_inputs, _edit_measures, lambda_sweep, lambda_sweep_plot, plot_spectrum
from alphaedit_lite.widgets.base import ImageReadout

__all__ = ["null_space_explorer", "NullSpaceExplorer", "ExplorerReading", "lambda_explorer", "LambdaExplorer",
           "LambdaReading"]


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


class NullSpaceExplorer(ImageReadout, widgets.VBox):
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


class LambdaExplorer(ImageReadout, widgets.VBox):
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
