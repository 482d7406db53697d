"""Key statistics (and P) as files to share: ``alphaedit-lite stats --export/--import``.

* an export is ONE ``torch.save`` file with each layer's Σkkᵀ and count (optionally AlphaEdit's P
  for one threshold) and a manifest (fingerprint, layers, modules, corpus, token count, dtype,
  kit version, checksums);
* an import checks that the file was made for this model (fingerprint) and these layers, checks
  the checksums, and writes the statistics into the cache; afterwards the corpus id works as
  ``corpus=`` of :func:`~alphaedit_lite.locate.stats.layer_stats` (and ``--corpus`` of the command line) with the same token count;
* ROME/MEMIT key statistics (one ``.npz`` per layer, as ROME's ``layer_stats.py`` writes them with
  ``np.savez(file, **CombinedStat(mom2=SecondMoment()).state_dict())``) import too: ``mom2.mom2``
  is the running SUM Σkkᵀ and ``mom2.count`` the number of keys (ROME's ``moment()`` is their
  ratio), so the kit's C0 = sum / count is exactly what MEMIT's ``get_cov`` uses.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from alphaedit_lite.core.covariance import SecondMoment, precision_from_name, precision_name
from alphaedit_lite.core.nullspace import Projector
from alphaedit_lite.model.arch import arch_spec, mlp_width, num_layers
from alphaedit_lite.locate.cache import (EXPORT_FORMAT, MANIFEST_VERSION, _kit_version, _now,
                                         _projector_fields, _projector_manifest, _projector_sha256, _safe,
                                         _stats_manifest, _torch_load, _Unusable, _write_projector, model_id,
                                         second_moment_sha256, stats_cache_path, write_stats_file)
from alphaedit_lite.locate.stats import LayerStats, _check_layers, _projector_path, projectors
from alphaedit_lite.util.files import atomic_torch_save

__all__ = ["export_stats", "import_stats", "import_rome_npz"]


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
        "dtype": "float64", "forward_dtype": stats.forward_dtype, "kit_version": _kit_version(), "created": _now(),
        "projector": None if threshold is None else {"threshold": float(threshold), "mode": mode},
        "sha256": {"stats": stats_sha, "projectors": projector_sha},
        "checksum": _export_checksum(stats_sha, projector_sha),
    }
    blob = {"format": EXPORT_FORMAT, "manifest": manifest,
            "stats": {str(layer): {"sum": stats[layer].sum.detach().cpu(), "count": int(stats[layer].count),
                                   "product_dtype": precision_name(stats[layer].product_dtype)}
                      for layer in layers},
            "projectors": {str(layer): _projector_fields(pjs[layer]) for layer in sorted(pjs)}}
    return atomic_torch_save(blob, path)


def _store_imported(st: LayerStats, pjs: dict[int, Projector], source: dict) -> None:
    """Write imported statistics (and projectors) into the cache, each with its manifest."""
    for layer, sm in st.items():
        write_stats_file(stats_cache_path(st.model_id, st.module_names[layer], st.corpus_id, st.n_tokens,
                                          st.forward_dtype), sm,
                         _stats_manifest(sm, model_id=st.model_id, module=st.module_names[layer],
                                         corpus_id=st.corpus_id, n_tokens=st.n_tokens,
                                         forward_dtype=st.forward_dtype, **source))
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
        sm.product_dtype = precision_from_name(entry.get("product_dtype"))
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
    st = LayerStats(out, model_id=mid, corpus_id=corpus_id or man["corpus_id"], n_tokens=n_tokens, module_names=names,
                    forward_dtype=man.get("forward_dtype", "float32"))
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
