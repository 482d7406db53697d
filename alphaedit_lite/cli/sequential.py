"""`alphaedit-lite sequential` and `alphaedit-lite demo` (the `make demo` job): flags, printing, provenance.

The work is :mod:`alphaedit_lite.experiments.sequential` (load, run the methods) and
:mod:`alphaedit_lite.plots.report` (the report folder, the shipped run's figures).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from alphaedit_lite.experiments.sequential import (FAST_TARGETS, SUBWORD, TINY, WORLDS, evaluate_unedited,
                                                   hparams_for, prepare, run_methods)
from alphaedit_lite.methods.registry import method_variant
from alphaedit_lite.plots.report import show_shipped_run, write_report
from alphaedit_lite.util.device import cpu_threads

__all__ = ["add_sequential_parser", "cmd_sequential", "cmd_demo", "add_demo_flags", "provenance", "DEMO_DEFAULTS"]


DEMO_DEFAULTS = dict(model=SUBWORD, counterexample=TINY, methods=["MEMIT", "AlphaEdit"], edits=2000, batch=100,
                     eval_every=2, out="runs/demo", live_edits=40, live_batch=20)


def _parse_set(items: list[str] | None) -> dict:
    """``--set KEY=VALUE`` options as {field: value}: VALUE is read as JSON (else kept as a string),
    then checked against the field's declared type (:func:`alphaedit_lite.methods.hparams.check_overrides`)
    so that a bad value stops the command before the model loads."""
    from alphaedit_lite.methods.hparams import check_overrides

    out = {}
    for it in items or []:
        k, eq, v = it.partition("=")
        k = k.strip()
        if not eq or not k:
            raise ValueError(f"--set takes KEY=VALUE (a JSON value), e.g. --set L2=10, got {it!r}")
        if k in out:
            raise ValueError(f"--set {k} is given twice ({out[k]!r} and {v!r}); keep one")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return check_overrides(out, source="--set")


def cmd_sequential(args: argparse.Namespace) -> int:

    n = cpu_threads(args.threads)
    labels = [m for ms in args.method for m in ms.split(",")]
    for lab in labels:
        method_variant(lab)                       # fail fast on a bad name
    for flag, v in (("--edits", args.edits), ("--batch", args.batch), ("--eval-every", args.eval_every),
                    ("--checkpoint-every", args.checkpoint_every)):
        if v < 1:
            raise ValueError(f"{flag} must be at least 1, got {v}")
    overrides = _parse_set(args.set)
    # every method's hyper-parameters, overrides included, are checked before the model loads
    hp0 = [hparams_for(lab, args.model, overrides) for lab in labels][0]
    out = Path(args.out or f"runs/{args.model}-{args.edits}x{args.batch}")
    print(f"alphaedit-lite sequential: {args.model}, {', '.join(labels)}, {args.edits} edits in batches of "
          f"{args.batch}, {n} CPU thread(s) -> {out}")
    setup = prepare(args.model, args.edits, layers_hint=hp0.layers, device=args.device,
                    requests_path=args.requests, n_probes=args.probes, progress=not args.quiet)
    t0 = time.perf_counter()
    unedited = evaluate_unedited(setup, args.eval_limit)
    runs = run_methods(setup, labels, out, n_edits=args.edits, batch=args.batch, eval_every=args.eval_every,
                       checkpoint_every=args.checkpoint_every, eval_limit=args.eval_limit,
                       fluency_every=args.fluency_every, fluency_limit=args.fluency_limit, resume=args.resume, overrides=overrides,
                       stop_after_batches=args.stop_after, progress=not args.quiet,
                       save_final=Path(args.save_final) if args.save_final else None)
    if args.stop_after is not None:
        print(f"stopped after {args.stop_after} batch(es) per method as asked; continue with --resume")
        return 0
    paths = write_report(runs, out / "report", title=f"{args.model}: {args.edits} sequential edits, batch {args.batch}",
                         unedited=unedited)
    if unedited is not None:
        print("unedited model: " + ", ".join(f"{k} {unedited[k]:.3g}" for k in ("efficacy", "generalization",
              "specificity", "unedited_acc", "perplexity_ratio") if unedited.get(k) is not None))
    if args.records:
        from alphaedit_lite.experiments.records import copy_run_records
        where = copy_run_records(runs, args.records, provenance(args, time.perf_counter() - t0), out / "report")
        paths["records"] = where
    print("\n" + (out / "report" / "summary.md").read_text())
    print(f"total {time.perf_counter() - t0:.0f} s. Report:")
    for k, p in paths.items():
        print(f"  {k:12s} {p}")
    return 0


def provenance(args: argparse.Namespace, seconds: float) -> dict:
    """What made a run: the command line, the kit's commit (when run from a git checkout), versions, threads."""
    import datetime
    import platform
    import subprocess

    import torch

    from alphaedit_lite.util.version import __version__
    from alphaedit_lite.util.paths import PROJECT_ROOT

    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": "alphaedit-lite " + " ".join(sys.argv[1:]), "commit": commit, "kit_version": __version__,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds_this_command": round(seconds, 1)}


