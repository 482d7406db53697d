"""Small input checks shared by the numeric core: each failure says what was wrong and how to fix it."""
from __future__ import annotations

import torch


def as_matrix(name: str, x, ndim: int = 2) -> torch.Tensor:
    """Return `x` as a tensor with `ndim` dimensions, or raise a TypeError/ValueError naming it."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise TypeError(f"{name} must be a torch.Tensor (or array-like), got {type(x).__name__}") from exc
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        x = x.to(torch.float64)
    return x


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise if `x` holds NaN or Inf (they would silently poison every later product)."""
    if not torch.isfinite(x).all():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} Inf values; check the keys or statistics "
            "that produced it (a half-precision overflow is a common cause: accumulate in float64)"
        )


def check_square_symmetric(name: str, c: torch.Tensor, rtol: float = 1e-6) -> None:
    """Raise unless `c` is square and symmetric up to `rtol` of its largest entry."""
    if c.shape[0] != c.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(c.shape)}")
    scale = float(c.abs().max()) if c.numel() else 0.0
    asym = float((c - c.T).abs().max()) if c.numel() else 0.0
    if asym > rtol * max(scale, 1e-300):
        raise ValueError(
            f"{name} is not symmetric (max |C - Cᵀ| = {asym:.3g} vs max |C| = {scale:.3g}); a key "
            "covariance K Kᵀ/n is always symmetric: pass (C + C.T) / 2 if this is rounding, or check "
            "that you did not pass K Kᵀ with mismatched factors"
        )


def check_same(what: str, a_name: str, a: int, b_name: str, b: int) -> None:
    """Raise a ValueError when two dimensions that must agree do not."""
    if a != b:
        raise ValueError(f"shape mismatch in {what}: {a_name} is {a} but {b_name} is {b}")


def edit_inputs(R, K1, prev_keys=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked float64 R (d_out, u), K1 (d_in, u) and K = [Kp, K1] (d_in, m + u) of one edit call."""
    R = as_matrix("R (residuals V1 − W K1, shape (d_out, u))", R).to(torch.float64)
    K1 = as_matrix("K1 (new keys as columns, shape (d_in, u))", K1).to(torch.float64)
    check_same("R and K1", "R's number of columns (edits)", R.shape[1], "K1's number of columns (edits)", K1.shape[1])
    K = K1
    if prev_keys is not None:
        Kp = as_matrix("prev_keys (Kp, shape (d_in, m))", prev_keys).to(device=K1.device, dtype=torch.float64)
        check_same("prev_keys", "Kp's rows", Kp.shape[0], "K1's key dimension d_in", K1.shape[0])
        K = torch.cat([Kp, K1], 1)
    for name, x in (("R", R), ("K1", K1), ("prev_keys", K)):
        check_finite(name, x)
    return R, K1, K
