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

Provenance (every cached file says what it is, and is checked before use):

* each statistics file holds, next to ``dim``/``count``/``sum`` (still readable by
  :meth:`SecondMoment.load`), a ``manifest``: the model fingerprint (:func:`model_id`), the module
  name, the corpus id, the token count, the dtype, the kit's version and the SHA-256 of the
  tensor content (:func:`second_moment_sha256`);
* each projector file holds the same plus the threshold, the mode and the SHA-256 of the
  statistics it was built from;
* on load the manifest must match what is asked for and the checksum must match the tensors.
  A file that cannot be read (e.g. truncated), has no manifest (written by an older version of
  the kit), or does not match is NOT used: a :class:`CacheWarning` names the file and it is
  rebuilt. A projector is therefore never taken from other statistics with the same count.

Sharing (:func:`export_stats`, :func:`import_stats`; ``alphaedit-lite stats --export/--import``):

* an export is ONE ``torch.save`` file with each layer's Σkkᵀ and count (optionally AlphaEdit's P
  for one threshold) and a manifest (fingerprint, layers, modules, corpus, token count, dtype,
  kit version, checksums);
* an import checks that the file was made for this model (fingerprint) and these layers, checks
  the checksums, and writes the statistics into the cache; afterwards the corpus id works as
  ``corpus=`` of :func:`layer_stats` (and ``--corpus`` of the command line) with the same token count;
* ROME/MEMIT key statistics (one ``.npz`` per layer, as ROME's ``layer_stats.py`` writes them with
  ``np.savez(file, **CombinedStat(mom2=SecondMoment()).state_dict())``) import too: ``mom2.mom2``
  is the running SUM Σkkᵀ and ``mom2.count`` the number of keys (ROME's ``moment()`` is their
  ratio), so the kit's C0 = sum / count is exactly what MEMIT's ``get_cov`` uses.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import time
import warnings
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from .covariance import SecondMoment
from .hooks import TraceDict
from .models import arch_spec, embed, mlp_width, num_layers
from .nullspace import Projector, null_space_projector
from .paths import cache_dir, shared_data_dir

