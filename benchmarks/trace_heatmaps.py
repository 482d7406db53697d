"""Causal-tracing heatmaps (ROME, Meng et al. 2022, Fig. 1-2) for SmolLM2-135M and the organisms.

For each model, traces facts it knows (SmolLM2: ROME's known facts; the worlds: their own facts in
trained phrasings), prints the average indirect effect (AIE) of restoring the hidden state, MLP
output and attention output per layer at five position groups, and writes one figure per model
(:func:`alphaedit_lite.plots.viz.plot_trace` on the AIE) plus one example trace.

    python benchmarks/trace_heatmaps.py --out docs/figures            # ~5 min on one thread
    python benchmarks/trace_heatmaps.py --models subword-world --n 30

What to look for: in SmolLM2 and the subword world the MLPs at the subject's last token carry the
fact in the early layers (the layers MEMIT/AlphaEdit edit); in the tiny world everything happens
at the last token.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from alphaedit_lite.locate.tracing import GROUPS, average_indirect_effect, facts_the_model_knows, trace

MODELS = ("smollm2-135m", "subword-world", "tiny-world")


def facts_of(name: str, n: int):
    """(model, tok, [(prompt, subject, answer)]) for a model name of MODELS."""
    if name == "smollm2-135m":
        from alphaedit_lite.model.loading import load_model
        from alphaedit_lite.locate.requests import load_knowns

        model, tok = load_model(name, device="cpu")
        return model, tok, facts_the_model_knows(model, tok, load_knowns(), n)
    from alphaedit_lite.world import load_subword_world, load_tiny_world

    model, tok, world = (load_subword_world if name == "subword-world" else load_tiny_world)(device="cpu")
    probes = random.Random(0).sample(world.probes("train"), n)
    return model, tok, [(p.prompt, p.fact.subject, p.target) for p in probes]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    ap.add_argument("--n", type=int, default=10, help="facts traced per model")
    ap.add_argument("--window", type=int, default=1, help="layers restored at once (MLP/attention)")
    ap.add_argument("--out", default=None, help="folder for the PNG figures (default: print only)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import matplotlib
    matplotlib.use("Agg")
    from alphaedit_lite.plots.viz import plot_trace

    for name in a.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
        t0 = time.perf_counter()
        model, tok, facts = facts_of(name, a.n)
        res = [trace(model, tok, p, s, ans, seed=i, window=a.window) for i, (p, s, ans) in enumerate(facts)]
        print(f"\n{name}: {len(res)} facts, p_clean {sum(r.p_clean for r in res) / len(res):.3f}, "
              f"p_corrupt {sum(r.p_corrupt for r in res) / len(res):.3f} ({time.perf_counter() - t0:.0f} s)")
        aies = {}
        for kind in ("hidden", "mlp", "attn"):
            aies[kind] = average_indirect_effect(res, kind)
            aie = aies[kind]["aie"]
            best = {g: (int(torch.nan_to_num(row, -math.inf).argmax()), float(torch.nan_to_num(row, -math.inf).max()))
                    for g, row in zip(GROUPS, aie) if not bool(torch.isnan(row).all())}   # empty groups: all NaN
            print(f"  {kind:6s} largest AIE per group (layer: value): " +
                  ", ".join(f"{g} {l}: {v:.3f}" for g, (l, v) in best.items()))
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            fig = plot_trace(aies, title=f"{name}: average indirect effect over {len(res)} facts")
            fig.savefig(out / f"trace_aie_{name}.png", dpi=110, bbox_inches="tight")
            fig = plot_trace(res[0], title=f"{name}: {res[0].prompt!r} → {res[0].answer!r}")
            fig.savefig(out / f"trace_example_{name}.png", dpi=110, bbox_inches="tight")
            print(f"  wrote {out}/trace_aie_{name}.png and trace_example_{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
