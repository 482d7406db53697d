"""The sequential runner: run folders, checkpoints, and resume after a kill ending identical."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

import editing_helpers as EH
from alphaedit_lite.methods import hparams as HP
from alphaedit_lite.model import arch as M
from alphaedit_lite.locate import stats as S
from alphaedit_lite.experiments.runner import Schedule, read_metrics, run_sequential

pytestmark = pytest.mark.usefixtures("single_thread")

HP_ALPHA = dict(layers=[1, 2], context_n_prefixes=1, context_prefix_tokens=4, v_num_grad_steps=6,
                clamp_norm_factor=4.0, mom2_n_samples=30, mom2_seq_len=64,
                nullspace_threshold=0.05, nullspace_mode="energy", L2=0.5)

# Eight requests built from the tiny requests (subjects differ, targets are single tokens).
REQS = [dict(r, case_id=1000 + 10 * i + j) for i in range(3) for j, r in enumerate(EH.TINY_REQUESTS)][:8]
PROBES = ["The capital of Italy is", "Apple was founded by", "Lyon is a city in", "He speaks"]

def _setup(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:60_000], encoding="utf-8")
    return corpus


def _tiny_alphaedit(tmp_path, monkeypatch):
    """The tiny Llama, AlphaEdit's test hparams and its statistics on the test corpus (cache under tmp_path)."""
    _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    model, tok = EH.tiny_llama()
    st = S.layer_stats(model, tok, [1, 2], tmp_path / "corpus.txt", n_tokens=1920, seq_len=64, progress=False)
    return model, tok, HP.from_dict("AlphaEdit", HP_ALPHA), st


def _run(tmp_path, run_dir, stop_after=None, resume=False):
    os.environ["ALPHAEDIT_CACHE"] = str(tmp_path / "cache")
    model, tok = EH.tiny_llama()
    st = S.layer_stats(model, tok, [1, 2], tmp_path / "corpus.txt", n_tokens=1920, seq_len=64, progress=False)
    hp = HP.from_dict("AlphaEdit", HP_ALPHA)
    res = run_sequential(model, tok, REQS, hp, "AlphaEdit", run_dir, Schedule(n_edits=8, batch_size=2),
                         probe_prompts=PROBES, stats=st, resume=resume, progress=False,
                         stop_after_batches=stop_after)
    return model, res


def test_run_folder_and_resume_give_identical_results(tmp_path, monkeypatch):
    _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    full_model, full = _run(tmp_path, tmp_path / "full")
    rows = read_metrics(tmp_path / "full")
    assert [r["edits"] for r in rows] == [2, 4, 6, 8]
    for k in ("efficacy", "specificity", "drift/2", "drift/final", "update_norm/1", "fluency"):
        assert k in rows[-1], k
    assert rows[-1]["drift/2"] > 0 and rows[-1]["update_norm/2"] > rows[0]["update_norm/2"]
    assert (tmp_path / "full" / "checkpoint.pt").exists() and (tmp_path / "full" / "hidden").is_dir()
    assert (tmp_path / "full" / "checkpoint.sha256").exists() and not (tmp_path / "full" / "run.lock").exists()
    assert full.state.n_requests == 8  # AlphaEdit's cache saw every edit

    # interrupted after 2 batches, then resumed
    _run(tmp_path, tmp_path / "cut", stop_after=2)
    assert len(read_metrics(tmp_path / "cut")) == 2
    with pytest.raises(ValueError, match="not empty"):
        _run(tmp_path, tmp_path / "cut")
    resumed_model, resumed = _run(tmp_path, tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 2
    for l in HP_ALPHA["layers"]:
        assert torch.equal(M.get_rewrite_weight(full_model, l), M.get_rewrite_weight(resumed_model, l))
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "cut")) == strip(rows)


def test_resume_refuses_other_settings(tmp_path, monkeypatch):
    _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    _run(tmp_path, tmp_path / "r", stop_after=1)
    model, tok = EH.tiny_llama()
    hp = HP.from_dict("AlphaEdit", {**HP_ALPHA, "L2": 2.0})
    with pytest.raises(ValueError, match="settings differ"):
        run_sequential(model, tok, REQS, hp, "AlphaEdit", tmp_path / "r", Schedule(n_edits=8, batch_size=2),
                       probe_prompts=PROBES, resume=True, progress=False)


