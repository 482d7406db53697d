"""Train the tiny world's Llama model on its training text, on a CPU, reproducibly.

No paper equation is implemented here: this makes the "model organism" whose facts the editing
methods rewrite. Training is ordinary next-token prediction (cross-entropy) on the world's
training sentences, weighted per token: the object (the fact itself) counts `object_weight` times,
the phrasing's words once, the subject's name `name_weight` times (0: which random person comes
next cannot be learnt) and each sentence's first token not at all.

Recipe (each part found necessary on the 2000-person world; see `generate` for the phrasings):
* rows are mostly single sentences, 25 % carry one or two more (so the model also answers after
  unrelated text, as in CounterFact's paraphrase prompts), bucketed by length (little padding);
* a warm-up curriculum: train on the first `warm_subjects` people only until the model answers
  every relation for them (so every relation's look-up circuit exists), then on everyone;
* AdamW (no weight decay), peak lr 6e-3, linear warm-up then cosine decay, gradient clipping.

Everything is seeded; results do not depend on the number of CPU threads (checked for 1 and 2).
"""
from __future__ import annotations

import json
import math
import time

import torch
import torch.nn.functional as F

from alphaedit_lite.world.generate import World, generate_world
from alphaedit_lite.world.model import METRICS_FILE, build_tokenizer, evaluate_world_model, make_model, save_tiny_world

# Defaults of the shipped model; `python -m alphaedit_lite.world train` uses them.
DEFAULTS = dict(n_subjects=2000, seed=0, steps=1600, batch_size=128, lr=6e-3, object_weight=4.0,
                name_weight=0.0, d_model=128, n_layers=4, n_heads=4, mlp_mult=4, warmup=100,
                weight_decay=0.1, threads=2, max_pack=3, pack_prob=0.25, warm_subjects=400,
                warm_steps=1500, warm_target=0.9)


def _encode_sentences(world: World, tokenizer, object_weight: float, name_weight: float
                      ) -> tuple[list[list[int]], list[list[float]], list[int]]:
    """Token ids of every training sentence, the loss weight of predicting each of its tokens, and
    the index of the sentence's subject.

    Weights: 0 for the sentence's first token (which sentence comes next is random), `name_weight`
    for the subject's name tokens (random people: nothing to learn but who exists), `object_weight`
    for the object (the fact), 1 for the phrasing's words and the final ".".
    """
    ids, weights, subject_of = [], [], []
    for f in world.facts:
        subj = tokenizer(f.subject, add_special_tokens=False)["input_ids"]
        for p in world.trained_phrasings(f):
            prompt_ids = tokenizer(world.prompt(f, p), add_special_tokens=False)["input_ids"]
            sent = tokenizer(world.sentence(f, p), add_special_tokens=False)["input_ids"]
            if sent[:len(prompt_ids)] != prompt_ids or len(sent) != len(prompt_ids) + 2:
                raise ValueError(f"sentence {world.sentence(f, p)!r} does not tokenize as prompt + "
                                 "object + '.'; the tokenizer does not match this world")
            w = [1.0] * len(sent)
            start = next(i for i in range(len(prompt_ids)) if prompt_ids[i:i + len(subj)] == subj)
            for i in range(start, start + len(subj)):
                w[i] = name_weight
            w[0] = 0.0
            w[len(prompt_ids)] = object_weight
            ids.append(sent)
            subject_of.append(f.subject_index)
            weights.append(w)
    if any(tokenizer.unk_token_id in s for s in ids):
        raise ValueError("the tokenizer maps some training words to <unk>; build it from this world")
    return ids, weights, subject_of


