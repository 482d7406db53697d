"""Packaging consistency: pyproject.toml and environment.yml declare the same dependencies with the
same lower bounds, the console script exists, and CI runs the test command the README gives."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

try:
    import tomllib  # Python ≥ 3.11
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli", reason="Python 3.10 needs the tomli package to read pyproject.toml")

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}      # conda package name -> PyPI distribution name
CONDA_ONLY = {"python", "pip", "cpuonly"}  # conda-side entries with no pip counterpart
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_LOWER = re.compile(r">=\s*([0-9][^,;\s]*)")


def _norm(name: str) -> str:
    """PEP 503 normalisation: case-insensitive, runs of - _ . are one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_spec(spec: str) -> tuple[str, str | None]:
    """'torch>=2.1' -> ('torch', '2.1'); 'foo' -> ('foo', None). Works for pip and conda match specs."""
    m = _NAME.match(spec)
    if not m:
        raise ValueError(f"cannot read a package name from {spec!r}")
    low = _LOWER.search(spec)
    return _norm(m.group(1)), low.group(1) if low else None


def _version_key(v: str):
    try:
        from packaging.version import Version
        return Version(v)
    except ImportError:  # pragma: no cover - packaging is nearly always present
        parts = [int(p) for p in re.findall(r"\d+", v)]
        while parts and parts[-1] == 0:
            parts.pop()
        return tuple(parts)


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _conda_dependency_strings() -> list[str]:
    """The string entries of environment.yml's `dependencies:` (the nested `pip:` list excluded)."""
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # a tiny parser for the flat list this file uses
        deps, inside = [], False
        for line in text.splitlines():
            if re.match(r"^dependencies:\s*$", line):
                inside = True
                continue
            if inside and re.match(r"^\S", line):   # the next top-level key ends the list
                break
            m = re.match(r"^  - (.+?)\s*(#.*)?$", line)  # two-space items only: `pip:` children are deeper
            if inside and m and not m.group(1).endswith(":"):
                deps.append(m.group(1).strip().strip("'\""))
        return deps
    doc = yaml.safe_load(text)
    return [d for d in doc["dependencies"] if isinstance(d, str)]


def _pip_requirements() -> dict[str, str | None]:
    project = _pyproject()["project"]
    specs = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("dev", []))
    return dict(_parse_spec(s) for s in specs)


def _conda_requirements() -> dict[str, str | None]:
    out = {}
    for spec in _conda_dependency_strings():
        name, low = _parse_spec(spec)
        if name in CONDA_ONLY:
            continue
        out[_norm(CONDA_TO_PIP.get(name, name))] = low
    return out


def test_spec_parser():
    assert _parse_spec("torch>=2.1") == ("torch", "2.1")
    assert _parse_spec("Scikit_Learn >= 1.3, <2") == ("scikit-learn", "1.3")
    assert _parse_spec("cpuonly") == ("cpuonly", None)
    assert _version_key("2.1") == _version_key("2.1.0") and _version_key("2.10") > _version_key("2.9")


def test_dependency_names_agree_between_pyproject_and_environment_yml():
    pip, conda = _pip_requirements(), _conda_requirements()
    assert pip, "pyproject.toml declares no dependencies"
    only_pip, only_conda = sorted(set(pip) - set(conda)), sorted(set(conda) - set(pip))
    assert not only_pip and not only_conda, (
        f"in pyproject.toml only: {only_pip}; in environment.yml only: {only_conda} "
        f"(conda names are mapped with {CONDA_TO_PIP}; python, pip and cpuonly are ignored)")


def test_lower_bounds_agree_between_pyproject_and_environment_yml():
    pip, conda = _pip_requirements(), _conda_requirements()
    differ = {name: (pip[name], conda[name]) for name in sorted(set(pip) & set(conda))
              if (pip[name] is None) != (conda[name] is None)
              or (pip[name] is not None and _version_key(pip[name]) != _version_key(conda[name]))}
    assert not differ, f"lower bounds differ (pyproject, environment.yml): {differ}"


def test_console_script_is_declared():
    scripts = _pyproject()["project"].get("scripts", {})
    assert "alphaedit-lite" in scripts, "pyproject.toml must declare the `alphaedit-lite` console script"
    module, _, func = scripts["alphaedit-lite"].partition(":")
    assert module.startswith("alphaedit_lite") and func, scripts["alphaedit-lite"]


