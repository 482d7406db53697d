"""Why AlphaEdit cannot both edit and preserve the tiny world: its key space, measured.

The issue asked that, with K0 = the keys of the tiny world's own training text, AlphaEdit edit at
≥ 99 % while the unedited facts stay within a point. The demo measures 14.5 % efficacy and 47 %
unedited accuracy after 2,000 edits. This script prints the figures that explain it:

1. the key space of each edited layer: its width d, the scale of the keys (AlphaEdit's absolute
   threshold 2e-2 and α = 10 are tuned to LLM keys, which are far larger), how many directions
   the threshold keeps as "null", and how much of the FACT keys' energy (the keys at the prompt's
   last token, where this model looks facts up) lies in that null space — for an edit that can
   move only its own fact, that share must be large for the edit keys and ~0 for the others,
   but edit keys and preserved keys are keys of the same kind of fact;
2. the share of the fact keys' (centred) energy that is not subject + relation (the interaction
   part that makes a key specific to one fact);
3. one batch of 100 AlphaEdit edits for several thresholds and α, and MEMIT for comparison:
   efficacy / generalization / specificity of the batch and the accuracy on every unedited fact.
   A threshold or α that lets the edit in lets the damage in, in the same proportion.

With `--smollm2` it prints the same key-space figures for SmolLM2-135M at its edited layers
(K0 from 102,400 WikiText-2 tokens, cached by `alphaedit-lite stats`; the keys of the first 50
CounterFact edits), where AlphaEdit does edit (100 % efficacy in the issue-6 benchmark).

Run: .venv/bin/python benchmarks/bench_tiny_world_key_space.py [--threads 1] [--smollm2] [--json out.json]
(about 1-2 minutes on one core; --smollm2 adds a minute when the statistics are cached, ~4 min if not).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alphaedit_lite.experiments.evaluate import evaluate_requests  # noqa: E402
from alphaedit_lite.methods import apply_method  # noqa: E402
from alphaedit_lite.model.arch import arch_spec, get_rewrite_weight, set_rewrite_weight  # noqa: E402
from alphaedit_lite.core.nullspace import null_space_projector  # noqa: E402
from alphaedit_lite.experiments.sequential import hparams_for, prepare  # noqa: E402


def last_token_keys(model, tok, prompts: list[str], layer: int, batch_size: int = 256) -> torch.Tensor:
    """Rows: the rewrite module's input at each prompt's last token (float64, (n, d))."""
    module = dict(model.named_modules())[arch_spec(model).rewrite_name(layer)]
    seen: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    rows = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            seen.clear()
            with torch.no_grad():
                model(**enc)
            last = enc["attention_mask"].sum(1) - 1
            rows.append(seen[0][torch.arange(len(last)), last].double().cpu())
    finally:
        hook.remove()
    return torch.cat(rows)


def key_space(setup, layer: int, threshold: float) -> dict:
    world, model, tok = setup.world, setup.model, setup.tok
    C = setup.stats[layer].cov.double().cpu()
    lam = torch.linalg.eigvalsh(C)
    pj = null_space_projector(C, threshold=threshold, mode="absolute")
    P = pj.P.double()
    facts = world.facts
    R = len(world.relations)
    K = last_token_keys(model, tok, [world.prompt(f, world.trained_phrasings(f)[0]) for f in facts], layer)
    in_null = (K @ P).norm(dim=1) ** 2 / K.norm(dim=1) ** 2
    G = K.view(len(facts) // R, R, -1)                  # subjects × relations × d
    grand = G.mean((0, 1), keepdim=True)
    inter = G - G.mean(0, keepdim=True) - G.mean(1, keepdim=True) + grand
    lam_f = torch.linalg.eigvalsh(K.T @ K / len(K))
    eff_rank = float(lam_f.sum() ** 2 / (lam_f ** 2).sum())    # participation ratio
    return {"d": int(C.shape[0]), "kept_null_dims": int(round(float(P.trace()))),
            "C0_trace_over_d": float(lam.mean()), "C0_top_eigenvalue": float(lam.max()),
            "C0_median_eigenvalue": float(lam.median()),
            "fact_key_mean_sq_norm": float((K ** 2).sum(1).mean()),
            "fact_keys_effective_rank": eff_rank,
            "fact_key_energy_in_null_space_mean": float(in_null.mean()),
            "fact_key_energy_in_null_space_p10_p90": [float(in_null.quantile(0.1)), float(in_null.quantile(0.9))],
            "interaction_share": float((inter ** 2).sum() / ((G - grand) ** 2).sum())}


def smollm2_key_space(threshold: float, n_records: int = 50) -> dict:
    from alphaedit_lite.locate.keys import compute_keys
    from alphaedit_lite.model.loading import load_model
    from alphaedit_lite.locate.requests import load_counterfact
    from alphaedit_lite.locate.stats import layer_stats

    hp = hparams_for("AlphaEdit", "smollm2-135m", None)
    model, tok = load_model("smollm2-135m", device="cpu")
    reqs = load_counterfact(limit=n_records)
    st = layer_stats(model, tok, hp.layers, "wikitext-2", hp.mom2_n_samples * hp.mom2_seq_len, hp.mom2_seq_len,
                     progress=False)
    K1 = compute_keys(model, tok, reqs, hp.layers)
    out = {}
    for layer in hp.layers:
        C = st[layer].cov.double().cpu()
        P = null_space_projector(C, threshold=threshold, mode="absolute").P.double()
        K = K1[layer].double().cpu().T
        in_null = (K @ P).norm(dim=1) ** 2 / K.norm(dim=1) ** 2
        out[layer] = {"d": int(C.shape[0]), "kept_null_dims": int(round(float(P.trace()))),
                      "C0_trace_over_d": float(C.diagonal().mean()), "edit_key_mean_sq_norm": float((K ** 2).sum(1).mean()),
                      "edit_key_energy_in_null_space_mean": float(in_null.mean())}
    return out


def one_batch(setup, method: str, overrides: dict, n: int) -> dict:
    hp = hparams_for(method, "tiny-world", overrides)
    original = {l: get_rewrite_weight(setup.model, l).clone() for l in hp.layers}
    t = time.perf_counter()
    try:
        apply_method(method, setup.model, setup.tok, setup.requests[:n], hp, stats=setup.stats)
        ev = evaluate_requests(setup.model, setup.tok, setup.requests[:n])["summary"]
        extra = setup.extra_eval(setup.model, setup.tok)
    finally:
        for l, W in original.items():
            set_rewrite_weight(setup.model, l, W)
    return {"method": method, "overrides": overrides, "seconds": round(time.perf_counter() - t, 1),
            "efficacy": ev["efficacy"], "generalization": ev["generalization"], "specificity": ev["specificity"],
            "unedited_acc": extra["unedited_acc"]}


SWEEP = [
    ("AlphaEdit", {}),                                                        # the paper's settings
    ("AlphaEdit", {"nullspace_mode": "energy", "nullspace_threshold": 1e-3}),
    ("AlphaEdit", {"nullspace_mode": "energy", "nullspace_threshold": 1e-2}),
    ("AlphaEdit", {"L2": 1.0}),
    ("AlphaEdit", {"L2": 0.1}),
    ("AlphaEdit", {"nullspace_mode": "energy", "nullspace_threshold": 1e-3, "L2": 0.01}),
    ("MEMIT", {}),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--edits", type=int, default=100, help="edits in the one batch (default 100)")
    p.add_argument("--smollm2", action="store_true", help="also the key space of SmolLM2-135M, for contrast")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    setup = prepare("tiny-world", args.edits, layers_hint=[1, 2], n_probes=0, eval_unedited=1000, progress=False)
    hp = hparams_for("AlphaEdit", "tiny-world", None)
    out: dict = {"key_space": {}, "one_batch": []}
    print(f"tiny world, K0 = every token of its training text; threshold {hp.nullspace_threshold:g} "
          f"({hp.nullspace_mode}), α = {hp.L2:g}\n")
    print("| layer | d | null dims kept | C0 trace/d | C0 top eigenvalue | fact keys: mean ‖k‖² | effective rank "
          "| energy in the null space (mean; p10–p90) | not subject + relation |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in hp.layers:
        ks = key_space(setup, layer, hp.nullspace_threshold)
        out["key_space"][layer] = ks
        lo, hi = ks["fact_key_energy_in_null_space_p10_p90"]
        print(f"| {layer} | {ks['d']} | {ks['kept_null_dims']} | {ks['C0_trace_over_d']:.3g} | "
              f"{ks['C0_top_eigenvalue']:.3g} | {ks['fact_key_mean_sq_norm']:.3g} | {ks['fact_keys_effective_rank']:.1f} | "
              f"{100 * ks['fact_key_energy_in_null_space_mean']:.1f} % ({100 * lo:.1f}–{100 * hi:.1f} %) | "
              f"{100 * ks['interaction_share']:.0f} % |")
    base_acc = setup.extra_eval(setup.model, setup.tok)["unedited_acc"]
    print(f"\none batch of {args.edits} edits (efficacy / generalization / specificity on the batch; accuracy on "
          f"the unedited facts, {base_acc:.1f} % before editing):\n")
    print("| method | settings | Eff. | Gen. | Spe. | unedited facts | s |")
    print("|---|---|---|---|---|---|---|")
    for method, ov in SWEEP:
        r = one_batch(setup, method, ov, args.edits)
        out["one_batch"].append(r)
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in ov.items()) or "shipped"
        print(f"| {method} | {label} | {r['efficacy']:.1f} | {r['generalization']:.1f} | {r['specificity']:.1f} | "
              f"{r['unedited_acc']:.1f} % | {r['seconds']:.0f} |", flush=True)
    out["unedited_acc_before"] = base_acc
    if args.smollm2:
        out["smollm2"] = sm = smollm2_key_space(hp.nullspace_threshold)
        print("\nSmolLM2-135M, K0 = 102,400 WikiText-2 tokens, keys of the first 50 CounterFact edits:\n")
        print("| layer | d | null dims kept | C0 trace/d | edit keys: mean ‖k‖² | energy in the null space |")
        print("|---|---|---|---|---|---|")
        for layer, r in sm.items():
            print(f"| {layer} | {r['d']} | {r['kept_null_dims']} | {r['C0_trace_over_d']:.3g} | "
                  f"{r['edit_key_mean_sq_norm']:.3g} | {100 * r['edit_key_energy_in_null_space_mean']:.1f} % |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
