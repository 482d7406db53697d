"""Issue 17's quality rule for the speed levers: 200 CounterFact edits in batches of 100, each lever on and off.

For every combination of the two target-optimisation levers (``v_stop`` = loss / most_probable,
``v_dtype`` = float32 / bfloat16) this runs the same sequential AlphaEdit edit on SmolLM2 (the
first 200 CounterFact records, two batches of 100, evaluated once after the second batch on all
200 edits) through the kit's own command, ``alphaedit-lite sequential``, and prints one table:
seconds per edit of editing, efficacy / generalization / specificity and their difference from the
slow path (loss, float32), the perplexity ratio and the drift. A lever may be on by default only
if all three metrics stay within one point of the slow path or above it.

Each configuration is a run folder under ``--out`` (default ``runs/lever-quality``) and is run with
``--resume``: an interrupted benchmark continues where it stopped, and a finished configuration
is only read back. The runs go one after another, each on ``--threads`` threads.

Run: .venv/bin/python benchmarks/lever_quality.py --threads 1          (about 90 minutes on one thread)
     .venv/bin/python benchmarks/lever_quality.py --only loss/float32 loss/bfloat16
     .venv/bin/python benchmarks/lever_quality.py --threads 2 --only loss/bfloat16 --prefixes 10   (and --prefixes 5)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alphaedit_lite.experiments.runner import read_metrics  # noqa: E402

LEVERS = [("loss", "float32"), ("loss", "bfloat16"), ("most_probable", "bfloat16"), ("most_probable", "float32")]


def _run_dir(args, stop: str, dtype: str) -> Path:
    """The run folder of one lever combination (and prefix count, when given)."""
    suffix = f"-p{args.prefixes}" if args.prefixes is not None else ""
    return Path(args.out) / f"{stop}-{dtype}{suffix}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--edits", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--method", default="AlphaEdit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/lever-quality")
    p.add_argument("--prefixes", type=int, default=None, metavar="N",
                   help="context prefixes of the target optimisation (default: the shipped hyper-parameters' 5); "
                        "the run folders get a '-pN' suffix")
    p.add_argument("--only", nargs="*", default=None, metavar="STOP/DTYPE",
                   help="run only these combinations, e.g. loss/float32 most_probable/bfloat16")
    args = p.parse_args(argv)
    levers = LEVERS if not args.only else [tuple(s.split("/")) for s in args.only]
    for lv in levers:
        if lv not in LEVERS:
            p.error(f"unknown lever combination {'/'.join(lv)!r}; choose from "
                    f"{', '.join('/'.join(x) for x in LEVERS)}")

    rows = {}
    for stop, dtype in levers:
        out = _run_dir(args, stop, dtype)
        cmd = [sys.executable, "-m", "alphaedit_lite", "sequential", "--model", "smollm2-135m",
               "--method", args.method, "--edits", str(args.edits), "--batch", str(args.batch),
               "--eval-every", str(args.edits // args.batch), "--fluency-limit", "0",
               "--set", f"v_stop={stop}", "--set", f"v_dtype={dtype}",
               "--out", str(out), "--resume", "--threads", str(args.threads), "--quiet"]
        if args.prefixes is not None:
            cmd += ["--set", f"context_n_prefixes={args.prefixes}"]
        t0 = time.perf_counter()
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        last = read_metrics(out / args.method)[-1]
        rows[stop, dtype] = last
        edit_s = read_metrics(out / args.method)[-1]["edit_seconds"]   # the LAST batch's editing time
        print(f"  {stop}/{dtype}: {edit_s / args.batch:.2f} s per edit of editing (last batch), "
              f"{time.perf_counter() - t0:.0f} s wall this call", flush=True)

    slow = rows.get(("loss", "float32"))
    print(f"\n{args.method}, SmolLM2-135M, the first {args.edits} CounterFact records in batches of {args.batch}, "
          f"{args.threads} thread(s), context prefixes {args.prefixes or 'as shipped'}, evaluated on all {args.edits} edits after the last batch:\n")
    print("| v_stop | v_dtype | s per edit (editing, last batch) | Eff. | Gen. | Spe. | Δ vs slow (Eff./Gen./Spe.) | "
          "perplexity ratio | drift 8 / final |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (stop, dtype), r in rows.items():
        out = _run_dir(args, stop, dtype)
        # a metrics row's edit_seconds is the editing time of that row's batch only (runner.run_sequential)
        edit_s = read_metrics(out / args.method)[-1]["edit_seconds"] / args.batch
        diff = ("/".join(f"{r[k] - slow[k]:+.1f}" for k in ("efficacy", "generalization", "specificity"))
                if slow is not None else "n/a")
        drift = "/".join(f"{r[k]:.3f}" for k in r if k.startswith("drift/"))
        print(f"| {stop} | {dtype} | {edit_s:.2f} | {r['efficacy']:.1f} | {r['generalization']:.1f} | "
              f"{r['specificity']:.1f} | {diff} | {r.get('perplexity_ratio', float('nan')):.3f} | {drift} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
