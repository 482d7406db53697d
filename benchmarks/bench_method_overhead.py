"""What AlphaEdit costs per edit beyond MEMIT, with the target optimisation held fixed.

Per edit, both methods first optimise the same target vectors (25 forward-backward passes at
most: the dominant cost), then compute keys and solve for Δ at each layer; AlphaEdit also projects
and, in sequential use, reads the new keys after the edit for its cache Kp Kpᵀ. In a sequential
run the two methods edit different models, so their target optimisations stop after different
numbers of steps, and the ratio of their run times measures that as much as the methods. This
script separates the two:

1. the target vectors of `--target-batches` batches of `--batch` shipped requests are computed
   once on the unedited SmolLM2 (timed; forward and backward passes counted);
2. each method then applies `--batches` sequential batches with those same targets (cycled),
   carrying its state (AlphaEdit's Kp Kpᵀ grows as in a real run), and its own part — keys,
   solves, projection, the cache read — is timed;
3. per edit: targets + own part, and the ratio AlphaEdit / MEMIT (issue 3: at most 1.05).

Run: .venv/bin/python benchmarks/bench_method_overhead.py --threads 1   (about 8 minutes)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alphaedit_lite.methods.hparams import load_hparams  # noqa: E402
from alphaedit_lite.locate.keys import context_templates  # noqa: E402
from alphaedit_lite.methods import apply_method  # noqa: E402
from alphaedit_lite.methods.common import EditState  # noqa: E402
from alphaedit_lite.model.arch import get_rewrite_weight, set_rewrite_weight  # noqa: E402
from alphaedit_lite.model.loading import load_model
from alphaedit_lite.locate.requests import load_requests  # noqa: E402
from alphaedit_lite.locate.stats import layer_stats, projectors  # noqa: E402
from alphaedit_lite.locate.targets import compute_targets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--requests", default="smollm2_known_facts", help="a shipped set's name or a JSON path "
                   "(default: data/requests/smollm2_known_facts.json)")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--batches", type=int, default=10, help="sequential batches per method (default 10: 100 edits)")
    p.add_argument("--target-batches", type=int, default=2, help="batches whose targets are computed (cycled)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    reqs = list(load_requests(args.requests, limit=args.batch * args.target_batches))
    model, tok = load_model(args.model, device="cpu")
    hps = {m: load_hparams(m, args.model) for m in ("MEMIT", "AlphaEdit")}
    hp = hps["AlphaEdit"]
    stats = layer_stats(model, tok, hp.layers, hp.mom2_dataset, hp.mom2_n_samples * hp.mom2_seq_len, hp.mom2_seq_len,
                        progress=False)
    projectors(stats, hp.nullspace_threshold, hp.nullspace_mode)          # built (or loaded) outside the timing
    templates = context_templates(model, tok, hp.context_n_prefixes, hp.context_prefix_tokens)

    # 1. targets, once, on the unedited model
    batches = [reqs[i:i + args.batch] for i in range(0, len(reqs), args.batch)]
    targets, t_sec, passes, steps = [], 0.0, 0, 0
    for b in batches:
        tr = compute_targets(model, tok, b, hp.layers[-1], templates, v_num_grad_steps=hp.v_num_grad_steps,
                             v_lr=hp.v_lr, v_weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor,
                             kl_factor=hp.kl_factor, v_early_stop_loss=hp.v_early_stop_loss, fact_token=hp.fact_token)
        targets.append(tr)
        t_sec += tr.seconds
        passes += max(s.get("forward", 0) for s in tr.stats)     # one pass covers the whole batch
        steps += sum(s.get("steps", 0) for s in tr.stats)
    n_t = len(reqs)
    target_per_edit = t_sec / n_t
    print(f"{args.model}, {len(templates)} context templates, layers {hp.layers}, {args.threads} thread(s)")
    print(f"target optimisation: {t_sec:.1f} s for {n_t} requests in batches of {args.batch} = "
          f"{target_per_edit:.2f} s per edit; {passes / len(batches):.1f} forward-backward passes per batch "
          f"(one pass covers the batch's {len(templates) + 1} rows per request; a request stops at "
          f"{steps / n_t:.1f} steps on average) = {passes / len(batches) / args.batch:.1f} per edit")

    # 2. each method's own part, sequentially, same targets
    original = {l: get_rewrite_weight(model, l).clone() for l in hp.layers}
    own: dict[str, list[float]] = {}
    for method in ("MEMIT", "AlphaEdit"):
        state, times = EditState(), []
        try:
            for i in range(args.batches):
                j = i % len(batches)
                t = time.perf_counter()
                res = apply_method(method, model, tok, batches[j], hps[method], stats=stats, state=state,
                                   templates=templates, targets=targets[j])
                times.append(time.perf_counter() - t)
                state = res.state
        finally:
            for l, W in original.items():
                set_rewrite_weight(model, l, W)
        own[method] = times
        print(f"{method}: own part (keys, solves{', projection, cache read' if method == 'AlphaEdit' else ''}) "
              f"{statistics.mean(times) / args.batch:.3f} s per edit (mean of {args.batches} calls; first "
              f"{times[0] / args.batch:.3f}, last {times[-1] / args.batch:.3f})")

    # 3. per edit
    per_edit = {m: target_per_edit + statistics.mean(v) / args.batch for m, v in own.items()}
    ratio = per_edit["AlphaEdit"] / per_edit["MEMIT"]
    extra = (statistics.mean(own["AlphaEdit"]) - statistics.mean(own["MEMIT"])) / args.batch
    print(f"\nper edit: MEMIT {per_edit['MEMIT']:.2f} s, AlphaEdit {per_edit['AlphaEdit']:.2f} s "
          f"(AlphaEdit's extra {extra:+.3f} s per edit); ratio {ratio:.3f} "
          f"→ {'met' if ratio <= 1.05 else 'MISSED'} (target ≤ 1.05)")
    print(f"share of an AlphaEdit edit spent optimising targets: {100 * target_per_edit / per_edit['AlphaEdit']:.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
