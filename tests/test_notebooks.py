"""Notebook harness: every notebook is paired, output-free, follows the conventions, and runs.

* `notebooks/NN_name.py` (jupytext py:percent) is the reviewed source; its paired `.ipynb` must
  exist and hold the same code and markdown cells (`make sync-notebooks` regenerates it).
* A committed `.ipynb` carries no outputs and no execution counts.
* Each notebook opens with a Markdown cell (title, learning objectives, prerequisites, expected
  run time) and a short first code cell that reads ALPHAEDIT_SMALL, seeds and picks the device.
* Each notebook executes headless with nbclient in small mode (ALPHAEDIT_SMALL=1, cwd
  notebooks/, kernel "python3", or a kernelspec for this interpreter made on the fly when that
  one is missing or points elsewhere). Executed copies go to a temp folder, never back.
  Execution is marked `slow`; notebooks whose source mentions SmolLM2 are also marked `model`.

New notebooks are picked up automatically (the tests are parametrized over the folder).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SOURCES = sorted(p for p in NB_DIR.glob("*.py") if not p.name.startswith("_"))
PAIRED = sorted(NB_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600
SMALL_FLAG = 'SMALL = os.environ.get("ALPHAEDIT_SMALL", "1") == "1"'


def _params(paths, execute=False):
    out = []
    for p in paths:
        marks = []
        if execute:
            marks.append(pytest.mark.slow)
            if "smollm2" in p.read_text(encoding="utf-8").lower():
                marks.append(pytest.mark.model)
        out.append(pytest.param(p, id=p.stem, marks=marks))
    return out


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.cell_type in ("code", "markdown")]


# ------------------------------------------------------------------------------------------ pairing
@pytest.mark.parametrize("py", _params(SOURCES))
def test_source_is_paired_and_in_sync(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make sync-notebooks` (jupytext --sync {py.name})"
    text = py.read_text(encoding="utf-8")
    header = re.search(r"^# ---\n(.*?)^# ---\n", text, flags=re.S | re.M)
    assert header and "formats: ipynb,py:percent" in header.group(1), \
        f"{py.name} must declare `jupytext: formats: ipynb,py:percent` in its header"
    assert re.search(r"kernelspec:.*?name: python3", header.group(1), flags=re.S), \
        f"{py.name} must declare the python3 kernelspec in its header"
    a, b = _cells(jupytext.read(py)), _cells(jupytext.read(ipynb))
    for i, (ca, cb) in enumerate(zip(a, b)):
        assert ca == cb, (f"{py.name} and {ipynb.name} differ at cell {i} ({ca[0]}: {ca[1][:60]!r} vs "
                          f"{cb[0]}: {cb[1][:60]!r}); edit the .py and run `make sync-notebooks`")
    assert len(a) == len(b), f"{py.name} has {len(a)} cells but {ipynb.name} has {len(b)}; run `make sync-notebooks`"


@pytest.mark.parametrize("ipynb", _params(PAIRED))
def test_ipynb_has_a_py_source(ipynb: Path):
    assert ipynb.with_suffix(".py").exists(), (
        f"{ipynb.name} has no paired py:percent source; the .py is what is reviewed: "
        f"`jupytext --set-formats ipynb,py:percent {ipynb.name}`")


@pytest.mark.parametrize("ipynb", _params(PAIRED))
def test_committed_ipynb_has_no_outputs(ipynb: Path):
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{ipynb.name}: code cells {dirty} carry outputs or execution counts; regenerate it "
                       f"from the .py with `make sync-notebooks` (or `jupytext --to ipynb`)")


# -------------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("py", _params(SOURCES))
def test_notebook_conventions(py: Path):
    nb = jupytext.read(py)
    assert nb.cells and nb.cells[0].cell_type == "markdown", f"{py.name} must open with a Markdown cell"
    intro = nb.cells[0].source
    assert re.match(r"\s*# \S", intro), f"{py.name}: the first cell must start with a '# Title' line"
    for needle in ("learning objectives", "prerequisites", "run time"):
        assert needle in intro.lower(), f"{py.name}: the opening cell must mention {needle!r}"
    assert re.search(r"small mode.*\d+\s*(s|min)", intro, flags=re.S | re.I) and \
        re.search(r"full mode.*\d+\s*(s|min)", intro, flags=re.S | re.I), \
        f"{py.name}: state the measured run time of small and full mode in the opening cell"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{py.name} has no code cells"
    first = code[0].source
    assert SMALL_FLAG in first, f"{py.name}: the first code cell must contain `{SMALL_FLAG}`"
    assert "pick_device(" in first, f"{py.name}: the first code cell must pick the device with pick_device()"
    assert "seed" in first, f"{py.name}: the first code cell must set a seed"
    assert len(first.strip().splitlines()) <= 40, f"{py.name}: keep the first code cell short (imports, seed, SMALL, device)"
    body = "\n".join(c.source for c in code)
    assert ".cuda()" not in body, f"{py.name}: never call .cuda(); use alphaedit_lite.util.device.pick_device()"
    assert "assert " in body, f"{py.name}: claims must be checked with assert statements"


# ---------------------------------------------------------------------------------------- execution
@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """'python3' when it runs this interpreter; otherwise a kernelspec for sys.executable made here."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        exe = spec.argv[0] if spec.argv else ""
        # jupyter_client substitutes a bare "python" with sys.executable; an absolute path must be ours.
        if exe in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"} or \
                os.path.abspath(exe) == os.path.abspath(sys.executable):
            yield "python3"
            return
    except NoSuchKernel:
        pass
    base = tmp_path_factory.mktemp("jupyter")
    kdir = base / "kernels" / "alphaedit-test-python3"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (alphaedit-lite tests)", "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(base) + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
        yield "alphaedit-test-python3"


@pytest.mark.parametrize("py", _params(SOURCES, execute=True))
def test_notebook_executes_headless_in_small_mode(py: Path, kernel_name, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("ALPHAEDIT_SMALL", "1")
    nb = jupytext.read(py)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(NB_DIR)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{py.name} failed headless in small mode:\n{exc}", pytrace=False)
    finally:
        nbformat.write(nb, tmp_path / f"{py.stem}.executed.ipynb")  # never written back to notebooks/
    wall = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{py.name}: error outputs {[(e['ename'], e['evalue']) for e in errors]}"
    print(f"{py.name}: executed in {wall:.1f} s (small mode)")
