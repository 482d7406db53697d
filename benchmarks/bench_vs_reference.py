"""Benchmark: the kit's AlphaEdit and MEMIT on SmolLM2-135M against the reference figures of issue 6.

The reference is EasyEdit's implementation of AlphaEdit (Fang et al., ICLR 2025, Eq. 14, with the
null-space projector P of Eq. 8-9) and MEMIT (Meng et al., ICLR 2023, Eq. 14), run on a machine like
ours (2 CPU cores, SmolLM2-135M in float32) with the paper's Llama-3 settings adapted to SmolLM2:
layers 4-8, loss at the last layer, 25 optimisation steps, norm clamp 0.75, KL factor 0.0625,
null-space threshold 2e-2, α = 10, learning rate 0.5 or 0.1, and EasyEdit's context templates
("{}" plus 5 model-sampled prefixes of 10 tokens). This script runs the same experiment with the kit:

1. key statistics C0 = K0K0ᵀ/n of the 5 layers over the first ``--stats-tokens`` (105,288) tokens of
   the WikiText-2 raw test split, computed afresh (no cache), then AlphaEdit's projector P per layer;
2. ``--edits`` (50) sequential edits in batches of ``--batch`` (1) on the first records of
   ``../shared/data/counterfact/counterfact_1031.json``, in file order, for each method, each
   method starting from the unedited weights;
3. efficacy / generalization / specificity on those records before and after the edits (the papers'
   mean-token NLL comparison, :func:`alphaedit_lite.experiments.evaluate.evaluate_requests`).

It also times one fixed REFERENCE OPERATION — a full forward pass of the model (all 30 blocks and
the unembedding at every position, no gradient) over the first 16 × 128 tokens of the same text —
at the start and at the end, and prints every time also as a multiple of it ("op"), so figures
compare across machines and across noisy runs. The reference machine's own figures give an
estimate of that operation there: EasyEdit's statistics run one full forward pass over the
105,288 tokens per layer, 145-162 s, i.e. 2048/105,288 × (145..162) s = 2.8-3.2 s per operation.

Usage (from the repository root):

    python benchmarks/bench_vs_reference.py                          # 50 edits, batch 1, both methods, lr 0.5
    python benchmarks/bench_vs_reference.py --edits 200 --batch 10   # the batched figures
    python benchmarks/bench_vs_reference.py --methods AlphaEdit --lr 0.1 --json out.json
    python benchmarks/bench_vs_reference.py --smoke                  # 2 edits, 2048 tokens, 5 steps, 4 reference rows: checks it runs

On a shared machine pass ``--threads 1`` (the default picks the cores other jobs leave free; more
threads than free cores makes torch 10-30× slower). Timings are wall-clock (``time.perf_counter``);
the peak memory is the process's peak resident set size (``ru_maxrss``), model included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# ------------------------------------------------------------------------------------------------
# The reference figures (issue 6), measured with EasyEdit on 2 CPU cores
# ------------------------------------------------------------------------------------------------
REF_TOKENS = 105_288
REF_STATS_S = 726.0                          # key statistics + P for 5 layers, in all
REF_FULL_FORWARD_S = (145.0, 162.0)          # one full forward pass over the 105,288 tokens (per layer)
REF_PER_EDIT_S = {"AlphaEdit": (18.9, 19.7), "MEMIT": (17.5, 17.6)}
REF_QUALITY = {                              # efficacy, generalization, specificity (%), 50 edits
    "unedited": (18.0, 17.0, 76.6),
    0.5: {"AlphaEdit": (100.0, 96.0, 72.4), "MEMIT": (56.0, 41.0, 75.8)},
    0.1: {"AlphaEdit": (78.0, 59.0, 75.2), "MEMIT": (34.0, 23.0, 76.6)},
}
TARGET_ALPHAEDIT_S = 6.3                     # ≥ 3× the reference per edit
TARGET_STATS_S = 145.0                       # ≥ 5× the reference statistics
TARGET_QUALITY = (99.0, 90.0, 72.0)          # AlphaEdit after 50 edits: efficacy, generalization, specificity

OP_ROWS, OP_LEN = 16, 128                    # the reference operation's batch: 16 × 128 tokens
REF_OP_S = tuple(OP_ROWS * OP_LEN / REF_TOKENS * t for t in REF_FULL_FORWARD_S)   # ≈ (2.82, 3.15) s
METRICS = ("efficacy", "generalization", "specificity")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # macOS: bytes, Linux: KiB


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _quality(summary: dict) -> dict:
    return {k: round(float(summary[k]), 2) for k in METRICS}


def reference_op(model, ids, mask, repeats: int) -> list[float]:
    """Seconds of ``repeats`` full forward passes (with logits, no gradient) over ``ids``."""
    import torch

    out = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            out.append(time.perf_counter() - t)
    return out


def run_method(method, model, tok, requests, hp, stats, templates, batch: int, progress: bool) -> dict:
    """Sequential edits of ``requests`` in batches; returns timings and the state's size."""
    from alphaedit_lite.methods import EditState, apply_method

    state = EditState()
    per_call, targets_s, deltas_s, steps = [], [], [], []
    n = len(requests)
    for k in range(0, n, batch):
        chunk = requests[k:k + batch]
        t = time.perf_counter()
        res = apply_method(method, model, tok, chunk, hp, stats=stats, state=state, templates=templates,
                           progress=False)
        per_call.append(time.perf_counter() - t)
        targets_s.append(res.timing.get("targets", float("nan")))
        deltas_s.append(res.timing.get("deltas", float("nan")))
        steps.extend(s.get("steps", 0) for s in res.targets)
        if progress:
            done = min(k + batch, n)
            print(f"  {method}: {done}/{n} edits, last call {per_call[-1]:.1f} s "
                  f"(targets {targets_s[-1]:.1f} s, Δ {deltas_s[-1]:.1f} s), load {_loadavg()}",
                  file=sys.stderr, flush=True)
    per_edit = [t / len(requests[k:k + batch]) for t, k in zip(per_call, range(0, n, batch))]
    return {"per_call_s": per_call, "per_edit_s": per_edit, "targets_s": targets_s, "deltas_s": deltas_s,
            "mean_s_per_edit": statistics.fmean(per_edit), "median_s_per_edit": statistics.median(per_edit),
            "total_s": sum(per_call), "optimisation_steps_mean": statistics.fmean(steps) if steps else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits", type=int, default=50, help="number of CounterFact records to edit (default 50)")
    p.add_argument("--batch", type=int, default=1, help="requests per edit call (default 1)")
    p.add_argument("--methods", default="AlphaEdit,MEMIT", help="comma-separated: AlphaEdit, MEMIT (default both)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate of the target optimisation (0.5 or 0.1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the cores other jobs leave free, at least 1)")
    p.add_argument("--stats-tokens", type=int, default=REF_TOKENS,
                   help=f"WikiText-2 tokens for the key statistics (default {REF_TOKENS}, as the reference)")
    p.add_argument("--prefixes", type=int, default=5,
                   help="context prefixes the keys/targets average over (default 5 of 10 tokens, as EasyEdit)")
    p.add_argument("--template-seed", type=int, default=0,
                   help="seed of the sampled context prefixes (default 0; other seeds show how much the quality "
                        "figures depend on which prefixes were drawn)")
    p.add_argument("--records", default=None, help="CounterFact JSON (default ../shared/data/counterfact/counterfact_1031.json)")
    p.add_argument("--ref-repeats", type=int, default=3, help="timed reference operations at start and end (default 3)")
    p.add_argument("--json", default=None,
                   help="also write every figure to this JSON file (a partial file after each method, the full one at the end)")
    p.add_argument("--reuse-stats", action="store_true",
                   help="load the statistics from the kit's cache when there (and save them): for quality runs; "
                        "the statistics time then is NOT a measurement of computing them")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run (2 edits, 2048 tokens, 1 repeat of a quarter of the reference operation, "
                        "5 target steps) to check it works")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.smoke:
        args.edits, args.stats_tokens, args.ref_repeats = min(args.edits, 2), min(args.stats_tokens, 2048), 1
        args.batch = min(args.batch, args.edits)
    if args.edits < 1 or args.batch < 1 or args.stats_tokens < 2 or args.ref_repeats < 1 or args.prefixes < 0:
        p.error("--edits, --batch, --ref-repeats must be ≥ 1, --stats-tokens ≥ 2, --prefixes ≥ 0")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    canon = {"alphaedit": "AlphaEdit", "memit": "MEMIT"}
    if not methods or any(m.lower() not in canon for m in methods):
        p.error(f"--methods must name AlphaEdit and/or MEMIT, got {args.methods!r}")
    methods = [canon[m.lower()] for m in methods]
    progress = not args.quiet

    import torch

    from alphaedit_lite.model import arch as M
    from alphaedit_lite.model import loading as ML
    from alphaedit_lite.util.device import cpu_threads
    from alphaedit_lite.experiments.evaluate import evaluate_requests
    from alphaedit_lite.methods.hparams import load_hparams
    from alphaedit_lite.locate.keys import context_templates
    from alphaedit_lite.locate.requests import load_counterfact
    from alphaedit_lite.locate.corpus import _resolve_corpus, _token_stream, corpus_tokens
    from alphaedit_lite.locate.stats import layer_stats, projectors

    load_start = _loadavg()
    threads = cpu_threads(args.threads)
    env = {"load_average_start": load_start, "threads": threads, "cpu": _cpu_name(), "cores": os.cpu_count(),
           "torch": torch.__version__, "python": platform.python_version()}
    if progress:
        print(f"load average {load_start}, {threads} torch thread(s), {env['cpu']}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    model, tok = ML.load_model("smollm2-135m", device="cpu")
    load_s = time.perf_counter() - t
    rss_model = _peak_rss_mb()

    # ---- the reference operation --------------------------------------------------------------
    _, op_ids, op_mask = corpus_tokens(tok, "wikitext-2", OP_ROWS * OP_LEN, OP_LEN, progress=False)
    if args.smoke:                                  # a smoke run checks the script: a quarter of the operation
        op_ids, op_mask = op_ids[: OP_ROWS // 4], op_mask[: OP_ROWS // 4]
    reference_op(model, op_ids[:2], op_mask[:2], 1)                       # warm-up (allocator, kernels)
    op_start = reference_op(model, op_ids, op_mask, args.ref_repeats)

    # ---- key statistics and P -----------------------------------------------------------------
    hps = {m: load_hparams(m, "smollm2-135m").replace(v_lr=args.lr, context_n_prefixes=args.prefixes,
                                                      context_prefix_tokens=10) for m in methods}
    if args.smoke:                                  # a smoke run checks the script, not the figures
        hps = {m: hp.replace(v_num_grad_steps=5) for m, hp in hps.items()}
    hp0 = load_hparams("AlphaEdit", "smollm2-135m")
    layers = hp0.layers
    _, lines = _resolve_corpus("wikitext-2")
    split_tokens = len(_token_stream(tok, lines, 10**12))
    t = time.perf_counter()
    st = layer_stats(model, tok, layers, "wikitext-2", args.stats_tokens, 128, cache=args.reuse_stats,
                     force_recompute=not args.reuse_stats, progress=progress)
    stats_s = time.perf_counter() - t
    t = time.perf_counter()
    pjs = projectors(st, hp0.nullspace_threshold, hp0.nullspace_mode, cache=False)
    proj_s = time.perf_counter() - t
    rss_stats = _peak_rss_mb()

    # ---- requests, templates, quality before --------------------------------------------------
    requests = load_counterfact(args.records, limit=args.edits)
    if len(requests) < args.edits:
        raise SystemExit(f"only {len(requests)} valid records in the CounterFact file, {args.edits} asked")
    t = time.perf_counter()
    templates = context_templates(model, tok, args.prefixes, 10, seed=args.template_seed)
    templates_s = time.perf_counter() - t
    t = time.perf_counter()
    before = _quality(evaluate_requests(model, tok, requests)["summary"])
    eval_s = time.perf_counter() - t

    # ---- edits ----------------------------------------------------------------------------------
    snap = {x: M.get_rewrite_weight(model, x).clone() for x in layers}
    results = {}
    for method in methods:
        r = run_method(method, model, tok, requests, hps[method], st, templates, args.batch, progress)
        t = time.perf_counter()
        r["after"] = _quality(evaluate_requests(model, tok, requests)["summary"])
        r["eval_s"] = time.perf_counter() - t
        r["peak_rss_mb"] = _peak_rss_mb()
        for x, W in snap.items():
            M.set_rewrite_weight(model, x, W)
        results[method] = r
        a = r["after"]
        print(f"  {method}: {r['mean_s_per_edit']:.2f} s per edit (mean), {r['median_s_per_edit']:.2f} s (median); "
              f"after {args.edits} edits {a['efficacy']:.1f} / {a['generalization']:.1f} / {a['specificity']:.1f}",
              file=sys.stderr, flush=True)
        if args.json:                       # partial results survive a run that is killed later
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"partial": True, "env": env, "op_start_s": op_start,
                                                   "stats_s": stats_s, "projectors_s": proj_s,
                                                   "quality_before": before, "methods": results}, indent=1))
    restored = all(torch.equal(M.get_rewrite_weight(model, x), W) for x, W in snap.items())

    op_end = reference_op(model, op_ids, op_mask, args.ref_repeats)
    op = statistics.median(op_start + op_end)
    load_end = _loadavg()
    env["load_average_end"] = load_end

    # ---- report ---------------------------------------------------------------------------------
    def x(sec: float) -> float:
        return sec / op

    ref_op_lo, ref_op_hi = REF_OP_S
    lines_out = []
    w = lines_out.append
    w(f"alphaedit-lite vs the reference (EasyEdit, 2 cores) — SmolLM2-135M float32, {threads} thread(s), "
      f"{env['cpu']}, load average {load_start} → {load_end}")
    w(f"settings: layers {layers}, lr {args.lr}, {hps[methods[0]].v_num_grad_steps} steps, clamp "
      f"{hps[methods[0]].clamp_norm_factor}, KL {hps[methods[0]].kl_factor}, threshold {hp0.nullspace_threshold}, "
      f"α {hp0.L2}, {args.prefixes} context prefixes of 10 tokens (seed {args.template_seed}); {args.edits} edits "
      f"in batches of {args.batch}")
    w(f"reference operation (full forward, {len(op_ids)}×{OP_LEN} tokens): start {', '.join(f'{s:.2f}' for s in op_start)} s, "
      f"end {', '.join(f'{s:.2f}' for s in op_end)} s; unit 1 op = median {op:.2f} s "
      f"(reference machine, estimated: {ref_op_lo:.2f}-{ref_op_hi:.2f} s)")
    w(f"statistics corpus: the first {args.stats_tokens:,} of the {split_tokens:,} tokens of the WikiText-2 raw test "
      f"split (SmolLM2 tokenizer), rows of 128")
    w("")
    w(f"{'figure':44} {'ours s':>9} {'ours op':>8} {'ref s':>12} {'ref op (est.)':>14} {'speed-up':>9}")

    def row(name, ours_s, ref_s=None):
        if ref_s is None:
            w(f"{name:44} {ours_s:9.2f} {x(ours_s):8.2f}")
            return None
        lo, hi = (ref_s, ref_s) if isinstance(ref_s, float) else ref_s
        rlo, rhi = lo / ref_op_hi, hi / ref_op_lo                       # reference in op units (range)
        sp = ((rlo + rhi) / 2) / x(ours_s)
        rs = f"{lo:.1f}" if lo == hi else f"{lo:.1f}-{hi:.1f}"
        w(f"{name:44} {ours_s:9.2f} {x(ours_s):8.2f} {rs:>12} {f'{rlo:.1f}-{rhi:.1f}':>14} {sp:8.1f}×")
        return sp

    row("model load", load_s)
    row(f"statistics, 5 layers, {args.stats_tokens:,} tokens (one pass)"
        f"{' (--reuse-stats: from the cache if there)' if args.reuse_stats else ''}", stats_s)
    row("projectors P, 5 layers", proj_s)
    row("statistics + P", stats_s + proj_s, REF_STATS_S)
    row("context templates (sampled once, cached)", templates_s)
    row(f"evaluation of {args.edits} records (unedited)", eval_s)
    speedups = {}
    for m, r in results.items():
        speedups[m] = row(f"{m}: s per edit, mean", r["mean_s_per_edit"], REF_PER_EDIT_S[m])
        row(f"{m}: s per edit, median", r["median_s_per_edit"], REF_PER_EDIT_S[m])
        row(f"{m}:   of which target optimisation (mean/call)", statistics.fmean(r["targets_s"]))
        row(f"{m}:   of which keys + Δ for 5 layers (mean/call)", statistics.fmean(r["deltas_s"]))
        row(f"{m}: all {args.edits} edits", r["total_s"])
    w("")
    w(f"peak memory (resident, whole process): {max([rss_stats] + [r['peak_rss_mb'] for r in results.values()]):.0f} MB "
      f"(after loading the model {rss_model:.0f} MB, after the statistics {rss_stats:.0f} MB)")
    w("")
    ref_q = REF_QUALITY.get(args.lr, {})
    w(f"quality (%, mean-token NLL comparison)  {'efficacy':>9} {'generalization':>15} {'specificity':>12}"
      f"   reference (lr {args.lr}, 50 edits)")
    uq = REF_QUALITY["unedited"]
    w(f"{'unedited':40} {before['efficacy']:9.1f} {before['generalization']:15.1f} {before['specificity']:12.1f}"
      f"   {uq[0]:.0f} / {uq[1]:.0f} / {uq[2]:.1f}")
    for m, r in results.items():
        a = r["after"]
        rq = ref_q.get(m)
        ref_txt = f"{rq[0]:.0f} / {rq[1]:.0f} / {rq[2]:.1f}" if rq else "-"
        w(f"{m + ' after ' + str(args.edits) + ' edits':40} {a['efficacy']:9.1f} {a['generalization']:15.1f} "
          f"{a['specificity']:12.1f}   {ref_txt}")
    w("")
    checks = {}
    if "AlphaEdit" in results:
        r = results["AlphaEdit"]
        lo, hi = REF_PER_EDIT_S["AlphaEdit"]
        ref_op_units = ((lo / ref_op_hi) + (hi / ref_op_lo)) / 2
        checks["alphaedit_speedup_ge_3x"] = speedups["AlphaEdit"] >= 3.0
        checks["alphaedit_per_edit_op"] = round(x(r["mean_s_per_edit"]), 3)
        checks["alphaedit_per_edit_s_on_reference_machine_est"] = [round(x(r["mean_s_per_edit"]) * ref_op_lo, 2),
                                                                   round(x(r["mean_s_per_edit"]) * ref_op_hi, 2)]
        if args.edits == 50:
            a = r["after"]
            checks["alphaedit_quality_target"] = (a["efficacy"] >= TARGET_QUALITY[0] and
                                                  a["generalization"] >= TARGET_QUALITY[1] and
                                                  a["specificity"] >= TARGET_QUALITY[2])
        w(f"target AlphaEdit ≤ {TARGET_ALPHAEDIT_S} s per edit (≥ 3×, i.e. ≤ {ref_op_units / 3:.2f} op): "
          f"{x(r['mean_s_per_edit']):.2f} op = {speedups['AlphaEdit']:.1f}× → "
          f"{'met' if checks['alphaedit_speedup_ge_3x'] else 'MISSED'}; on the reference machine that is about "
          f"{checks['alphaedit_per_edit_s_on_reference_machine_est'][0]:.1f}-"
          f"{checks['alphaedit_per_edit_s_on_reference_machine_est'][1]:.1f} s")
        if "alphaedit_quality_target" in checks:
            w(f"target AlphaEdit quality ≥ {TARGET_QUALITY[0]:.0f} / {TARGET_QUALITY[1]:.0f} / {TARGET_QUALITY[2]:.0f}: "
              f"{'met' if checks['alphaedit_quality_target'] else 'MISSED'}")
    stats_ref_op = ((REF_STATS_S / ref_op_hi) + (REF_STATS_S / ref_op_lo)) / 2
    scale = REF_TOKENS / args.stats_tokens                                # compare at the reference's size
    stats_op = x(stats_s) * scale + x(proj_s)                             # the pass scales with the tokens, P does not
    if args.reuse_stats:
        w("target statistics: not checked (--reuse-stats may have loaded them from the cache)")
    else:
        checks["stats_plus_P_op_at_reference_size"] = round(stats_op, 2)
        checks["stats_speedup"] = round(stats_ref_op / stats_op, 2)
        checks["stats_speedup_ge_5x"] = checks["stats_speedup"] >= 5.0
        w(f"target statistics + P ≤ {TARGET_STATS_S:.0f} s (≥ 5×, i.e. ≤ {stats_ref_op / 5:.1f} op"
          f"{'' if scale == 1 else f'; the pass scaled to {REF_TOKENS:,} tokens'}): "
          f"{stats_op:.1f} op = {checks['stats_speedup']:.1f}× → "
          f"{'met' if checks['stats_speedup_ge_5x'] else 'MISSED'}")
    w(f"weights restored after each method: {restored}")
    text = "\n".join(lines_out)
    print(text)

    if args.json:
        blob = {
            "env": env, "settings": {"edits": args.edits, "batch": args.batch, "methods": methods, "lr": args.lr,
                                     "stats_tokens": args.stats_tokens, "split_tokens": split_tokens,
                                     "stats_from_cache": args.reuse_stats,
                                     "prefixes": args.prefixes, "template_seed": args.template_seed,
                                     "templates": list(templates), "layers": layers, "smoke": args.smoke,
                                     "hparams": {m: hps[m].to_dict() for m in methods}},
            "reference_op": {"rows": len(op_ids), "seq_len": OP_LEN, "start_s": op_start, "end_s": op_end, "unit_s": op,
                             "reference_machine_est_s": list(REF_OP_S)},
            "model_load_s": load_s, "stats_s": stats_s, "projectors_s": proj_s, "templates_s": templates_s,
            "projector_rank": {str(k): v.kept_rank for k, v in pjs.items()},
            "quality_before": before, "eval_before_s": eval_s,
            "methods": {m: {**r, "per_edit_op_mean": x(r["mean_s_per_edit"]),
                            "per_edit_op_median": x(r["median_s_per_edit"]), "speedup_vs_reference": speedups[m]}
                        for m, r in results.items()},
            "peak_rss_mb": max([rss_stats] + [r["peak_rss_mb"] for r in results.values()]),
            "checks": checks, "restored": restored, "table": text,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(blob, indent=1))
    return 0 if restored else 1


if __name__ == "__main__":
    raise SystemExit(main())
