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
    png = plots.plot_runs_png(runs, tmp_path / "out" / "curves.png")
    assert png.stat().st_size > 10_000
    html = plots.write_runs_html(runs, tmp_path / "out" / "curves.html")
    assert "plotly" in html.read_text()[:5000].lower() and (tmp_path / "out" / "plotly.min.js").exists()
    table = records.summary_table(runs)
    assert table.splitlines()[2].startswith("| AlphaEdit | 8 |")
    emb = plots.plot_embedding_png(runs, tmp_path / "out" / "pca.png", method="pca")
    assert emb.stat().st_size > 5_000
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        records.load_run(tmp_path / "nothing")