def add_sequential_parser(sub) -> argparse.ArgumentParser:
    q = sub.add_parser("sequential", help="N sequential edits per method with checkpoints, drift and a report")
    q.add_argument("--model", default=TINY, help=f"'{TINY}' or '{SUBWORD}' (shipped organisms) or a model "
                                                "name, e.g. smollm2-135m")
    q.add_argument("--method", action="append", default=None,
                   help="method(s): MEMIT, AlphaEdit, PRUNE, RECT, FT, ROME; add '+P' for the projection plug-in "
                        "(MEMIT+P). Repeat or comma-separate. Default: MEMIT,AlphaEdit")
    q.add_argument("--edits", type=int, default=1000, help="number of sequential edits")
    q.add_argument("--batch", type=int, default=100, help="edits per batch")
    q.add_argument("--out", default=None, help="output folder (default runs/<model>-<edits>x<batch>)")
    q.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    q.add_argument("--eval-every", type=int, default=1, help="evaluate every k batches")
    q.add_argument("--checkpoint-every", type=int, default=1, help="checkpoint every k batches")
    q.add_argument("--eval-limit", type=int, default=200, help="evaluate at most this many edits so far")
    q.add_argument("--fluency-every", type=int, default=0, help="generation fluency every k batches (0: at the end)")
    q.add_argument("--fluency-limit", type=int, default=20,
                   help="generate from at most this many edits per fluency measurement (0: skip fluency)")
    q.add_argument("--probes", type=int, default=300, help="probe prompts for hidden-state drift")
    q.add_argument("--requests", default=None, help="a JSON file of requests (default: the model's own records "
                                                   "or CounterFact from ../shared/data)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyper-parameter (JSON value)")
    q.add_argument("--save-final", default=None, metavar="DIR",
                   help="also save each method's edited model as a transformers folder DIR/<method>/")
    q.add_argument("--records", default=None, metavar="DIR",
                   help="also copy the finished runs' light records (settings, metrics, first and last probe "
                        "states, report; no weights) to DIR, with the command and commit in provenance.json")
    q.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    q.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores left free)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_sequential_with_defaults)
    return q


def _sequential_with_defaults(args: argparse.Namespace) -> int:
    if args.method is None:
        args.method = ["MEMIT,AlphaEdit"]
    return cmd_sequential(args)


def _sequential_args(**kw) -> argparse.Namespace:
    base = dict(method=[",".join(DEMO_DEFAULTS["methods"])], resume=True, eval_every=1, checkpoint_every=1,
                eval_limit=200, fluency_every=0, fluency_limit=20, probes=300, requests=None, set=None,
                stop_after=None, save_final=None, records=None, device=None, threads=None, quiet=False)
    base.update(kw)
    return argparse.Namespace(**base)


