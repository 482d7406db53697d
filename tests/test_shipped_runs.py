"""The shipped records of the 1,000-edit SmolLM2 run (data/runs/): complete and consistent with their settings.

These records back the kit's headline on a real model (README, notebooks 04-05, `make demo`), so a
missing file, a cut metrics line or a summary that disagrees with the metrics must fail here.
"""
from __future__ import annotations

import json

import pytest
import torch

from alphaedit_lite.experiments.drift import relative_drift
from alphaedit_lite.experiments.records import SUMMARY_KEYS, final_figures, load_hidden, load_run
from alphaedit_lite.cli.sequential import DEMO_DEFAULTS
from alphaedit_lite.experiments.sequential import MATCHED_LABEL, SHIPPED_MATCHED_RUN, shipped_run_dir, shipped_runs
from alphaedit_lite.util.paths import shipped_data_dir

RUN = shipped_run_dir()
MATCHED = shipped_data_dir() / SHIPPED_MATCHED_RUN
METHODS = DEMO_DEFAULTS["methods"]
#: (record folder, method, λ of MEMIT or None): the two methods of the main run and MEMIT at matched efficacy
RUNS = [(RUN, "MEMIT", 15000), (RUN, "AlphaEdit", None), (MATCHED, "MEMIT", 2000)]


def test_the_shipped_runs_are_there():
    for folder in (RUN, MATCHED):
        assert folder.is_dir(), f"{folder} is missing: the shipped SmolLM2 runs must be part of the kit"
        for f in ("provenance.json", "report/summary.json", "report/summary.md", "report/curves.png"):
            assert (folder / f).is_file(), (folder, f)
    assert (RUN / "README.md").is_file()
    assert list(shipped_runs()) == ["MEMIT", MATCHED_LABEL, "AlphaEdit"]


@pytest.mark.parametrize("folder,method,lam", RUNS, ids=["MEMIT", "AlphaEdit", "MEMIT-lambda2000"])
def test_each_run_is_complete_and_matches_its_settings(folder, method, lam):
    run = load_run(folder / method)
    st, rows = run["settings"], run["metrics"]
    assert st["method"] == method and st["model"] == "smollm2-135m"
    if lam is not None:
        assert st["hparams"]["mom2_update_weight"] == lam
    sched = st["schedule"]
    assert (sched["n_edits"], sched["batch_size"]) == (1000, 100)
    assert len(st["case_ids"]) == 1000 == len(set(st["case_ids"]))
    # one metrics row per batch, in order, each evaluated on at most eval_limit of the edits so far
    assert [r["batch"] for r in rows] == list(range(1, 11))
    assert [r["edits"] for r in rows] == list(range(100, 1001, 100))
    for r in rows:
        for k in ("efficacy", "generalization", "specificity", "perplexity_ratio", "drift/final",
                  f"drift/{st['drift_layers'][-1]}", "edit_seconds", "eval_seconds"):
            assert r.get(k) is not None, (method, r["batch"], k)
        assert 0 <= r["efficacy"] <= 100 and 0 <= r["specificity"] <= 100
    assert sum(1 for r in rows if r.get("fluency") is not None) >= 1
    assert rows[-1]["seconds"] >= sum(r["edit_seconds"] for r in rows)
    assert st["n_probes"] > 0 and run["hidden_steps"] == [10]
    # the shipped probe states reproduce the last row's drift
    base, after = load_hidden(folder / method)
    for key in after:
        assert after[key].shape == base[key].shape == (st["n_probes"], base[key].shape[1])
        assert relative_drift(base[key], after[key]) == pytest.approx(rows[-1][f"drift/{key}"], rel=1e-5)
    # the hyper-parameters are the shipped file's, plus the overrides the provenance names
    assert st["hparams"]["layers"] == [4, 5, 6, 7, 8]
    assert not (folder / method / "checkpoint.pt").exists()     # records only, no weights
    # the same edits in the same order as the main run
    assert st["case_ids"] == load_run(RUN / "MEMIT")["settings"]["case_ids"]


@pytest.mark.parametrize("folder,methods", [(RUN, METHODS), (MATCHED, ["MEMIT"])], ids=["main", "matched"])
def test_summary_json_agrees_with_the_metrics(folder, methods):
    summary = json.loads((folder / "report" / "summary.json").read_text())
    assert set(summary["methods"]) == {"unedited", *methods}
    for method in methods:
        got = summary["methods"][method]
        want = final_figures(folder / method)
        for k in SUMMARY_KEYS:
            if k != "seconds":
                assert got[k] == pytest.approx(want[k]), (method, k)
    assert summary["methods"]["unedited"]["perplexity_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("folder", [RUN, MATCHED], ids=["main", "matched"])
def test_provenance_names_the_command_and_the_commit(folder):
    prov = json.loads((folder / "provenance.json").read_text())
    assert "sequential --model smollm2-135m" in prov["command"]
    assert prov["commit"] and len(prov["commit"]) == 40
    assert all(isinstance(c, str) and "alphaedit-lite sequential" in c for c in prov["run_commands"])


@pytest.mark.parametrize("folder", [RUN, MATCHED], ids=["main", "matched"])
def test_records_stay_small(folder):
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 8e6, f"the shipped run takes {size / 1e6:.1f} MB; keep it to a few MB"
    assert torch.load(RUN / METHODS[0] / "baseline_hidden.pt", weights_only=False)
