"""Key statistics of real models: C0 = K0 K0ᵀ / n of every edited layer's rewrite module, from a corpus.

MEMIT (Meng et al. 2023, Eq. 14, the λ C0 term) and AlphaEdit (Fang et al., ICLR 2025, Eq. 8-9,
the null-space projector P built from K0 K0ᵀ) both need the second moment of the keys k (the
inputs of the MLP output projection, d_in = d_ff) over text that stands for "knowledge to keep".

How the statistics are collected (:func:`layer_stats`):

* the corpus is tokenised into ONE token stream and cut into fixed-length chunks of ``seq_len``
  tokens (a tokenizer that adds a BOS token gets one at the start of every chunk); exactly
  ``n_tokens`` positions are used: the last chunk is padded and its padding masked out, so
  ``SecondMoment.count == n_tokens``;
* ALL requested layers are read in ONE forward pass per batch (a :class:`~alphaedit_lite.model.hooks.TraceDict`
  retaining the input of every layer's rewrite module), and the pass stops right after the last
  (deepest) requested rewrite module: layers above it, the final norm and the unembedding are never run;
* everything runs under ``torch.no_grad()``, with a tqdm progress bar;
* results are cached per layer with :meth:`SecondMoment.save` under
  ``cache_dir()/stats/<model-id>/<rewrite-module-name>/<corpus-id>_<n_tokens>.pt``.

:func:`projectors` turns statistics into AlphaEdit's projectors (one per layer), cached as well.

Where the rest lives: corpora (files, WikiText, hub datasets, model samples) in
:mod:`alphaedit_lite.locate.corpus`; cache identities, manifests and verified reads in
:mod:`alphaedit_lite.locate.cache`; export/import of statistics (and ROME/MEMIT ``.npz``) in
:mod:`alphaedit_lite.locate.share`.
"""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import torch

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.model.hooks import TraceDict
from alphaedit_lite.model.arch import arch_spec, check_layers, mlp_width
from alphaedit_lite.core.nullspace import Projector, null_space_projector
from alphaedit_lite.util.device import resolve_compute_dtype
from alphaedit_lite.util.paths import cache_dir
from alphaedit_lite.locate.cache import (_load_or_warn, _projector_manifest, _read_projector, _read_stats, _safe,
                                         _dtype_name, _stats_expect, _stats_manifest, _write_projector, model_id,
                                         second_moment_sha256, stats_cache_path, write_stats_file)
from alphaedit_lite.locate.corpus import BUILTIN_CORPORA, corpus_tokens

__all__ = ["LayerStats", "collect_second_moments", "growing_second_moments", "layer_stats", "projectors", "clear_projector_memo",
           "load_cached_stats", "save_cached_stats"]

class LayerStats(dict):
    """``{layer: SecondMoment}`` plus where it came from (used for cache keys and messages)."""

    def __init__(self, data: dict[int, SecondMoment], *, model_id: str, corpus_id: str, n_tokens: int,
                 module_names: dict[int, str], forward_dtype: str = "float32"):
        super().__init__(data)
        self.model_id = model_id
        self.corpus_id = corpus_id
        self.n_tokens = int(n_tokens)
        self.module_names = dict(module_names)
        self.forward_dtype = forward_dtype      # "bfloat16": the keys came from a bf16-autocast forward pass

    def cov(self, layer: int) -> torch.Tensor:
        """C0 = K0 K0ᵀ / n of ``layer`` (float64, (d_in, d_in))."""
        if layer not in self:
            raise ValueError(f"no statistics for layer {layer}; these statistics hold layers {sorted(self)}")
        return self[layer].cov

    def subset(self, layers) -> "LayerStats":
        """The statistics of ``layers`` only, with the same provenance (so projectors are cached on disk)."""
        return LayerStats({x: self[x] for x in layers}, model_id=self.model_id, corpus_id=self.corpus_id,
                          n_tokens=self.n_tokens, module_names={x: self.module_names[x] for x in layers},
                          forward_dtype=self.forward_dtype)

    def __repr__(self) -> str:
        return (f"LayerStats(model={self.model_id!r}, corpus={self.corpus_id!r}, n_tokens={self.n_tokens}, "
                f"layers={sorted(self)}" + (f", forward_dtype={self.forward_dtype!r}"
                                             if self.forward_dtype != "float32" else "") + ")")