def _readme_test_command() -> str | None:
    readme = ROOT / "README.md"
    if not readme.exists():
        return None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if "make test" not in line:
            continue
        spans = [s for s in re.findall(r"`([^`]+)`", line) if "make test" in s]
        cmd = spans[0] if spans else line.split("#", 1)[0]
        return re.sub(r"^\s*\$\s*", "", cmd).strip()
    return None


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert ci.is_file(), ".ci/run is missing: CI must have a script that runs the README's test command"
    command = _readme_test_command()
    if command is None:
        pytest.skip("README.md gives no `make test` command yet; the lead adds it with the README")
    lines = [ln.strip() for ln in ci.read_text(encoding="utf-8").splitlines()]
    code = [ln for ln in lines if ln and not ln.startswith("#")]
    assert any(command in ln for ln in code), f".ci/run does not run the README's test command {command!r}"


def test_makefile_test_target_runs_pytest():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"^test:.*\n((?:\t.*\n?)+)", text, flags=re.M)
    assert m, "the Makefile has no `test:` target"
    assert "pytest" in m.group(1), f"`make test` does not run pytest: {m.group(1)!r}"


def test_wheel_carries_the_shipped_data_and_an_install_finds_it(tmp_path):
    """A wheel holds the organisms and requests; installed outside the checkout, paths.DATA_DIR finds them."""
    import subprocess
    import sys
    import zipfile

    out = tmp_path / "wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                        "-w", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(out.glob("alphaedit_lite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for rel in ("tiny_world/model.safetensors", "tiny_world/world.json", "subword_world/model.safetensors",
                "requests/smollm2_known_facts.json", "runs/smollm2-135m-1000x100/provenance.json",
                "runs/smollm2-135m-1000x100/AlphaEdit/metrics.jsonl",
                "runs/smollm2-135m-1000x100/MEMIT/hidden/step_00010.pt",
                "runs/smollm2-135m-1000x100/report/summary.json",
                "runs/smollm2-135m-1000x100-memit-lambda2000/MEMIT/metrics.jsonl"):
        assert any(n.endswith(f".data/data/share/alphaedit-lite/data/{rel}") for n in names), rel
    assert any(n.endswith("hparams/AlphaEdit/subword-world.json") for n in names)
    # install it (no dependencies: they are this interpreter's) into a prefix outside the checkout
    prefix = tmp_path / "prefix"
    # -I: never touch the installation this interpreter already has (without it pip uninstalls the kit there)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "-I", "--prefix", str(prefix),
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    site = next(prefix.glob("lib/python*/site-packages"))
    code = ("import alphaedit_lite.util.paths as p, alphaedit_lite.world as w, alphaedit_lite.experiments.sequential as s; "
            "print(p.PACKAGE_DIR); print(p.DATA_DIR); "
            "print(w.default_world_dir().joinpath('model.safetensors').is_file() "
            "and s.shipped_run_dir().joinpath('AlphaEdit', 'settings.json').is_file())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    pkg, data, found = r.stdout.split()
    assert Path(pkg).is_relative_to(site) and not Path(data).is_relative_to(ROOT), r.stdout
    assert found == "True"
    # the installed kit runs the demo outside the checkout (the live SmolLM2 part is left out here: minutes)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "ALPHAEDIT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "alphaedit_lite", "demo", "--edits", "4", "--batch", "2", "--live-edits", "0",
                        "--counterexample", "none", "--threads", "1", "--quiet", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=1200, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    summary = json.loads((tmp_path / "demo" / "report" / "summary.json").read_text())
    assert summary["parts"]["subword_world"]["methods"]["AlphaEdit"]["edits"] == 4 and "tiny_world" not in summary["parts"]
    assert summary["methods_from"] == "subword_world" and "paper, Table 1" in r.stdout
    # and the kit this interpreter runs (the checkout's editable install) is still installed
    r = subprocess.run([sys.executable, "-c", "import alphaedit_lite.util.paths as p; print(p.PACKAGE_DIR)"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and Path(r.stdout.strip()).is_relative_to(ROOT), r.stderr[-1000:]
