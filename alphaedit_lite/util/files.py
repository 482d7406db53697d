"""Atomic file writes: the one helper every cache, checkpoint and record of the kit writes through.

A file is written to a temporary name in its own folder and renamed into place only when it is
complete (``os.replace`` is atomic on POSIX and Windows), so a run killed mid-write leaves the old
file or none, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_torch_save", "atomic_json_save", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the file it wrote to ``path`` (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, w)


def atomic_json_save(obj: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """``json.dump(obj)`` to ``path`` (non-JSON values as ``str``), atomically."""
    return atomic_write_text(json.dumps(obj, indent=indent, default=str), path)
