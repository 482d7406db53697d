"""Sequential editing runs that can be interrupted and resumed without losing anything.

The AlphaEdit paper's headline experiment (Sec. 4, Table 1, Fig. 5): apply N edits to one model
in consecutive batches of b (2,000 edits in batches of 100), carrying each method's state from
batch to batch (AlphaEdit's cache Kp Kpᵀ of earlier edits' keys, PRUNE's accumulated update),
and watch efficacy, generalization, specificity, fluency and hidden-state drift as edits pile up.

A run lives in a folder:

    settings.json         what was run (method, hyper-parameters, request order, schedule)
    metrics.jsonl         one JSON line per evaluated step
    checkpoint.pt         edited weights + method state + RNG state after the last finished batch
    baseline_hidden.pt    probe hidden states of the unedited model
    hidden/step_XXXXX.pt  probe hidden states at evaluated steps (for the drift plots)

    checkpoint.sha256     SHA-256 of checkpoint.pt, to refuse a damaged checkpoint on resume
    run.lock              PID and host of the process running the folder (only while it runs)

Every file is written atomically (temp file, then rename), so killing a run at any moment leaves
a folder `run_sequential(..., resume=True)` continues from: it restores weights, state and RNG
from checkpoint.pt, rebuilds metrics.jsonl from the copy of the rows kept in the checkpoint
(warning about any line that was damaged or missing; rows written after the checkpoint are
redone), and ends with the same weights and metrics as a run that was never interrupted.

metrics.jsonl is strict JSON: NaN and ±inf are written as null (they read back as None).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from alphaedit_lite.experiments.drift import hidden_states, relative_drift
from alphaedit_lite.experiments.evaluate import evaluate_requests
from alphaedit_lite.model.arch import get_rewrite_weight, rewrite_module_name, set_rewrite_weight, snapshot_weights
from alphaedit_lite.locate.requests import as_requests, edited_neighbours
from alphaedit_lite.util.files import atomic_json_save, atomic_torch_save, atomic_write


@dataclass
class Schedule:
    """How a sequential run is paced (counts are in batches unless named otherwise)."""

    n_edits: int
    batch_size: int = 1
    eval_every: int = 1          # evaluate metrics and drift every k batches (and after the last)
    fluency_every: int = 0       # generate and score fluency every k batches (0: only at the end)
    checkpoint_every: int = 1    # write checkpoint.pt every k batches (and after the last)
    eval_limit: int | None = 200 # evaluate at most this many of the edits so far (an even sample)
    hidden_every: int = 1        # save probe hidden states at every k-th evaluation
    fluency_limit: int | None = 20  # generate from at most this many of the edits (an even sample; 0: no fluency)

    def __post_init__(self):
        if self.n_edits < 1 or self.batch_size < 1:
            raise ValueError(f"n_edits and batch_size must be ≥ 1, got {self.n_edits} and {self.batch_size}")
        for name in ("eval_every", "checkpoint_every", "hidden_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.fluency_limit is not None and self.fluency_limit < 0:
            raise ValueError(f"fluency_limit must be ≥ 0 (0 skips fluency), got {self.fluency_limit}")

    @property
    def n_batches(self) -> int:
        return -(-self.n_edits // self.batch_size)




def _json_ready(value: Any) -> Any:
    """`value` with NaN and ±inf replaced by None (in nested dicts and lists too): JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _metric_line(row: dict) -> str:
    """One line of metrics.jsonl (strict JSON: `row` must already have gone through `_json_ready`)."""
    return json.dumps(row, allow_nan=False) + "\n"


