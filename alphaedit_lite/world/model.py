"""The tiny world's tokenizer and Llama model: build, save, load, and measure what it knows.

No paper equation is implemented here. The model is a `transformers.LlamaForCausalLM`, so the
rewrite module of MEMIT/AlphaEdit is `model.layers.{l}.mlp.down_proj` exactly as in SmolLM2: its
weight W has shape (d_model, d_mlp) and its input, the key k ∈ R^{d_mlp}, is what K0 and K1
collect (Fang et al., ICLR 2025, Eq. 2: the MLP's output projection as a key-value memory).

The tokenizer is word-level (`tokenizers` WordLevel model, `Whitespace` pre-tokenizer), wrapped in
a `PreTrainedTokenizerFast`. It adds no special tokens to encoded text, like SmolLM2's, and
" Rome" (target with a leading space) encodes to the same single token as "Rome".
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from alphaedit_lite.world.generate import Probe, World

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

WORLD_FILE = "world.json"
RECORDS_FILE = "counterfact_tiny.json"
METRICS_FILE = "metrics.json"


def build_tokenizer(world_or_words):
    """A word-level `PreTrainedTokenizerFast` whose vocabulary is the specials then the world's words.

    Token ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then the words in sorted order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = world_or_words.words() if isinstance(world_or_words, World) else list(world_or_words)
    if not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError("build_tokenizer needs a World or a non-empty list of non-empty word strings")
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in sorted(set(words) - set(SPECIAL_TOKENS)):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Joins words with spaces and glues punctuation back ("Romar ." -> "Romar.").
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, padding_side="right", model_max_length=256)
    return fast


def make_config(vocab_size: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
                mlp_mult: int = 4, max_positions: int = 256, tie_embeddings: bool = True):
    """A small `LlamaConfig`: SwiGLU MLP of width mlp_mult·d_model, RMSNorm, rotary positions."""
    from transformers import LlamaConfig

    for name, v in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                    ("n_heads", n_heads), ("mlp_mult", mlp_mult)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=mlp_mult * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=tie_embeddings, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        hidden_act="silu", attention_bias=False, mlp_bias=False,
    )


def make_model(tokenizer, seed: int = 0, **config_kwargs):
    """A freshly initialised `LlamaForCausalLM` for `tokenizer`'s vocabulary (seeded)."""
    from transformers import LlamaForCausalLM

    cfg = make_config(len(tokenizer), **config_kwargs)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


# ----------------------------------------------------------------------------------------------
# Saving and loading


