"""The subword world: an organism that recalls facts where ROME found them, so AlphaEdit has room.

No paper equation is implemented here; this builds the model the equations act on. The tiny world
(word-level tokens, full attention everywhere) looks its facts up at the prompt's LAST token, where
every fact key is part of its own preserved text: no direction is free for a null-space edit. Real
LLMs differ in three ways that this organism copies (each measured, see data/subword_world/README.md):

* **facts recalled at the subject's last token by an early MLP** (ROME, Meng et al. 2022, Sec. 2):
  the first ``n_local`` layers attend only to a window of ``window`` tokens (sliding-window
  attention, as Mistral/Gemma/Qwen2 use per layer; the shipped design 9: one token), so the
  prompt's last token cannot see the subject there. Each last name is one token whose embedding
  row stays at its random initial value (``freeze_name_embeddings``), so the name's facts must be
  computed from that fixed vector by layer 0's MLP. The later layers have attention only and read
  the attribute out;
* **subjects of several tokens** (a BPE tokenizer trained on the world's text): first names are
  BPE pieces from a small shared pool, so who someone is sits at the last name's token (the older
  designs, ``whole_last_names=False``, split last names into pieces too);
* **preserved text that is mostly not about the edited facts**: the model also learns a background
  language (:mod:`alphaedit_lite.world.background`); K0 is held-out background sentences plus the
  sentences of the ``k0_known`` subjects no edit touches. MLPs are wide (``d_mlp`` = 32 × ``d_model``),
  so the keys have spare directions: with a one-token window, the background text has only as many
  distinct keys as it has distinct tokens (about 700), and the subjects K0 knows add 500, so most of
  4,096 directions stay free for 2,000 edits (2,048 left too few: design 8).

Training is the tiny world's recipe (:func:`alphaedit_lite.world.train.fit`). Design 4 (shipped until
session 16) needed a loss on the name pieces (``name_weight`` 1) to leave chance; with one token
per name the shipped design uses none. data/subword_world/README.md has the nine designs.

The model is a `transformers.Qwen2ForCausalLM` (Llama-style blocks; its config's ``layer_types``
chooses sliding or full attention per layer), so the rewrite module is
``model.layers.{l}.mlp.down_proj`` exactly as in SmolLM2 and the tiny world.

    python -m alphaedit_lite.world train-subword --out data/subword_world    # 45 min on two CPU threads
    from alphaedit_lite.world import load_subword_world
    model, tok, world = load_subword_world()
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from alphaedit_lite.world.background import background_sentences
from alphaedit_lite.world.generate import World, generate_world
from alphaedit_lite.world.model import (METRICS_FILE, skip_zero_mlps, PAD, BOS, EOS, UNK, SPECIAL_TOKENS, default_subword_dir,  # noqa: F401
                    evaluate_world_model, load_world_model, save_tiny_world)

__all__ = ["SUBWORD_DEFAULTS", "build_subword_tokenizer", "make_subword_model", "freeze_name_rows", "train_subword_world",
           "train_and_save_subword", "default_subword_dir"]

#: Settings of the shipped subword world (`python -m alphaedit_lite.world train-subword`): design 9 of
#: data/subword_world/README.md (MLPs 4,096 wide, trained on two threads). One token per last name (``whole_last_names``) whose embedding row stays at its
#: random initial value (``freeze_name_embeddings``, :func:`freeze_name_rows`), a one-token window in layers 0-1, so
#: layer 0's MLP must compute each fact from the name's fixed vector at the subject's last token; ``k0_known``: the
#: world's last 500 subjects are the ones the preserved text K0 is about (read at editing time by
#: `alphaedit-lite sequential`; no edit touches them). Earlier designs set other values (their README rows say which).
SUBWORD_DEFAULTS = dict(n_subjects=2500, seed=0, names="unique", family_size=10, steps=6000, batch_size=128, lr=6e-3,
                        object_weight=4.0, name_weight=0.0, d_model=128, n_layers=4, n_local=2, window=1, n_heads=4,
                        d_mlp=4096, global_mlps=False, vocab_size=1200, background_share=0.25, warmup=100,
                        weight_decay=0.1, threads=2, max_pack=3, pack_prob=0.25, warm_subjects=400,
                        warm_steps=2000, warm_target=0.9, whole_last_names=True,
                        freeze_name_embeddings=True, k0_known=500, train_dtype="float32")


def build_subword_tokenizer(world: World, texts: list[str], vocab_size: int = 1200, whole_last_names: bool = False):
    """A BPE `PreTrainedTokenizerFast` trained on ``texts``; every object of the world is one token.

    Names are split into pieces (the shipped world: 3.4 tokens per last name on average, none in
    one piece); objects, which occur hundreds of times, end up as single tokens; an object that BPE
    left in pieces is added as a whole-word token, so that every answer is one next-token prediction.
    ``whole_last_names``: every last name is also added as one whole-word token, so that who a
    subject is sits at the name's last token alone (the first name, from a small shared pool, stays
    in BPE pieces and says nothing about the subject's facts).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 100:
        raise ValueError(f"vocab_size must be an int ≥ 100, got {vocab_size!r}")
    bpe = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix="##"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  continuing_subword_prefix="##", min_frequency=2, show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                  unk_token=UNK, padding_side="right", model_max_length=256)
    objects = sorted({o for r in world.relations for o in r.objects})
    split = [o for o in objects if len(tok(" " + o, add_special_tokens=False).input_ids) != 1]
    if split:
        tok.add_tokens([AddedToken(o, single_word=True) for o in split])
    if whole_last_names:
        tok.add_tokens([AddedToken(n, single_word=True) for n in world.last_names])
    return tok