def _metrics_text(rows: list[dict]) -> bytes:
    """The whole of a metrics.jsonl holding `rows`."""
    return "".join(_metric_line(r) for r in rows).encode("utf-8")


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run folder's metrics.jsonl, one dict per evaluated step ([] when there is none).

    Metrics that were NaN or infinite are stored as null and read back as None. A last line
    without its newline is a write cut short by a kill (or one still under way): it is left out
    with a warning. Any other line that is not a JSON object raises ValueError naming the file and
    the line: the file was damaged, and resuming the run rebuilds it from checkpoint.pt.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")       # a complete file ends with "\n", so its last item is b""
    rows = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:          # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number == len(lines):  # the last line, and it has no newline: an unfinished write
            warnings.warn(f"{path} line {number} is incomplete (a write cut short by a kill, or one still "
                          "under way); it is left out. Resuming the run (--resume) redoes it.", stacklevel=2)
        else:
            raise ValueError(f"{path} line {number} is not a JSON object: the file was damaged. If the run "
                             "folder has a checkpoint.pt, resume the run (run_sequential(..., resume=True) or "
                             f"--resume) to rebuild metrics.jsonl from it; otherwise repair or delete line {number}.")
    return rows


def _rewrite_metrics(rows: list[dict], path: Path) -> None:
    text = _metrics_text(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(text))


def _append_metric(row: dict, path: Path) -> None:
    with open(path, "a") as f:
        f.write(_metric_line(row))
        f.flush()
        os.fsync(f.fileno())


def _line_numbers(numbers: list[int]) -> str:
    """[3] -> 'line 3 was'; [1, 2] -> 'lines 1, 2 were' (for warnings about metrics.jsonl)."""
    listed = ", ".join(str(n) for n in numbers)
    return f"line {listed} was" if len(numbers) == 1 else f"lines {listed} were"


def _warn_about_damaged_metrics(rows: list[dict], path: Path, ckpt_path: Path) -> None:
    """Warn, naming the line numbers, about lines of metrics.jsonl that differ from the checkpoint's
    copy of the rows (damaged) or are not there (missing). Lines after the checkpoint's rows are not
    reported: they belong to batches after the checkpoint, which the resumed run redoes."""
    expected = [_metric_line(r) for r in rows]
    found = path.read_bytes().decode("utf-8", errors="replace").split("\n") if path.exists() else [""]
    if found[-1] == "":     # the file ends with a newline (or is empty): no line after it
        found.pop()
    damaged = [i + 1 for i, line in enumerate(expected) if i < len(found) and found[i] != line[:-1]]
    missing = list(range(len(found) + 1, len(expected) + 1))
    problems = [f"{_line_numbers(damaged)} damaged"] if damaged else []
    problems += [f"{_line_numbers(missing)} missing"] if missing else []
    if problems:
        warnings.warn(f"{path} {' and '.join(problems)}; rebuilt from {ckpt_path}", stacklevel=3)


def _sha256_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksum_path(ckpt_path: Path) -> Path:
    return ckpt_path.with_name("checkpoint.sha256")


def _save_checkpoint(ck: dict, path: Path, sha256_on_disk: str | None) -> str:
    """Write checkpoint.pt and its checkpoint.sha256 atomically; returns the new file's SHA-256.

    checkpoint.sha256 is written just before checkpoint.pt is renamed into place, and names both
    the new file's digest and `sha256_on_disk` (the checkpoint.pt it replaces), so a kill between
    the two renames leaves a pair that still checks.
    """
    digest = ""

    def write(tmp: str) -> None:
        nonlocal digest
        torch.save(ck, tmp)
        digest = _sha256_of_file(Path(tmp))
        atomic_json_save({"file": path.name, "sha256": digest, "previous_sha256": sha256_on_disk},
                         _checksum_path(path))
    atomic_write(path, write)
    return digest


CHECKPOINT_KEYS = ("batches_done", "state", "rng", "weights", "metrics_lines", "seconds")