def save_tiny_world(model, tokenizer, world: World, out_dir: str | Path, dtype: torch.dtype = torch.float16,
                    metrics: dict | None = None) -> Path:
    """Write weights (safetensors, `dtype`), config, tokenizer, world and records to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was = next(model.parameters()).dtype
    model.to(dtype)
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        model.to(was)
    tokenizer.save_pretrained(out)
    world.save(out / WORLD_FILE)  # the world without records (they are regenerated from it)
    (out / RECORDS_FILE).write_text(json.dumps(world.records, indent=None, separators=(",", ":")))
    if metrics is not None:
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return out


def default_world_dir() -> Path:
    """Where the shipped tiny world lives: `data/tiny_world/` in the project."""
    from alphaedit_lite.util.paths import DATA_DIR

    return DATA_DIR / "tiny_world"


def default_subword_dir() -> Path:
    """Where the subword world lives: `data/subword_world/` in the project (or the installed data).

    ``$ALPHAEDIT_SUBWORD_DIR`` overrides it, so that a retrained design (``python -m
    alphaedit_lite.world train-subword --out DIR``) runs through every command of the kit, e.g.
    ``ALPHAEDIT_SUBWORD_DIR=DIR alphaedit-lite sequential --model subword-world``.
    """
    import os

    from alphaedit_lite.util.paths import DATA_DIR

    env = os.environ.get("ALPHAEDIT_SUBWORD_DIR")
    if not env:
        return DATA_DIR / "subword_world"
    if not Path(env).is_dir():
        raise FileNotFoundError(f"ALPHAEDIT_SUBWORD_DIR={env} is not a folder: point it at a folder written by "
                                "`python -m alphaedit_lite.world train-subword --out DIR`, or unset it to use the "
                                "shipped subword world")
    return Path(env)


def _zero_mlp_forward(mlp, x: torch.Tensor) -> torch.Tensor:
    """An MLP's forward that returns exact zeros while every weight of it is zero and frozen and nothing
    hooks its parts; otherwise (an edit wrote into it, a tracer reads its keys, it trains) the real one."""
    if (any(p.requires_grad or p.any() for p in mlp.parameters())
            or any(m._forward_hooks or m._forward_pre_hooks for m in mlp.children())):
        return type(mlp).forward(mlp, x)
    return torch.zeros_like(x)


def skip_zero_mlps(model) -> list[int]:
    """Make the all-zero MLPs of a model cost nothing; returns the layers this applies to.

    The subword world's full-attention layers have MLPs of zeros (they may read facts, not store them), and
    running them took about half of every forward pass. Each such MLP is frozen (``requires_grad`` False,
    as in training) and gets a forward that returns exact zeros (adding them to the residual stream
    changes nothing, bit for bit) for as long as its weights stay zero and frozen and no hook is on its
    parts (see ``_zero_mlp_forward``); the parameters, the state dict and the saved files are unchanged.
    """
    import types

    done = []
    for i, layer in enumerate(model.model.layers):
        ps = list(layer.mlp.parameters())
        if ps and not any(p.any() for p in ps):
            for p in ps:
                p.requires_grad_(False)
            layer.mlp.forward = types.MethodType(_zero_mlp_forward, layer.mlp)
            done.append(i)
    return done


def load_world_model(path: str | Path, device=None):
    """Load an organism folder written by `save_tiny_world` (tiny or subword world), float32, eval mode.

    The model class comes from the folder's config (`LlamaForCausalLM` for the tiny world,
    `Qwen2ForCausalLM` for the subword world). Returns (model, tokenizer, world).
    """
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from alphaedit_lite.util.device import pick_device

    p = Path(path)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json", WORLD_FILE)
               if not (p / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{p} is not a world-model folder (missing {', '.join(missing)}); "
                                "train one with `python -m alphaedit_lite.world train --out DIR` "
                                "(or `train-subword`)")
    dev = pick_device(device)
    # Stored in float16; cast to float32 (editing solves need it). No dtype argument: its name
    # changed across transformers versions (torch_dtype -> dtype).
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
    model.float().to(dev).eval()
    skip_zero_mlps(model)
    tok = PreTrainedTokenizerFast.from_pretrained(p, local_files_only=True)
    world = World.load(p / WORLD_FILE)
    return model, tok, world


def load_tiny_world(path: str | Path | None = None, device=None):
    """Load the tiny world's model (float32, eval mode), tokenizer and `World`; no network, no training.

    path: a folder written by `save_tiny_world` / `python -m alphaedit_lite.world train`
    (default: the shipped `data/tiny_world/`). device: passed to `pick_device` (default: its choice).
    Returns (model, tokenizer, world).
    """
    return load_world_model(path if path is not None else default_world_dir(), device=device)


def load_subword_world(path: str | Path | None = None, device=None):
    """Load the subword world (default: the shipped `data/subword_world/`); see `alphaedit_lite.world.subword`."""
    return load_world_model(path if path is not None else default_subword_dir(), device=device)


def k0_known_subjects(path: str | Path | None = None) -> int:
    """How many subjects the subword world's preserved text is about (its ``k0_known`` setting, 0 if absent).

    They are the world's LAST ``k0_known`` subjects: their fact sentences join the background
    sentences in K0 (:func:`alphaedit_lite.world.editing.subword_stats`), and no edit may touch them.
    """
    folder = Path(path) if path is not None else default_subword_dir()
    f = folder / METRICS_FILE
    if not f.is_file():
        return 0
    return int(json.loads(f.read_text()).get("k0_known", 0))


def k0_corpus(world: World | None = None) -> list[str]:
    """The K0 corpus of the tiny world: its training sentences (default: the shipped world's)."""
    if world is None:
        world = World.load(default_world_dir() / WORLD_FILE)
    return world.training_sentences()


# ----------------------------------------------------------------------------------------------
# Measuring what the model knows


def target_token_id(tokenizer, target: str) -> int:
    """The single token id of `target` tokenized with a leading space, as the editing code does."""
    ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"target {target!r} is not one known word for this tokenizer (got ids {ids})")
    return ids[0]


@torch.no_grad()
def predict_next(model, tokenizer, prompts: list[str], batch_size: int = 512) -> torch.Tensor:
    """Top-1 next-token id after each prompt: (n,) long tensor. Right padding, no special tokens."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[s:s + batch_size], add_special_tokens=False, padding=True,
                        return_tensors="pt")
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        last = mask.sum(1) - 1  # (b,) position of each prompt's last token
        h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, T, d)
        h_last = h[torch.arange(ids.shape[0], device=dev), last]  # (b, d)
        out.append(model.lm_head(h_last).argmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def probe_accuracy(model, tokenizer, probes: list[Probe], batch_size: int = 512) -> float:
    """Fraction of probes whose top-1 next token is the probe's target."""
    if not probes:
        raise ValueError("probe_accuracy got no probes; check the split / exclusions you asked for")
    pred = predict_next(model, tokenizer, [p.prompt for p in probes], batch_size)
    gold = torch.tensor([target_token_id(tokenizer, p.target) for p in probes])
    return float((pred == gold).float().mean())


def evaluate_world_model(model, tokenizer, world: World, max_probes: int | None = None,
                         seed: int = 0) -> dict:
    """Top-1 accuracy on training phrasings, held-out phrasings and the records' paraphrases.

    max_probes: evaluate a seeded random sample of at most this many probes per split (None: all).
    Returns {"train_acc", "heldout_acc", "paraphrase_acc", "n_train", "n_heldout", "chance"}.
    """
    import random

    was_training = model.training
    model.eval()
    res = {}
    for split in ("train", "heldout"):
        probes = world.probes(split)
        if max_probes is not None and len(probes) > max_probes:
            probes = random.Random(f"{seed}/{split}").sample(probes, max_probes)
        res[f"{split}_acc"] = probe_accuracy(model, tokenizer, probes)
        res[f"n_{split}"] = len(probes)
    recs = world.records
    if max_probes is not None and len(recs) > max_probes:
        recs = random.Random(f"{seed}/records").sample(recs, max_probes)
    para = [Probe(q, r["requested_rewrite"]["target_true"]["str"], None, -1, False)
            for r in recs for q in r["paraphrase_prompts"]]
    res["paraphrase_acc"] = probe_accuracy(model, tokenizer, para)
    res["chance"] = sum(1 / len(r.objects) for r in world.relations) / len(world.relations)
    if was_training:
        model.train()
    return res