# ------------------------------------------------------------------------------------------------
# Identities used in cache keys
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# Provenance: manifests, checksums and verified reads of cached files
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# Corpora
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
def _check_layers(model, layers) -> list[int]:
    return sorted(set(check_layers(model, layers)))


def _stats_device(model) -> torch.device:
    dev = next(model.parameters()).device
    return torch.device("cpu") if dev.type == "mps" else dev  # no float64 on MPS


def collect_second_moments(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int],
                           batch_size: int = 16, progress: bool = True, stop: bool = True,
                           desc: str = "key statistics", batch_dtype: torch.dtype | None = None,
                           forward_dtype: str = "float32") -> dict[int, SecondMoment]:
    """One forward pass per batch reading every layer's rewrite-module input; no caching.

    ``stop=False`` runs the full model (only for measuring what stopping early saves).
    ``batch_dtype``: the dtype each batch's KᵀK is formed in (summed in float64 either way); None:
    float32 for the keys of a float32 (or lower-precision) model, which are only float32-accurate,
    float64 for a float64 model. ``forward_dtype="bfloat16"``: the forward pass runs under bf16
    autocast and its bf16 keys are cast to float32 for the products (SmolLM2, 102,400 tokens, 2 threads
    of a CPU with AVX-512 BF16: 1.83× faster, C within 0.3-0.5 % of the float32 pass and the kept
    ranks equal or one more; benchmarks/README.md).
    """
    from tqdm.auto import tqdm

    if forward_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"forward_dtype must be 'float32' or 'bfloat16', got {forward_dtype!r} "
                         "(layer_stats also accepts 'auto')")
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
            with TraceDict(model, list(names.values()), retain_input=True, retain_output=False, stop=stop) as tr, \
                    torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=forward_dtype == "bfloat16"):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            keep = mask.reshape(-1).bool()
            for layer, name in names.items():
                x = tr[name].input  # (b, seq, d_in): keys as rows
                # keys of a float32 (or lower) model are only float32-accurate: form each batch's KᵀK in
                # float32 (1.6x faster per update, 1.24x for the whole pass) and sum in float64; the projector's PSD check then uses the
                # float32 tolerance (SecondMoment.product_dtype; benchmarks/README.md measures it)
                bd = batch_dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
                acc[layer].update(x.reshape(-1, x.shape[-1])[keep], batch_dtype=bd)
    return acc


def growing_second_moments(model, tok, layers, sizes, corpus: str | os.PathLike = "wikitext-2", seq_len: int = 128,
                           held_out_tokens: int = 0, *, batch_size: int = 16,
                           progress: bool = False) -> tuple[dict[int, dict[int, SecondMoment]], dict[int, SecondMoment]]:
    """Key statistics of a growing prefix of ``corpus``, all from one pass (the paper's Table 6 question:
    how much text does P need?).

    ``sizes``: token counts, each a multiple of ``seq_len``. Returns ``(by_size, held)``:
    ``by_size[n][layer]`` is the :class:`SecondMoment` of the first ``n`` tokens, and ``held[layer]``
    that of the ``held_out_tokens`` tokens right after the largest prefix (no prefix contains them;
    empty dict when 0). Nothing is cached: each prefix is the running sum at that point of the pass.
    """
    layers = _check_layers(model, layers)
    sizes = sorted(int(n) for n in sizes)
    if not sizes or sizes[0] < seq_len or any(n % seq_len for n in sizes) or held_out_tokens % seq_len:
        raise ValueError(f"sizes must be non-empty multiples of seq_len={seq_len} (and so must held_out_tokens="
                         f"{held_out_tokens}), got {sizes}; round them, e.g. 10_240 = 80 × 128")
    _, ids, mask = corpus_tokens(tok, corpus, sizes[-1] + held_out_tokens, seq_len, model=model, progress=progress)
    running = {layer: SecondMoment(device=_stats_device(model)) for layer in layers}
    by_size: dict[int, dict[int, SecondMoment]] = {}
    start = 0
    for n in sizes:
        stop = n // seq_len
        if stop > start:
            part = collect_second_moments(model, ids[start:stop], mask[start:stop], layers, batch_size=batch_size,
                                          progress=False)
            for layer in layers:
                running[layer].merge(part[layer])
        by_size[n] = {layer: SecondMoment(device=running[layer].device).merge(running[layer]) for layer in layers}
        start = stop
    held = {}
    if held_out_tokens:
        held = collect_second_moments(model, ids[start:], mask[start:], layers, batch_size=batch_size, progress=False)
    return by_size, held


