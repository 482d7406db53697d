"""Streaming key statistics: the uncentred second moment C = K0 K0ᵀ / n.

AlphaEdit (Fang et al., ICLR 2025, Eq. 8-9) and MEMIT (Meng et al., 2023, Eq. 14) both need the
matrix K0 K0ᵀ, where the columns of K0 are the inputs ("keys") of the rewrite module on text
that stands for the knowledge to preserve. Hundreds of thousands of keys never fit in memory at
once, so we stream them: C = Σ_batches Xᵀ X / n, accumulated in float64 (float32 sums of 10⁵
outer products lose the small eigenvalues the null space is made of).

Streaming code receives activations as ROWS, a batch `(n, d)`; the paper's K0 is the transpose.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from alphaedit_lite.core.validate import check_finite
from alphaedit_lite.util.files import atomic_torch_save


def precision_name(dtype: torch.dtype) -> str:
    """How files record `SecondMoment.product_dtype`: "float32" or "float64"."""
    return "float32" if dtype == torch.float32 else "float64"


def precision_from_name(name) -> torch.dtype:
    """The dtype a file's "product_dtype" names; files written before it existed hold float64 products."""
    return torch.float32 if name == "float32" else torch.float64


class SecondMoment:
    """Accumulates Σ k kᵀ over keys k ∈ R^d and their count n; `.cov` is Σ k kᵀ / n.

    >>> acc = SecondMoment()
    >>> acc.update(torch.randn(100, 8)); acc.update(torch.randn(50, 8))
    >>> acc.count, tuple(acc.cov.shape)
    (150, (8, 8))
    """

    def __init__(self, dim: int | None = None, device: str | torch.device = "cpu"):
        self.dim = dim
        self.count = 0
        self.device = torch.device(device)
        #: the least precise dtype any batch's KᵀK was formed in (the sum is float64 either way); the
        #: projector's PSD check scales its tolerance with it (``null_space_projector(cov_precision=...)``)
        self.product_dtype = torch.float64
        self._sum: torch.Tensor | None = None  # (d, d) float64
        if dim is not None:
            self._sum = torch.zeros(dim, dim, dtype=torch.float64, device=self.device)

    def update(self, keys: torch.Tensor, batch_dtype: torch.dtype = torch.float64) -> "SecondMoment":
        """Add a batch of keys given as rows, shape `(n, d)` (a single key `(d,)` is accepted).

        The running sum is always float64. ``batch_dtype=torch.float32`` forms this batch's KᵀK in
        float32 first (1.6× faster on a CPU; relative error ~1e-6 of the largest entry for batches
        of a few thousand float32 keys, which are only float32-accurate anyway)."""
        if not isinstance(keys, torch.Tensor):
            keys = torch.as_tensor(keys)
        if keys.ndim == 1:
            keys = keys[None, :]
        if keys.ndim != 2:
            raise ValueError(
                f"keys must be a (n, d) batch of row vectors, got shape {tuple(keys.shape)}; "
                "flatten batch and sequence dimensions first: x.reshape(-1, x.shape[-1])"
            )
        if keys.shape[0] == 0:
            return self
        if self.dim is not None and keys.shape[1] != self.dim:
            raise ValueError(f"keys have dimension {keys.shape[1]} but this accumulator holds dimension {self.dim}")
        if batch_dtype not in (torch.float64, torch.float32):
            raise ValueError(f"batch_dtype must be torch.float64 or torch.float32, got {batch_dtype}")
        x = keys.detach().to(device=self.device, dtype=batch_dtype)  # (n, d)
        check_finite("keys", x)  # validate before touching any state: a rejected batch changes nothing
        if self.dim is None:
            self.dim = keys.shape[1]
            self._sum = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
        if batch_dtype == torch.float64:
            self._sum.addmm_(x.T, x)  # Σ k kᵀ, (d, d)
        else:
            self._sum += (x.T @ x).to(torch.float64)
            self.product_dtype = torch.float32
        self.count += keys.shape[0]
        return self

    def merge(self, other: "SecondMoment") -> "SecondMoment":
        """Add another accumulator's keys to this one (e.g. from another corpus shard)."""
        if not isinstance(other, SecondMoment):
            raise TypeError(f"can only merge another SecondMoment, got {type(other).__name__}")
        if other.count == 0:
            return self
        if other.product_dtype == torch.float32:
            self.product_dtype = torch.float32
        if self.count == 0 and self._sum is None:
            self.dim = other.dim
            self._sum = other._sum.to(self.device).clone()
            self.count = other.count
            return self
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into dimension {self.dim}")
        self._sum += other._sum.to(self.device)
        self.count += other.count
        return self

    @property
    def sum(self) -> torch.Tensor:
        """Σ k kᵀ = K0 K0ᵀ (unnormalised), float64 `(d, d)`."""
        if self._sum is None:
            raise ValueError("no keys accumulated yet: call update() with at least one batch")
        return self._sum

    @property
    def cov(self) -> torch.Tensor:
        """K0 K0ᵀ / n, the normalised uncentred second moment, float64 `(d, d)`."""
        if self.count == 0:
            raise ValueError("no keys accumulated yet: call update() with at least one batch")
        c = self._sum / self.count
        return (c + c.T) / 2  # exact symmetry despite rounding

    @classmethod
    def from_keys(cls, K: torch.Tensor) -> "SecondMoment":
        """Build from a key matrix with keys as COLUMNS, shape `(d, n)` (the paper's K0)."""
        return cls().update(K.T)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to `path` atomically (a temp file renamed into place)."""
        return atomic_torch_save({"format": "alphaedit-lite/second-moment/v1", "dim": self.dim, "count": self.count,
                                  "sum": None if self._sum is None else self._sum.cpu(),
                                  "product_dtype": precision_name(self.product_dtype)}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SecondMoment":
        """Read what `save` wrote."""
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "alphaedit-lite/second-moment/v1":
            raise ValueError(f"{path} is not a SecondMoment file written by alphaedit-lite")
        acc = cls(device=device)
        acc.dim, acc.count = blob["dim"], int(blob["count"])
        acc._sum = None if blob["sum"] is None else blob["sum"].to(device=acc.device, dtype=torch.float64)
        acc.product_dtype = precision_from_name(blob.get("product_dtype"))
        return acc

    def __repr__(self) -> str:
        return f"SecondMoment(dim={self.dim}, count={self.count})"
