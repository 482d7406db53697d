"""alphaedit_lite.plots.viz: figures build with the expected traces, explorers update without a front end.

No widget front end exists under pytest (no kernel, no browser): these tests are the headless case.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch

plotly = pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

import plotly.graph_objects as go  # noqa: E402
import plotly.io as pio  # noqa: E402

from alphaedit_lite import widgets  # noqa: E402
from alphaedit_lite.plots import viz  # noqa: E402
from alphaedit_lite.core.covariance import SecondMoment  # noqa: E402
from alphaedit_lite.core.nullspace import null_space_projector  # noqa: E402
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta  # noqa: E402
from alphaedit_lite.core.verify import preserved_change  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
PNG = b"\x89PNG\r\n\x1a\n"
F64 = torch.float64


@pytest.fixture
def plane_keys(gen):
    basis = torch.linalg.qr(torch.randn(3, 2, generator=gen, dtype=F64))[0]  # (3, 2)
    K0 = basis @ torch.randn(2, 50, generator=gen, dtype=F64)                # (3, 50) on a plane
    normal = torch.linalg.eigh(K0 @ K0.T)[1][:, 0]
    delta = torch.randn(3, generator=gen, dtype=F64)
    return K0, normal, delta, delta @ torch.outer(normal, normal)


# ------------------------------------------------------------------------------------------ 3-D
def test_plot_keys_3d_traces_and_geometry(plane_keys):
    K0, normal, delta, delta_P = plane_keys
    fig = viz.plot_keys_3d(K0, null_direction=normal, update=delta, projected=delta_P, key_values=delta @ K0,
                           arrow_scale=1)
    names = [t.name for t in fig.data]
    assert names == ["preserved keys K0", "plane of K0", "null direction", "update δ", "projected δP", "removed δ(I−P)"]
    assert [t.type for t in fig.data] == ["scatter3d", "surface", "scatter3d", "scatter3d", "scatter3d", "scatter3d"]
    keys, surface = fig.data[0], fig.data[1]
    np.testing.assert_allclose(np.c_[keys.x, keys.y, keys.z], K0.T.numpy())
    np.testing.assert_allclose(np.asarray(keys.marker.color), (delta @ K0).numpy())
    grid = np.stack([np.asarray(surface.x), np.asarray(surface.y), np.asarray(surface.z)], -1)  # (12, 12, 3)
    assert np.abs(grid @ normal.numpy()).max() < 1e-12, "the drawn plane must be orthogonal to the null direction"
    upd, proj = fig.data[3], fig.data[4]
    np.testing.assert_allclose([upd.x[-1], upd.y[-1], upd.z[-1]], delta.numpy())
    np.testing.assert_allclose([proj.x[-1], proj.y[-1], proj.z[-1]], delta_P.numpy())
    tip = np.array([proj.x[-1], proj.y[-1], proj.z[-1]])
    assert abs(abs(tip @ normal.numpy()) - np.linalg.norm(tip)) < 1e-12, "δP must lie on the null direction"


def test_plot_keys_3d_minimal_and_bad_input(plane_keys):
    K0, normal, *_ = plane_keys
    assert [t.name for t in viz.plot_keys_3d(K0).data] == ["preserved keys K0"]
    with pytest.raises(ValueError, match="Transpose"):
        viz.plot_keys_3d(K0.T)
    with pytest.raises(ValueError, match="3-vector"):
        viz.plot_keys_3d(K0, update=torch.ones(4))
    with pytest.raises(ValueError, match="zero vector"):
        viz.plot_keys_3d(K0, null_direction=torch.zeros(3))
    with pytest.raises(ValueError, match="key_values"):
        viz.plot_keys_3d(K0, key_values=torch.ones(7))
    with pytest.raises(ValueError, match="arrow_scale"):
        viz.plot_keys_3d(K0, update=torch.ones(3), arrow_scale=-1)


def test_plot_keys_3d_auto_arrow_scale_keeps_directions(plane_keys):
    K0, normal, delta, delta_P = plane_keys
    fig = viz.plot_keys_3d(K0, update=delta, projected=delta_P)
    upd, prj = fig.data[1], fig.data[2]
    tip_u = np.array([upd.x[-1], upd.y[-1], upd.z[-1]])
    tip_p = np.array([prj.x[-1], prj.y[-1], prj.z[-1]])
    factor = np.linalg.norm(tip_u) / float(delta.norm())
    np.testing.assert_allclose(tip_u, factor * delta.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tip_p, factor * delta_P.numpy(), rtol=1e-12, atol=1e-15)
    assert np.linalg.norm(tip_u) == pytest.approx(0.6 * float(K0.abs().max()))
    assert f"×{factor:.3g}" in fig.layout.title.text


def test_plotly_to_matplotlib_renders_png_also_from_json(plane_keys):
    K0, normal, delta, delta_P = plane_keys
    fig = viz.plot_keys_3d(K0, null_direction=normal, update=delta, projected=delta_P, key_values=delta @ K0)
    for f in (fig, pio.from_json(fig.to_json())):  # plotly ≥ 6 stores arrays as base64 typed arrays in JSON
        static = viz.plotly_to_matplotlib(f)
        ax = static.axes[0]
        assert ax.name == "3d"
        assert {"preserved keys K0", "update δ", "projected δP"} <= {t.get_text() for t in ax.get_legend().get_texts()}
        assert viz.figure_to_png(static).startswith(PNG)
    flat = go.Figure(go.Scatter(x=[1, 10, 100], y=[1e-3, 1e-2, 1e-1], mode="lines", name="a"))
    flat.update_xaxes(type="log")
    ax2 = viz.plotly_to_matplotlib(flat).axes[0]
    assert ax2.get_xscale() == "log" and ax2.get_yscale() == "linear"
    with pytest.raises(TypeError, match="bar"):
        viz.plotly_to_matplotlib(go.Figure(go.Bar(x=[1], y=[1])))
    with pytest.raises(TypeError):
        viz.plotly_to_matplotlib("not a figure")


# ------------------------------------------------------------------------------------ 2-D static
def test_plot_spectrum_lines_threshold_and_shading():
    lam = torch.tensor([3e-17, -1e-18, 1e-3, 1.0, 10.0, 100.0], dtype=F64)  # ascending, with rounding negatives
    fig = viz.plot_spectrum(lam, cutoff=1e-2, kept_rank=3)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    curve = ax.lines[0]
    assert np.all(np.diff(curve.get_ydata()) <= 0), "drawn largest first"
    assert np.all(curve.get_ydata() > 0), "non-positive eigenvalues must be drawn at a positive floor"
    assert "2 ≤ 0" in curve.get_label()
    cut = [ln for ln in ax.lines if np.allclose(ln.get_ydata(), 1e-2)]
    assert cut, "the threshold line is missing"
    assert len(ax.patches) == 1, "the kept block is shaded"
    assert viz.figure_to_png(fig).startswith(PNG)


def test_plot_spectrum_from_projector_and_overlay(make_keys):
    K0 = make_keys(16, 10, 200, noise=1e-3)
    proj = null_space_projector(SecondMoment.from_keys(K0).cov, threshold=1e-2)
    fig = viz.plot_spectrum(proj)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("6/16" in t for t in legend) and any("0.01" in t for t in legend)
    fig2 = viz.plot_spectrum(proj.eigenvalues * 4, ax=fig.axes[0], shade=False)
    assert fig2 is fig and len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError, match="kept_rank"):
        viz.plot_spectrum(proj.eigenvalues, kept_rank=99)
    with pytest.raises(ValueError, match="NaN"):
        viz.plot_spectrum(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="1-D"):
        viz.plot_spectrum(torch.ones(2, 2))


def test_convergence_plot():
    d = 0.5 ** np.arange(30)
    ax = viz.convergence_plot(d, reference=0.6 ** np.arange(30)).axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), d)
    with pytest.raises(ValueError, match="empty"):
        viz.convergence_plot([])


# ------------------------------------------------------------------------------------ explorers
D, RANK, N = 24, 16, 300


@pytest.fixture
def keys_fn(make_keys):
    calls = []

    def fn(noise):
        calls.append(noise)
        return make_keys(D, RANK, N, noise=noise, seed=0)

    fn.calls = calls
    return fn


def test_null_space_explorer_reading_matches_the_library(keys_fn):
    ex = widgets.null_space_explorer(keys_fn, threshold=2e-2, noise=1e-2, d_out=4, seed=7)
    rd = ex.last
    assert (rd.dim, rd.kept_rank) == (D, D - RANK)
    K0 = keys_fn(1e-2)
    proj = null_space_projector(SecondMoment.from_keys(K0).cov, threshold=2e-2)
    delta = torch.randn(4, D, generator=torch.Generator().manual_seed(7), dtype=F64)
    delta = delta / torch.linalg.matrix_norm(delta)
    dP = delta @ proj.P
    assert rd.change_after == pytest.approx(float(torch.linalg.matrix_norm(dP @ K0)), rel=1e-12)
    assert rd.change_before == pytest.approx(float(torch.linalg.matrix_norm(delta @ K0)), rel=1e-12)
    assert rd.leak_after == pytest.approx(preserved_change(dP, K0), rel=1e-12)
    assert rd.relative_leak == pytest.approx(proj.relative_leak, rel=1e-12)
    assert rd.leak_after <= rd.relative_leak
    assert rd.change_after < 1e-2 * rd.change_before


def test_null_space_explorer_update_changes_its_output(keys_fn):
    ex = widgets.null_space_explorer(keys_fn, threshold=2e-2, noise=1e-2, threshold_range=(1e-8, 1e3))
    html0, png0, text0 = ex.readout.value, bytes(ex.image.value), ex._repr_mimebundle_()["text/plain"]
    assert png0.startswith(PNG) and f"{D - RANK} / {D}" in html0
    rd = ex.update(threshold=1e-7)
    assert rd.kept_rank == 0 and "no room" in rd.note
    assert ex.threshold_slider.value == pytest.approx(1e-7)
    assert ex.readout.value != html0 and bytes(ex.image.value) != png0
    assert ex._repr_mimebundle_()["text/plain"] != text0
    big = ex.update(threshold=500.0)  # above every eigenvalue (≤ ~100): P = I
    assert big.kept_rank == D and "nothing is preserved" in big.note
    # moving a slider (as a front end would) recomputes through the observer
    ex.threshold_slider.value = 2e-2
    assert ex.last.kept_rank == D - RANK and ex.readout.value == html0


def test_null_space_explorer_noise_is_cached_and_shrinks_the_null_space(keys_fn):
    ex = widgets.null_space_explorer(keys_fn, threshold=2e-2, noise=1e-2, noise_range=(1e-4, 1.0))
    n_calls = len(keys_fn.calls)
    noisy = ex.update(noise=0.5)  # noise eigenvalues ≈ 0.25 > threshold
    assert noisy.kept_rank < D - RANK
    assert ex.keys_fn_calls == 2
    ex.update(noise=1e-2)
    ex.update(noise=0.5)
    assert ex.keys_fn_calls == 2 and len(keys_fn.calls) == n_calls + 1, "keys must be cached per noise level"


def test_explorer_headless_mime_bundle(keys_fn):
    ex = widgets.null_space_explorer(keys_fn)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(PNG)
    assert f"kept rank {D - RANK}/{D}" in bundle["text/plain"]
    assert "<table" in bundle["text/html"] and "data:image/png;base64," in bundle["text/html"]


def test_null_space_explorer_modes_and_errors(keys_fn):
    ex = widgets.null_space_explorer(keys_fn, mode="rank", threshold=3)
    assert ex.last.kept_rank == 3 and ex.update(threshold=5).kept_rank == 5
    assert widgets.null_space_explorer(keys_fn, mode="energy", threshold=1e-4).last.kept_rank == D - RANK
    with pytest.raises(ValueError, match="outside"):
        widgets.null_space_explorer(keys_fn, threshold=1e3)
    with pytest.raises(ValueError, match="mode"):
        widgets.null_space_explorer(keys_fn, mode="median")
    with pytest.raises(TypeError, match="keys_fn"):
        widgets.null_space_explorer(np.ones((3, 3)))
    with pytest.raises(ValueError, match="rank threshold"):
        widgets.null_space_explorer(keys_fn, mode="rank", threshold=2.5)
    ex2 = widgets.null_space_explorer(keys_fn)
    before = ex2.last
    with pytest.raises(ValueError, match="outside"):
        ex2.update(threshold=1e-12)
    assert ex2.threshold_slider.value == pytest.approx(2e-2) and ex2.last is before, "a refused value moves nothing"
    with pytest.raises(ValueError, match="integer"):
        ex.update(threshold=2.5)


# -------------------------------------------------------------------------------- MEMIT vs λ
@pytest.fixture
def edit_problem(make_keys, gen):
    K0 = make_keys(D, RANK, N, noise=1e-3, seed=1)
    K1 = torch.randn(D, 4, generator=gen, dtype=F64) * 3
    R = torch.randn(6, 4, generator=gen, dtype=F64)
    proj = null_space_projector(SecondMoment.from_keys(K0).cov, threshold=2e-2)
    return R, K1, K0, proj


def _measure(delta, R, K1, K0):
    return (float(torch.linalg.matrix_norm(delta @ K0)) / N ** 0.5,
            float(torch.linalg.matrix_norm(delta @ K1 - R) / torch.linalg.matrix_norm(R)))


def test_lambda_sweep_is_the_solvers_measured(edit_problem):
    R, K1, K0, proj = edit_problem
    lams = [1e-2, 1.0, 1e2, 1e4, 1e6]
    sw = viz.lambda_sweep(R, K1, K0, proj, lams, alpha=3.0)
    C0 = SecondMoment.from_keys(K0).cov
    for i, lam in enumerate(lams):
        p, e = _measure(memit_delta(R, K1, C0, lam), R, K1, K0)
        assert sw.memit_preserved[i] == pytest.approx(p, rel=1e-10)
        assert sw.memit_edit_error[i] == pytest.approx(e, rel=1e-10)
    p, e = _measure(alphaedit_delta(R, K1, proj.P, alpha=3.0), R, K1, K0)
    assert (sw.alphaedit_preserved, sw.alphaedit_edit_error) == (pytest.approx(p, rel=1e-10), pytest.approx(e, rel=1e-10))
    assert np.all(np.diff(sw.memit_preserved) <= 1e-12) and np.all(np.diff(sw.memit_edit_error) >= -1e-12)
    assert "AlphaEdit" in sw.table() and len(sw.table().splitlines()) == len(lams) + 2
    with pytest.raises(ValueError, match="λ ≥ 0"):
        viz.lambda_sweep(R, K1, K0, proj, [-1.0])
    with pytest.raises(ValueError, match="key dimension"):
        viz.lambda_sweep(R, K1[:5], K0, proj, [1.0])


def test_lambda_sweep_plot_log_log(edit_problem):
    sw = viz.lambda_sweep(*edit_problem, [1e-2, 1.0, 1e2, 1e4])
    fig = viz.lambda_sweep_plot(sw, current=1.0)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert len(ax.lines) == 3  # MEMIT curve, AlphaEdit level, current λ
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), sw.alphaedit_preserved)
    with pytest.raises(TypeError, match="LambdaSweep"):
        viz.lambda_sweep_plot({"lams": [1]})


def test_lambda_explorer_update(edit_problem):
    R, K1, K0, proj = edit_problem
    ex = widgets.lambda_explorer(R, K1, K0, proj, lam=1.0, lam_range=(1e-2, 1e6), sweep_points=5)
    html0, png0 = ex.readout.value, bytes(ex.image.value)
    rd = ex.update(lam=1e5)
    p, e = _measure(memit_delta(R, K1, SecondMoment.from_keys(K0).cov, 1e5), R, K1, K0)
    assert (rd.memit_preserved, rd.memit_edit_error) == (pytest.approx(p, rel=1e-10), pytest.approx(e, rel=1e-10))
    assert ex.readout.value != html0 and bytes(ex.image.value) != png0
    assert "λ = 1e+05" in ex._repr_mimebundle_()["text/plain"]
    with pytest.raises(ValueError, match="outside"):
        ex.update(lam=1e9)
    with pytest.raises(ValueError, match="lam_range"):
        widgets.lambda_explorer(R, K1, K0, proj, lam_range=(0.0, 1.0))


def test_figures_serialise():
    """Figures must survive the notebook round trip: plotly JSON is valid, PNG bytes are PNG."""
    K0 = torch.randn(3, 10, dtype=F64)
    json.loads(viz.plot_keys_3d(K0).to_json())
    buf = io.BytesIO(viz.figure_to_png(viz.convergence_plot([1.0, 0.1])))
    assert buf.getvalue().startswith(PNG)


def test_spectrum_slider_has_one_step_per_size_and_shows_the_last():
    pytest.importorskip("plotly")
    from alphaedit_lite.core.nullspace import null_space_projector
    from alphaedit_lite.plots.viz import spectrum_slider

    gen = torch.Generator().manual_seed(0)
    K = torch.randn(16, 400, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, 16, dtype=torch.float64)[:, None]
    pjs = {n: null_space_projector(K[:, :n] @ K[:, :n].T / n, threshold=1e-4) for n in (20, 100, 400)}
    fig = spectrum_slider(pjs, title="test")
    assert len(fig.data) == 3 and [t.visible for t in fig.data] == [False, False, True]
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["20", "100", "400"]
    assert steps[0].args[0]["visible"] == [True, False, False]
    assert f"kept rank {pjs[400].kept_rank}/16" in fig.layout.title.text
    with pytest.raises(ValueError, match="empty"):
        spectrum_slider({})


def test_embed_2d_remembers_a_tsne_without_changing_it():
    """The figure and the table of notebook 05 share one t-SNE: the remembered embedding is the
    fresh one, a caller that modifies its copy does not change it, and other points are recomputed."""

    from alphaedit_lite.experiments import drift

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) + 0.5
    drift._EMBED_CACHE.clear()
    za, zb = drift.embed_2d(a, b, method="tsne")
    assert len(drift._EMBED_CACHE) == 1
    za[:] = 0.0                                          # the caller's copy, not the remembered one
    za2, zb2 = drift.embed_2d(a, b, method="tsne")
    drift._EMBED_CACHE.clear()
    za3, zb3 = drift.embed_2d(a, b, method="tsne")       # computed afresh
    assert np.array_equal(za2, za3) and np.array_equal(zb2, zb3) and np.array_equal(zb, zb3)
    zc, _ = drift.embed_2d(a, b + 1.0, method="tsne")    # other points: another embedding
    assert len(drift._EMBED_CACHE) == 2 and not np.allclose(zc, za3)