def cmd_demo(args: argparse.Namespace) -> int:
    """`make demo`: (1) the shipped 1,000-edit SmolLM2 run rendered beside the paper's Table 1, (2) a short
    live SmolLM2 sequence with MEMIT and AlphaEdit, (3) the organism where the null space has room (the subword
    world by default; its figures are the summary's ``methods``), (4) the counterexample organism where it has
    none (the tiny world); finished parts are reused, killed ones resumed."""
    from alphaedit_lite.util.paths import shared_data_dir

    if args.eval_every < 1:
        raise ValueError(f"--eval-every must be at least 1, got {args.eval_every}")
    if args.counterexample == args.model:
        raise ValueError(f"--counterexample {args.counterexample} is the --model organism already; choose the other "
                         "one or 'none'")
    out = Path(args.out)
    t0 = time.perf_counter()
    combined: dict[str, Any] = {"parts": {}}
    shipped = show_shipped_run(out / "smollm2-shipped")
    if shipped is not None:
        combined["parts"]["smollm2_shipped"] = shipped
    if args.live_edits > 0:
        if shared_data_dir() is None:
            print("== 2. live SmolLM2 sequence: skipped (CounterFact from ../shared/data is not here) ==")
        else:
            print(f"== 2. A short live SmolLM2 sequence: {args.live_edits} edits in batches of {args.live_batch}, "
                  f"targets with {', '.join(FAST_TARGETS)} as in part 1 ==")
            live = out / "smollm2-live"
            cmd_sequential(_sequential_args(model="smollm2-135m", edits=args.live_edits, batch=args.live_batch,
                                            out=str(live), eval_limit=args.live_edits, fluency_limit=0, probes=100,
                                            set=list(FAST_TARGETS), device=args.device, threads=args.threads,
                                            quiet=args.quiet))
            combined["parts"]["smollm2_live"] = json.loads((live / "report" / "summary.json").read_text())
    organisms = [(3, args.model, "where the null space has room")]
    if args.counterexample != "none":
        organisms.append((4, args.counterexample, "the counterexample, where it has none"))
    for part, name, what in organisms:
        print(f"\n== {part}. The {name} organism, {what}: {args.edits} edits in batches of {args.batch} ==")
        world = out / name
        cmd_sequential(_sequential_args(model=name, edits=args.edits, batch=args.batch, out=str(world),
                                        eval_every=args.eval_every, device=args.device, threads=args.threads,
                                        quiet=args.quiet))
        combined["parts"][name.replace("-", "_")] = json.loads((world / "report" / "summary.json").read_text())
    head = args.model.replace("-", "_")
    combined = {"methods": combined["parts"][head]["methods"], "methods_from": head, **combined}
    if {"MEMIT", "AlphaEdit"} <= set(combined["methods"]):
        from alphaedit_lite.experiments.targets import organism_targets, targets_markdown

        print(f"\nchecking the {args.model} organism against the issue's targets (measuring its key room, ~20 s) ...")
        rows = organism_targets(args.model, combined["methods"])
        combined = {**combined, "targets": rows}
        print(f"\n== The {args.model} organism against the targets of the paper's headline "
              f"({args.edits} edits, batches of {args.batch}) ==\n" + targets_markdown(rows))
    combined["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "summary.json").write_text(json.dumps(combined, indent=2, allow_nan=False) + "\n")
    print(f"\ndemo finished in {combined['seconds']:.0f} s; all figures: {out / 'report' / 'summary.json'}")
    return 0


def add_demo_flags(q) -> None:
    q.add_argument("--model", default=DEMO_DEFAULTS["model"], choices=list(WORLDS),
                   help=f"the organism where the null space has room (default {DEMO_DEFAULTS['model']}, see "
                        "data/subword_world/README.md); its figures are the summary's 'methods'")
    q.add_argument("--counterexample", default=DEMO_DEFAULTS["counterexample"], choices=[*WORLDS, "none"],
                   help=f"the organism where it has none (default {DEMO_DEFAULTS['counterexample']}; 'none' skips it)")
    q.add_argument("--eval-every", type=int, default=DEMO_DEFAULTS["eval_every"],
                   help="evaluate the organisms every k batches")
    q.add_argument("--edits", type=int, default=DEMO_DEFAULTS["edits"], help="sequential edits per method")
    q.add_argument("--batch", type=int, default=DEMO_DEFAULTS["batch"], help="edits per batch")
    q.add_argument("--live-edits", type=int, default=DEMO_DEFAULTS["live_edits"],
                   help="edits of the short live SmolLM2 sequence (0: skip it)")
    q.add_argument("--live-batch", type=int, default=DEMO_DEFAULTS["live_batch"], help="its batch size")
    q.add_argument("--out", default=DEMO_DEFAULTS["out"], help="output folder (an existing demo is resumed)")
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--quiet", action="store_true")
