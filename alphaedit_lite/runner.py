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

Every file is written atomically (temp file, then rename), so killing a run at any moment leaves
a folder `run_sequential(..., resume=True)` continues from: it truncates metrics written after
the last checkpoint, restores weights, state and RNG, and ends with the same weights and metrics
as a run that was never interrupted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .drift import FINAL, hidden_states, relative_drift
from .evaluate import evaluate_requests
from .models import get_rewrite_weight, rewrite_module_name, set_rewrite_weight
from .requests import as_requests, edited_neighbours


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


def _atomic_write_bytes(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))


def atomic_json_save(obj: Any, path: Path) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
    _atomic_write_bytes(path, w)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics lines of a run folder (complete lines only)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is not trusted
    return rows


def _rewrite_metrics(rows: list[dict], path: Path) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    _atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


def _append_metric(row: dict, path: Path) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    import hashlib

    h = hashlib.sha256()
    for l in sorted(weights):
        w = weights[l].detach().to("cpu").contiguous()
        h.update(f"{l}:{w.dtype}:{tuple(w.shape)};".encode())
        h.update(w.view(torch.uint8).numpy().tobytes() if w.dtype == torch.bfloat16 else w.numpy().tobytes())
    return h.hexdigest()


EditFn = Callable[..., Any]  # (model, tok, requests, hparams, state=..., stats=...) -> EditResult (with .state)


def run_sequential(model, tok, requests, hparams, method: str, run_dir: str | os.PathLike, schedule: Schedule,
                   *, probe_prompts: list[str] | None = None, drift_layers: list[int] | None = None,
                   stats=None, resume: bool = False, extra_eval: Callable[[Any, Any], dict] | None = None,
                   edit_fn: EditFn | None = None, stop_after_batches: int | None = None,
                   progress: bool = True, model_name: str = "") -> RunResult:
    """Apply `schedule.n_edits` requests in batches, evaluating, checkpointing and measuring drift.

    `method` names an editing method of `alphaedit_lite.methods` (its state is carried between
    batches); `edit_fn` overrides it (used by tests). `probe_prompts` are unedited-fact prompts
    whose hidden states are compared to the unedited model's at `drift_layers` (default: the last
    edited layer) and at the final layer. `extra_eval(model, tok) -> dict` adds figures per
    evaluated step (e.g. the tiny world's accuracy on every unedited fact).
    `stop_after_batches` ends the call early, as a kill would (for tests and demos of resume).
    The model is edited in place; the caller restores it (see `restore_original`).
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
                      "(alphaedit_lite.requests.edited_neighbours lists them).", stacklevel=2)
    if edit_fn is None:
        import functools

        from .methods import apply_method
        edit_fn = functools.partial(apply_method, method)
    settings = {
        "format": "alphaedit-lite/run/v1", "method": method, "model": model_name,
        "hparams": dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams),
        "schedule": dataclasses.asdict(schedule), "drift_layers": drift_layers,
        "case_ids": [r.case_id for r in reqs], "n_probes": len(probe_prompts or []),
    }
    settings_path, ckpt_path, metrics_path = run_dir / "settings.json", run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    module_names = {l: rewrite_module_name(model, l) for l in layers}
    original = {l: get_rewrite_weight(model, l).clone() for l in layers}
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
    if not settings_path.exists():
        atomic_json_save(settings, settings_path)

    # Probe hidden states of the unedited model: the reference for drift.
    baseline = None
    if probe_prompts:
        base_path = run_dir / "baseline_hidden.pt"
        if base_path.exists():
            baseline = torch.load(base_path, weights_only=False)
        else:
            baseline = hidden_states(model, tok, probe_prompts, drift_layers)
            atomic_torch_save(baseline, base_path)

    rows: list[dict] = []
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        for l in layers:
            set_rewrite_weight(model, l, ck["weights"][module_names[l]])
        state, start_batch, elapsed_before = ck["state"], ck["batches_done"], ck["seconds"]
        torch.set_rng_state(ck["rng"])
        rows = read_metrics(run_dir)[: ck["metrics_lines"]]
        _rewrite_metrics(rows, metrics_path)
    elif metrics_path.exists():
        metrics_path.unlink()  # a run killed before its first checkpoint starts over

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=schedule.n_batches, initial=start_batch, desc=f"{method} ×{schedule.n_edits}", unit="batch")
    t0 = time.perf_counter()
    n_evals = sum(1 for r in rows)
    try:
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
                    now = hidden_states(model, tok, probe_prompts, drift_layers)
                    for k in now:
                        row[f"drift/{k}"] = relative_drift(baseline[k], now[k])
                    if n_evals % schedule.hidden_every == 0 or last:
                        atomic_torch_save(now, run_dir / "hidden" / f"step_{done:05d}.pt")
                if extra_eval is not None:
                    row.update(extra_eval(model, tok))
                _append_metric(row, metrics_path)
                rows.append(row)
                n_evals += 1
                if bar is not None:
                    bar.set_postfix(eff=f"{row.get('efficacy', float('nan')):.0f}",
                                    spec=f"{row.get('specificity', float('nan')):.0f}")
            if done % schedule.checkpoint_every == 0 or last:
                atomic_torch_save({"batches_done": done, "state": state, "rng": torch.get_rng_state(),
                                   "weights": {module_names[l]: get_rewrite_weight(model, l).clone() for l in layers},
                                   "metrics_lines": len(rows), "seconds": elapsed_before + time.perf_counter() - t0},
                                  ckpt_path)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return RunResult(run_dir=run_dir, metrics=rows, state=state, seconds=elapsed_before + time.perf_counter() - t0,
                     resumed_from=start_batch, settings=settings)


def restore_original(model, run_or_weights, layers: list[int] | None = None) -> None:
    """Put back weights saved as {layer: W}."""
    for l, W in run_or_weights.items():
        set_rewrite_weight(model, l, W)


FINAL_KEY = FINAL