__all__ = [
    "LayerStats", "model_id", "corpus_tokens", "layer_stats", "stats_cache_path", "projectors",
    "HF_CORPORA", "BUILTIN_CORPORA", "CacheWarning", "tensor_sha256", "second_moment_sha256",
    "read_stats_file", "write_stats_file", "export_stats", "import_stats", "import_rome_npz",
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
# Provenance: manifests, checksums and verified reads of cached files
# ------------------------------------------------------------------------------------------------
STATS_FORMAT = "alphaedit-lite/second-moment/v1"   # the SecondMoment.save layout; the manifest rides along
PROJECTOR_FORMAT = "alphaedit-lite/projector/v2"     # v1 (count + projector, no manifest) is rebuilt
EXPORT_FORMAT = "alphaedit-lite/stats-export/v1"
MANIFEST_VERSION = 1


class CacheWarning(UserWarning):
    """A cached file was not used (damaged, written by an older kit, or made from other inputs); it is rebuilt."""


class _Unusable(Exception):
    """Why a cached or shared file cannot be used; becomes a CacheWarning (caches) or a ValueError (imports)."""


def _kit_version() -> str:
    from . import __version__
    return __version__


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """SHA-256 over the dtype, shape and bytes of each tensor (read on the CPU), in order."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


#: second_moment_sha256's memo: {SecondMoment: (sum tensor, its version counter, count, digest)}
_SM_DIGEST: "weakref.WeakKeyDictionary[SecondMoment, tuple]" = weakref.WeakKeyDictionary()


def second_moment_sha256(sm: SecondMoment) -> str:
    """SHA-256 of a SecondMoment's content, its float64 sum Σkkᵀ and its count.

    Remembered per object until the sum changes (in place or replaced), so repeated calls are free.
    """
    s = sm.sum
    memo = _SM_DIGEST.get(sm)
    if memo is not None and memo[0] is s and memo[1] == s._version and memo[2] == sm.count:
        return memo[3]
    digest = hashlib.sha256(f"{tensor_sha256(s.to(torch.float64))};count={sm.count}".encode()).hexdigest()
    _SM_DIGEST[sm] = (s, s._version, sm.count, digest)
    return digest


def _projector_sha256(pj: Projector) -> str:
    scalars = f"{pj.kept_rank};{pj.cutoff!r};{pj.mode};{pj.threshold!r}"
    return hashlib.sha256(f"{tensor_sha256(pj.P, pj.basis, pj.eigenvalues)};{scalars}".encode()).hexdigest()


def _projector_fields(pj: Projector) -> dict:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in asdict(pj).items()}


def _stats_manifest(sm: SecondMoment, *, model_id: str, module: str, corpus_id: str, n_tokens: int,
                    **extra: Any) -> dict:
    return {"kind": "key-statistics", "manifest_version": MANIFEST_VERSION, "model_id": model_id,
            "module": module, "corpus_id": corpus_id, "n_tokens": int(n_tokens), "count": int(sm.count),
            "dim": int(sm.dim), "dtype": "float64", "kit_version": _kit_version(),
            "sha256": second_moment_sha256(sm), "created": _now(), **extra}


def _projector_manifest(pj: Projector, *, model_id: str, module: str, corpus_id: str, n_tokens: int,
                        stats_sha256: str, **extra: Any) -> dict:
    return {"kind": "projector", "manifest_version": MANIFEST_VERSION, "model_id": model_id, "module": module,
            "corpus_id": corpus_id, "n_tokens": int(n_tokens), "dim": int(pj.P.shape[0]),
            "dtype": str(pj.P.dtype).removeprefix("torch."), "threshold": float(pj.threshold), "mode": pj.mode,
            "kept_rank": int(pj.kept_rank), "stats_sha256": stats_sha256, "kit_version": _kit_version(),
            "sha256": _projector_sha256(pj), "created": _now(), **extra}


def _atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` into a temporary file in the same folder, renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file raises many different exception types
        msg = " ".join(str(e).split())[:200]
        raise _Unusable(f"cannot be read ({type(e).__name__}: {msg}): it is damaged or truncated") from e


def _check_manifest(man: Any, expect: dict) -> None:
    if not isinstance(man, dict):
        raise _Unusable("has no provenance manifest (it was written by an older version of the kit)")
    for key, want in expect.items():
        if man.get(key) != want:
            raise _Unusable(f"was made for {key}={man.get(key)!r}, not {want!r}")


def write_stats_file(path: str | os.PathLike, sm: SecondMoment, manifest: dict) -> Path:
    """Write ``sm`` with its provenance ``manifest`` atomically; :meth:`SecondMoment.load` reads it too."""
    blob = {"format": STATS_FORMAT, "dim": sm.dim, "count": sm.count, "sum": sm.sum.detach().cpu(),
            "manifest": dict(manifest)}
    return _atomic_torch_save(blob, Path(path))


def _read_stats(path: Path, expect: dict, device: str | torch.device = "cpu") -> SecondMoment:
    blob = _torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != STATS_FORMAT:
        raise _Unusable("is not a key-statistics file of alphaedit-lite")
    man = blob.get("manifest")
    _check_manifest(man, {"kind": "key-statistics", **expect})
    s, dim, count = blob.get("sum"), man.get("dim"), blob.get("count")
    if not (isinstance(s, torch.Tensor) and s.dtype == torch.float64 and tuple(s.shape) == (dim, dim)
            and blob.get("dim") == dim and isinstance(count, int) and count == man.get("count") and count > 0):
        raise _Unusable("does not hold what its manifest describes (shape, dtype or count differ)")
    sm = SecondMoment(device="cpu")
    sm.dim, sm.count, sm._sum = int(dim), int(count), s
    if second_moment_sha256(sm) != man.get("sha256"):
        raise _Unusable("does not match its SHA-256 checksum: its content was changed or damaged")
    if torch.device(device) != sm.device:
        sm.device, sm._sum = torch.device(device), s.to(device)
    return sm


def load_cached_stats(model, module: str, corpus_id: str, n_tokens: int) -> SecondMoment | None:
    """The cached statistics of ``module`` over ``corpus_id`` (``n_tokens`` keys), checked against their
    manifest; None when there are none or (with a :class:`CacheWarning` naming the file) they are unusable."""
    mid = model_id(model)
    d_in = mlp_width(model)                  # the rewrite module's input: the MLP's width
    path = stats_cache_path(mid, module, corpus_id, n_tokens)
    return _load_or_warn(path, "key-statistics",
                         lambda p: _read_stats(p, _stats_expect(mid, module, corpus_id, n_tokens, d_in),
                                               _stats_device(model)))


def save_cached_stats(model, module: str, corpus_id: str, n_tokens: int, sm: SecondMoment) -> Path:
    """Cache ``sm`` (the statistics of ``module`` over ``corpus_id``) with its provenance manifest."""
    mid = model_id(model)
    return write_stats_file(stats_cache_path(mid, module, corpus_id, n_tokens), sm,
                            _stats_manifest(sm, model_id=mid, module=module, corpus_id=corpus_id,
                                            n_tokens=n_tokens, model_dtype=_dtype_name(model)))


def read_stats_file(path: str | os.PathLike, expect: dict | None = None,
                    device: str | torch.device = "cpu") -> SecondMoment:
    """Read a statistics file written by :func:`write_stats_file`, checking its manifest and checksum.

    ``expect`` names manifest fields and the values they must have (``model_id``, ``module``,
    ``corpus_id``, ``n_tokens``, ``dim``, ...). Raises ``ValueError`` naming the file otherwise.
    """
    path = Path(path)
    try:
        return _read_stats(path, dict(expect or {}), device)
    except _Unusable as e:
        raise ValueError(f"key-statistics file {path} {e}; delete it and compute the statistics again") from None


def _write_projector(path: Path, pj: Projector, manifest: dict) -> Path:
    return _atomic_torch_save({"format": PROJECTOR_FORMAT, "projector": _projector_fields(pj),
                               "manifest": dict(manifest)}, path)


def _read_projector(path: Path, expect: dict, dim: int) -> Projector:
    blob = _torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != PROJECTOR_FORMAT:
        raise _Unusable("is not a projector file of this version of alphaedit-lite")
    man = blob.get("manifest")
    _check_manifest(man, {"kind": "projector", **expect})
    try:
        pj = Projector(**blob["projector"])
    except (KeyError, TypeError) as e:
        raise _Unusable(f"does not hold a projector ({e})") from None
    tensors = (pj.P, pj.basis, pj.eigenvalues)
    if not (all(isinstance(t, torch.Tensor) for t in tensors) and tuple(pj.P.shape) == (dim, dim)
            and tuple(pj.basis.shape) == (dim, pj.kept_rank) and tuple(pj.eigenvalues.shape) == (dim,)):
        raise _Unusable("does not hold what its manifest describes (shapes differ)")
    if _projector_sha256(pj) != man.get("sha256"):
        raise _Unusable("does not match its SHA-256 checksum: its content was changed or damaged")
    return pj


_REBUILT = "it is rebuilt now and overwritten (if this repeats, delete the file)"


def _load_or_warn(path: Path, what: str, read: Callable[[Path], Any], then: str = _REBUILT) -> Any:
    """``read(path)``; None when there is no file, or (with a :class:`CacheWarning` naming it) when it is unusable."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except _Unusable as e:
        warnings.warn(f"{what} cache file {path} {e}. Not using it: {then}.", CacheWarning, stacklevel=3)
        return None


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
        try:
            rows = _torch_load(path)
            if not isinstance(rows, torch.Tensor) or rows.shape != (n_rows, seq_len):
                raise _Unusable(f"does not hold {n_rows} rows of {seq_len} token ids")
            return rows
        except _Unusable as e:
            warnings.warn(f"model-samples corpus cache file {path} {e}. Not using it: it is sampled again "
                          f"and overwritten (if this repeats, delete the file).", CacheWarning, stacklevel=2)
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
    _atomic_torch_save(rows_t, path)
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
                # float64 batch products: float32 ones (SecondMoment.update's batch_dtype) are 1.6x faster but
                # left a 768-token, rank-deficient C with an eigenvalue of -3.8e-8, which the PSD check refuses
                acc[layer].update(x.reshape(-1, x.shape[-1])[keep])
    return acc


def layer_stats(model, tok, layers, corpus: str | os.PathLike = "wikitext-2", n_tokens: int = 100_000,
                seq_len: int = 128, *, batch_size: int = 16, seed: int = 0, cache: bool = True,
                force_recompute: bool = False, progress: bool = True) -> LayerStats:
    """K0 K0ᵀ statistics of the rewrite module of each layer in ``layers``, from ``corpus``.

    Returns a :class:`LayerStats` ``{layer: SecondMoment}`` with ``count == n_tokens`` each.
    Cached layers are loaded after checking their manifest and checksum (an unusable file is
    recomputed, with a :class:`CacheWarning` naming it); the missing ones are computed together in
    one pass per batch. ``corpus`` may also be the corpus id of statistics already in the cache
    (e.g. imported with :func:`import_stats`): they are then only loaded, never computed.
    """
    layers = _check_layers(model, layers)
    spec = arch_spec(model)
    mid = model_id(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}
    if _is_cached_corpus_id(corpus):
        if force_recompute:
            raise ValueError(f"corpus {corpus!r} is not a text source but the id of cached statistics, which cannot be "
                             f"recomputed; pass the text file or built-in corpus they came from to recompute them")
        return _cached_layer_stats(model, layers, corpus, n_tokens)

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
        if cache and not force_recompute:
            sm = _load_or_warn(path, "key-statistics",
                               lambda p: _read_stats(p, _stats_expect(mid, names[layer], corpus_id, n_tokens, d_in),
                                                     _stats_device(model)))
            if sm is not None:
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
                write_stats_file(stats_cache_path(mid, names[layer], corpus_id, n_tokens), acc[layer],
                                 _stats_manifest(acc[layer], model_id=mid, module=names[layer], corpus_id=corpus_id,
                                                 n_tokens=n_tokens, model_dtype=_dtype_name(model)))
            out[layer] = acc[layer]
        if progress:
            print(f"[alphaedit_lite.stats] {n_tokens} tokens of {corpus_id}, layers {missing}: {dt:.1f} s")
    return LayerStats({layer: out[layer] for layer in layers}, model_id=mid, corpus_id=corpus_id,
                      n_tokens=n_tokens, module_names=names)


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _stats_expect(mid: str, module: str, corpus_id: str, n_tokens: int, dim: int) -> dict:
    """The manifest fields a cached statistics file must have to be used for this request."""
    return {"model_id": mid, "module": module, "corpus_id": corpus_id, "n_tokens": int(n_tokens),
            "count": int(n_tokens), "dim": int(dim), "dtype": "float64"}


def _is_cached_corpus_id(corpus) -> bool:
    """True for a string that names no corpus the kit can read: it can only be the id of cached statistics."""
    return (isinstance(corpus, str) and corpus not in BUILTIN_CORPORA and os.sep not in corpus
            and not Path(corpus).expanduser().exists())


def _cached_token_counts(mid: str, module: str, corpus_id: str) -> list[int]:
    folder = cache_dir() / "stats" / mid / _safe(module)
    pat = re.compile(re.escape(_safe(corpus_id)) + r"_(\d+)\.pt")
    return sorted(int(m.group(1)) for f in (folder.glob("*.pt") if folder.is_dir() else [])
                  if (m := pat.fullmatch(f.name)))


def _cached_layer_stats(model, layers: list[int], corpus_id: str, n_tokens: int) -> LayerStats:
    """Statistics under a corpus id that only the cache knows (imported ones): load, never compute."""
    spec = arch_spec(model)
    mid = model_id(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}
    out = {}
    for layer in layers:
        path = stats_cache_path(mid, names[layer], corpus_id, n_tokens)
        sm = _load_or_warn(path, "key-statistics",
                           lambda p: _read_stats(p, _stats_expect(mid, names[layer], corpus_id, n_tokens, d_in),
                                                 _stats_device(model)),
                           then="it cannot be rebuilt from a corpus id: import the statistics again")
        if sm is not None:
            out[layer] = sm
    missing = [layer for layer in layers if layer not in out]
    damaged = [layer for layer in missing if stats_cache_path(mid, names[layer], corpus_id, n_tokens).is_file()]
    if damaged:
        raise ValueError(f"the cached statistics of layers {damaged} under corpus id {corpus_id!r} with "
                         f"n_tokens={n_tokens} are unusable (see the warning naming each file) and cannot be "
                         f"recomputed from a corpus id; import them again (alphaedit-lite stats --import FILE)")
    if missing:
        have = {layer: _cached_token_counts(mid, names[layer], corpus_id) for layer in layers}
        if not any(have.values()):
            raise ValueError(f"unknown corpus {corpus_id!r}: it is not a file or folder, not one of {BUILTIN_CORPORA}, "
                             f"and no statistics of this model are cached under this corpus id. Pass a text file or "
                             f"folder or a built-in corpus, or import shared statistics first "
                             f"(alphaedit-lite stats --import FILE)")
        raise ValueError(f"corpus {corpus_id!r} is the id of cached statistics, which can only be loaded, not "
                         f"computed; layers {missing} have none with n_tokens={n_tokens} (cached token counts per "
                         f"layer: {have}). Use those layers and token counts, or import statistics for them")
    return LayerStats({layer: out[layer] for layer in layers}, model_id=mid, corpus_id=corpus_id,
                      n_tokens=n_tokens, module_names=names)


# ------------------------------------------------------------------------------------------------
# Projectors
# ------------------------------------------------------------------------------------------------
#: In-memory projectors, keyed by the CONTENT of the statistics (their SHA-256), the mode and the threshold.
_PROJ_MEMO: dict[tuple, Projector] = {}


def _projector_path(stats: LayerStats, layer: int, threshold: float, mode: str) -> Path:
    base = stats_cache_path(stats.model_id, stats.module_names[layer], stats.corpus_id, stats.n_tokens)
    return base.with_name(base.stem + f"_P-{mode}-{threshold:g}.pt")


def _projector_expect(stats: LayerStats, layer: int, threshold: float, mode: str, stats_sha: str, dim: int) -> dict:
    return {"model_id": stats.model_id, "module": stats.module_names[layer], "corpus_id": stats.corpus_id,
            "n_tokens": int(stats.n_tokens), "dim": int(dim), "threshold": float(threshold), "mode": mode,
            "stats_sha256": stats_sha}


def projectors(stats: dict[int, SecondMoment] | LayerStats, threshold: float = 2e-2, mode: str = "absolute",
               cache: bool = True) -> dict[int, Projector]:
    """AlphaEdit's null-space projector P (Eq. 7-8) for each layer of ``stats``.

    Cached in memory, and on disk next to the statistics when ``stats`` is a :class:`LayerStats`
    (``..._P-<mode>-<threshold>.pt``). A cached P is used only if its manifest names these
    statistics (their SHA-256), this threshold and mode, and its checksum matches; otherwise it is
    rebuilt, with a :class:`CacheWarning` naming the file.
    """
    if not isinstance(stats, dict) or not stats:
        raise TypeError("stats must be a non-empty {layer: SecondMoment} dict (what layer_stats returns)")
    out = {}
    for layer, sm in stats.items():
        if not isinstance(sm, SecondMoment):
            raise TypeError(f"stats[{layer}] is a {type(sm).__name__}, expected a SecondMoment")
        stats_sha = second_moment_sha256(sm)
        key = (stats_sha, mode, float(threshold))
        pj = _PROJ_MEMO.get(key)
        if pj is None:
            path = _projector_path(stats, layer, threshold, mode) if isinstance(stats, LayerStats) else None
            if cache and path is not None:
                expect = _projector_expect(stats, layer, threshold, mode, stats_sha, sm.dim)
                pj = _load_or_warn(path, "projector", lambda p: _read_projector(p, expect, sm.dim))
            if pj is None:
                pj = null_space_projector(sm.cov, threshold=threshold, mode=mode)
                if cache and path is not None:
                    _write_projector(path, pj, _projector_manifest(
                        pj, model_id=stats.model_id, module=stats.module_names[layer], corpus_id=stats.corpus_id,
                        n_tokens=stats.n_tokens, stats_sha256=stats_sha))
            _PROJ_MEMO[key] = pj
        pj.P = pj.P.to(sm.device)
        out[layer] = pj
    return out


def clear_projector_memo() -> None:
    """Forget the in-memory projector cache (disk caches stay)."""
    _PROJ_MEMO.clear()



# ------------------------------------------------------------------------------------------------
# Statistics (and P) as files to share
# ------------------------------------------------------------------------------------------------
def _fingerprint(mid: str) -> str:
    """The hash part of a :func:`model_id` (the name part depends on where the model was loaded from)."""
    return mid.rsplit("-", 1)[-1]


def _export_checksum(stats_sha: dict, projector_sha: dict) -> str:
    import json

    return hashlib.sha256(json.dumps({"stats": stats_sha, "projectors": projector_sha}, sort_keys=True).encode()
                          ).hexdigest()


def export_stats(path: str | os.PathLike, stats: LayerStats, *, threshold: float | None = None,
                 mode: str = "absolute") -> Path:
    """Write ``stats`` into ONE file to share; with ``threshold``, AlphaEdit's P of each layer too.

    The file is a ``torch.save`` dict (read it with :func:`import_stats`):

    * ``format``: ``"alphaedit-lite/stats-export/v1"``;
    * ``manifest``: ``model_id`` and its ``fingerprint``, ``layers``, ``modules`` (layer → rewrite
      module name), ``corpus_id``, ``n_tokens``, ``dim``, ``dtype``, ``kit_version``, ``created``,
      ``projector`` (``{"threshold", "mode"}`` or None), ``sha256`` (per layer, of the statistics and
      of each P) and ``checksum`` (over all of those);
    * ``stats``: ``{"<layer>": {"sum": Σkkᵀ (d, d) float64, "count": n}}`` (C0 = sum / count);
    * ``projectors``: ``{"<layer>": the Projector's fields}`` (empty without ``threshold``).
    """
    if not isinstance(stats, LayerStats):
        raise TypeError("stats must be the LayerStats that layer_stats returns (it names the model, corpus and "
                        f"token count the file must record), got {type(stats).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name for the export, e.g. {path / 'key_stats.pt'}")
    layers = sorted(stats)
    pjs = projectors(stats, threshold, mode) if threshold is not None else {}
    stats_sha = {str(layer): second_moment_sha256(stats[layer]) for layer in layers}
    projector_sha = {str(layer): _projector_sha256(pjs[layer]) for layer in sorted(pjs)}
    manifest = {
        "kind": "key-statistics-export", "manifest_version": MANIFEST_VERSION,
        "model_id": stats.model_id, "fingerprint": _fingerprint(stats.model_id), "layers": layers,
        "modules": {str(layer): stats.module_names[layer] for layer in layers},
        "corpus_id": stats.corpus_id, "n_tokens": stats.n_tokens, "dim": int(stats[layers[0]].dim),
        "dtype": "float64", "kit_version": _kit_version(), "created": _now(),
        "projector": None if threshold is None else {"threshold": float(threshold), "mode": mode},
        "sha256": {"stats": stats_sha, "projectors": projector_sha},
        "checksum": _export_checksum(stats_sha, projector_sha),
    }
    blob = {"format": EXPORT_FORMAT, "manifest": manifest,
            "stats": {str(layer): {"sum": stats[layer].sum.detach().cpu(), "count": int(stats[layer].count)}
                      for layer in layers},
            "projectors": {str(layer): _projector_fields(pjs[layer]) for layer in sorted(pjs)}}
    return _atomic_torch_save(blob, path)


def _store_imported(st: LayerStats, pjs: dict[int, Projector], source: dict) -> None:
    """Write imported statistics (and projectors) into the cache, each with its manifest."""
    for layer, sm in st.items():
        write_stats_file(stats_cache_path(st.model_id, st.module_names[layer], st.corpus_id, st.n_tokens), sm,
                         _stats_manifest(sm, model_id=st.model_id, module=st.module_names[layer],
                                         corpus_id=st.corpus_id, n_tokens=st.n_tokens, **source))
    for layer, pj in pjs.items():
        _write_projector(_projector_path(st, layer, pj.threshold, pj.mode), pj, _projector_manifest(
            pj, model_id=st.model_id, module=st.module_names[layer], corpus_id=st.corpus_id, n_tokens=st.n_tokens,
            stats_sha256=second_moment_sha256(st[layer]), **source))


def import_stats(path: str | os.PathLike, model, layers=None, *, corpus_id: str | None = None,
                 layer: int | None = None, cache: bool = True) -> LayerStats:
    """Load shared key statistics into the kit's cache after checking they were made for ``model``.

    ``path`` is a file written by :func:`export_stats` (``alphaedit-lite stats --export``), or a
    ROME/MEMIT ``.npz`` (one layer; see :func:`import_rome_npz`, which gets ``layer`` and ``corpus_id``).
    For an export, the file's model fingerprint must be this model's, it must hold every layer in
    ``layers`` (default: all it holds) with this model's rewrite-module names and key dimension, and
    every checksum must match; otherwise ``ValueError`` says what is wrong. The statistics (and
    projectors, if the file has them) are written into the cache under the file's corpus id (or
    ``corpus_id``) and token count, where :func:`layer_stats` and :func:`projectors` find them.
    Returns the imported :class:`LayerStats`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"statistics file {path} does not exist; give a file written by "
                         f"`alphaedit-lite stats ... --export FILE`, or a ROME/MEMIT .npz file")
    if path.suffix == ".npz":
        if layers is not None:
            only = _check_layers(model, layers)
            if len(only) != 1 or (layer is not None and only != [layer]):
                raise ValueError(f"{path} is a ROME/MEMIT .npz, which holds ONE layer; name one layer, not {only}")
            layer = only[0]
        return import_rome_npz(path, model, layer, corpus_id=corpus_id, cache=cache)
    try:
        blob = _torch_load(path)
    except _Unusable as e:
        raise ValueError(f"statistics file {path} {e}; copy or export it again") from None
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a statistics export of alphaedit-lite; make one with "
                         f"`alphaedit-lite stats ... --export FILE`, or import a ROME/MEMIT .npz")
    try:
        return _import_export_blob(path, blob, model, layers, corpus_id, cache)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is incomplete ({type(e).__name__}: {e}): it is damaged or was edited by hand; "
                         f"export it again") from None


def _import_export_blob(path: Path, blob: dict, model, layers, corpus_id: str | None, cache: bool) -> LayerStats:
    man = blob["manifest"]
    mid = model_id(model)
    if man["fingerprint"] != _fingerprint(mid):
        raise ValueError(f"{path} was made for the model {man['model_id']!r}, not this one ({mid!r}): their "
                         f"fingerprints differ. Statistics of another model give a wrong projector; import the file "
                         f"into the model it was made for, or compute statistics for this one (alphaedit-lite stats)")
    have = sorted(int(x) for x in man["layers"])
    want = have if layers is None else _check_layers(model, layers)
    if set(want) - set(have):
        raise ValueError(f"{path} holds the statistics of layers {have}, not of {sorted(set(want) - set(have))}; "
                         f"ask for layers among {have}, or export those layers too (alphaedit-lite stats --layers ...)")
    spec = arch_spec(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in want}
    for layer in want:
        if man["modules"][str(layer)] != names[layer]:
            raise ValueError(f"{path} holds layer {layer}'s statistics of module {man['modules'][str(layer)]!r}, but "
                             f"this model's rewrite module is {names[layer]!r}: it was made for another architecture")
    if man["dim"] != d_in:
        raise ValueError(f"{path} holds keys of dimension {man['dim']}, but this model's keys have d_ff = {d_in}: "
                         f"it was made for another model")
    sha = man["sha256"]
    damaged = (f"{path} is damaged: its content does not match its SHA-256 checksums; copy or export it again")
    if _export_checksum(sha["stats"], sha["projectors"]) != man["checksum"]:
        raise ValueError(damaged)
    n_tokens = int(man["n_tokens"])
    out = {}
    for layer in want:
        entry = blob["stats"][str(layer)]
        s, count = entry["sum"], entry["count"]
        if not (isinstance(s, torch.Tensor) and s.dtype == torch.float64 and tuple(s.shape) == (d_in, d_in)
                and count == n_tokens):
            raise ValueError(damaged)
        sm = SecondMoment()
        sm.dim, sm.count, sm._sum = d_in, int(count), s
        if second_moment_sha256(sm) != sha["stats"][str(layer)]:
            raise ValueError(damaged)
        out[layer] = sm
    pjs = {}
    for key, fields in blob["projectors"].items():
        if int(key) not in out:
            continue
        pj = Projector(**fields)
        if tuple(pj.P.shape) != (d_in, d_in) or _projector_sha256(pj) != sha["projectors"][key]:
            raise ValueError(damaged)
        pjs[int(key)] = pj
    st = LayerStats(out, model_id=mid, corpus_id=corpus_id or man["corpus_id"], n_tokens=n_tokens, module_names=names)
    if cache:
        _store_imported(st, pjs, {"imported_from": str(path), "source_model_id": man["model_id"],
                                  "source_kit_version": man.get("kit_version")})
    return st


def _layer_from_file_name(model, name: str) -> int | None:
    """The layer a ROME/MEMIT statistics file name names: its rewrite-module name, else ``layer-<i>``."""
    spec = arch_spec(model)
    hits = [i for i in range(num_layers(model)) if spec.rewrite_name(i) in name]
    if len(hits) == 1:
        return hits[0]
    m = re.search(r"(?:^|[^A-Za-z])layers?[-_.]?(\d+)(?!\d)", name)
    return int(m.group(1)) if m and not hits else None


def import_rome_npz(path: str | os.PathLike, model, layer: int | None = None, *, corpus_id: str | None = None,
                    cache: bool = True) -> LayerStats:
    """Import one layer's key statistics from a ROME/MEMIT ``.npz`` into the kit's cache.

    ROME's ``layer_stats.py`` saves ``CombinedStat(mom2=SecondMoment()).state_dict()`` with
    ``np.savez``: ``mom2.mom2`` is the running SUM Σkkᵀ (d × d) and ``mom2.count`` the number of
    keys n (ROME's ``moment()``, which MEMIT's ``get_cov`` uses, is their ratio); ``mean.*`` arrays,
    if any, are ignored (C0 is the uncentred second moment). The kit's C0 = Σkkᵀ / n.

    ``layer`` defaults to the one the file name names (ROME names files after the module, e.g.
    ``model.layers.5.mlp.down_proj_float32_mom2_100000.npz``; ``layer-5.npz`` works too).
    ``corpus_id`` defaults to ``rome-<dataset>`` for a file in a ``<dataset>_stats`` folder (ROME's
    layout), else ``rome-import``; the token count is n. These files carry no model fingerprint:
    what is checked is the key dimension (this model's d_ff) and the module name in the file name.
    """
    import numpy as np

    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            arrays = {k: np.asarray(z[k]) for k in ("mom2.mom2", "mom2.count") if k in files}
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a damaged or foreign file
        raise ValueError(f"{path} cannot be read as an .npz file ({type(e).__name__}: {e}); it is damaged or "
                         f"not a ROME/MEMIT statistics file") from None
    if len(arrays) < 2:
        raise ValueError(f"{path} has no 'mom2.mom2' and 'mom2.count' arrays (it holds {files}); ROME/MEMIT key "
                         f"statistics are collected with to_collect=['mom2']")
    S, n = arrays["mom2.mom2"], arrays["mom2.count"]
    if n.size != 1 or not np.issubdtype(n.dtype, np.number) or float(n.reshape(-1)[0]) != int(n.reshape(-1)[0]) \
            or int(n.reshape(-1)[0]) < 1:
        raise ValueError(f"{path}: 'mom2.count' must be one positive whole number (the number of keys), got {n!r}")
    count = int(n.reshape(-1)[0])
    d_in = mlp_width(model)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or not np.issubdtype(S.dtype, np.floating):
        raise ValueError(f"{path}: 'mom2.mom2' must be a square float matrix Σkkᵀ, got shape {S.shape} {S.dtype}")
    if S.shape[0] != d_in:
        raise ValueError(f"{path} holds {S.shape[0]}×{S.shape[0]} statistics, but this model's keys have d_ff = "
                         f"{d_in}: it was made for another model")
    S64 = torch.from_numpy(S.astype(np.float64, copy=True))
    scale = float(S64.abs().max()) if S64.numel() else 0.0
    if not bool(torch.isfinite(S64).all()) or float((S64 - S64.T).abs().max()) > 1e-4 * max(scale, 1e-30) \
            or float(S64.diagonal().min()) < 0:
        raise ValueError(f"{path}: 'mom2.mom2' is not a finite, symmetric matrix with a non-negative diagonal, so it "
                         f"is no sum of k kᵀ; the file is damaged")
    named = _layer_from_file_name(model, path.name)
    if layer is None:
        if named is None:
            raise ValueError(f"cannot tell which layer {path} holds from its name; pass layer= "
                             f"(on the command line: --layers, one per file)")
        layer = named
    layer = _check_layers(model, [layer])[0]
    if named is not None and named != layer:
        raise ValueError(f"the file name {path.name!r} names layer {named}, but layer {layer} was asked for; "
                         f"check which file belongs to which layer")
    if corpus_id is None:
        parent = path.parent.name
        corpus_id = f"rome-{_safe(parent[:-len('_stats')])}" if parent.endswith("_stats") and parent != "_stats" \
            else "rome-import"
    sm = SecondMoment()
    sm.dim, sm.count, sm._sum = d_in, count, S64
    st = LayerStats({layer: sm}, model_id=model_id(model), corpus_id=corpus_id, n_tokens=count,
                    module_names={layer: arch_spec(model).rewrite_name(layer)})
    if cache:
        _store_imported(st, {}, {"imported_from": str(path), "source": "rome-npz", "source_dtype": str(S.dtype)})
    return st
