"""MEMIT's λ and AlphaEdit's threshold on SmolLM2: how much of one batch of edits each writes, and what it costs.

MEMIT's shipped λ for SmolLM2 (``mom2_update_weight`` 15000, taken from the Llama-3-8B settings)
wrote only about half of each batch in the shipped 1,000-edit run, so that run compares AlphaEdit
with a MEMIT that barely edits. This script finds the λ at which MEMIT's first batch of 100
CounterFact edits reaches the efficacy AlphaEdit reaches, so that a sequential run can compare the
two at matched efficacy (the paper's question: which keeps the model intact while it edits?).

The targets z (the slow part) are computed ONCE for the batch with the same settings as the shipped
run (most-probable stopping, bfloat16 target passes); each λ then only re-solves Δ. For each λ it
prints efficacy / generalization / specificity of the batch, the mean ‖Δ‖ per layer and the held-out
WikiText-2 perplexity ratio; AlphaEdit on the same targets is printed first for reference. With
``--thresholds`` it also runs AlphaEdit at other null-space thresholds (absolute, as the paper's
2e-2) on the same targets, with the kept rank and the share ‖PK‖²/‖K‖² of held-out WikiText keys
in the kept directions (what P leaves unprotected) at the last edited layer.

Run: .venv/bin/python benchmarks/first_batch_scan.py --threads 1      (about 10 minutes)
     .venv/bin/python benchmarks/first_batch_scan.py --threads 2 --lambdas 15000 2000 --thresholds 2e-2 5e-3 1e-3
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
from alphaedit_lite.model.loading import load_model  # noqa: E402
from alphaedit_lite.locate.requests import load_counterfact  # noqa: E402
from alphaedit_lite.experiments.sequential import heldout_perplexity_eval, hp_for_heldout  # noqa: E402
from alphaedit_lite.locate.corpus import corpus_tokens  # noqa: E402
from alphaedit_lite.locate.stats import collect_second_moments, layer_stats, projectors  # noqa: E402
from alphaedit_lite.locate.targets import compute_targets  # noqa: E402

FAST = {"v_stop": "most_probable", "v_dtype": "bfloat16"}


def heldout_keys(model, tok, hp, layer: int, n_rows: int = 16) -> torch.Tensor:
    """A square root L (d_in, d_in) of the second moment of the keys on WikiText-2 rows right after the statistics' rows (P never saw them)."""
    n_stats, seq = hp.mom2_n_samples * hp.mom2_seq_len, hp.mom2_seq_len
    _, ids, mask = corpus_tokens(tok, hp.mom2_dataset, n_stats + n_rows * seq, seq, progress=False)
    ids, mask = ids[n_stats // seq:], mask[n_stats // seq:]
    sm = collect_second_moments(model, ids, mask, [layer], progress=False)[layer]
    # their second moment is enough: with C = L Lᵀ, ‖P L‖² / ‖L‖² = tr(P C) / tr(C) = ‖P K‖² / ‖K‖²
    lam, V = torch.linalg.eigh(sm.cov.to(torch.float64))
    return V * lam.clamp_min(0).sqrt()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=100, help="edits in the batch (default 100, the paper's batch)")
    p.add_argument("--lambdas", type=float, nargs="*", default=[15000, 5000, 2000, 1000, 500, 200, 100, 50])
    p.add_argument("--thresholds", type=float, nargs="*", default=[],
                   help="also AlphaEdit at these absolute null-space thresholds (the shipped one is 2e-2)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tok = load_model("smollm2-135m")
    reqs = list(load_counterfact(limit=args.requests))
    hp_m = load_hparams("MEMIT", "smollm2-135m").replace(**FAST)
    hp_a = load_hparams("AlphaEdit", "smollm2-135m").replace(**FAST)
    stats = layer_stats(model, tok, hp_m.layers, hp_m.mom2_dataset, hp_m.mom2_n_tokens, hp_m.mom2_seq_len,
                        progress=False)
    ppl = heldout_perplexity_eval(model, tok, hp_for_heldout("smollm2-135m"))
    templates = context_templates(model, tok, hp_m.context_n_prefixes, hp_m.context_prefix_tokens)

    t0 = time.perf_counter()
    tr = compute_targets(model, tok, reqs, hp_m.layers[-1], templates, v_num_grad_steps=hp_m.v_num_grad_steps,
                         v_lr=hp_m.v_lr, v_weight_decay=hp_m.v_weight_decay,
                         clamp_norm_factor=hp_m.clamp_norm_factor, kl_factor=hp_m.kl_factor,
                         v_early_stop_loss=hp_m.v_early_stop_loss, v_stop=hp_m.v_stop, v_dtype=hp_m.v_dtype,
                         fact_token=hp_m.fact_token)
    print(f"targets for {len(reqs)} requests: {time.perf_counter() - t0:.0f} s")

    base = evaluate_requests(model, tok, reqs)["summary"]
    print(f"{'method':<22}{'Eff.':>7}{'Gen.':>7}{'Spe.':>7}{'mean ‖Δ‖':>10}{'ppl ratio':>11}")
    print(f"{'unedited':<22}{base['efficacy']:>7.1f}{base['generalization']:>7.1f}"
          f"{base['specificity']:>7.1f}{'':>10}{1.0:>11.3f}")
    runs = [("AlphaEdit", hp_a)] + [(f"MEMIT λ={lam:g}", hp_m.replace(mom2_update_weight=lam)) for lam in args.lambdas]
    runs += [(f"AlphaEdit thr={thr:g}", hp_a.replace(nullspace_threshold=thr)) for thr in args.thresholds]
    if args.thresholds:
        held = heldout_keys(model, tok, hp_a, hp_a.layers[-1])
        for thr in [hp_a.nullspace_threshold, *args.thresholds]:
            try:
                pj = projectors({hp_a.layers[-1]: stats[hp_a.layers[-1]]}, threshold=thr, mode="absolute")[hp_a.layers[-1]]
            except ValueError as exc:           # no eigenvalue below the threshold: nothing left to edit
                print(f"threshold {thr:g}: {exc}")
                runs = [(lab, hp) for lab, hp in runs if lab != f"AlphaEdit thr={thr:g}"]
                continue
            share = float((pj.P @ held).pow(2).sum() / held.pow(2).sum())
            print(f"threshold {thr:g}: layer {hp_a.layers[-1]} keeps {pj.kept_rank}/{pj.P.shape[0]} directions; "
                  f"held-out WikiText keys have {share:.3f} of their energy there")
    for label, hp in runs:
        res = apply_method(label.split()[0], model, tok, reqs, hp, stats=stats, templates=templates, targets=tr)
        try:
            s = evaluate_requests(model, tok, reqs)["summary"]
            ratio = ppl(model, tok)["perplexity_ratio"] if ppl is not None else float("nan")
        finally:
            res.restore(model)
        dn = sum(float(d.norm()) for d in res.deltas.values()) / len(res.deltas)
        print(f"{label:<22}{s['efficacy']:>7.1f}{s['generalization']:>7.1f}"
              f"{s['specificity']:>7.1f}{dn:>10.3f}{ratio:>11.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