def layer_stats(model, tok, layers, corpus: str | os.PathLike = "wikitext-2", n_tokens: int = 100_000,
                seq_len: int = 128, *, batch_size: int = 16, seed: int = 0, cache: bool = True,
                force_recompute: bool = False, progress: bool = True, forward_dtype: str = "float32") -> LayerStats:
    """K0 K0ᵀ statistics of the rewrite module of each layer in ``layers``, from ``corpus``.

    Returns a :class:`LayerStats` ``{layer: SecondMoment}`` with ``count == n_tokens`` each.
    ``forward_dtype``: "float32", "bfloat16" (the forward pass under bf16 autocast, products and sums
    as ever; cached under its own file name) or "auto" (bf16 where the device has fast bf16, the
    hyper-parameter ``mom2_forward_dtype`` of the SmolLM2 files).
    Cached layers are loaded after checking their manifest and checksum (an unusable file is
    recomputed, with a :class:`CacheWarning` naming it); the missing ones are computed together in
    one pass per batch. ``corpus`` may also be the corpus id of statistics already in the cache
    (e.g. imported with :func:`import_stats`): they are then only loaded, never computed.
    """
    layers = _check_layers(model, layers)
    forward_dtype = resolve_compute_dtype(forward_dtype, next(model.parameters()).device, "forward_dtype")
    spec = arch_spec(model)
    mid = model_id(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}
    if _is_cached_corpus_id(corpus):
        if force_recompute:
            raise ValueError(f"corpus {corpus!r} is not a text source but the id of cached statistics, which cannot be "
                             f"recomputed; pass the text file or built-in corpus they came from to recompute them")
        return _cached_layer_stats(model, layers, corpus, n_tokens, forward_dtype)

    # The corpus id is needed for the cache key; for model samples it is known without sampling.
    if corpus == "model-samples":
        corpus_id = f"model-samples-seed{seed}-L{seq_len}"
        ids = mask = None
    else:
        corpus_id, ids, mask = corpus_tokens(tok, corpus, n_tokens, seq_len, seed=seed, progress=progress)

    out: dict[int, SecondMoment] = {}
    missing = []
    for layer in layers:
        path = stats_cache_path(mid, names[layer], corpus_id, n_tokens, forward_dtype)
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
                                     desc=f"key statistics, layers {missing}", forward_dtype=forward_dtype)
        dt = time.perf_counter() - t0
        for layer in missing:
            if acc[layer].count != n_tokens:
                raise RuntimeError(f"counted {acc[layer].count} keys at layer {layer}, expected {n_tokens}")
            if cache:
                write_stats_file(stats_cache_path(mid, names[layer], corpus_id, n_tokens, forward_dtype), acc[layer],
                                 _stats_manifest(acc[layer], model_id=mid, module=names[layer], corpus_id=corpus_id,
                                                 n_tokens=n_tokens, model_dtype=_dtype_name(model),
                                                 forward_dtype=forward_dtype))
            out[layer] = acc[layer]
        if progress:
            print(f"[alphaedit_lite.locate.stats] {n_tokens} tokens of {corpus_id}, layers {missing}: {dt:.1f} s"
                  + (" (bf16 forward)" if forward_dtype == "bfloat16" else ""))
    return LayerStats({layer: out[layer] for layer in layers}, model_id=mid, corpus_id=corpus_id,
                      n_tokens=n_tokens, module_names=names, forward_dtype=forward_dtype)