def make_subword_model(tok, *, seed: int = 0, d_model: int = 128, n_layers: int = 4, n_local: int = 2,
                       window: int = 3, n_heads: int = 4, d_mlp: int = 1024, global_mlps: bool = True):
    """A seeded `Qwen2ForCausalLM`: ``n_local`` sliding-window layers (``window`` tokens), then full attention.

    ``global_mlps=False`` zeroes the MLPs of the full-attention layers and freezes them, so facts
    can only be stored in the local layers' MLPs.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    for name, v in (("d_model", d_model), ("n_layers", n_layers), ("window", window), ("n_heads", n_heads),
                    ("d_mlp", d_mlp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 0 <= n_local < n_layers:
        raise ValueError(f"n_local must be in 0..{n_layers - 1} (at least one full-attention layer), got {n_local}")
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    layer_types = ["sliding_attention"] * n_local + ["full_attention"] * (n_layers - n_local)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                      num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, use_sliding_window=True,
                      sliding_window=window, max_window_layers=0, layer_types=layer_types)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    if not global_mlps:
        for i in range(n_local, n_layers):
            for p in model.model.layers[i].mlp.parameters():
                p.data.zero_()
        skip_zero_mlps(model)          # frozen, and free to run: half of each step's work went into them
    return model


def freeze_name_rows(model, tok, world: World) -> list[int]:
    """Keep the embedding rows of the world's last names at their random initial values during training.

    Needs every last name to be one token (``whole_last_names``). A gradient hook zeroes those rows'
    gradient (the unembedding is tied, so both uses are covered); embeddings have no weight decay, so
    AdamW never moves them. What it is for: with its own trainable row, a one-token name can hold its
    facts in the embedding itself, and the MLPs are bypassed (design 6 of data/subword_world/README.md);
    with a fixed random row, the facts have to be computed from it by the MLPs. Returns the token ids.
    """
    ids = []
    for n in world.last_names:
        t = tok(" " + n, add_special_tokens=False).input_ids
        if len(t) != 1:
            raise ValueError(f"freeze_name_embeddings needs one token per last name, but {n!r} is {len(t)} tokens: "
                             "set whole_last_names=True as well")
        ids.append(t[0])
    rows = torch.tensor(sorted(set(ids)))
    weight = model.get_input_embeddings().weight

    def zero_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[rows] = 0
        return grad

    weight.register_hook(zero_rows)
    return ids


def _background_rows(tok, sentences: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    """Token ids of background sentences and their loss weights (1 everywhere but the first token)."""
    ids = [tok(s, add_special_tokens=False).input_ids for s in sentences]
    return ids, [[0.0] + [1.0] * (len(x) - 1) for x in ids]


def train_subword_world(world: World | None = None, log=print, **overrides):
    """Train the subword world (settings: :data:`SUBWORD_DEFAULTS` updated by ``overrides``).

    Returns (model, tokenizer, world, metrics). Rows are the world's fact sentences (as in the tiny
    world) plus background sentences making up ``background_share`` of all rows.
    """
    from alphaedit_lite.world.train import _encode_sentences, fit

    bad = sorted(set(overrides) - set(SUBWORD_DEFAULTS))
    if bad:
        raise ValueError(f"unknown setting(s) {bad}; valid: {sorted(SUBWORD_DEFAULTS)}")
    s = {**SUBWORD_DEFAULTS, **overrides}
    if s["train_dtype"] not in ("float32", "bfloat16"):
        raise ValueError(f"train_dtype must be 'float32' or 'bfloat16', got {s['train_dtype']!r} "
                         "(bfloat16: autocast forward passes, about twice as fast where the CPU has bf16)")
    if not 0 <= s["background_share"] < 1:
        raise ValueError(f"background_share must be in [0, 1), got {s['background_share']}")
    if isinstance(s["k0_known"], bool) or not isinstance(s["k0_known"], int) or not 0 <= s["k0_known"] < s["n_subjects"]:
        raise ValueError(f"k0_known must be an int in 0..n_subjects-1 (the subjects K0's text is about), got "
                         f"{s['k0_known']!r} with n_subjects={s['n_subjects']!r}; set it lower (e.g. --set k0_known=0)")
    if world is None:
        world = generate_world(n_subjects=s["n_subjects"], seed=s["seed"], names=s["names"],
                               family_size=s["family_size"])
    log = log or (lambda *a, **k: None)
    old_threads = torch.get_num_threads()
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    try:
        facts_text = world.training_sentences()
        n_bg = int(round(len(facts_text) * s["background_share"] / (1 - s["background_share"])))
        bg = background_sentences(world, "train", n_bg)
        tok = build_subword_tokenizer(world, facts_text + bg, s["vocab_size"], s["whole_last_names"])
        model = make_subword_model(tok, seed=s["seed"], d_model=s["d_model"], n_layers=s["n_layers"],
                                   n_local=s["n_local"], window=s["window"], n_heads=s["n_heads"],
                                   d_mlp=s["d_mlp"], global_mlps=s["global_mlps"])
        if s["freeze_name_embeddings"]:
            freeze_name_rows(model, tok, world)
        ids, weights, subject_of = _encode_sentences(world, tok, s["object_weight"], s["name_weight"])
        bg_ids, bg_w = _background_rows(tok, bg)
        model, tok, world, metrics = fit(
            model, tok, world, ids + bg_ids, weights + bg_w, subject_of + [-1] * len(bg_ids), log=log,
            seed=s["seed"], steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], warmup=s["warmup"],
            weight_decay=s["weight_decay"], max_pack=s["max_pack"], pack_prob=s["pack_prob"],
            warm_subjects=s["warm_subjects"], warm_steps=s["warm_steps"], warm_target=s["warm_target"],
            eval_every=0, eval_probes=2000, settings={**s, "organism": "subword-world"}, train_dtype=s["train_dtype"])
    finally:
        torch.set_num_threads(old_threads)
    names = [len(tok(" " + n, add_special_tokens=False).input_ids) for n in world.last_names]
    metrics["last_name_tokens_mean"] = round(sum(names) / len(names), 3)
    metrics["last_name_single_token_share"] = round(names.count(1) / len(names), 4)
    metrics["background_nll"] = round(background_nll(model, tok, background_sentences(world, "heldout", 2000)), 5)
    return model, tok, world, metrics


@torch.no_grad()
def background_nll(model, tok, sentences: list[str], batch_size: int = 256) -> float:
    """Mean next-token negative log-likelihood (nats) of ``sentences``, from each one's second token on.

    exp of it is the perplexity; :func:`alphaedit_lite.world.editing.perplexity_ratio` compares an
    edited model with the unedited one on the held-out background sentences.
    """
    from alphaedit_lite.experiments.evaluate import token_nll
    from alphaedit_lite.locate.keys import right_pad

    if not sentences:
        raise ValueError("background_nll got no sentences")
    x, m = right_pad([tok(s, add_special_tokens=False).input_ids for s in sentences], tok.pad_token_id)
    return token_nll(model, x, m, batch_size=batch_size)


def train_and_save_subword(out_dir, log=print, **overrides) -> dict:
    """Train, save (float16), reload and re-measure; writes metrics.json; returns the metrics."""
    t0 = time.perf_counter()
    model, tok, world, metrics = train_subword_world(log=log, **overrides)
    out = save_tiny_world(model, tok, world, out_dir)
    m2, t2, w2 = load_world_model(out, device="cpu")
    saved = evaluate_world_model(m2, t2, w2)
    metrics.update({f"saved_{k}": v for k, v in saved.items() if k.endswith("_acc")})
    metrics["shipped_bytes"] = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
    (Path(out) / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
