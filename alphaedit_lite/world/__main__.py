"""Command line of the tiny world: `python -m alphaedit_lite.world {train,eval,show}`.

    python -m alphaedit_lite.world train [--out DIR] [--subjects N] [--seed S] [--steps K] ...
    python -m alphaedit_lite.world train-subword [--out DIR] [--set KEY=VALUE ...]
    python -m alphaedit_lite.world eval [--path DIR] [--max-probes N]
    python -m alphaedit_lite.world show [--path DIR] [--n 5]

`train` writes to runs/tiny_world by default (pass `--out data/tiny_world` to replace the shipped
model); `eval` measures the shipped model (or `--path`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

from alphaedit_lite.world.train import DEFAULTS


def _cmd_train(a: argparse.Namespace) -> int:
    from alphaedit_lite.world.train import train_and_save

    metrics = train_and_save(a.out, n_subjects=a.subjects, seed=a.seed, steps=a.steps, batch_size=a.batch_size,
                             lr=a.lr, weight_decay=a.weight_decay, object_weight=a.object_weight, d_model=a.d_model, n_layers=a.layers,
                             warm_subjects=a.warm_subjects, warm_steps=a.warm_steps,
                             warm_target=a.warm_target, threads=a.threads,
                             eval_every=a.eval_every)
    print(f"training phrasings: top-1 accuracy {metrics['train_acc']:.4f} ({metrics['n_train']} prompts)")
    print(f"held-out phrasings: top-1 accuracy {metrics['heldout_acc']:.4f} ({metrics['n_heldout']} prompts)")
    print(f"after float16 save/load: {metrics['saved_train_acc']:.4f} / {metrics['saved_heldout_acc']:.4f}")
    print(f"wrote {a.out} (training took {metrics['train_seconds']:.0f} s wall, "
          f"{metrics['train_cpu_seconds']:.0f} s CPU on {metrics['threads']} thread(s))")
    return 0


def _cmd_train_subword(a: argparse.Namespace) -> int:
    from alphaedit_lite.world.subword import SUBWORD_DEFAULTS, train_and_save_subword

    overrides = {}
    for item in a.set or []:
        key, sep, value = item.partition("=")
        if not sep or key not in SUBWORD_DEFAULTS:
            raise ValueError(f"--set takes KEY=VALUE with KEY one of {sorted(SUBWORD_DEFAULTS)}, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value                     # a bare word: names=unique, train_dtype=bfloat16
    m = train_and_save_subword(a.out, **overrides)
    print(f"training phrasings: top-1 accuracy {m['train_acc']:.4f}; held-out phrasings {m['heldout_acc']:.4f}; "
          f"record paraphrases {m['paraphrase_acc']:.4f}; background perplexity {math.exp(m['background_nll']):.3f}")
    print(f"after float16 save/load: {m['saved_train_acc']:.4f} / {m['saved_heldout_acc']:.4f}")
    print(f"wrote {a.out} ({m['shipped_bytes'] / 1e6:.1f} MB; {m['total_seconds']:.0f} s in all, "
          f"{m['train_cpu_seconds']:.0f} s CPU of training on {m['threads']} thread(s))")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    import torch

    from alphaedit_lite.world.model import evaluate_world_model, load_tiny_world

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, tok, world = load_tiny_world(a.path, device=a.device)
    m = evaluate_world_model(model, tok, world, max_probes=a.max_probes)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny world: {world.n_subjects} subjects, {len(world.relations)} relations, "
          f"{len(world.facts)} facts, {len(world.records)} records; model {n_params / 1e6:.2f} M parameters")
    print(f"training phrasings: top-1 accuracy {m['train_acc']:.4f} ({m['n_train']} prompts)")
    print(f"held-out phrasings: top-1 accuracy {m['heldout_acc']:.4f} ({m['n_heldout']} prompts)")
    print(f"record paraphrases (with a prefix sentence): top-1 accuracy {m['paraphrase_acc']:.4f}")
    print(f"chance: {m['chance']:.4f}   ({time.perf_counter() - t0:.1f} s)")
    if a.json:
        print(json.dumps(m))
    return 0


def _cmd_show(a: argparse.Namespace) -> int:
    from alphaedit_lite.world.model import load_tiny_world, predict_next

    model, tok, world = load_tiny_world(a.path, device=a.device)
    probes = world.probes("all")[: a.n * len(world.relations) * world.n_phrasings]
    pred = predict_next(model, tok, [p.prompt for p in probes])
    for p, t in zip(probes, pred.tolist()):
        mark = "ok " if tok.convert_ids_to_tokens(t) == p.target else "BAD"
        print(f"{mark} {'held-out' if p.heldout else 'trained '}  {p.prompt} -> {tok.convert_ids_to_tokens(t)}"
              f"  (true: {p.target})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alphaedit_lite.world", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("train", help="generate the world, train the tiny Llama on CPU, save everything")
    q.add_argument("--out", default="runs/tiny_world", help="output folder (default runs/tiny_world)")
    q.add_argument("--subjects", type=int, default=DEFAULTS["n_subjects"], help="people in the world")
    q.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the world and of training")
    q.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="optimizer steps on the whole world")
    q.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="sequences per step")
    q.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate (AdamW)")
    q.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"],
                   help="AdamW weight decay of the blocks' matrices")
    q.add_argument("--object-weight", type=float, default=DEFAULTS["object_weight"],
                   help="loss weight of the object token of each sentence")
    q.add_argument("--d-model", type=int, default=DEFAULTS["d_model"], help="hidden size")
    q.add_argument("--layers", type=int, default=DEFAULTS["n_layers"], help="transformer layers")
    q.add_argument("--warm-subjects", type=int, default=DEFAULTS["warm_subjects"],
                   help="people seen during the warm-up curriculum (0: no warm-up)")
    q.add_argument("--warm-steps", type=int, default=DEFAULTS["warm_steps"], help="most steps of the warm-up")
    q.add_argument("--warm-target", type=float, default=DEFAULTS["warm_target"],
                   help="the warm-up ends once every relation reaches this accuracy on its people")
    q.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                   help="torch CPU threads (results do not depend on it; use 1 on a busy machine)")
    q.add_argument("--eval-every", type=int, default=0, help="print sampled accuracies every N steps")
    q.set_defaults(func=_cmd_train)

    q = sub.add_parser("train-subword", help="train the subword world (facts at the subject, background text)")
    q.add_argument("--out", default="runs/subword_world", help="output folder (default runs/subword_world)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a setting of alphaedit_lite.world.subword.SUBWORD_DEFAULTS (JSON value)")
    q.set_defaults(func=_cmd_train_subword)

    for name, fn, hlp in (("eval", _cmd_eval, "accuracies of the shipped (or --path) model"),
                          ("show", _cmd_show, "print a few prompts and the model's answers")):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("--path", default=None, help="model folder (default: the shipped data/tiny_world)")
        q.add_argument("--device", default="cpu", help="torch device (default cpu)")
        if name == "eval":
            q.add_argument("--max-probes", type=int, default=None, help="sample this many prompts per split")
            q.add_argument("--threads", type=int, default=2, help="torch CPU threads")
            q.add_argument("--json", action="store_true", help="also print the metrics as JSON")
        else:
            q.add_argument("--n", type=int, default=3, help="how many subjects to show")
        q.set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"python -m alphaedit_lite.world: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