def _is_cached_corpus_id(corpus) -> bool:
    """True for a string that names no corpus the kit can read: it can only be the id of cached statistics."""
    return (isinstance(corpus, str) and corpus not in BUILTIN_CORPORA and os.sep not in corpus
            and not Path(corpus).expanduser().exists())


def _cached_token_counts(mid: str, module: str, corpus_id: str) -> list[int]:
    folder = cache_dir() / "stats" / mid / _safe(module)
    pat = re.compile(re.escape(_safe(corpus_id)) + r"_(\d+)(?:_bf16-forward)?\.pt")
    return sorted(int(m.group(1)) for f in (folder.glob("*.pt") if folder.is_dir() else [])
                  if (m := pat.fullmatch(f.name)))


def _cached_layer_stats(model, layers: list[int], corpus_id: str, n_tokens: int,
                        forward_dtype: str = "float32") -> LayerStats:
    """Statistics under a corpus id that only the cache knows (imported ones): load, never compute.

    They are used whatever forward pass made them (``forward_dtype``'s file first, else the other)."""
    spec = arch_spec(model)
    mid = model_id(model)
    d_in = mlp_width(model)
    names = {layer: spec.rewrite_name(layer) for layer in layers}
    other = "float32" if forward_dtype == "bfloat16" else "bfloat16"
    if all(not stats_cache_path(mid, names[x], corpus_id, n_tokens, forward_dtype).is_file()
           and stats_cache_path(mid, names[x], corpus_id, n_tokens, other).is_file() for x in layers):
        forward_dtype = other
    out = {}
    for layer in layers:
        path = stats_cache_path(mid, names[layer], corpus_id, n_tokens, forward_dtype)
        sm = _load_or_warn(path, "key-statistics",
                           lambda p: _read_stats(p, _stats_expect(mid, names[layer], corpus_id, n_tokens, d_in),
                                                 _stats_device(model)),
                           then="it cannot be rebuilt from a corpus id: import the statistics again")
        if sm is not None:
            out[layer] = sm
    missing = [layer for layer in layers if layer not in out]
    damaged = [layer for layer in missing
               if stats_cache_path(mid, names[layer], corpus_id, n_tokens, forward_dtype).is_file()]
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
                      n_tokens=n_tokens, module_names=names, forward_dtype=forward_dtype)


# ------------------------------------------------------------------------------------------------
# Projectors
# ------------------------------------------------------------------------------------------------
#: In-memory projectors, keyed by the CONTENT of the statistics (their SHA-256), the mode and the threshold.
_PROJ_MEMO: dict[tuple, Projector] = {}


def _projector_path(stats: LayerStats, layer: int, threshold: float, mode: str) -> Path:
    base = stats_cache_path(stats.model_id, stats.module_names[layer], stats.corpus_id, stats.n_tokens,
                            stats.forward_dtype)
    return base.with_name(base.stem + f"_P-{mode}-{threshold:g}.pt")


def _projector_expect(stats: LayerStats, layer: int, threshold: float, mode: str, stats_sha: str, dim: int) -> dict:
    return {"model_id": stats.model_id, "module": stats.module_names[layer], "corpus_id": stats.corpus_id,
            "n_tokens": int(stats.n_tokens), "dim": int(dim), "threshold": float(threshold), "mode": mode,
            "stats_sha256": stats_sha}


def projectors(stats: dict[int, SecondMoment] | LayerStats, threshold: float = 2e-2, mode: str = "absolute",
               cache: bool = True) -> dict[int, Projector]:
    """AlphaEdit's null-space projector P (Eq. 8-9) for each layer of ``stats``.

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
                pj = null_space_projector(sm, threshold=threshold, mode=mode)
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