def _load_checkpoint(path: Path) -> tuple[dict, str]:
    """(checkpoint, its SHA-256) after checking it against checkpoint.sha256; a clear ValueError if damaged."""
    run_dir, sums = path.parent, _checksum_path(path)
    what_to_do = (f"Delete {path} and {sums} to restart this run from its first batch (resume=True / --resume "
                  f"then starts over in the same folder), or delete the folder {run_dir} and start a new run.")
    if path.stat().st_size == 0:
        raise ValueError(f"cannot resume {run_dir}: {path} is empty (0 bytes), so the run's progress is lost. "
                         + what_to_do)
    digest = _sha256_of_file(path)
    if sums.exists():
        try:
            recorded = json.loads(sums.read_text())
            accepted = {recorded["sha256"], recorded.get("previous_sha256")}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot resume {run_dir}: {sums} cannot be read ({e}), so {path} cannot be "
                             f"checked. If you trust {path}, delete only {sums} and resume again; otherwise "
                             + what_to_do) from None
        if digest not in accepted:
            raise ValueError(f"cannot resume {run_dir}: {path} is damaged (checksum mismatch: its SHA-256 is "
                             f"{digest[:16]}…, {sums.name} records {recorded['sha256'][:16]}…); it changed after "
                             "it was written (truncated, overwritten, or copied incompletely). " + what_to_do)
    else:
        warnings.warn(f"{path} has no {sums.name} beside it (a folder written by an older alphaedit_lite?), so "
                      "it cannot be checked for damage; it is loaded unchecked.", stacklevel=3)
    try:
        ck = torch.load(path, weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"cannot resume {run_dir}: {path} cannot be read ({type(e).__name__}: {first_line}); it "
                         "is truncated or damaged. " + what_to_do) from e
    missing = [k for k in CHECKPOINT_KEYS if not (isinstance(ck, dict) and k in ck)]
    if missing:
        raise ValueError(f"cannot resume {run_dir}: {path} is not a run checkpoint (it lacks {missing}). "
                         + what_to_do)
    return ck, digest


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # it exists, but belongs to another user
        return True
    return True


_READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)   # what creating a file in a read-only folder raises


def _acquire_lock(run_dir: Path) -> Path | None:
    """Create run_dir/run.lock holding this process's PID and host, so that no second run writes the folder.

    Raises RuntimeError, naming the holder, when a live process holds the lock (or one on another
    machine, which cannot be checked); takes over, with a warning, a lock left by a process of this
    machine that no longer runs (a killed run). Returns None when the folder is read-only: then
    nothing can be written there, and the caller must not try.
    """
    lock = run_dir / "run.lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):                              # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno in _READ_ONLY_ERRNOS:
                return None
            raise
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return lock
        try:
            holder = json.loads(lock.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
            if pid <= 0:
                raise ValueError(f"PID {pid} is not a process")
        except FileNotFoundError:                   # released between our two calls: try again
            continue
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"run folder {run_dir} has a lock file {lock} that cannot be read ({e}); another "
                               f"run may be starting in it. If no run is using this folder, delete {lock} and "
                               "try again.") from None
        if host == me["host"] and not _pid_alive(pid):
            try:                                    # (another process taking over at the same instant could
                lock.unlink(missing_ok=True)        #  lose its fresh lock here: a window of microseconds)
            except OSError as e:
                if e.errno in _READ_ONLY_ERRNOS:    # a read-only folder: nobody can write it, no lock needed
                    return None
                raise
            warnings.warn(f"taking over {lock}: process {pid} on this machine, which held it, is no longer running "
                          "(a killed run?)", stacklevel=3)
            continue
        where = ("this machine" if host == me["host"]
                 else f"{host} (another machine: whether it still runs cannot be checked from here)")
        raise RuntimeError(f"run folder {run_dir} is in use by process {pid} on {where}, since "
                           f"{holder.get('since', '?')} (lock file {lock}); two runs writing one folder would mix "
                           f"their results. Wait for that run to end, or stop it; if no run is using this folder "
                           f"any more, delete {lock}.")
    raise RuntimeError(f"could not take the lock {lock} of run folder {run_dir}: other runs keep taking it; "
                       "make sure only one run uses this folder, then try again")


def _release_lock(lock: Path | None) -> None:
    """Delete run.lock if it is still this process's (a user may have deleted it and another run taken it)."""
    if lock is None:
        return
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


def _even_sample(n: int, k: int | None) -> list[int]:
    if k is None or n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n - 1]