def test_resume_refuses_another_model_and_accepts_old_folders(tmp_path, monkeypatch):
    import json

    _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    _run(tmp_path, tmp_path / "r", stop_after=1)
    settings = json.loads((tmp_path / "r" / "settings.json").read_text())
    assert len(settings["weights_sha256"]) == 64
    model, tok = EH.tiny_llama()
    with torch.no_grad():   # the same architecture and settings, other weights
        M.get_rewrite_weight(model, 1).mul_(1.001)
    hp = HP.from_dict("AlphaEdit", HP_ALPHA)
    with pytest.raises(ValueError, match="weights_sha256.*unedited weights"):
        run_sequential(model, tok, REQS, hp, "AlphaEdit", tmp_path / "r", Schedule(n_edits=8, batch_size=2),
                       probe_prompts=PROBES, resume=True, progress=False)
    # a folder written before the fingerprint existed still resumes
    del settings["weights_sha256"]
    (tmp_path / "r" / "settings.json").write_text(json.dumps(settings))
    _, res = _run(tmp_path, tmp_path / "r", resume=True)
    assert res.resumed_from == 1


def test_fluency_limit_zero_skips_fluency(tmp_path, monkeypatch):
    model, tok, hp, st = _tiny_alphaedit(tmp_path, monkeypatch)
    run_sequential(model, tok, REQS[:2], hp, "AlphaEdit", tmp_path / "f", Schedule(n_edits=2, batch_size=2, fluency_limit=0),
                   stats=st, progress=False)
    assert "fluency" not in read_metrics(tmp_path / "f")[-1]
    with pytest.raises(ValueError, match="fluency_limit"):
        Schedule(n_edits=2, fluency_limit=-1)


def test_warns_when_a_neighbour_is_itself_edited(tmp_path, monkeypatch):
    from alphaedit_lite.locate.requests import as_requests

    model, tok, hp, st = _tiny_alphaedit(tmp_path, monkeypatch)
    a, b = as_requests(REQS[:2])
    a = dataclasses.replace(a, relation_id="R", neighborhood_prompts=[f"{b.subject} is a"])
    b = dataclasses.replace(b, relation_id="R")
    with pytest.warns(UserWarning, match=r"1 neighbourhood prompt\(s\) .* itself edited"):
        run_sequential(model, tok, [a, b], hp, "AlphaEdit", tmp_path / "w", Schedule(n_edits=2, batch_size=2,
                       fluency_limit=0), stats=st, progress=False)


def test_schedule_validation():
    with pytest.raises(ValueError):
        Schedule(n_edits=0)
    with pytest.raises(ValueError):
        Schedule(n_edits=4, eval_every=0)
    assert Schedule(n_edits=10, batch_size=3).n_batches == 4


KILL_SCRIPT = """
import os, sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import editing_helpers as EH
from alphaedit_lite.methods import hparams as HP
from alphaedit_lite.locate import stats as S
from alphaedit_lite.methods import apply_method
from alphaedit_lite.experiments.runner import Schedule, run_sequential
from test_runner import HP_ALPHA, REQS, PROBES

def slow_edit(*a, **k):
    time.sleep(1.5)  # leaves time to kill the run between checkpoints
    return apply_method("AlphaEdit", *a, **k)

model, tok = EH.tiny_llama()
st = S.layer_stats(model, tok, [1, 2], {corpus!r}, n_tokens=1920, seq_len=64, progress=False)
run_sequential(model, tok, REQS, HP.from_dict("AlphaEdit", HP_ALPHA), "AlphaEdit", {run!r},
               Schedule(n_edits=8, batch_size=2), probe_prompts=PROBES, stats=st, progress=False,
               edit_fn=slow_edit)
"""


def test_killed_run_resumes_to_the_same_end(tmp_path, monkeypatch):
    """SIGKILL a real run part way, resume it, and compare with an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    corpus = _setup(tmp_path)
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), corpus=str(corpus), run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    deadline = time.time() + 240
    try:
        while len(read_metrics(run)) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "the run made no progress in 240 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(read_metrics(run))
    assert 2 <= done_before < 4, "the kill should land part way"
    full_model, _ = _run(tmp_path, tmp_path / "full")
    with pytest.warns(UserWarning, match=rf"taking over .*run\.lock: process {proc.pid} "):   # the killed run's lock
        resumed_model, resumed = _run(tmp_path, run, resume=True)
    assert resumed.resumed_from >= 1
    for l in HP_ALPHA["layers"]:
        assert torch.equal(M.get_rewrite_weight(full_model, l), M.get_rewrite_weight(resumed_model, l))
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa: E731
    assert strip(read_metrics(run)) == strip(read_metrics(tmp_path / "full"))