class _Batcher:
    """Yields (input_ids, weights) batches: each row packs 1..max_pack shuffled sentences.

    After each sentence another follows with probability `pack_prob` (up to `max_pack`), so most
    rows are one sentence (cheap, and the facts are learnt fastest that way) and some put a fact
    after unrelated text, as CounterFact's paraphrase prompts do. Rows are bucketed by length.

    input_ids: (B, T) long, right-padded with pad_id; weights: (B, T) float, the loss weight of
    predicting token t from tokens < t (0 on padding).
    """

    POOL = 16  # batches made at a time and bucketed by length

    def __init__(self, ids, weights, batch_size, pad_id, max_pack=3, pack_prob=0.25, seed=0):
        if not 0 <= pack_prob < 1 or max_pack < 1:
            raise ValueError(f"need 0 <= pack_prob < 1 and max_pack >= 1, got {pack_prob}, {max_pack}")
        self.ids, self.weights = ids, weights
        self.B, self.pad, self.max_pack, self.pack_prob = batch_size, pad_id, max_pack, pack_prob
        self.ready: list = []
        self.g = torch.Generator().manual_seed(seed)
        self.order, self.cursor, self.epoch = torch.randperm(len(ids), generator=self.g).tolist(), 0, 0

    def _next_sentence(self) -> int:
        if self.cursor >= len(self.order):
            self.order = torch.randperm(len(self.ids), generator=self.g).tolist()
            self.cursor, self.epoch = 0, self.epoch + 1
        j = self.order[self.cursor]
        self.cursor += 1
        return j

    @property
    def epochs(self) -> float:
        return self.epoch + self.cursor / len(self.ids)

    def _row(self) -> tuple[list[int], list[float]]:
        row, w = [], []
        for k in range(self.max_pack):
            j = self._next_sentence()
            row += self.ids[j]
            w += self.weights[j]
            if torch.rand(1, generator=self.g).item() >= self.pack_prob:
                break
        return row, w

    def __next__(self):
        if not self.ready:
            # Make POOL batches' worth of rows, sort them by length and cut them into batches, so
            # that rows of one batch have about the same length (little padding); shuffle batches.
            rows = sorted((self._row() for _ in range(self.POOL * self.B)), key=lambda rw: len(rw[0]))
            batches = [rows[i:i + self.B] for i in range(0, len(rows), self.B)]
            order = torch.randperm(len(batches), generator=self.g).tolist()
            self.ready = [batches[i] for i in order]
        batch = self.ready.pop()
        T = max(len(r) for r, _ in batch)
        x = torch.tensor([r + [self.pad] * (T - len(r)) for r, _ in batch])  # (B, T)
        wt = torch.tensor([w + [0.0] * (T - len(w)) for _, w in batch])  # (B, T)
        return x, wt


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of `lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_world_model(world: World | None = None, *, n_subjects: int = DEFAULTS["n_subjects"],
                      seed: int = DEFAULTS["seed"], steps: int = DEFAULTS["steps"],
                      batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
                      object_weight: float = DEFAULTS["object_weight"],
                      name_weight: float = DEFAULTS["name_weight"], d_model: int = DEFAULTS["d_model"],
                      n_layers: int = DEFAULTS["n_layers"], n_heads: int = DEFAULTS["n_heads"],
                      mlp_mult: int = DEFAULTS["mlp_mult"], warmup: int = DEFAULTS["warmup"],
                      weight_decay: float = DEFAULTS["weight_decay"], threads: int | None = DEFAULTS["threads"],
                      max_pack: int = DEFAULTS["max_pack"], pack_prob: float = DEFAULTS["pack_prob"],
                      warm_subjects: int = DEFAULTS["warm_subjects"], warm_steps: int = DEFAULTS["warm_steps"],
                      warm_target: float = DEFAULTS["warm_target"], eval_every: int = 0,
                      eval_probes: int = 2000, log=print):
    """Train a tiny Llama on `world` (default: `generate_world(n_subjects, seed)`) on the CPU.

    Two phases. Warm-up (only if warm_subjects < number of people): at most `warm_steps` steps on
    the first `warm_subjects` people at the peak learning rate, stopping as soon as every relation
    is answered with accuracy >= `warm_target` on them (checked every 50 steps). Main: `steps`
    steps on the whole world, cosine-decayed learning rate.

    Returns (model, tokenizer, world, metrics); metrics holds the final accuracies
    (`evaluate_world_model` on every probe), wall and CPU training time, and the settings.
    threads: torch CPU threads during training (None: leave torch's setting); restored afterwards.
    eval_every: log sampled accuracies every this many main steps (0: only at the end).
    """
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    for name, v in (("warm_subjects", warm_subjects), ("warm_steps", warm_steps), ("warmup", warmup)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if world is None:
        world = generate_world(n_subjects=n_subjects, seed=seed)
    elif not isinstance(world, World):
        raise TypeError(f"world must be a World (or None), got {type(world).__name__}")
    log = log or (lambda *a, **k: None)
    settings = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, object_weight=object_weight,
                    name_weight=name_weight, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                    mlp_mult=mlp_mult, warmup=warmup, weight_decay=weight_decay, max_pack=max_pack,
                    pack_prob=pack_prob, warm_subjects=warm_subjects, warm_steps=warm_steps,
                    warm_target=warm_target, eval_every=eval_every, eval_probes=eval_probes)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(world, log, **settings)
    finally:
        torch.set_num_threads(old_threads)


def _train(world, log, *, seed, steps, batch_size, lr, object_weight, name_weight, d_model, n_layers,
           n_heads, mlp_mult, warmup, weight_decay, max_pack, pack_prob, warm_subjects, warm_steps,
           warm_target, eval_every, eval_probes):
    tok = build_tokenizer(world)
    model = make_model(tok, seed=seed, d_model=d_model, n_layers=n_layers, n_heads=n_heads, mlp_mult=mlp_mult)
    ids, weights, subject_of = _encode_sentences(world, tok, object_weight, name_weight)
    settings = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, object_weight=object_weight,
                    name_weight=name_weight, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                    pack_prob=pack_prob)
    return fit(model, tok, world, ids, weights, subject_of, log=log, seed=seed, steps=steps,
               batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay, max_pack=max_pack,
               pack_prob=pack_prob, warm_subjects=warm_subjects, warm_steps=warm_steps, warm_target=warm_target,
               eval_every=eval_every, eval_probes=eval_probes, settings=settings)


def fit(model, tok, world, ids, weights, subject_of, *, log, seed, steps, batch_size, lr, warmup, weight_decay,
        max_pack, pack_prob, warm_subjects, warm_steps, warm_target, eval_every, eval_probes, settings,
        train_dtype: str = "float32"):
    """The training loop both organisms share: warm-up curriculum, then cosine-decayed AdamW.

    ``ids``/``weights`` are the training rows (token ids, per-token loss weights); ``subject_of[j]``
    is the subject index of row j's fact, or −1 for a row that states no fact (background text).
    Parameters with ``requires_grad=False`` stay as they are. Returns (model, tok, world, metrics);
    ``settings`` are copied into the metrics. ``train_dtype="bfloat16"`` runs each step's forward pass
    under bfloat16 autocast (weights, gradients and AdamW stay float32), one autocast context per step.
    It is faster on a CPU with AVX-512 BF16, but it learns more slowly: the subword world's shipped
    settings trained in 1,543 s instead of 2,693 s and knew 68.8 % of their facts instead of 98.6 %
    (data/subword_world/README.md). The shipped organisms were trained in float32.
    """
    if train_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"train_dtype must be 'float32' or 'bfloat16', got {train_dtype!r}")
    import random

    from alphaedit_lite.world.model import probe_accuracy

    model.to("cpu").train()
    batches = _Batcher(ids, weights, batch_size, tok.pad_token_id, max_pack=max_pack,
                       pack_prob=pack_prob, seed=seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Weight decay on the matrices of the blocks, not on norms' gains nor on the (tied) embeddings.
    # Without it (weight_decay=0) the residual stream grows "massive activations" (norms of
    # 1,000-15,000 against ~2 for embeddings) and target vectors cannot move the prediction.
    is_decayed = lambda n, p: p.ndim >= 2 and "embed" not in n and "lm_head" not in n  # noqa: E731
    decay = [p for n, p in trainable if is_decayed(n, p)]
    no_decay = [p for n, p in trainable if not is_decayed(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    n_params = sum(p.numel() for p in model.parameters())
    n_facts = sum(1 for i in subject_of if i >= 0)
    log(f"world: {world.n_subjects} subjects, {len(world.relations)} relations, {n_facts} fact sentences, "
        f"{len(ids) - n_facts} background sentences; model: {n_params / 1e6:.2f} M parameters, vocab {len(tok)}")

    def train_step(batcher, step_lr) -> float:
        for gr in opt.param_groups:
            gr["lr"] = step_lr
        x, wt = next(batcher)  # (B, T), (B, T)
        mask = (x != tok.pad_token_id).long()
        keep = wt[:, 1:] > 0  # (B, T-1): positions whose next token carries loss
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=train_dtype == "bfloat16"):
            h = model.model(input_ids=x, attention_mask=mask).last_hidden_state  # (B, T, d)
            logits = model.lm_head(h[:, :-1][keep]).float()  # (m, V): the LM head only where it is needed
        w = wt[:, 1:][keep]  # (m,)
        ce = F.cross_entropy(logits, x[:, 1:][keep], reduction="none")  # (m,)
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        opt.step()
        return loss.item()

    t0, c0 = time.perf_counter(), time.process_time()
    clock = lambda: f"{time.perf_counter() - t0:.0f}s wall {time.process_time() - c0:.0f}s CPU"  # noqa: E731
    ema, warm_done = None, 0

    # Phase 1, warm-up curriculum. On a few hundred people the look-up circuit of every relation
    # forms within a few hundred steps; on 2000 people at once some relations stayed at chance for
    # 10 epochs (circuit and subject embeddings must co-adapt). Once circuits exist, new people
    # are learnt within a couple of epochs.
    if 0 < warm_subjects < world.n_subjects and warm_steps > 0:
        sub = [j for j, i in enumerate(subject_of) if 0 <= i < warm_subjects]
        warm = _Batcher([ids[j] for j in sub], [weights[j] for j in sub], batch_size, tok.pad_token_id,
                        max_pack=max_pack, pack_prob=pack_prob, seed=seed + 1)
        rng = random.Random(f"warm/{seed}")
        checks = {}
        for r in world.relations:
            pool = [p for p in world.probes("train", relation_id=r.relation_id) if p.fact.subject_index < warm_subjects]
            checks[r.relation_id] = rng.sample(pool, min(100, len(pool)))
        for step in range(warm_steps):
            lv = train_step(warm, lr * min(1.0, (step + 1) / max(1, warmup)))
            ema = lv if ema is None else 0.98 * ema + 0.02 * lv
            warm_done = step + 1
            if warm_done % 50 == 0 or warm_done == warm_steps:
                model.eval()
                accs = {rid: probe_accuracy(model, tok, ps) for rid, ps in checks.items()}
                model.train()
                log(f"warm-up step {warm_done}/{warm_steps}  epoch {warm.epochs:.1f}  loss {ema:.4f}  "
                    f"{clock()}  accuracy by relation: " + " ".join(f"{k} {v:.2f}" for k, v in accs.items()))
                if min(accs.values()) >= warm_target:
                    break

    # Phase 2: the whole world, cosine-decayed learning rate.
    for step in range(steps):
        lv = train_step(batches, _lr_at(step, steps, lr, warmup if warm_done == 0 else 0))
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if (step + 1) % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}  epoch {batches.epochs:.1f}  loss {ema:.4f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {clock()}")
        if eval_every and (step + 1) % eval_every == 0 and step != steps - 1:
            m = evaluate_world_model(model, tok, world, max_probes=eval_probes, seed=step)
            model.train()
            log(f"  sampled accuracy: train {m['train_acc']:.4f}  held-out {m['heldout_acc']:.4f}")
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    metrics = evaluate_world_model(model, tok, world)
    metrics.update(settings)
    metrics.update(final_loss=round(ema, 6), train_seconds=round(train_s, 1),
                   train_cpu_seconds=round(train_cpu, 1), threads=torch.get_num_threads(),
                   n_params=n_params, epochs=round(batches.epochs, 2), warm_steps_done=warm_done,
                   n_subjects=world.n_subjects, world_seed=world.seed, weight_decay=weight_decay,
                   warm_subjects=warm_subjects, warm_steps=warm_steps, warm_target=warm_target)
    log(f"trained in {train_s:.0f}s ({train_cpu:.0f}s CPU): top-1 accuracy {metrics['train_acc']:.4f} in "
        f"training phrasings, {metrics['heldout_acc']:.4f} in held-out phrasings, "
        f"{metrics['paraphrase_acc']:.4f} on record paraphrases (chance {metrics['chance']:.3f})")
    return model, tok, world, metrics


def train_and_save(out_dir, **kwargs) -> dict:
    """`train_world_model(**kwargs)`, then `save_tiny_world` (float16) and re-check the saved copy."""
    from alphaedit_lite.world.model import load_tiny_world

    model, tok, world, metrics = train_world_model(**kwargs)
    out = save_tiny_world(model, tok, world, out_dir)
    m2, t2, w2 = load_tiny_world(out, device="cpu")  # the float16 copy, loaded back to float32
    saved = evaluate_world_model(m2, t2, w2)
    metrics.update({f"saved_{k}": v for k, v in saved.items() if k.endswith("_acc")})
    metrics["shipped_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