@dataclass
class RunResult:
    run_dir: Path
    metrics: list[dict]
    state: Any
    seconds: float
    resumed_from: int = 0
    settings: dict = field(default_factory=dict)


def weights_fingerprint(weights: dict[int, torch.Tensor]) -> str:
    """SHA-256 over the layers' weights (layer order, dtype and values): identifies the unedited model."""
    h = hashlib.sha256()
    for l in sorted(weights):
        w = weights[l].detach().to("cpu").contiguous()
        h.update(f"{l}:{w.dtype}:{tuple(w.shape)};".encode())
        h.update(w.view(torch.uint8).numpy().tobytes() if w.dtype == torch.bfloat16 else w.numpy().tobytes())
    return h.hexdigest()


EditFn = Callable[..., Any]  # (model, tok, requests, hparams, state=..., stats=...) -> EditResult (with .state)


def run_sequential(model, tok, requests, hparams, method: str, run_dir: str | os.PathLike, schedule: Schedule,
                   *, probe_prompts: list[str] | None = None, drift_layers: list[int] | None = None,
                   probe_positions: list[int] | None = None, stats=None, resume: bool = False, extra_eval: Callable[[Any, Any], dict] | None = None,
                   edit_fn: EditFn | None = None, stop_after_batches: int | None = None,
                   progress: bool = True, model_name: str = "") -> RunResult:
    """Apply `schedule.n_edits` requests in batches, evaluating, checkpointing and measuring drift.

    `method` names an editing method of `alphaedit_lite.methods` (its state is carried between
    batches); `edit_fn` overrides it (used by tests). `probe_prompts` are unedited-fact prompts
    whose hidden states are compared to the unedited model's at `drift_layers` (default: the last
    edited layer), read at each prompt's last token or at `probe_positions` (one token index per
    prompt; the final layer stays at the last token), and at the final layer. `extra_eval(model, tok) -> dict` adds figures per
    evaluated step (e.g. the tiny world's accuracy on every unedited fact).
    `stop_after_batches` ends the call early, as a kill would (for tests and demos of resume).
    The model is edited in place; the caller restores it (see `alphaedit_lite.model.arch.restore_weights`).

    `resume=True` continues the folder from checkpoint.pt (refused, with what to do, when the
    checkpoint fails its checksum or cannot be read) and rebuilds metrics.jsonl from the rows kept
    in the checkpoint, warning about damaged or missing lines. Resuming a finished run only reads
    the folder, so it also works on a read-only copy. While it runs, run.lock keeps a second run
    (another process, or another call) out of the folder.
    """
    run_dir = Path(run_dir)
    reqs = as_requests(requests)[: schedule.n_edits]
    if len(reqs) < schedule.n_edits:
        raise ValueError(f"asked for {schedule.n_edits} edits but only {len(reqs)} requests were given")
    layers = list(hparams.layers)
    drift_layers = list(drift_layers) if drift_layers is not None else [layers[-1]]
    overlap = edited_neighbours(reqs)
    if overlap:
        label, prompt, subject = overlap[0]
        warnings.warn(f"{len(overlap)} neighbourhood prompt(s) of these {len(reqs)} requests name a subject that is "
                      f"itself edited in this run (e.g. {label}: {prompt!r} names {subject!r}); its answer will change "
                      "on purpose, so Specificity counts it as a leak. Drop those prompts or edit other subjects "
                      "(alphaedit_lite.locate.requests.edited_neighbours lists them).", stacklevel=2)
    if edit_fn is None:
        import functools

        from alphaedit_lite.methods import apply_method
        edit_fn = functools.partial(apply_method, method)
    settings = {
        "format": "alphaedit-lite/run/v1", "method": method, "model": model_name,
        "hparams": dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams),
        "schedule": dataclasses.asdict(schedule), "drift_layers": drift_layers,
        "case_ids": [r.case_id for r in reqs], "n_probes": len(probe_prompts or []),
    }
    if probe_positions is not None:
        settings["probe_positions"] = [int(i) for i in probe_positions]
    settings_path, ckpt_path, metrics_path = run_dir / "settings.json", run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    module_names = {l: rewrite_module_name(model, l) for l in layers}
    original = snapshot_weights(model, layers)
    # The unedited weights' fingerprint: resuming onto another model (or an already edited one)
    # would silently mix two runs, so a mismatch refuses to resume.
    settings["weights_sha256"] = weights_fingerprint(original)

    start_batch, state, elapsed_before = 0, None, 0.0
    if resume and settings_path.exists():
        old = json.loads(settings_path.read_text())
        if "weights_sha256" not in old:     # a folder written before the fingerprint existed
            old["weights_sha256"] = settings["weights_sha256"]
        if json.loads(json.dumps(settings, default=str)) != old:
            diff = sorted(k for k in settings if json.dumps(settings[k], default=str) != json.dumps(old.get(k), default=str))
            why = ("; the unedited weights of the edited layers differ from the run's (another model, or a model "
                   "already edited?)" if "weights_sha256" in diff else "")
            raise ValueError(f"cannot resume {run_dir}: its settings differ in {diff}{why}; use a new run folder "
                             "or the same settings")
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not resume:
            raise ValueError(f"run folder {run_dir} is not empty: pass resume=True (--resume) to continue it, "
                             "or choose a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(run_dir)    # None: a read-only folder, from which only a finished run can be resumed

    def need_write(why: str) -> None:
        if lock is None:
            raise PermissionError(f"cannot continue {run_dir}: the folder is read-only and {why}; make it "
                                  f"writable (chmod -R u+w {run_dir}) or resume a copy of it")

    bar = None
    try:
        if not settings_path.exists():
            need_write("settings.json must be written")
            atomic_json_save(settings, settings_path)

        # Probe hidden states of the unedited model: the reference for drift.
        baseline = None
        if probe_prompts:
            base_path = run_dir / "baseline_hidden.pt"
            if base_path.exists():
                baseline = torch.load(base_path, weights_only=False)
            else:
                need_write("baseline_hidden.pt must be written")
                baseline = hidden_states(model, tok, probe_prompts, drift_layers, positions=probe_positions)
                atomic_torch_save(baseline, base_path)

        rows: list[dict] = []
        ckpt_sha256 = None           # SHA-256 of the checkpoint.pt on disk (recorded beside the next one)
        if resume and ckpt_path.exists():
            ck, ckpt_sha256 = _load_checkpoint(ckpt_path)
            for l in layers:
                set_rewrite_weight(model, l, ck["weights"][module_names[l]])
            state, start_batch, elapsed_before = ck["state"], ck["batches_done"], ck["seconds"]
            torch.set_rng_state(ck["rng"])
            rows = _checkpoint_rows(ck, run_dir)
            on_disk = metrics_path.read_bytes() if metrics_path.exists() else b""
            if on_disk != _metrics_text(rows):   # damaged, or holding rows of batches after the checkpoint
                if "metrics_rows" in ck:         # (an older checkpoint took its rows from this very file)
                    _warn_about_damaged_metrics(rows, metrics_path, ckpt_path)
                need_write("metrics.jsonl must be rebuilt from checkpoint.pt")
                _rewrite_metrics(rows, metrics_path)
        elif metrics_path.exists():
            need_write("metrics.jsonl of a run killed before its first checkpoint must be deleted")
            metrics_path.unlink()  # a run killed before its first checkpoint starts over
        if start_batch < schedule.n_batches and stop_after_batches != 0:
            need_write(f"the run is not finished ({start_batch} of {schedule.n_batches} batches done)")

        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=schedule.n_batches, initial=start_batch, desc=f"{method} ×{schedule.n_edits}",
                       unit="batch")
        t0 = time.perf_counter()
        n_evals = len(rows)
        for b in range(start_batch, schedule.n_batches):
            if stop_after_batches is not None and b - start_batch >= stop_after_batches:
                break
            batch = reqs[b * schedule.batch_size:(b + 1) * schedule.batch_size]
            t_edit = time.perf_counter()
            out = edit_fn(model, tok, batch, hparams, state=state, stats=stats)
            state = out[1] if isinstance(out, tuple) else getattr(out, "state", state)
            edit_seconds = time.perf_counter() - t_edit
            done = b + 1
            last = done == schedule.n_batches
            if done % schedule.eval_every == 0 or last:
                t_eval = time.perf_counter()
                edited = reqs[: done * schedule.batch_size]
                sample = [edited[i] for i in _even_sample(len(edited), schedule.eval_limit)]
                do_fluency = schedule.fluency_limit != 0 and (
                    last or (schedule.fluency_every and done % schedule.fluency_every == 0))
                ev = evaluate_requests(model, tok, sample)["summary"]
                if do_fluency:   # generation is the slow part: a smaller even sample of the edits
                    few = [edited[i] for i in _even_sample(len(edited), schedule.fluency_limit)]
                    ev["fluency"] = evaluate_requests(model, tok, few, fluency=True)["summary"]["fluency"]
                row = {"batch": done, "edits": len(edited), "edit_seconds": round(edit_seconds, 4),
                       "seconds": round(elapsed_before + time.perf_counter() - t0, 3),
                       **{k: v for k, v in ev.items() if k not in ("n", "style")}}
                for l in layers:
                    row[f"update_norm/{l}"] = float((get_rewrite_weight(model, l).float() - original[l].float()).norm())
                if baseline is not None:
                    now = hidden_states(model, tok, probe_prompts, drift_layers, positions=probe_positions)
                    for k in now:
                        row[f"drift/{k}"] = relative_drift(baseline[k], now[k])
                    if n_evals % schedule.hidden_every == 0 or last:
                        atomic_torch_save(now, run_dir / "hidden" / f"step_{done:05d}.pt")
                if extra_eval is not None:
                    row.update(extra_eval(model, tok))
                row["eval_seconds"] = round(time.perf_counter() - t_eval, 3)
                row = _json_ready(row)       # NaN/inf -> None, here as in the file and the checkpoint
                _append_metric(row, metrics_path)
                rows.append(row)
                n_evals += 1
                if bar is not None:
                    shown = {k: "–" if row.get(k) is None else f"{row[k]:.0f}" for k in ("efficacy", "specificity")}
                    bar.set_postfix(eff=shown["efficacy"], spec=shown["specificity"])
            if done % schedule.checkpoint_every == 0 or last:
                ckpt_sha256 = _save_checkpoint(
                    {"batches_done": done, "state": state, "rng": torch.get_rng_state(),
                     "weights": {module_names[l]: get_rewrite_weight(model, l).clone() for l in layers},
                     "metrics_lines": len(rows), "metrics_rows": rows,   # the rows, to rebuild metrics.jsonl
                     "seconds": elapsed_before + time.perf_counter() - t0},
                    ckpt_path, ckpt_sha256)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        _release_lock(lock)
    return RunResult(run_dir=run_dir, metrics=rows, state=state, seconds=elapsed_before + time.perf_counter() - t0,
                     resumed_from=start_batch, settings=settings)


def _checkpoint_rows(ck: dict, run_dir: Path) -> list[dict]:
    """The metrics rows a checkpoint vouches for: its own copy, or (older checkpoints) metrics.jsonl's first lines."""
    if "metrics_rows" in ck:
        return ck["metrics_rows"]
    n = ck["metrics_lines"]
    rows = [_json_ready(r) for r in read_metrics(run_dir)[:n]]
    if len(rows) < n:
        raise ValueError(f"cannot resume {run_dir}: its checkpoint.pt counts {n} metrics rows but metrics.jsonl "
                         f"holds only {len(rows)} complete ones, and this checkpoint (written by an older "
                         "alphaedit_lite) keeps no copy of them to rebuild the rest. Restore metrics.jsonl from a "
                         "backup, or delete checkpoint.pt to restart the run from its first batch.")
    return rows


