"""Where SmolLM2 editing time goes, and what each speed lever buys (issue 17), measured in one run.

Prints, for the model's shipped AlphaEdit settings (layers 4-8, 6 context templates):

1. the reference pass: one full forward pass of 16 × 128 tokens (every other time is also given in
   units of it, so that figures from machines of different speed compare);
2. the target optimisation (92 % of an edit) of the first ``--requests`` CounterFact records in one
   call, for each combination of the two levers, side by side:
   - ``v_stop``: "loss" (MEMIT's rule: stop when the loss is below 5e-2) or "most_probable"
     (ENCORE's: also stop once the new object is the argmax on every prompt);
   - ``v_dtype``: "float32" or "bfloat16" (the layers above L under bf16 autocast; δ, loss, Adam float32);
   with seconds per edit, steps, the target probability reached and δ's distance from the slow path's;
3. the key statistics + P of layers 4-8 over 102,400 WikiText-2 tokens (recomputed, not cached, the
   shipped ``mom2_forward_dtype``), and the statistics pass alone with float64 against float32 batch
   products against a bf16 forward pass (``--only-stats``: only this);
4. quality: one AlphaEdit batch from each lever's targets, with efficacy / generalization / specificity;
5. with ``--p-table``: how many tokens P needs (the paper's Table 6 question): for 10k-100k tokens,
   the kept rank, the leak ‖P K‖/‖K‖ of held-out WikiText keys (what bounds ‖ΔK0‖ there), and
   efficacy / generalization / specificity of one AlphaEdit batch of ``--p-edits`` requests;
6. with ``--profile N`` (alone): the PyTorch profiler's top operators of one target optimisation of N
   requests, on the slow path and on the fastest path;
7. with ``--only-eval``: what one evaluation of a sequential run costs, part by part (the metrics of
   200 edits, the 300 drift probes, the held-out perplexity rows, fluency of 20 edits), on the
   unedited model, with the metrics' batch size 32 against 64.

Run: .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 2              (about 8 minutes)
     .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 2 --p-table    (about 15 minutes)
     .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 1 --only-p-table (about 15 minutes)
     .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 1 --profile 5    (about 3 minutes)
     .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 2 --only-stats   (about 4 minutes)
     .venv/bin/python benchmarks/bench_speed_smollm2.py --threads 2 --only-eval    (about 5 minutes)
The quality of the fast path over whole sequential runs is measured with the `sequential` command;
benchmarks/README.md has both tables and the commands.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alphaedit_lite.experiments.evaluate import evaluate_requests  # noqa: E402
from alphaedit_lite.methods.hparams import load_hparams  # noqa: E402
from alphaedit_lite.locate.keys import context_templates  # noqa: E402
from alphaedit_lite.methods import apply_method  # noqa: E402
from alphaedit_lite.model.arch import arch_spec, get_rewrite_weight, set_rewrite_weight  # noqa: E402
from alphaedit_lite.model.loading import load_model
from alphaedit_lite.locate.requests import load_counterfact  # noqa: E402
from alphaedit_lite.locate.corpus import corpus_tokens
from alphaedit_lite.locate.stats import clear_projector_memo, collect_second_moments, layer_stats, projectors  # noqa: E402
from alphaedit_lite.locate.targets import compute_targets  # noqa: E402

LEVERS = [("loss", "float32"), ("loss", "bfloat16"), ("most_probable", "float32"), ("most_probable", "bfloat16")]


def reference_pass(model, tok) -> float:
    """Seconds of one no-grad forward pass of 16 rows × 128 WikiText-2 tokens (best of 3)."""
    _, ids, mask = corpus_tokens(tok, "wikitext-2", 16 * 128, 128, progress=False)
    best = float("inf")
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            best = min(best, time.perf_counter() - t0)
    return best


def statistics_and_p(model, tok, hp, ref: float):
    """Key statistics of the edited layers (recomputed, not cached; the hparams' forward dtype) and P, timed;
    then `stats_products`."""
    n_tok = hp.mom2_n_samples * hp.mom2_seq_len
    t0 = time.perf_counter()
    stats = layer_stats(model, tok, hp.layers, hp.mom2_dataset, n_tok, hp.mom2_seq_len, cache=False, progress=False,
                        forward_dtype=hp.mom2_forward_dtype)
    clear_projector_memo()                          # P from scratch, not from memory
    t1 = time.perf_counter()
    projectors(stats, hp.nullspace_threshold, hp.nullspace_mode, cache=False)
    t2 = time.perf_counter()
    print(f"\nkey statistics, layers {hp.layers}, {n_tok:,} tokens, {stats.forward_dtype} forward "
          f"(mom2_forward_dtype={hp.mom2_forward_dtype!r}): {t1 - t0:.1f} s "
          f"({(t1 - t0) / ref:.0f} reference passes); P for all layers: {t2 - t1:.1f} s; total {t2 - t0:.1f} s")
    stats_products(model, tok, hp, ref)
    return stats


def stats_products(model, tok, hp, ref: float) -> None:
    """The same statistics three ways, one after the other: float64 batch products (the path before
    session 13), float32 products summed in float64, and a bf16-autocast forward pass with float32 products
    (``mom2_forward_dtype``): seconds, the largest entry difference, ‖ΔC‖/‖C‖, ‖ΔP‖/‖P‖ and the kept ranks."""
    n_tok = hp.mom2_n_samples * hp.mom2_seq_len
    _, ids, mask = corpus_tokens(tok, hp.mom2_dataset, n_tok, hp.mom2_seq_len, progress=False)
    t0 = time.perf_counter()
    slow = collect_second_moments(model, ids, mask, hp.layers, progress=False, batch_dtype=torch.float64)
    t1 = time.perf_counter()
    fast = collect_second_moments(model, ids, mask, hp.layers, progress=False)
    t2 = time.perf_counter()
    bf = collect_second_moments(model, ids, mask, hp.layers, progress=False, forward_dtype="bfloat16")
    t3 = time.perf_counter()
    diff = max(float((fast[l].cov - slow[l].cov).abs().max() / slow[l].cov.abs().max()) for l in hp.layers)
    clear_projector_memo()
    pjs = {name: projectors(st, hp.nullspace_threshold, hp.nullspace_mode, cache=False)
           for name, st in (("float64", slow), ("float32", fast), ("bf16 forward", bf))}
    ranks = {name: [pj.kept_rank for pj in p.values()] for name, p in pjs.items()}
    print(f"statistics only (no corpus reading), float64 batch products: {t1 - t0:.1f} s ({(t1 - t0) / ref:.1f} "
          f"reference passes); float32 products summed in float64 (the default): {t2 - t1:.1f} s "
          f"({(t2 - t1) / ref:.1f}); ratio {(t1 - t0) / (t2 - t1):.2f}x; largest |ΔC| / max|C| {diff:.1e}; kept ranks "
          f"float64 {ranks['float64']}, float32 {ranks['float32']}")
    c_rel = [float((bf[l].cov - fast[l].cov).norm() / fast[l].cov.norm()) for l in hp.layers]
    p_rel = [float((pjs["bf16 forward"][l].P - pjs["float32"][l].P).norm() / pjs["float32"][l].P.norm())
             for l in hp.layers]
    print(f"bf16-autocast forward pass, float32 products: {t3 - t2:.1f} s ({(t3 - t2) / ref:.1f} reference passes), "
          f"{(t2 - t1) / (t3 - t2):.2f}x faster than the float32 forward; per layer ‖ΔC‖/‖C‖ "
          f"{', '.join(f'{x:.1e}' for x in c_rel)}; ‖ΔP‖/‖P‖ {', '.join(f'{x:.3f}' for x in p_rel)}; kept ranks "
          f"{ranks['bf16 forward']} (float32 forward {ranks['float32']})")


def evaluation_parts(model, tok, ref: float, n_edits: int = 200) -> None:
    """Time the parts of one evaluation of `alphaedit-lite sequential` (its defaults), unedited model."""
    from alphaedit_lite.experiments.drift import hidden_states
    from alphaedit_lite.experiments.sequential import heldout_perplexity_eval, hp_for_heldout
    from alphaedit_lite.locate.requests import load_knowns

    reqs = list(load_counterfact(limit=n_edits))
    probes = [k.prompt for k in load_knowns()][:300]
    parts = {}
    for bs in (32, 64):
        t0 = time.perf_counter()
        summary = evaluate_requests(model, tok, reqs, batch_size=bs)["summary"]
        parts[f"metrics of {len(reqs)} edits, batch {bs}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hidden_states(model, tok, probes, [8])
    parts[f"hidden states of {len(probes)} drift probes"] = time.perf_counter() - t0
    extra = heldout_perplexity_eval(model, tok, hp_for_heldout("smollm2-135m"))   # computes the baseline once
    t0 = time.perf_counter()
    extra(model, tok)
    parts["held-out perplexity rows (once; the baseline costs the same once per run)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_requests(model, tok, reqs[:20], fluency=True)
    parts["metrics + fluency of 20 edits (the run's last evaluation)"] = time.perf_counter() - t0
    print(f"one evaluation, unedited model (efficacy {summary['efficacy']:.1f}, specificity "
          f"{summary['specificity']:.1f}):")
    print("| part | s | reference passes |")
    print("|---|---|---|")
    for name, sec in parts.items():
        print(f"| {name} | {sec:.1f} | {sec / ref:.1f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--requests", type=int, default=20, help="CounterFact records in the target-optimisation call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--p-table", action="store_true", help="also measure how many tokens P needs")
    p.add_argument("--p-edits", type=int, default=50, help="edits per row of the P table")
    p.add_argument("--only-p-table", action="store_true", help="print only the reference pass and the P table")
    p.add_argument("--only-stats", action="store_true",
                   help="print only the reference pass and the statistics timings (float32 against float64 products)")
    p.add_argument("--only-eval", action="store_true",
                   help="print only the reference pass and the parts of one sequential-run evaluation")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="only profile the target optimisation of N requests (slow and fastest path) with the "
                        "PyTorch profiler and print the top operators")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, device="cpu")
    hp = load_hparams("AlphaEdit", args.model)
    templates = context_templates(model, tok, hp.context_n_prefixes, hp.context_prefix_tokens)
    ref = reference_pass(model, tok)
    print(f"{args.model}, {args.threads} thread(s), layers {hp.layers}, {len(templates)} templates")
    print(f"reference pass (16 x 128 tokens, forward): {ref:.2f} s\n")
    if args.profile:
        profile_targets(model, tok, hp, templates, args.profile)
        return 0
    if args.only_p_table:
        p_table(model, tok, hp, templates, args.p_edits)
        return 0
    if args.only_stats:
        statistics_and_p(model, tok, hp, ref)
        return 0
    if args.only_eval:
        evaluation_parts(model, tok, ref)
        return 0

    # ---- 2. target optimisation, lever by lever ------------------------------------------------
    reqs = list(load_counterfact(limit=args.requests))
    print(f"target optimisation, {len(reqs)} requests in one call (layer {hp.layers[-1]}, at most "
          f"{hp.v_num_grad_steps} steps):")
    print("| v_stop | v_dtype | s per edit | reference passes per edit | speed-up | mean steps | "
          "mean p(o*) | ‖δ − δ_slow‖/‖δ_slow‖ |")
    print("|---|---|---|---|---|---|---|---|")
    slow = None
    targets = {}
    for stop, dtype in LEVERS:
        tr = compute_targets(model, tok, reqs, hp.layers[-1], templates, v_num_grad_steps=hp.v_num_grad_steps,
                             v_lr=hp.v_lr, v_weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor,
                             kl_factor=hp.kl_factor, v_early_stop_loss=hp.v_early_stop_loss,
                             fact_token=hp.fact_token, v_stop=stop, v_dtype=dtype)
        per = tr.seconds / len(reqs)
        targets[stop, dtype] = tr
        if slow is None:
            slow = (per, tr.delta)
        steps = sum(s["steps"] for s in tr.stats) / len(reqs)
        prob = sum(s["prob"] for s in tr.stats) / len(reqs)
        diff = float((tr.delta - slow[1]).norm() / slow[1].norm())
        print(f"| {stop} | {dtype} | {per:.2f} | {per / ref:.2f} | {slow[0] / per:.2f}x | {steps:.1f} | "
              f"{prob:.3f} | {diff:.3f} |", flush=True)

    # ---- 3. statistics + P ---------------------------------------------------------------------
    stats = statistics_and_p(model, tok, hp, ref)

    # ---- quality: the same AlphaEdit batch from each lever's targets ---------------------------
    print(f"\nquality: one AlphaEdit batch of the {len(reqs)} requests from each row's targets (same statistics "
          "and P), then the CounterFact metrics of the batch:")
    print("| v_stop | v_dtype | Eff. | Gen. | Spe. |")
    print("|---|---|---|---|---|")
    original = {l: get_rewrite_weight(model, l).clone() for l in hp.layers}
    for (stop, dtype), tr in targets.items():
        try:
            apply_method("AlphaEdit", model, tok, reqs, hp, stats=stats, templates=templates, targets=tr, progress=False)
            q = evaluate_requests(model, tok, reqs)["summary"]
        finally:
            for l, w in original.items():
                set_rewrite_weight(model, l, w)
        print(f"| {stop} | {dtype} | {q['efficacy']:.1f} | {q['generalization']:.1f} | {q['specificity']:.1f} |",
              flush=True)
    base = evaluate_requests(model, tok, reqs)["summary"]
    print(f"| (unedited) | | {base['efficacy']:.1f} | {base['generalization']:.1f} | {base['specificity']:.1f} |")

    if args.p_table:
        p_table(model, tok, hp, templates, args.p_edits)
    return 0


def profile_targets(model, tok, hp, templates, n: int, top: int = 12) -> None:
    """The PyTorch profiler's view of one target optimisation of ``n`` requests: float32 path, bf16 (the
    SmolLM2 default where bf16 is fast) and the fastest path (bf16 + most-probable stopping):
    the operators with the most self CPU time, as a Markdown table, and their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    reqs = list(load_counterfact(limit=n))
    for stop, dtype in (("loss", "float32"), ("loss", "bfloat16"), ("most_probable", "bfloat16")):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tr = compute_targets(model, tok, reqs, hp.layers[-1], templates, v_num_grad_steps=hp.v_num_grad_steps,
                                 v_lr=hp.v_lr, v_weight_decay=hp.v_weight_decay,
                                 clamp_norm_factor=hp.clamp_norm_factor, kl_factor=hp.kl_factor,
                                 v_early_stop_loss=hp.v_early_stop_loss, fact_token=hp.fact_token,
                                 v_stop=stop, v_dtype=dtype)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\nprofile: targets of {n} requests, v_stop={stop}, v_dtype={dtype}: {tr.seconds:.1f} s wall, "
              f"{total / 1e6:.1f} s of operator self CPU time")
        print("| operator | calls | self CPU s | share |")
        print("|---|---|---|---|")
        for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
            print(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | {e.self_cpu_time_total / total:.1%} |")


def p_table(model, tok, hp, templates, n_edits: int) -> None:
    """Kept rank, held-out leak and ‖ΔK0‖, and one batch's metrics, for P built from 10k-100k tokens.

    The targets of the batch are computed once (fast path: they do not depend on P); each row then
    builds the statistics and P from its number of tokens, solves AlphaEdit's Δ and evaluates it.
    """
    seq = hp.mom2_seq_len
    n_full = hp.mom2_n_samples * seq
    held_rows = 64                                  # rows after the largest statistics' rows: never seen by P
    _, ids, mask = corpus_tokens(tok, hp.mom2_dataset, n_full + held_rows * seq, seq, progress=False)
    held = collect_second_moments(model, ids[n_full // seq:], mask[n_full // seq:], hp.layers, progress=False)
    reqs = list(load_counterfact(limit=n_edits))
    fast = hp.replace(v_stop="most_probable", v_dtype="bfloat16")
    t0 = time.perf_counter()
    tr = compute_targets(model, tok, reqs, hp.layers[-1], templates, v_num_grad_steps=fast.v_num_grad_steps,
                         v_lr=fast.v_lr, v_weight_decay=fast.v_weight_decay, clamp_norm_factor=fast.clamp_norm_factor,
                         kl_factor=fast.kl_factor, v_early_stop_loss=fast.v_early_stop_loss,
                         fact_token=fast.fact_token, v_stop=fast.v_stop, v_dtype=fast.v_dtype)
    t_targets = time.perf_counter() - t0
    original = {l: get_rewrite_weight(model, l).clone() for l in hp.layers}
    last = hp.layers[-1]
    base = evaluate_requests(model, tok, reqs)["summary"]
    print(f"\nhow many tokens P needs ({hp.nullspace_mode} threshold {hp.nullspace_threshold:g}; held-out: "
          f"{held_rows * seq:,} WikiText-2 tokens after the first {n_full:,}; one AlphaEdit batch of {n_edits} "
          f"CounterFact edits from targets computed once, fast path, {t_targets:.0f} s; unedited "
          f"{base['efficacy']:.1f} / {base['generalization']:.1f} / {base['specificity']:.1f}):")
    print(f"| tokens | statistics s | kept rank, layers {hp.layers} | held-out leak ‖PK‖/‖K‖ at layer {last} | "
          f"held-out ‖ΔK0‖/‖WK0‖ at layer {last} | Eff. | Gen. | Spe. |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (10_240, 25_600, 51_200, n_full):
        t0 = time.perf_counter()
        st = layer_stats(model, tok, hp.layers, hp.mom2_dataset, n, seq, cache=False, progress=False)
        t_stats = time.perf_counter() - t0
        pjs = projectors(st, hp.nullspace_threshold, hp.nullspace_mode, cache=False)
        C = held[last].cov.to(torch.float64)
        P = pjs[last].P.to(C.dtype)
        leak = float(torch.trace(P @ C @ P) / torch.trace(C)) ** 0.5
        W = original[last].to(torch.float64)
        try:
            res = apply_method("AlphaEdit", model, tok, reqs, fast, stats=st, templates=templates, targets=tr,
                               progress=False)
            s = evaluate_requests(model, tok, reqs)["summary"]
        finally:
            for l, w in original.items():
                set_rewrite_weight(model, l, w)
        D = res.deltas[arch_spec(model).rewrite_name(last)].to(torch.float64)
        moved = float(torch.trace(D @ C @ D.T) / torch.trace(W @ C @ W.T)) ** 0.5
        ranks = "/".join(str(pjs[l].kept_rank) for l in hp.layers)
        print(f"| {n:,} | {t_stats:.0f} | {ranks} | {leak:.3f} | {moved:.2e} | {s['efficacy']:.1f} | "
              f"{s['generalization']:.1f} | {s['specificity']:.1f} |", flush=True)

if __name__ == "__main__":
    raise SystemExit(main())
