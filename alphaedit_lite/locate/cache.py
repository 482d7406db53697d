"""Cached statistics and projectors: identities, manifests, checksums, verified reads and writes.

Every cached file says what it is, and is checked before use:

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
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from alphaedit_lite.core.covariance import SecondMoment, precision_from_name, precision_name
from alphaedit_lite.core.nullspace import Projector
from alphaedit_lite.model.arch import embed, mlp_width, num_layers
from alphaedit_lite.util.paths import cache_dir
from alphaedit_lite.util.files import atomic_torch_save

__all__ = ["model_id", "stats_cache_path", "CacheWarning", "tensor_sha256", "second_moment_sha256", "read_stats_file",
           "write_stats_file", "STATS_FORMAT", "PROJECTOR_FORMAT", "EXPORT_FORMAT"]


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


def stats_cache_path(model_or_id, module_name: str, corpus_id: str, n_tokens: int,
                     forward_dtype: str = "float32") -> Path:
    """``cache_dir()/stats/<model-id>/<module>/<corpus-id>_<n_tokens>.pt``; statistics whose forward
    pass ran under bf16 autocast (``forward_dtype="bfloat16"``) end in ``_bf16-forward.pt`` instead."""
    mid = model_or_id if isinstance(model_or_id, str) else model_id(model_or_id)
    tail = "" if forward_dtype == "float32" else f"_{forward_dtype.replace('bfloat16', 'bf16')}-forward"
    return cache_dir() / "stats" / mid / _safe(module_name) / f"{_safe(corpus_id)}_{int(n_tokens)}{tail}.pt"


STATS_FORMAT = "alphaedit-lite/second-moment/v1"   # the SecondMoment.save layout; the manifest rides along


PROJECTOR_FORMAT = "alphaedit-lite/projector/v2"     # v1 (count + projector, no manifest) is rebuilt


EXPORT_FORMAT = "alphaedit-lite/stats-export/v1"


MANIFEST_VERSION = 1


class CacheWarning(UserWarning):
    """A cached file was not used (damaged, written by an older kit, or made from other inputs); it is rebuilt."""


class _Unusable(Exception):
    """Why a cached or shared file cannot be used; becomes a CacheWarning (caches) or a ValueError (imports)."""


def _kit_version() -> str:
    from alphaedit_lite.util.version import __version__
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
            "product_dtype": precision_name(sm.product_dtype), "manifest": dict(manifest)}
    return atomic_torch_save(blob, Path(path))


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
    sm.product_dtype = precision_from_name(blob.get("product_dtype"))
    if second_moment_sha256(sm) != man.get("sha256"):
        raise _Unusable("does not match its SHA-256 checksum: its content was changed or damaged")
    if torch.device(device) != sm.device:
        sm.device, sm._sum = torch.device(device), s.to(device)
    return sm


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
    return atomic_torch_save({"format": PROJECTOR_FORMAT, "projector": _projector_fields(pj),
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


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _stats_expect(mid: str, module: str, corpus_id: str, n_tokens: int, dim: int) -> dict:
    """The manifest fields a cached statistics file must have to be used for this request."""
    return {"model_id": mid, "module": module, "corpus_id": corpus_id, "n_tokens": int(n_tokens),
            "count": int(n_tokens), "dim": int(dim), "dtype": "float64"}
