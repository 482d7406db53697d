"""Numerical checks of the null-space claim: does an update leave preserved outputs alone?"""
from __future__ import annotations

import torch

from alphaedit_lite.core.validate import as_matrix, check_same


def _fro(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x.to(torch.float64)))


def _check_square_projector(P: torch.Tensor) -> None:
    if P.shape[0] != P.shape[1]:
        raise ValueError(f"P must be square (d_in, d_in), got shape {tuple(P.shape)}; pass Projector.P, not its basis")


def preserved_change(delta: torch.Tensor, K0: torch.Tensor, W: torch.Tensor | None = None) -> float:
    """Relative change of preserved outputs.

    With W: ‖Δ K0‖_F / ‖W K0‖_F (how much the layer's outputs for preserved keys move).
    Without W: ‖Δ K0‖_F / (‖Δ‖_F ‖K0‖_F), a scale-free leak in [0, 1].
    K0 holds keys as columns (d_in, n).
    """
    delta = as_matrix("delta", delta).to(torch.float64)
    K0 = as_matrix("K0", K0).to(torch.float64)
    check_same("delta @ K0", "delta's columns (d_in)", delta.shape[1], "K0's rows (key dimension)", K0.shape[0])
    num = _fro(delta @ K0)
    if W is None:
        den = _fro(delta) * _fro(K0)
    else:
        W = as_matrix("W", W).to(torch.float64)
        check_same("W vs delta", "W's shape", tuple(W.shape), "delta's shape", tuple(delta.shape))
        den = _fro(W @ K0)
    return num / den if den > 0 else 0.0


def nullspace_residual(delta: torch.Tensor, P: torch.Tensor) -> float:
    """‖Δ P − Δ‖_F / ‖Δ‖_F: 0 when the update already lies in the null space of P's complement."""
    delta = as_matrix("delta", delta).to(torch.float64)
    P = as_matrix("P", P).to(torch.float64)
    _check_square_projector(P)
    check_same("delta @ P", "delta's columns", delta.shape[1], "P's size", P.shape[0])
    n = _fro(delta)
    return _fro(delta @ P - delta) / n if n > 0 else 0.0


def projector_errors(P: torch.Tensor) -> dict[str, float]:
    """How far P is from an orthogonal projector: ‖P − Pᵀ‖_F and ‖P² − P‖_F (both relative to ‖P‖_F)."""
    P = as_matrix("P", P).to(torch.float64)
    _check_square_projector(P)
    n = max(_fro(P), 1e-300)
    return {"symmetry": _fro(P - P.T) / n, "idempotence": _fro(P @ P - P) / n}


def null_space_share(K: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Per key (column of ``K``, shape (d_in, n)): ‖P k‖² / ‖k‖², the share of its energy in the
    directions P leaves editable. AlphaEdit can write an edit only through that part of its key,
    and an unedited key with a large share is exposed to the edit. Returns shape (n,)."""
    _check_square_projector(P)
    K = as_matrix("K", K).to(torch.float64)
    if K.shape[0] != P.shape[0]:
        raise ValueError(f"K has keys of dimension {K.shape[0]} but P is {tuple(P.shape)}; pass keys as columns (d_in, n)")
    PK = P.to(device=K.device, dtype=torch.float64) @ K
    return PK.norm(dim=0) ** 2 / K.norm(dim=0).clamp_min(1e-300) ** 2
