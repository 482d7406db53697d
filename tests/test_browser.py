"""End-to-end: the notebooks run in JupyterLab in a real (headless) browser.

For each notebook in NOTEBOOKS below: a temporary copy of notebooks/ is served by `jupyter lab`
(this interpreter, localhost, random token, ALPHAEDIT_SMALL=1, isolated Jupyter settings), opened
in headless Chromium driven by Playwright, and run with Run → Run All Cells. The test then checks
in the page that

* every non-empty code cell got an execution count, and no output is an error (no stderr output
  with a traceback or an "...Error", no error output in the saved notebook);
* every plotly figure rendered: at least `min_plotly` `.js-plotly-plot` elements, and at least as
  many as the saved notebook has plotly outputs, each with traces and an SVG/canvas, and WebGL
  working for 3-D scenes;
* moving an ipywidgets slider (keyboard: Home, or End) changes the output it drives: the
  readout text (computed in the kernel) and the picture of the same widget.

Screenshots (whole notebook after the run, each plotly figure, the slider cell before and after)
go to the test's tmp_path and to test-artifacts/browser/<notebook>/ at the repository root.

Chromium: the system one (/usr/bin/chromium, or $ALPHAEDIT_CHROMIUM), never a Playwright
download. Without it the test is skipped with a hint (`sudo apt-get install chromium` or
`scripts/ensure_chromium.sh`); under CI (CI=true) it fails instead of skipping.
Timeouts: ALPHAEDIT_BROWSER_TIMEOUT seconds per notebook run (default 600).

To add a notebook, append a Case to NOTEBOOKS.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser_helpers import (CHROMIUM_ARGS, ENABLE_HINT, ERROR_TEXT, JupyterLabServer, LabNotebook,
                             chromium_executable, in_ci, kernel_seconds, saved_outputs)


@dataclass(frozen=True)
class Case:
    stem: str               # notebooks/<stem>.ipynb
    min_plotly: int         # plotly figures the notebook shows (at least)
    slider: bool = True     # has an ipywidgets slider whose driven output must change when moved


# Notebooks 03, 04 and 06 are executed headless in CI (tests/test_notebooks.py) but not here: each
# loads SmolLM2 and takes 2-4 minutes headless, which a browser run would add again (CI stays under 30 minutes).
NOTEBOOKS = [
    Case("00_editing_as_a_tradeoff", min_plotly=1, slider=False),
    Case("01_null_space_geometry", min_plotly=1),
    Case("02_closed_form_derivation", min_plotly=0),
    Case("05_hidden_state_drift", min_plotly=1),
]

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SCRIPT = ROOT / "scripts" / "ensure_chromium.sh"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
RUN_TIMEOUT_S = float(os.environ.get("ALPHAEDIT_BROWSER_TIMEOUT", "600"))
LOAD_TIMEOUT_S = 240.0     # JupyterLab's page + kernel start, on a busy 2-core machine
RENDER_TIMEOUT_S = 90.0    # plotly / widget rendering after the run
SLIDER_TIMEOUT_S = 120.0   # kernel recomputation after a slider move
VIEWPORT = {"width": 1400, "height": 1000}


def _unavailable(reason: str):
    """Skip with a hint how to enable the test; under CI, fail instead."""
    if in_ci():
        pytest.fail(f"browser test cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the Python package playwright is not installed: `pip install -e '.[dev]'` "
                     "(no browser download is needed; the system Chromium is used)")
    exe = chromium_executable()
    if exe is None:
        _unavailable(f"no Chromium found at /usr/bin/chromium or on PATH; to enable the browser test, {ENABLE_HINT}")
    return exe


@pytest.fixture(scope="module")
def lab_server(chromium_path, tmp_path_factory):
    """JupyterLab serving a temporary copy of notebooks/ (nothing is written back), small mode."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NB_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    server = JupyterLabServer(root, base / "server", env={"ALPHAEDIT_SMALL": "1"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path, tmp_path_factory):
    """A headless Chromium (persistent context with a fresh user-data dir)."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS,
            viewport=VIEWPORT, device_scale_factor=1)
        ctx.set_default_timeout(60_000)
        try:
            yield ctx
        finally:
            ctx.close()


# ------------------------------------------------------------------------------------------ tests
def test_ensure_chromium_script_is_valid_and_finds_chromium():
    """The set-up script parses, and where a Chromium exists it reports it and exits 0."""
    assert SCRIPT.exists(), f"{SCRIPT} is missing"
    syntax = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if chromium_executable() is None:
        pytest.skip("no Chromium on this machine; the script's install branch is not exercised here")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chromium" in done.stdout.lower() and "found" in done.stdout.lower(), done.stdout


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, id=c.stem) for c in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(case: Case, lab_server, browser, tmp_path):
    nb_file = f"{case.stem}.ipynb"
    assert (NB_DIR / nb_file).exists(), f"notebooks/{nb_file} is missing (listed in NOTEBOOKS of {Path(__file__).name})"
    out = tmp_path / "browser" / case.stem
    artifacts = ARTIFACTS / case.stem
    page = browser.new_page()
    nb = LabNotebook(page, lab_server, nb_file, out)
    report: dict = {"notebook": nb_file, "timings_s": {}}
    problems: list[str] = []
    t_start = time.monotonic()
    try:
        report["timings_s"]["open"] = round(nb.open(LOAD_TIMEOUT_S), 1)
        run = nb.run_all(RUN_TIMEOUT_S)
        report["timings_s"]["run_all"] = round(run.seconds, 1)
        report["run_progress"] = run.state_history
        nb.screenshot_notebook("notebook")

        # 1. every code cell ran, nothing failed ------------------------------------------------
        not_run = [(i, p) for i, p in enumerate(run.prompts) if not re.match(r"^\[\d+\]", p)]
        if not_run:
            problems.append(f"code cells without an execution count (Run All stopped?): {not_run}")
        tracebacks = [e for e in run.stderr if ERROR_TEXT.search(e["text"])]
        if tracebacks:
            problems.append("cells show errors on stderr:\n" +
                            "\n".join(f"  code cell {e['cell']}: {e['text'][:1500]}" for e in tracebacks))
        saved = nb.save()
        n_plotly_saved, saved_errors = saved_outputs(saved)
        report["saved_plotly_outputs"] = n_plotly_saved
        per_cell = kernel_seconds(saved)
        report["kernel_seconds_per_cell"] = per_cell
        report["timings_s"]["kernel_total"] = round(sum(t for _, t in per_cell), 1)
        if saved_errors:
            problems.append(f"error outputs in the executed notebook: {saved_errors}")
        widget_errors = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output",
                                     has_text=re.compile(r"Error displaying widget|Failed to load model class"))
        if widget_errors.count():
            problems.append(f"widgets failed to render: {widget_errors.first.inner_text()[:500]}")

        # 2. plotly figures ------------------------------------------------------------------
        expected = max(case.min_plotly, n_plotly_saved)
        t0 = time.monotonic()
        info = nb.wait_for_plotly(expected, RENDER_TIMEOUT_S)
        report["timings_s"]["plotly_render"] = round(time.monotonic() - t0, 1)
        report["plotly"] = info
        plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
        for i in range(plots.count()):
            plots.nth(i).scroll_into_view_if_needed()
            plots.nth(i).screenshot(path=str(out / f"plotly-{i + 1}.png"))
        drawn = [p for p in info["plots"] if p["traces"] > 0 and (p["svg"] or p["canvas"]) and p["width"] > 0]
        if len(drawn) < expected:
            problems.append(f"expected ≥ {expected} rendered plotly figures ({case.min_plotly} listed, {n_plotly_saved} "
                            f"plotly outputs saved), found {len(drawn)} drawn of {len(info['plots'])}: {info['plots']}")
        if info["mime"] < n_plotly_saved:
            problems.append(f"{n_plotly_saved} plotly outputs but only {info['mime']} rendered with the plotly mime "
                            f"renderer (is the jupyterlab-plotly extension, shipped in the plotly package, enabled?)")
        for p in info["plots"]:
            if p["gl3d"] and (p["webgl_error"] or not p["canvas"]):
                problems.append(f"3-D plotly figure in code cell {p['cell']} has no working WebGL scene: {p}")

        # 3. a slider drives its output ----------------------------------------------------------
        if case.slider:
            slider_cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").filter(
                has=page.locator(".widget-slider .noUi-handle"))
            try:
                slider_cells.first.wait_for(state="attached", timeout=RENDER_TIMEOUT_S * 1000)
            except Exception:  # noqa: BLE001 - reported below
                pass
            if not slider_cells.count():
                problems.append("no ipywidgets slider rendered (is @jupyter-widgets/jupyterlab-manager, from "
                                "jupyterlab_widgets, enabled?)")
            else:
                cell = slider_cells.first
                cell.scroll_into_view_if_needed()
                cell.screenshot(path=str(out / "slider-before.png"))
                t0 = time.monotonic()
                before, after, key = nb.move_slider(cell, SLIDER_TIMEOUT_S)
                report["timings_s"]["slider_update"] = round(time.monotonic() - t0, 1)
                cell.screenshot(path=str(out / "slider-after.png"))
                report["slider"] = {"key": key, "before": before, "after": after}
                if before["sliders"][0]["value"] == after["sliders"][0]["value"]:
                    problems.append(f"the slider did not move on {key}: {before['sliders'][0]}")
                if before["text"] == after["text"]:
                    problems.append(f"moving the slider ({key}) did not change its readout:\n{before['text']}")
                if before["images"] and before["images"] == after["images"]:
                    problems.append(f"moving the slider ({key}) did not change the picture it drives")
                if not before["text"]:
                    problems.append("the slider's cell shows no widget text output to compare")
    finally:
        report["timings_s"]["total"] = round(time.monotonic() - t_start, 1)
        report["problems"] = problems
        try:
            (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
            nb.write_console_log()
            (out / "jupyterlab.log").write_text(lab_server.log_tail(200_000), encoding="utf-8")
            shutil.rmtree(artifacts, ignore_errors=True)
            shutil.copytree(out, artifacts)
        finally:
            page.close()
            try:
                lab_server.shutdown_session(nb_file)
            except Exception:  # noqa: BLE001 - the server is stopped by its fixture anyway
                pass
    print(f"{nb_file}: {report['timings_s']}; screenshots in {artifacts}")
    assert not problems, f"{nb_file} in JupyterLab:\n" + "\n".join(f"- {p}" for p in problems)
