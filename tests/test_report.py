"""Figures and the Table-1 summary from a real (tiny) sequential run folder."""
from __future__ import annotations

import pytest

from alphaedit_lite.experiments import records
from alphaedit_lite.plots import runs as plots
from test_runner import _run, _setup

pytestmark = pytest.mark.usefixtures("single_thread")


def test_report_views_from_a_run_folder(tmp_path, monkeypatch):
    _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    _run(tmp_path, tmp_path / "run")
    runs = {"AlphaEdit": tmp_path / "run"}
    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))   # keep the figure to inspect it
    png = plots.plot_runs_png(runs, tmp_path / "out" / "curves.png")
    assert png.stat().st_size > 10_000
    drift_ax, update_ax = figs[0].axes[4], figs[0].axes[5]
    # few points: every line carries markers, so a run of one batch still shows its drift and update norm
    assert drift_ax.lines and update_ax.lines
    assert all(line.get_marker() == "o" for line in drift_ax.lines + update_ax.lines)
    assert all(float(t).is_integer() for t in figs[0].axes[0].get_xticks())     # edits are whole numbers
    evaluated = sorted({r["edits"] for r in records.load_run(tmp_path / "run")["metrics"]})
    assert [int(t) for t in figs[0].axes[0].get_xticks()] == evaluated           # few evaluations: ticks at them
    html = plots.write_runs_html(runs, tmp_path / "out" / "curves.html")
    assert "plotly" in html.read_text()[:5000].lower() and (tmp_path / "out" / "plotly.min.js").exists()
    table = records.summary_table(runs)
    assert table.splitlines()[2].startswith("| AlphaEdit | 8 |")
    emb = plots.plot_embedding_png(runs, tmp_path / "out" / "pca.png", method="pca")
    assert emb.stat().st_size > 5_000
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        records.load_run(tmp_path / "nothing")
