"""Corpora for key statistics: text files, WikiText from the shared data or the hub, or the model's own samples.

Sources (``corpus=`` of :func:`alphaedit_lite.locate.stats.layer_stats` and :func:`corpus_tokens`):

* a path to a text file, or a folder (all ``*.txt`` / ``*.raw`` files, sorted);
* ``"wikitext-2"``: WikiText-2 raw test split from the shared data folder
  (:func:`alphaedit_lite.util.paths.shared_data_dir`) when present, else from the Hugging Face hub;
* ``"wikitext-103"``, ``"wikipedia"``: Hugging Face datasets (need ``pip install datasets`` and a
  network connection; a clear error says so otherwise);
* ``"model-samples"``: the offline fallback: text SAMPLED FROM THE MODEL ITSELF (seeded). It is
  labelled as such in the cache key (``model-samples-seed<k>``) and a notice is printed: these keys
  describe what the model likes to say, not real text.

The corpus is tokenised into ONE token stream and cut into fixed-length chunks of ``seq_len``
tokens (a tokenizer that adds a BOS token gets one at the start of every chunk); exactly
``n_tokens`` positions are used: the last chunk is padded and its padding masked out.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import torch

from alphaedit_lite.util.paths import cache_dir, shared_data_dir
from alphaedit_lite.locate.cache import CacheWarning, _safe, _torch_load, _Unusable, model_id
from alphaedit_lite.util.files import atomic_torch_save

__all__ = ["HF_CORPORA", "BUILTIN_CORPORA", "corpus_tokens"]


#: Hugging Face datasets the kit knows by a short name: (dataset, config, split, text field).
HF_CORPORA = {
    "wikitext-2": ("wikitext", "wikitext-2-raw-v1", "train", "text"),
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1", "train", "text"),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en", "train", "text"),
}


BUILTIN_CORPORA = ("model-samples", *HF_CORPORA)


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
        try:
            rows = _torch_load(path)
            if not isinstance(rows, torch.Tensor) or rows.shape != (n_rows, seq_len):
                raise _Unusable(f"does not hold {n_rows} rows of {seq_len} token ids")
            return rows
        except _Unusable as e:
            warnings.warn(f"model-samples corpus cache file {path} {e}. Not using it: it is sampled again "
                          f"and overwritten (if this repeats, delete the file).", CacheWarning, stacklevel=2)
    from tqdm.auto import tqdm

    from alphaedit_lite.locate.keys import sample_from_model

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
    atomic_torch_save(rows_t, path)
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
        print(f"[alphaedit_lite.locate.stats] NOTICE: corpus 'model-samples' is text generated by the model itself "
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
