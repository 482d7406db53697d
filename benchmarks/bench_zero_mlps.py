"""What skipping the subword world's all-zero MLPs saves (`alphaedit_lite.world.model.skip_zero_mlps`).

Layers 2-3 of the subword world have attention only: their MLP weights are zero and frozen. The kit
runs them as exact zeros. This script times the same work with the skip (as the kit loads the model)
and without it (the real modules), in one process, alternating, and prints the ratios:

1. one AlphaEdit batch of ``--edits`` edits at the shipped settings (targets, keys, solve);
2. one evaluation of the kind a sequential run makes after a batch (unedited facts, subjects K0
   knows, held-out perplexity), via the setup's ``extra_eval``.

It also checks that both ways give the same edited weights and the same figures.

    python benchmarks/bench_zero_mlps.py              # ~2 min on two threads
    python benchmarks/bench_zero_mlps.py --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse
import time

import torch

from alphaedit_lite.experiments.sequential import hparams_for, prepare
from alphaedit_lite.methods import apply_method
from alphaedit_lite.model.arch import get_rewrite_weight
from alphaedit_lite.world.model import skip_zero_mlps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edits", type=int, default=100, help="edits in the batch (default 100)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timings per way (the fastest is kept)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    setup = prepare("subword-world", a.edits, layers_hint=[0], progress=False, eval_unedited=1000)
    model, tok = setup.model, setup.tok
    hp = hparams_for("AlphaEdit", "subword-world")
    layer = hp.layers[-1]
    skipped = [i for i, l in enumerate(model.model.layers) if "forward" in vars(l.mlp)]
    print(f"subword world: MLPs skipped at layers {skipped} of {len(model.model.layers)}; "
          f"{a.edits} edits, {a.threads} thread(s)")

    def set_skip(on: bool) -> None:
        for l in model.model.layers:
            vars(l.mlp).pop("forward", None)
        if on:
            assert skip_zero_mlps(model) == skipped

    times = {True: {"edit": [], "eval": []}, False: {"edit": [], "eval": []}}
    results = {}
    for _ in range(a.repeats):
        for on in (True, False):
            set_skip(on)
            t0 = time.perf_counter()
            res = apply_method("AlphaEdit", model, tok, setup.requests, hp, stats=setup.stats)
            times[on]["edit"].append(time.perf_counter() - t0)
            w = get_rewrite_weight(model, layer).clone()
            t0 = time.perf_counter()
            figs = setup.extra_eval(model, tok)
            times[on]["eval"].append(time.perf_counter() - t0)
            res.restore(model)
            results[on] = (w, figs)
    set_skip(True)
    same_w = torch.allclose(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    same_f = results[True][1] == results[False][1]
    for part, what in (("edit", f"one AlphaEdit batch of {a.edits}"), ("eval", "one evaluation (extra figures)")):
        on, off = min(times[True][part]), min(times[False][part])
        print(f"{what:34s} skipped {on:6.2f} s   real modules {off:6.2f} s   ratio {on / off:.2f}")
    print(f"same edited weights: {same_w}; same evaluation figures: {same_f} {results[True][1]}")


if __name__ == "__main__":
    main()
