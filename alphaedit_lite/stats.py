"""Key statistics of real models: C0 = K0 K0ᵀ / n of every edited layer's rewrite module, from a corpus.

MEMIT (Meng et al. 2023, Eq. 14, the λ C0 term) and AlphaEdit (Fang et al., ICLR 2025, Eq. 7-8,
the null-space projector P built from K0 K0ᵀ) both need the second moment of the keys k (the
inputs of the MLP output projection, d_in = d_ff) over text that stands for "knowledge to keep".

How the statistics are collected (:func:`layer_stats`):

* the corpus is tokenised into ONE token stream and cut into fixed-length chunks of ``seq_len``
  tokens (a tokenizer that adds a BOS token gets one at the start of every chunk); exactly
  ``n_tokens`` positions are used: the last chunk is padded and its padding masked out, so
  ``SecondMoment.count == n_tokens``;
* ALL requested layers are read in ONE forward pass per batch (a :class:`~alphaedit_lite.hooks.TraceDict`
  retaining the input of every layer's rewrite module), and the pass stops right after the last
  (deepest) requested rewrite module: layers above it, the final norm and the unembedding are never run;
* everything runs under ``torch.no_grad()``, with a tqdm progress bar;
* results are cached per layer with :meth:`SecondMoment.save` under
  ``cache_dir()/stats/<model-id>/<rewrite-module-name>/<corpus-id>_<n_tokens>.pt``.

Corpus sources (``corpus=``):

* a path to a text file, or a folder (all ``*.txt`` / ``*.raw`` files, sorted);
* ``"wikitext-2"``: WikiText-2 raw test split from the shared data folder
  (:func:`alphaedit_lite.paths.shared_data_dir`) when present, else from the Hugging Face hub;
* ``"wikitext-103"``, ``"wikipedia"``: Hugging Face datasets (need ``pip install datasets`` and a
  network connection; a clear error says so otherwise);
* ``"model-samples"``: the offline fallback: text SAMPLED FROM THE MODEL ITSELF (seeded). It is
  labelled as such in the cache key (``model-samples-seed<k>``) and a notice is printed: these keys
  describe what the model likes to say, not real text.

:func:`projectors` turns statistics into AlphaEdit's projectors (one per layer), cached as well.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .covariance import SecondMoment
from .hooks import TraceDict
from .models import arch_spec, embed, mlp_width, num_layers
from .nullspace import Projector, null_space_projector
from .paths import cache_dir, shared_data_dir

__all__ = [
    "LayerStats", "model_id", "corpus_tokens", "layer_stats", "stats_cache_path", "projectors",
    "HF_CORPORA", "BUILTIN_CORPORA",
]

#: Hugging Face datasets the kit knows by a short name: (dataset, config, split, text field).
HF_CORPORA = {
    "wikitext-2": ("wikitext", "wikitext-2-raw-v1", "train", "text"),
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1", "train", "text"),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en", "train", "text"),
}
BUILTIN_CORPORA = ("model-samples", *HF_CORPORA)


class LayerStats(dict):
    """``{layer: SecondMoment}`` plus where it came from (used for cache keys and messages)."""

    def __init__(self, data: dict[int, SecondMoment], *, model_id: str, corpus_id: str, n_tokens: int,
                 module_names: dict[int, str]):
        super().__init__(data)
        self.model_id = model_id
        self.corpus_id = corpus_id
        self.n_tokens = int(n_tokens)
        self.module_names = dict(module_names)

    def cov(self, layer: int) -> torch.Tensor:
        """C0 = K0 K0ᵀ / n of ``layer`` (float64, (d_in, d_in))."""
        if layer not in self:
            raise ValueError(f"no statistics for layer {layer}; these statistics hold layers {sorted(self)}")
        return self[layer].cov

    def __repr__(self) -> str:
        return (f"LayerStats(model={self.model_id!r}, corpus={self.corpus_id!r}, n_tokens={self.n_tokens}, "
                f"layers={sorted(self)})")


# ------------------------------------------------------------------------------------------------
# Identities used in cache keys
# ------------------------------------------------------------------------------------------------
def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "x"


def model_id(model: torch.nn.Module) -> str:
    """A stable, file-system safe id: the model's name plus a fingerprint of its input embedding.

    The fingerprint (a hash of a strided sample of the embedding matrix and the shape of the
    network) tells apart two models with the same (or no) name, e.g. random test models. Only the
    embedding is hashed, which editing never touches, so an edited model keeps its id and reuses
    the statistics of the original (as the papers do: C0 is computed once, before editing).
    """
    cfg = getattr(model, "config", None)
    name = str(getattr(cfg, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")
    name = _safe(Path(name).name if name else type(model).__name__)
    E = embed(model).weight.detach()
    step = max(1, E.numel() // 4096)
    sample = E.reshape(-1)[::step].to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(sample.numpy().tobytes())
    h.update(repr((tuple(E.shape), num_layers(model), mlp_width(model))).encode())
    return f"{name}-{h.hexdigest()[:10]}"


def stats_cache_path(model_or_id, module_name: str, corpus_id: str, n_tokens: int) -> Path:
    """``cache_dir()/stats/<model-id>/<module>/<corpus-id>_<n_tokens>.pt``."""
    mid = model_or_id if isinstance(model_or_id, str) else model_id(model_or_id)
    return cache_dir() / "stats" / mid / _safe(module_name) / f"{_safe(corpus_id)}_{int(n_tokens)}.pt"


# ------------------------------------------------------------------------------------------------
# Corpora
# ------------------------------------------------------------------------------------------------
def _read_local(path: Path) -> tuple[str, Iterator[str]]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted([*path.rglob("*.txt"), *path.rglob("*.raw")])
        if not files:
            raise ValueError(f"corpus folder {str(path)!r} holds no *.txt or *.raw files; put plain-text files there")
    else:
        raise ValueError(f"corpus path {str(path)!r} does not exist; pass a text file, a folder of .txt files, "
                         f"or one of {BUILTIN_CORPORA}")
    fingerprint = "|".join(f"{f.resolve()}:{f.stat().st_size}" for f in files)
    ident = f"{path.name}-" + hashlib.sha1(fingerprint.encode()).hexdigest()[:8]

    def lines() -> Iterator[str]:
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                yield from fh
    return ident, lines()


def _read_hf(name: str) -> tuple[str, Iterator[str]]:
    ds_name, config, split, field = HF_CORPORA[name]
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError as e:
        raise ValueError(
            f"corpus {name!r} is read with the Hugging Face `datasets` package, which is not installed "
            f"(pip install datasets) — and it needs a network connection. Offline, pass a local text file "
            f"(corpus='path/to/text.txt') or corpus='model-samples'.") from e
    from datasets import load_dataset
    try:
        ds = load_dataset(ds_name, config, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - any hub/network failure becomes one clear message
        raise ValueError(
            f"could not load the Hugging Face dataset {ds_name}/{config} for corpus {name!r} "
            f"({type(e).__name__}: {e}); "
            f"you are probably offline. Pass a local text file (corpus='path/to/text.txt') or "
            f"corpus='model-samples'.") from e

    def lines() -> Iterator[str]:
        for rec in ds:
            t = rec.get(field) or ""
            if t.strip():
                yield t if t.endswith("\n") else t + "\n"
    return f"{_safe(ds_name)}-{_safe(config)}-{split}", lines()


def _resolve_corpus(corpus: str | os.PathLike) -> tuple[str, Iterator[str]]:
    if isinstance(corpus, os.PathLike) or (isinstance(corpus, str) and (os.sep in corpus or Path(corpus).exists())):
        return _read_local(Path(corpus).expanduser())
    if not isinstance(corpus, str):
        raise TypeError(f"corpus must be a path or a name, got {type(corpus).__name__}")
    if corpus == "wikitext-2":
        shared = shared_data_dir()
        local = shared / "wikitext-2-raw" / "wiki.test.raw" if shared else None
        if local is not None and local.is_file():
            _, lines = _read_local(local)
            return "wikitext-2-raw-test", lines
        return _read_hf(corpus)
    if corpus in HF_CORPORA:
        return _read_hf(corpus)
    raise ValueError(f"unknown corpus {corpus!r}: pass a text file or folder, or one of {BUILTIN_CORPORA}")


def _bos_id(tok) -> int | None:
    """The BOS id if this tokenizer puts one in front of every text, else None."""
    ids = tok("a").input_ids
    bos = getattr(tok, "bos_token_id", None)
    return bos if bos is not None and len(ids) > 0 and ids[0] == bos else None


def _token_stream(tok, lines: Iterable[str], need: int, block_chars: int = 20000) -> list[int]:
    """Tokenise text lines in blocks (without special tokens) until ``need`` tokens are there."""
    out: list[int] = []
    buf: list[str] = []
    size = 0

    def flush():
        nonlocal buf, size
        text = "".join(buf)
        buf, size = [], 0
        if text.strip():
            out.extend(tok(text, add_special_tokens=False).input_ids)

    for line in lines:
        if not line.strip():
            continue
        buf.append(line)
        size += len(line)
        if size >= block_chars:
            flush()
            if len(out) >= need:
                return out
    flush()
    return out


def _chunk(stream: list[int], n_tokens: int, seq_len: int, bos: int | None,
           pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a token stream into fixed-length rows; exactly ``n_tokens`` real positions (BOS included)."""
    ids, mask = [], []
    pos, left = 0, n_tokens
    while left > 0:
        take = min(seq_len, left)                      # real positions in this row
        n_text = take - (1 if bos is not None else 0)  # text tokens in this row
        row = ([bos] if bos is not None else []) + stream[pos:pos + n_text]
        pos += n_text
        ids.append(row + [pad_id] * (seq_len - len(row)))
        mask.append([1] * len(row) + [0] * (seq_len - len(row)))
        left -= len(row)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _model_sample_rows(model, tok, n_tokens: int, seq_len: int, seed: int, batch_size: int,
                       progress: bool) -> torch.Tensor:
    """Token rows sampled from the model itself (seeded; cached on disk)."""
    mid = model_id(model)
    n_rows = math.ceil(n_tokens / seq_len)
    path = cache_dir() / "corpora" / "model-samples" / mid / f"seed{seed}_len{seq_len}_rows{n_rows}.pt"
    if path.is_file():
        rows = torch.load(path, weights_only=True)
        if rows.shape == (n_rows, seq_len):
            return rows
    from tqdm.auto import tqdm

    from .keys import sample_from_model

    bos = _bos_id(tok)
    n_new = seq_len - 1 - (1 if bos is not None else 0)
    starters = ["The", "In", "A", "It", "He", "She", "This", "On", "After", "When"]
    g = torch.Generator().manual_seed(seed)
    rows = []
    bar = tqdm(total=n_rows, desc="sampling corpus from the model", disable=not progress)
    for k in range(0, n_rows, batch_size):
        b = min(batch_size, n_rows - k)
        pick = [starters[int(j)] for j in torch.randint(len(starters), (b,), generator=g)]
        for row in sample_from_model(model, tok, pick, n_new, seed=seed * 100_003 + k, top_k=None):
            rows.append(torch.tensor(([bos] if bos is not None else []) + row, dtype=torch.long))
        bar.update(b)
    bar.close()
    rows_t = torch.stack(rows)[:n_rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(rows_t, tmp)
    os.replace(tmp, path)
    return rows_t


def corpus_tokens(tok, corpus: str | os.PathLike, n_tokens: int, seq_len: int = 128, *, model=None,
                  seed: int = 0, batch_size: int = 16, progress: bool = True) -> tuple[str, torch.Tensor, torch.Tensor]:
    """``(corpus_id, input_ids, attention_mask)``: ``n_tokens`` real positions in rows of ``seq_len``.

    ``attention_mask.sum() == n_tokens`` exactly. ``corpus="model-samples"`` needs ``model=``.
    """
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive int, got {n_tokens!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an int ≥ 2, got {seq_len!r}")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    if corpus == "model-samples":
        if model is None:
            raise ValueError("corpus='model-samples' samples text from the model: pass model=")
        print(f"[alphaedit_lite.stats] NOTICE: corpus 'model-samples' is text generated by the model itself "
              f"(seed {seed}), not real text; use it only when no corpus is available offline.")
        rows = _model_sample_rows(model, tok, n_tokens, seq_len, seed, batch_size, progress)
        mask = torch.zeros_like(rows)
        flat = mask.view(-1)
        flat[:n_tokens] = 1
        ids = torch.where(mask.bool(), rows, torch.full_like(rows, pad_id))
        return f"model-samples-seed{seed}-L{seq_len}", ids, mask
    ident, lines = _resolve_corpus(corpus)
    bos = _bos_id(tok)
    stream = _token_stream(tok, lines, n_tokens)  # n_tokens text tokens always suffice
    rows_needed = math.ceil(n_tokens / seq_len)
    have = len(stream) + (rows_needed if bos is not None else 0)
    if have < n_tokens:
        raise ValueError(f"corpus {str(corpus)!r} yields only {len(stream)} tokens but n_tokens={n_tokens} were asked; "
                         f"lower n_tokens or give a larger corpus")
    ids, mask = _chunk(stream, n_tokens, seq_len, bos, pad_id)
    return f"{ident}-L{seq_len}", ids, mask


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def _check_layers(model, layers) -> list[int]:
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    try:
        layers = [int(x) for x in layers]
    except TypeError as e:
        raise TypeError(f"layers must be an int or a list of ints, got {layers!r}") from e
    n = num_layers(model)
    bad = [x for x in layers if not 0 <= x < n]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this model has {n} layers (0..{n - 1})")
    if not layers:
        raise ValueError("layers is empty; name at least one layer")
    return sorted(set(layers))


def _stats_device(model) -> torch.device:
    dev = next(model.parameters()).device
    return torch.device("cpu") if dev.type == "mps" else dev  # no float64 on MPS


def collect_second_moments(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int],
                           batch_size: int = 16, progress: bool = True, stop: bool = True,
                           desc: str = "key statistics") -> dict[int, SecondMoment]:
    """One forward pass per batch reading every layer's rewrite-module input; no caching.

    ``stop=False`` runs the full model (only for measuring what stopping early saves).
    """
    from tqdm.auto import tqdm

    spec = arch_spec(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}
    device = next(model.parameters()).device
    acc = {layer: SecondMoment(device=_stats_device(model)) for layer in layers}
    n_rows = input_ids.shape[0]
    with torch.no_grad():
        for start in tqdm(range(0, n_rows, batch_size), desc=desc, disable=not progress,
                          total=math.ceil(n_rows / batch_size)):
            ids = input_ids[start:start + batch_size].to(device)
            mask = attention_mask[start:start + batch_size].to(device)
            with TraceDict(model, list(names.values()), retain_input=True, retain_output=False, stop=stop) as tr:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            keep = mask.reshape(-1).bool()
            for layer, name in names.items():
                x = tr[name].input  # (b, seq, d_in): keys as rows
                acc[layer].update(x.reshape(-1, x.shape[-1])[keep])
    return acc


def layer_stats(model, tok, layers, corpus: str | os.PathLike = "wikitext-2", n_tokens: int = 100_000,
                seq_len: int = 128, *, batch_size: int = 16, seed: int = 0, cache: bool = True,
                force_recompute: bool = False, progress: bool = True) -> LayerStats:
    """K0 K0ᵀ statistics of the rewrite module of each layer in ``layers``, from ``corpus``.

    Returns a :class:`LayerStats` ``{layer: SecondMoment}`` with ``count == n_tokens`` each.
    Cached layers are loaded; the missing ones are computed together in one pass per batch.
    """
    layers = _check_layers(model, layers)
    spec = arch_spec(model)
    mid = model_id(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}

    # The corpus id is needed for the cache key; for model samples it is known without sampling.
    if corpus == "model-samples":
        corpus_id = f"model-samples-seed{seed}-L{seq_len}"
        ids = mask = None
    else:
        corpus_id, ids, mask = corpus_tokens(tok, corpus, n_tokens, seq_len, seed=seed, progress=progress)

    out: dict[int, SecondMoment] = {}
    missing = []
    for layer in layers:
        path = stats_cache_path(mid, names[layer], corpus_id, n_tokens)
        if cache and not force_recompute and path.is_file():
            sm = SecondMoment.load(path, device=_stats_device(model))
            if sm.dim == d_in and sm.count == n_tokens:
                out[layer] = sm
                continue
        missing.append(layer)
    if missing:
        if ids is None:
            corpus_id, ids, mask = corpus_tokens(tok, corpus, n_tokens, seq_len, model=model, seed=seed,
                                                 batch_size=batch_size, progress=progress)
        assert int(mask.sum()) == n_tokens
        t0 = time.perf_counter()
        acc = collect_second_moments(model, ids, mask, missing, batch_size=batch_size, progress=progress,
                                     desc=f"key statistics, layers {missing}")
        dt = time.perf_counter() - t0
        for layer in missing:
            if acc[layer].count != n_tokens:
                raise RuntimeError(f"counted {acc[layer].count} keys at layer {layer}, expected {n_tokens}")
            if cache:
                acc[layer].save(stats_cache_path(mid, names[layer], corpus_id, n_tokens))
            out[layer] = acc[layer]
        if progress:
            print(f"[alphaedit_lite.stats] {n_tokens} tokens of {corpus_id}, layers {missing}: {dt:.1f} s")
    return LayerStats({layer: out[layer] for layer in layers}, model_id=mid, corpus_id=corpus_id,
                      n_tokens=n_tokens, module_names=names)


# ------------------------------------------------------------------------------------------------
# Projectors
# ------------------------------------------------------------------------------------------------
_PROJ_MEMO: dict[tuple, Projector] = {}


def _projector_path(stats: LayerStats, layer: int, threshold: float, mode: str) -> Path:
    base = stats_cache_path(stats.model_id, stats.module_names[layer], stats.corpus_id, stats.n_tokens)
    return base.with_name(base.stem + f"_P-{mode}-{threshold:g}.pt")


def projectors(stats: dict[int, SecondMoment] | LayerStats, threshold: float = 2e-2, mode: str = "absolute",
               cache: bool = True) -> dict[int, Projector]:
    """AlphaEdit's null-space projector P (Eq. 7-8) for each layer of ``stats``.

    Cached in memory, and on disk next to the statistics when ``stats`` is a :class:`LayerStats`
    (``..._P-<mode>-<threshold>.pt``).
    """
    if not isinstance(stats, dict) or not stats:
        raise TypeError("stats must be a non-empty {layer: SecondMoment} dict (what layer_stats returns)")
    out = {}
    for layer, sm in stats.items():
        if not isinstance(sm, SecondMoment):
            raise TypeError(f"stats[{layer}] is a {type(sm).__name__}, expected a SecondMoment")
        if isinstance(stats, LayerStats):
            key = (stats.model_id, stats.module_names[layer], stats.corpus_id, stats.n_tokens, mode, float(threshold))
        else:
            key = ("anon", id(sm), sm.count, mode, float(threshold))
        if key in _PROJ_MEMO:
            out[layer] = _PROJ_MEMO[key]
            continue
        path = _projector_path(stats, layer, threshold, mode) if isinstance(stats, LayerStats) else None
        pj = None
        if cache and path is not None and path.is_file():
            blob = torch.load(path, weights_only=True)
            if blob.get("count") == sm.count:
                pj = Projector(**blob["projector"])
        if pj is None:
            pj = null_space_projector(sm.cov, threshold=threshold, mode=mode)
            if cache and path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save({"count": sm.count, "projector": {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                                              for k, v in asdict(pj).items()}}, tmp)
                os.replace(tmp, path)
        pj.P = pj.P.to(sm.device)
        _PROJ_MEMO[key] = pj
        out[layer] = pj
    return out


def clear_projector_memo() -> None:
    """Forget the in-memory projector cache (disk caches stay)."""
    _PROJ_MEMO.clear()

