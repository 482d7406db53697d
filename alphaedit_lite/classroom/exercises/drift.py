"""Checkers of the hidden-state drift of unedited probes (AlphaEdit Fig. 5): the mean relative drift
‖h − h₀‖ / ‖h₀‖ and the share of it that is one common shift. Notebook 05.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.classroom.exercises._common import F64, _Case, _rel, _require_callable, _fail, _call, _diagnose, _ok


# -------------------------------------------------------------- 9. hidden-state drift of the probes
def _drift_cases() -> list[_Case]:
    from alphaedit_lite.experiments.drift import relative_drift

    gen = torch.Generator().manual_seed(909)
    cases = []
    for label, n, d, scales in [("12 probes in 8 dimensions", 12, 8, False),
                                ("50 probes of very different lengths", 50, 16, True)]:
        H0 = torch.randn(n, d, generator=gen, dtype=F64)                   # (n, d) rows are probes
        if scales:
            H0 = H0 * torch.logspace(-1, 2, n, dtype=F64)[:, None]
        H = H0 + 0.1 * torch.randn(n, d, generator=gen, dtype=F64) * H0.norm(dim=1, keepdim=True) / d ** 0.5
        cases.append(_Case(label, (H0, H), torch.tensor(relative_drift(H0, H), dtype=F64)))
    return cases


def check_relative_drift(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> None:
    """Check `fn(H0, H) -> mean_i ‖h_i − h0_i‖ / ‖h0_i‖` over the probes (rows) of H0 and H, shape (n, d)."""
    _require_callable(fn)
    cases = _drift_cases()
    for case in cases:
        H0, H = case.args
        out = _call(fn, case)
        if out.numel() != 1:
            raise _fail(fn, case, f"return one number (the mean over probes), got shape {tuple(out.shape)}")
        out = out.reshape(())
        if _rel(out, case.expected) < 1e-6:      # a Python float comes back as float32: 1e-6, not MATCH_RTOL
            continue
        D = H - H0
        raise _diagnose(fn, case, out, [
            ("you divided the norm of all changes by the norm of all states (‖H − H0‖_F / ‖H0‖_F): that lets "
             "the longest probes dominate; average the per-probe ratios", D.norm() / H0.norm()),
            ("you forgot to divide by ‖h0‖: drift is relative, so that long and short states count alike",
             D.norm(dim=1).mean()),
            ("you took norms over the probes (dim=0) instead of over each state (dim=1)",
             (D.norm(dim=0) / H0.norm(dim=0)).mean()),
            ("you divided by ‖h‖ after editing; the reference is the unedited state ‖h0‖",
             (D.norm(dim=1) / H.norm(dim=1)).mean()),
        ], f"off by {_rel(out, case.expected):.1e} (relative) from mean_i ‖h_i − h0_i‖ / ‖h0_i‖")
    _ok(fn, "mean over probes of ‖h − h₀‖ / ‖h₀‖", cases)


# --------------------------------------- 12. how much of the drift is one common shift (notebook 05)
def _common_shift_cases() -> list[_Case]:
    gen = torch.Generator().manual_seed(1212)
    cases = []
    n, d = 40, 12
    H0 = torch.randn(n, d, generator=gen, dtype=F64) * 5                          # (n, d) rows are probes
    shift = torch.randn(d, generator=gen, dtype=F64)                               # one vector for every probe
    scatter = torch.randn(n, d, generator=gen, dtype=F64)
    scatter = scatter - scatter.mean(0)                                            # moves that cancel on average
    for label, H in [
        ("40 probes, every one moved by the same vector", H0 + shift),
        ("40 probes, moves that cancel on average", H0 + scatter),
        ("40 probes, a common shift plus scatter", H0 + 0.5 * shift + 0.3 * scatter),
    ]:
        cases.append(_Case(label, (H0, H), _common_share(H0, H)))
    H0b = torch.randn(200, 24, generator=gen, dtype=F64) * torch.logspace(-1, 2, 200, dtype=F64)[:, None]
    Hb = H0b + 0.02 * torch.randn(24, generator=gen, dtype=F64) * H0b.norm(dim=1, keepdim=True) + \
        0.1 * torch.randn(200, 24, generator=gen, dtype=F64)
    cases.append(_Case("200 probes of very different lengths, 24 dimensions", (H0b, Hb), _common_share(H0b, Hb)))
    return cases


def _common_share(H0: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    D = (H - H0).to(F64)                                                           # (n, d) each probe's move
    return D.mean(0).pow(2).sum() / D.pow(2).sum(1).mean()


def check_common_shift_share(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> None:
    """Check `fn(H0, H) -> ‖mean_i (h_i − h0_i)‖² / mean_i ‖h_i − h0_i‖²` for probes as rows of H0, H (n, d):
    the share of the drift's energy that is one common shift of every probe (1: a translation, 0: scatter)."""
    _require_callable(fn)
    cases = _common_shift_cases()
    for case in cases:
        H0, H = case.args
        out = _call(fn, case)
        if out.numel() != 1:
            raise _fail(fn, case, f"return one number for the whole set of probes, got shape {tuple(out.shape)}")
        out = out.reshape(()).to(F64)
        # a share lies in [0, 1] and a Python float comes back as float32: an absolute tolerance (the
        # moves that cancel make the reference ≈ 1e-32, where a relative one would be noise)
        if abs(float(out) - float(case.expected)) < 1e-6:
            continue
        D = (H - H0).to(F64)
        n = D.shape[0]
        mean_move = D.mean(0)                                                      # (d,)
        ms = D.pow(2).sum(1).mean()                                                # mean ‖d_i‖²
        raise _diagnose(fn, case, out, [
            ("that is the scattered part, 1 − share: the common shift's share is ‖mean d‖² / mean ‖d‖²",
             1 - case.expected),
            ("you averaged the LENGTHS of the moves, (mean ‖d‖)²: average the move VECTORS first (mean over the "
             "probes, dim=0), then take the norm", D.norm(dim=1).mean() ** 2 / ms),
            ("you forgot the squares: ‖mean d‖ / √(mean ‖d‖²) is the square root of the share; the split "
             "mean ‖d‖² = ‖mean d‖² + mean ‖d − mean d‖² holds for squared norms", case.expected.sqrt()),
            ("you compared norms, not squared norms: ‖mean d‖ / mean ‖d‖; use ‖mean d‖² / mean ‖d‖²",
             mean_move.norm() / D.norm(dim=1).mean()),
            ("you averaged over the hidden dimensions (dim=1); the common shift is the mean over the probes "
             "(dim=0), a vector of d numbers", D.mean(1).pow(2).sum() / ms),
            (f"you divided by the SUM of ‖d_i‖² over the {n} probes; divide by their mean",
             mean_move.pow(2).sum() / D.pow(2).sum()),
            ("you divided by the states' energy mean ‖h0‖²: the share compares the common shift with the moves "
             "themselves, mean ‖h − h0‖²", mean_move.pow(2).sum() / H0.to(F64).pow(2).sum(1).mean()),
            ("you took the mean of the states, not of their moves: ‖mean h‖² / mean ‖h‖² ignores h0",
             H.to(F64).mean(0).pow(2).sum() / H.to(F64).pow(2).sum(1).mean()),
        ], f"your share is {float(out):.4g}, the reference {float(case.expected):.4g}: it is ‖mean_i d_i‖² / "
           "mean_i ‖d_i‖² with d_i = h_i − h0_i")
    _ok(fn, "‖mean d‖² / mean ‖d‖², the share of the drift that is a common shift", cases)
