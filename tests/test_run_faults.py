"""Run folders that were damaged, locked, or left read-only: resume must neither lose nor invent data.

Each test feeds one fault a reliability probe found (issue 16) and expects either the clear error
or the correct result:

* metrics.jsonl cut or changed -> rebuilt from the rows kept in checkpoint.pt, with a warning;
  `read_metrics` alone names the damaged line instead of dropping rows;
* a second run on a folder in use -> refused (run.lock); a lock left by a killed run -> taken over;
* checkpoint.pt overwritten, truncated or empty -> refused with what to do (checkpoint.sha256);
* resuming a finished run writes nothing, so a read-only folder is fine;
* NaN metrics -> null in metrics.jsonl (strict JSON), None when read back.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alphaedit_lite.model import arch as M
from alphaedit_lite.experiments import runner
from alphaedit_lite.experiments.runner import Schedule, read_metrics, run_sequential
from alphaedit_lite.model.arch import restore_weights
from test_runner import PROBES, REQS, _tiny_alphaedit

pytestmark = pytest.mark.usefixtures("single_thread")

N_BATCHES = 3   # 6 edits in batches of 2


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """run(run_dir, **kw) -> (RunResult, edited weights): one AlphaEdit run on the tiny Llama.

    Each call starts from the unedited weights, as a new process would.
    """
    model, tok, hp, st = _tiny_alphaedit(tmp_path, monkeypatch)
    original = {l: M.get_rewrite_weight(model, l).clone() for l in hp.layers}

    def run(run_dir, **kw):
        try:
            res = run_sequential(model, tok, REQS, hp, "AlphaEdit", run_dir,
                                 Schedule(n_edits=2 * N_BATCHES, batch_size=2, fluency_limit=0),
                                 probe_prompts=PROBES, stats=st, progress=False, **kw)
            return res, {l: M.get_rewrite_weight(model, l).clone() for l in hp.layers}
        finally:
            restore_weights(model, original)
    return run


def _strip_times(rows):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


# --- 1. metrics.jsonl damaged -----------------------------------------------------------------

def test_read_metrics_names_a_damaged_line_and_warns_about_a_cut_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"batch": 1}\n{"batch": 2\n{"batch": 3}\n')          # line 2 lost its "}"
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is not a JSON object.*resume"):
        read_metrics(tmp_path)
    path.write_bytes(b'{"batch": 1}\n{"ba\xfftch": 2}\n')                  # a byte that is not UTF-8
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 "):
        read_metrics(tmp_path)
    path.write_text('{"batch": 1}\n{"batch": 2}\n{"batch": 3, "effi')      # the last write cut by a kill
    with pytest.warns(UserWarning, match=r"metrics\.jsonl line 3 is incomplete"):
        assert read_metrics(tmp_path) == [{"batch": 1}, {"batch": 2}]


def test_cut_or_missing_last_metrics_line_is_rebuilt_from_the_checkpoint(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run, stop_after_batches=2)
    metrics = run / "metrics.jsonl"
    good = read_metrics(run)
    assert len(good) == 2

    metrics.write_bytes(metrics.read_bytes()[:-25])            # the last line cut part way
    with pytest.warns(UserWarning, match="line 2 is incomplete"):
        assert read_metrics(run) == good[:1]
    with pytest.warns(UserWarning, match=r"metrics\.jsonl line 2 was damaged; rebuilt from .*checkpoint\.pt"):
        tiny(run, resume=True, stop_after_batches=0)
    assert read_metrics(run) == good

    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])   # the last line gone
    with pytest.warns(UserWarning, match=r"metrics\.jsonl line 2 was missing; rebuilt from .*checkpoint\.pt"):
        tiny(run, resume=True, stop_after_batches=0)
    assert read_metrics(run) == good

    # and the repaired run ends as a run that was never interrupted
    whole, whole_w = tiny(tmp_path / "whole")
    resumed, resumed_w = tiny(run, resume=True)
    assert resumed.resumed_from == 2
    assert _strip_times(read_metrics(run)) == _strip_times(read_metrics(tmp_path / "whole"))
    assert all((resumed_w[l] == whole_w[l]).all() for l in whole_w)


def test_changed_bytes_in_early_metrics_lines_are_rebuilt_not_dropped(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run)
    metrics = run / "metrics.jsonl"
    good = read_metrics(run)
    assert len(good) == N_BATCHES
    lines = metrics.read_text().splitlines(keepends=True)
    assert '"edits": 4' in lines[1]
    lines[0] = "#" + lines[0][1:]                            # line 1 no longer parses
    lines[1] = lines[1].replace('"edits": 4', '"edits": 5')  # line 2 parses, but lies
    metrics.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 1 "):
        read_metrics(run)
    with pytest.warns(UserWarning, match=r"metrics\.jsonl lines 1, 2 were damaged; rebuilt from .*checkpoint\.pt"):
        res, _ = tiny(run, resume=True)
    assert res.resumed_from == N_BATCHES
    assert read_metrics(run) == good == res.metrics


def test_a_checkpoint_from_before_the_rows_were_kept_still_resumes(tiny, tmp_path):
    """Older checkpoints count the metrics lines but keep no copy: the rows come from metrics.jsonl
    (bare NaN becomes null quietly), and lines it counts that are gone are refused, not dropped."""
    import torch

    run = tmp_path / "r"
    tiny(run, stop_after_batches=2)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    del ck["metrics_rows"]
    torch.save(ck, run / "checkpoint.pt")
    (run / "checkpoint.sha256").unlink()
    metrics = run / "metrics.jsonl"
    good = read_metrics(run)
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0].replace('"edits": 2', '"edits": 2, "old": NaN') + lines[1])   # the old writer
    with pytest.warns(UserWarning) as caught:
        tiny(run, resume=True, stop_after_batches=0)
    assert [str(w.message) for w in caught if "damaged" in str(w.message)] == []
    rows = read_metrics(run)
    assert rows[0].pop("old", "absent") is None and rows == good
    assert "NaN" not in metrics.read_text()
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    with pytest.warns(UserWarning, match="no checkpoint.sha256"), pytest.raises(
            ValueError, match=r"checkpoint\.pt counts 2 metrics rows but metrics\.jsonl holds only 1"):
        tiny(run, resume=True)


# --- 2. run.lock ------------------------------------------------------------------------------

def _write_lock(run_dir: Path, pid: int, host: str | None = None) -> None:
    (run_dir / "run.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                  "since": "2024-01-01 00:00:00"}))


def test_a_folder_locked_by_a_live_process_is_refused(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run, stop_after_batches=1)
    assert not (run / "run.lock").exists(), "the lock is released when the run ends"
    _write_lock(run, os.getpid())                              # this process: certainly alive
    before = (run / "run.lock").read_text()
    with pytest.raises(RuntimeError, match=rf"in use by process {os.getpid()} on this machine.*delete .*run\.lock"):
        tiny(run, resume=True)
    assert (run / "run.lock").read_text() == before, "a refused run leaves the holder's lock alone"
    assert len(read_metrics(run)) == 1
    _write_lock(run, 1, host="elsewhere.example")               # another machine: cannot be checked
    with pytest.raises(RuntimeError, match="in use by process 1 on elsewhere.example .another machine"):
        tiny(run, resume=True)


def test_a_stale_lock_is_taken_over_and_the_lock_is_released_even_on_error(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run, stop_after_batches=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])   # a process that has ended: its PID is free
    dead.wait()
    _write_lock(run, dead.pid)
    with pytest.warns(UserWarning, match=rf"taking over .*run\.lock: process {dead.pid} .* no longer running"):
        res, _ = tiny(run, resume=True, stop_after_batches=1)
    assert res.resumed_from == 1 and len(read_metrics(run)) == 2
    assert not (run / "run.lock").exists()

    def failing_edit(*args, **kwargs):
        raise RuntimeError("the edit failed")
    with pytest.raises(RuntimeError, match="the edit failed"):
        tiny(run, resume=True, edit_fn=failing_edit)
    assert not (run / "run.lock").exists(), "released in a finally"


# --- 3. checkpoint integrity ------------------------------------------------------------------

def test_a_checkpoint_with_overwritten_weight_bytes_is_refused(tiny, tmp_path):
    import torch

    run = tmp_path / "r"
    tiny(run, stop_after_batches=1)
    ckpt = run / "checkpoint.pt"
    weight = next(iter(torch.load(ckpt, weights_only=False)["weights"].values()))
    data = bytearray(ckpt.read_bytes())
    at = data.find(weight.contiguous().numpy().tobytes()[:256])
    assert at > 0, "the weight tensor's bytes are stored as they are"
    data[at + 64: at + 72] = b"\x7f" * 8                       # 8 bytes of weight data overwritten
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint\.pt is damaged \(checksum mismatch.*Delete .*checkpoint\.pt"):
        tiny(run, resume=True)


def test_a_truncated_or_empty_checkpoint_gives_a_clear_error(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run, stop_after_batches=1)
    ckpt, sums = run / "checkpoint.pt", run / "checkpoint.sha256"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(ckpt))} is damaged \(checksum mismatch"):
        tiny(run, resume=True)
    sums.unlink()                                              # unchecked: torch.load itself fails
    with pytest.warns(UserWarning, match="no checkpoint.sha256"), \
            pytest.raises(ValueError, match=rf"{re.escape(str(ckpt))} cannot be read .*truncated or damaged\. Delete "):
        tiny(run, resume=True)
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{re.escape(str(ckpt))} is empty \(0 bytes\).*Delete "):
        tiny(run, resume=True)


def test_the_checkpoint_a_kill_between_two_renames_leaves_still_checks(tiny, tmp_path):
    """checkpoint.sha256 is renamed into place just before checkpoint.pt: a kill between the two
    leaves the old checkpoint.pt beside the new checksum file, which must still be accepted."""
    run = tmp_path / "r"
    tiny(run, stop_after_batches=1)
    first = (run / "checkpoint.pt").read_bytes()
    tiny(run, resume=True, stop_after_batches=1)
    (run / "checkpoint.pt").write_bytes(first)                 # as if killed before the second rename
    res, _ = tiny(run, resume=True, stop_after_batches=0)
    assert res.resumed_from == 1 and len(read_metrics(run)) == 1   # the row after it is redone later
    (run / "checkpoint.sha256").unlink()                       # folders from before the checksum
    with pytest.warns(UserWarning, match="no checkpoint.sha256 beside it"):
        res, _ = tiny(run, resume=True)
    assert res.resumed_from == 1 and len(read_metrics(run)) == N_BATCHES


# --- 4. a finished run is only read -----------------------------------------------------------

def _files(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_writes_nothing(tiny, tmp_path):
    run = tmp_path / "r"
    tiny(run)
    old = 1_000_000_000 * 10**9                                # 2001: any write would show as a new mtime
    for p in run.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(old, old))
    before = _files(run)
    assert {"settings.json", "metrics.jsonl", "checkpoint.pt", "checkpoint.sha256", "baseline_hidden.pt"} <= set(before)
    res, _ = tiny(run, resume=True)
    assert res.resumed_from == N_BATCHES and len(res.metrics) == N_BATCHES
    assert _files(run) == before, "no file written, added or left behind (run.lock included)"


def test_a_finished_run_resumes_from_a_read_only_folder(tiny, tmp_path, monkeypatch):
    run = tmp_path / "r"
    tiny(run, stop_after_batches=N_BATCHES - 1)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    tiny(run, resume=True)
    rows = read_metrics(run)

    if os.geteuid() != 0:        # root writes through chmod; then only the simulation below runs
        paths = [run, *run.rglob("*")]
        try:
            for p in paths:
                p.chmod(0o555 if p.is_dir() else 0o444)
            res, _ = tiny(run, resume=True)
            assert res.metrics == rows
        finally:
            for p in paths:
                p.chmod(0o755 if p.is_dir() else 0o644)

    # a read-only file system, simulated: creating any file in the run folders fails
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(tmp_path) in str(path):
            raise OSError(30, "Read-only file system", str(path))   # 30: EROFS
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(runner.os, "open", read_only_open)
    res, _ = tiny(run, resume=True)
    assert res.metrics == rows
    with pytest.raises(PermissionError, match=rf"cannot continue {re.escape(str(unfinished))}: the folder is read-only and the run "
                                              rf"is not finished \(2 of 3 batches done\); make it writable"):
        tiny(unfinished, resume=True)


# --- 5. strict JSON ---------------------------------------------------------------------------

def test_nan_metrics_are_written_as_null_and_read_back_as_none(tiny, tmp_path):
    run = tmp_path / "r"
    res, _ = tiny(run, stop_after_batches=1,
                  extra_eval=lambda m, t: {"nan_metric": float("nan"), "inf_metric": -math.inf, "ok": 1.5})

    def no_constants(name):
        raise AssertionError(f"metrics.jsonl holds {name}, which is not JSON")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line, parse_constant=no_constants)["nan_metric"] for line in lines] == [None]
    assert '"nan_metric": null, "inf_metric": null, "ok": 1.5' in lines[0]
    row = read_metrics(run)[0]
    assert row["nan_metric"] is None and row["inf_metric"] is None and row["ok"] == 1.5
    assert res.metrics == read_metrics(run), "the run returns the rows as they were written"
    with pytest.raises(ValueError, match="Out of range float"):   # the writer itself refuses a bare NaN
        runner._metric_line({"x": float("nan")})
