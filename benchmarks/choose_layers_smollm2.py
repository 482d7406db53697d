"""Which SmolLM2-135M layers to edit? Causal tracing of MLP outputs at the subject's last token.

ROME (Meng et al. 2022, Sec. 2.1) locates factual recall by corrupting the subject's token
embeddings with Gaussian noise (3× the embeddings' standard deviation) and restoring one hidden
state from the clean run: the probability of the correct answer that the restoration brings back
is its "indirect effect". MEMIT/AlphaEdit edit the MLPs whose restored OUTPUT at the subject's
last token has the largest effect. This script, for SmolLM2-135M (30 layers):

1. keeps the first ``--n`` facts of ROME's known_1000.json that the model actually knows (the
   answer's first token is the model's top-1 prediction);
2. per fact, runs the clean prompt, the corrupted prompt, and — in ONE batched forward pass —
   the corrupted prompt with the MLP output of layer l restored at the subject's last token, for
   every l (single layer) and for windows of ``--window`` layers centred on l (ROME's window);
3. prints the average indirect effect AIE(l) = mean(p_restored − p_corrupted) per layer, and
   the best contiguous window of ``--edit-width`` layers by summed single-layer AIE.

    python benchmarks/choose_layers_smollm2.py --n 30 --window 5
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from alphaedit_lite.model.hooks import TraceDict
from alphaedit_lite.locate.keys import locate_subject
from alphaedit_lite.model.arch import arch_spec, embed, num_layers
from alphaedit_lite.model.loading import load_model
from alphaedit_lite.locate.requests import load_knowns


def answer_token(tok, attribute: str) -> int:
    return tok(" " + attribute.strip(), add_special_tokens=False).input_ids[0]


def trace_fact(model, tok, fact, noise_std: float, window: int, gen: torch.Generator) -> dict | None:
    spec = arch_spec(model)
    n = num_layers(model)
    start = fact.prompt.find(fact.subject)
    s = locate_subject(tok, fact.prompt, fact.subject, subject_start=start, where=f"known fact {fact.known_id}")
    # subject token span: tokens of the text before the subject .. the subject's last token
    has_bos = tok("a").input_ids[:1] == [tok.bos_token_id]
    first = len(tok(fact.prompt[:start]).input_ids) if start > 0 else int(has_bos)
    first = min(first, s.subject_last)
    ids = torch.tensor([s.ids])
    ans = answer_token(tok, fact.attribute)
    mlp_names = [spec.mlp_name(i) for i in range(n)]
    with torch.no_grad(), TraceDict(model, mlp_names, retain_output=True) as tr:
        logits = model(input_ids=ids).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    if int(probs.argmax()) != ans:
        return None
    clean = {nm: tr[nm].output[0, s.subject_last].clone() for nm in mlp_names}
    p_clean = float(probs[ans])

    rows = 1 + 2 * n     # 0: corrupted; 1..n: restore layer l; n+1..2n: restore window around l
    E = embed(model)
    noise = torch.randn(s.subject_last - first + 1, E.weight.shape[1], generator=gen) * noise_std

    def corrupt(out, name):
        out = out.clone()
        out[:, first:s.subject_last + 1] += noise.to(out.dtype)
        return out

    def restore_for(layer_idx):
        rs = [1 + layer_idx]
        for c in range(n):  # windows centred on c that contain layer_idx
            lo, hi = max(0, c - window // 2), min(n, c - window // 2 + window)
            if lo <= layer_idx < hi:
                rs.append(1 + n + c)
        return rs

    restore_rows = {mlp_names[i]: restore_for(i) for i in range(n)}

    def restore(out, name):
        out = out.clone()
        out[restore_rows[name], s.subject_last] = clean[name]
        return out

    batch = ids.repeat(rows, 1)
    emb_name = spec.embed
    with torch.no_grad(), TraceDict(model, [emb_name], edit_output=corrupt, retain_output=False), \
            TraceDict(model, mlp_names, edit_output=restore, retain_output=False):
        p = torch.softmax(model(input_ids=batch).logits[:, -1].float(), -1)[:, ans]
    p_corrupt = float(p[0])
    return {"p_clean": p_clean, "p_corrupt": p_corrupt,
            "single": (p[1:1 + n] - p[0]).tolist(), "window": (p[1 + n:] - p[0]).tolist()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30, help="number of known facts to average over")
    ap.add_argument("--window", type=int, default=5, help="window of restored MLP layers (ROME uses 10 for GPT-2 XL)")
    ap.add_argument("--edit-width", type=int, default=5, help="number of consecutive layers to edit")
    ap.add_argument("--noise", type=float, default=3.0, help="noise std in units of the embedding std")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = load_model("smollm2-135m", device="cpu")
    n = num_layers(model)
    noise_std = args.noise * float(embed(model).weight.detach().std())
    gen = torch.Generator().manual_seed(args.seed)
    results, tried = [], 0
    for fact in load_knowns():
        if len(results) >= args.n:
            break
        tried += 1
        r = trace_fact(model, tok, fact, noise_std, args.window, gen)
        if r is not None:
            r["prompt"], r["attribute"] = fact.prompt, fact.attribute
            results.append(r)
    if not results:
        raise SystemExit("the model knows none of the facts tried")
    single = torch.tensor([r["single"] for r in results]).mean(0)
    window = torch.tensor([r["window"] for r in results]).mean(0)
    p_clean = sum(r["p_clean"] for r in results) / len(results)
    p_corr = sum(r["p_corrupt"] for r in results) / len(results)
    print(f"SmolLM2-135M causal tracing of MLP outputs at the subject's last token: {len(results)} known facts "
          f"(of {tried} tried), noise {args.noise}×std, window {args.window}; {time.perf_counter() - t0:.0f} s")
    print(f"mean p(answer): clean {p_clean:.3f}, corrupted {p_corr:.3f}")
    print("layer  AIE(single MLP)  AIE(window of %d)" % args.window)
    for i in range(n):
        bar = "#" * max(0, int(round(200 * float(window[i]))))
        print(f"{i:5d}  {float(single[i]):+.4f}          {float(window[i]):+.4f}  {bar}")
    w = args.edit_width
    sums = [float(single[i:i + w].sum()) for i in range(n - w + 1)]
    best = max(range(len(sums)), key=lambda i: sums[i])
    print(f"best {w}-layer window by summed single-layer AIE: layers {best}..{best + w - 1} (sum {sums[best]:.4f})")
    # Layer 0's MLP mostly re-encodes the (corrupted) token itself, a "second embedding" (ROME,
    # App. B): restoring it undoes the corruption rather than locating a fact. Excluding it:
    best1 = max(range(1, len(sums)), key=lambda i: sums[i])
    print(f"best {w}-layer window without layer 0: layers {best1}..{best1 + w - 1} (sum {sums[best1]:.4f})")
    peak = int(window.argmax())
    print(f"peak of the windowed AIE: layer {peak} ({float(window[peak]):.4f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"single": single.tolist(), "window": window.tolist(), "p_clean": p_clean,
                       "p_corrupt": p_corr, "n_facts": len(results), "best_window": [best, best + w - 1],
                       "best_window_without_layer0": [best1, best1 + w - 1],
                       "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
