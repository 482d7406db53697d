"""Where the subword world keeps its facts, and whether AlphaEdit has room there.

Prints, for the shipped subword world (or ``--path``):

1. what it knows: top-1 accuracy on facts in trained and held-out phrasings, background perplexity;
2. where facts are recalled, two ways:
   * interchange patching (:func:`alphaedit_lite.locate.tracing.patch_subject_state`): the output of block l
     at the subject's last token is replaced by another subject's (same phrasing); the share of
     answers that change, and that become the other subject's answer, per layer. ROME's picture
     (facts read from the subject's position) predicts ≥ 90 % at the early layers;
   * causal tracing (:func:`alphaedit_lite.locate.tracing.trace`, ROME Sec. 2.1): the average indirect
     effect of restoring the hidden state / MLP output / attention output of each layer at five
     position groups (subject's first, middle, last token; further tokens; the last token);
3. the key space at the edited layers (:func:`alphaedit_lite.world.editing.subword_key_room`, P with
   the shipped threshold): kept directions, and the mean share ‖Pk‖²/‖k‖² of the keys' energy in
   the null space for the edit requests' keys, other subjects' keys, the keys of the subjects K0's
   text is about (when the organism has ``k0_known`` > 0) and held-out background keys.

    python benchmarks/bench_subword_world.py                 # ~1-2 min on one thread
    python benchmarks/bench_subword_world.py --path runs/subword_world --traces 30
"""
from __future__ import annotations

import argparse
import math
import random
import time

import torch

from alphaedit_lite.methods.hparams import load_hparams
from alphaedit_lite.model.arch import num_layers
from alphaedit_lite.locate.tracing import GROUPS, average_indirect_effect, patch_subject_state, trace
from alphaedit_lite.world import evaluate_world_model, load_world_model
from alphaedit_lite.world.background import background_sentences
from alphaedit_lite.world.editing import subword_key_room
from alphaedit_lite.world.model import k0_known_subjects
from alphaedit_lite.world.subword import background_nll, default_subword_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=None, help="organism folder (default: the shipped data/subword_world)")
    ap.add_argument("--pairs", type=int, default=300, help="prompt pairs for interchange patching")
    ap.add_argument("--traces", type=int, default=30, help="facts to trace")
    ap.add_argument("--keys", type=int, default=300, help="requests whose keys are measured")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--known", type=int, default=None,
                    help="subjects whose sentences join K0 (default: the organism's k0_known setting)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, tok, world = load_world_model(a.path or default_subword_dir(), device="cpu")
    n = num_layers(model)
    m = evaluate_world_model(model, tok, world, max_probes=2000)
    nll = background_nll(model, tok, background_sentences(world, "heldout", 1000))
    print(f"facts: top-1 {100 * m['train_acc']:.1f} % (trained phrasings), {100 * m['heldout_acc']:.1f} % (held-out), "
          f"{100 * m['paraphrase_acc']:.1f} % (record paraphrases); background perplexity {math.exp(nll):.2f}")
    print(f"layer types: {getattr(model.config, 'layer_types', None)}, window {getattr(model.config, 'sliding_window', None)}")

    print("\ninterchange patching at the subject's last token (share of answers, %):")
    pairs = world.swap_pairs(a.pairs)
    for layer in range(n):
        r = patch_subject_state(model, tok, pairs, layer)
        print(f"  block {layer}: changed {100 * r['changed']:5.1f}   became the other subject's {100 * r['became_b']:5.1f}")

    print(f"\ncausal tracing, average indirect effect over {a.traces} facts (rows: position groups, columns: layers):")
    probes = random.Random(1).sample(world.probes("train"), a.traces)
    res = [trace(model, tok, p.prompt, p.fact.subject, p.target, seed=i) for i, p in enumerate(probes)]
    print(f"  p_clean {sum(r.p_clean for r in res) / len(res):.3f}, p_corrupt {sum(r.p_corrupt for r in res) / len(res):.3f}")
    for kind in ("hidden", "mlp", "attn"):
        aie = average_indirect_effect(res, kind)["aie"]
        print(f"  {kind}:")
        for g, row in zip(GROUPS, aie):
            print(f"    {g:15s} " + " ".join("   nan" if math.isnan(v) else f"{v:6.3f}" for v in row.tolist()))

    hp = load_hparams("AlphaEdit", "subword-world")
    known = k0_known_subjects(a.path) if a.known is None else a.known
    print(f"\nkey space at the edited layers {hp.layers} (threshold {hp.nullspace_threshold}, {hp.nullspace_mode}); "
          f"K0: background sentences" + (f" + the sentences of the {known} subjects K0 knows" if known else ""))
    room = subword_key_room(model, tok, world, hp, known=known, n_keys=a.keys)
    for layer, r in room.items():
        print(f"  layer {layer}: {r['kept']} of {r['dim']} directions kept; null-space share of energy: "
              f"edit keys {r['edit']:.3f}, other subjects' keys {r['other']:.3f}, "
              + (f"keys of subjects K0 knows {r['known']:.3f}, " if known else "")
              + f"held-out background keys {r['background']:.3f}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
