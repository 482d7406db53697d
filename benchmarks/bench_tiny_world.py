"""Tiny world at scale: N sequential edits per method, timed, with the paper's Table-1 figures.

Issue-4 targets: 2,000 sequential edits per method in at most 3 minutes each on a 2-core CPU;
after 2,000 AlphaEdit edits efficacy >= 99 % and unedited-fact accuracy within 1 point of the
unedited model; drift at the last edited layer for AlphaEdit at most a tenth of MEMIT's.

    python benchmarks/bench_tiny_world.py                       # 2000 edits, batches of 100
    python benchmarks/bench_tiny_world.py --edits 2000 --batch 100 --methods MEMIT,AlphaEdit,MEMIT+P
    python benchmarks/bench_tiny_world.py --edits 200 --batch 20 --out runs/bench-small

Every time is also printed as a multiple of one fixed reference operation (a forward pass of the
tiny model over 512 training prompts), timed in the same run, so figures compare across machines.
Runs are written to --out (default runs/bench-tiny-world-<edits>x<batch>) and resume if killed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path


def reference_seconds(model, tok, world, repeats: int = 5) -> float:
    """Median wall time of one forward pass over 512 fixed training prompts (the yardstick)."""
    import torch

    from alphaedit_lite.locate.keys import right_pad

    prompts = [p.prompt for p in world.probes("train")[:512]]
    ids, mask = right_pad([tok(p, add_special_tokens=False).input_ids for p in prompts], tok.pad_token_id)
    times = []
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)                      # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--methods", default="MEMIT,AlphaEdit")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores left free)")
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args(argv)

    import torch

    from alphaedit_lite.util.device import cpu_threads
    from alphaedit_lite.experiments.records import load_run
    from alphaedit_lite.experiments.sequential import hparams_for, prepare, run_methods
    from alphaedit_lite.plots.report import write_report
    from alphaedit_lite.world.editing import unedited_accuracy, untouched_accuracy

    n_threads = cpu_threads(a.threads)
    load0 = os.getloadavg()[0]
    labels = a.methods.split(",")
    out = Path(a.out or f"runs/bench-tiny-world-{a.edits}x{a.batch}")
    hp = hparams_for(labels[0], "tiny-world")
    t0 = time.perf_counter()
    setup = prepare("tiny-world", a.edits, layers_hint=hp.layers, progress=False)
    t_prep = time.perf_counter() - t0
    model, tok, world = setup.model, setup.tok, setup.world
    ref = reference_seconds(model, tok, world)
    base_unedited = unedited_accuracy(model, tok, world, setup.requests, k=1000)
    base_untouched = untouched_accuracy(model, tok, world, setup.requests, k=1000)
    from alphaedit_lite.experiments.evaluate import evaluate_requests
    base = evaluate_requests(model, tok, setup.requests[:200])["summary"]

    print(f"tiny world: {a.edits} sequential edits in batches of {a.batch}; {n_threads} CPU thread(s); "
          f"load average {load0:.1f}; torch {torch.__version__}")
    print(f"reference op (forward over 512 prompts): {ref * 1e3:.1f} ms; load + K0 statistics {t_prep:.1f} s")
    print(f"unedited model: efficacy {base['efficacy']:.1f}, generalization {base['generalization']:.1f}, "
          f"specificity {base['specificity']:.1f}, unedited facts {base_unedited:.1f} %"
          + (f", untouched subjects {base_untouched:.1f} %" if base_untouched is not None else ""))

    walls = {}
    for label in labels:
        t1 = time.perf_counter()
        run_methods(setup, [label], out, n_edits=a.edits, batch=a.batch, eval_every=a.eval_every, resume=True,
                    progress=False, log=lambda *_: None)
        walls[label] = time.perf_counter() - t1
    runs = {lab: out / lab.replace("+", "_plus_") for lab in labels}
    paths = write_report(runs, out / "report", title=f"tiny world: {a.edits} sequential edits, batch {a.batch}")

    rows = {}
    head = (f"{'method':10s} {'edit s':>8s} {'(×ref)':>8s} {'run s':>7s} {'Eff.':>6s} {'Gen.':>6s} {'Spe.':>6s} "
            f"{'Flu.':>6s} {'unedited':>9s} {'untouched':>9s} {'drift@L':>9s} {'drift@fin':>9s}")
    print("\n" + head)
    for lab, d in runs.items():
        m = load_run(d)["metrics"]
        last = m[-1]
        edit_s = sum(r.get("edit_seconds", 0.0) for r in m)      # edit time of evaluated batches only
        batches_evaluated = len(m)
        n_batches = -(-a.edits // a.batch)
        edit_total = edit_s * n_batches / max(1, batches_evaluated)
        dl = next((v for k, v in last.items() if k.startswith("drift/") and not k.endswith("final")), float("nan"))
        rows[lab] = dict(edit_seconds=edit_total, run_seconds=last["seconds"], wall_seconds=walls[lab],
                         efficacy=last.get("efficacy"), generalization=last.get("generalization"),
                         specificity=last.get("specificity"), fluency=last.get("fluency"),
                         unedited_acc=last.get("unedited_acc"), untouched_acc=last.get("untouched_acc"),
                         drift_last_layer=dl, drift_final=last.get("drift/final"))
        r = rows[lab]

        def f(v, w=6, p=1):
            return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'–':>{w}s}"
        print(f"{lab:10s} {r['edit_seconds']:8.1f} {r['edit_seconds'] / ref:8.0f} {r['run_seconds']:7.1f} "
              f"{f(r['efficacy'])} {f(r['generalization'])} {f(r['specificity'])} {f(r['fluency'])} "
              f"{f(r['unedited_acc'], 9)} {f(r['untouched_acc'], 9)} {dl:9.2e} {r['drift_final']:9.2e}")
    if "MEMIT" in rows and "AlphaEdit" in rows:
        ratio = rows["AlphaEdit"]["drift_last_layer"] / rows["MEMIT"]["drift_last_layer"]
        print(f"\ndrift ratio AlphaEdit / MEMIT at the last edited layer: {ratio:.3f} (target ≤ 0.1)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MB; load average at the end {os.getloadavg()[0]:.1f}")
    print("run time (s) includes evaluation every batch (Table-1 metrics on ≤200 edits, 1000 unedited facts, "
          "drift on 300 probes) and fluency at the end")
    for k, p in paths.items():
        print(f"  {k:12s} {p}")
    if a.json:
        Path(a.json).write_text(json.dumps({"reference_seconds": ref, "threads": n_threads, "load_start": load0,
                                            "baseline": {**base, "unedited_acc": base_unedited,
                                                         "untouched_acc": base_untouched},
                                            "methods": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
