"""Checkers of the null-space geometry: the covariance C = K Kᵀ / n (the input of AlphaEdit's Eq. 8), the
projector P = Û Ûᵀ onto its small-eigenvalue directions (Eq. 8-9), and the room an edit has,
‖P k‖² / ‖k‖² per key (Sec. 3). Notebooks 01 and 04.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.core.nullspace import null_space_projector

from alphaedit_lite.classroom.exercises._common import (F64, MATCH_RTOL, _Case, _fro, _rel, _require_callable, _fail,
                                                        _call, _check_finite, _diagnose, _orthonormal, _ok)


# ------------------------------------------------------------------------------ 1. covariance C
def _covariance_cases() -> list[_Case]:
    gen = torch.Generator().manual_seed(101)
    cases = []
    for label, d, n, scale, offset, dtype in [
        ("K (6, 50), keys with a non-zero mean", 6, 50, 1.0, 2.0, F64),
        ("K (10, 4), fewer keys than dimensions", 10, 4, 1.0, 0.5, F64),
        ("K (3, 200) rescaled by 1000", 3, 200, 1e3, 1.0, F64),
        ("K (7, 30) in float32", 7, 30, 1.0, 1.0, torch.float32),
    ]:
        K = (torch.randn(d, n, generator=gen, dtype=F64) + offset) * scale  # (d, n) keys as columns
        K = K.to(dtype)
        K64 = K.to(F64)
        cases.append(_Case(label, (K,), K64 @ K64.T / n))
    return cases


def check_covariance(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check `fn(K) -> C` with keys as columns K (d, n) and C = K Kᵀ / n (d, d), float64."""
    _require_callable(fn)
    cases = _covariance_cases()
    for case in cases:
        (K,) = case.args
        d, n = K.shape
        out = _call(fn, case)
        if tuple(out.shape) == (n, n):
            raise _fail(fn, case, f"shape (n, n) = {tuple(out.shape)}: keys are the columns of K (d, n), so "
                                  f"C = K Kᵀ / n must be (d, d) = ({d}, {d}); you computed Kᵀ K")
        if tuple(out.shape) != (d, d):
            raise _fail(fn, case, f"C must have shape (d, d) = ({d}, {d}) for K of shape (d, n) = ({d}, {n}), "
                                  f"got {tuple(out.shape)}")
        _check_finite(fn, case, out)
        if out.dtype != F64:
            raise _fail(fn, case, f"C is {out.dtype}: covariances are float64, so cast the keys first "
                                  "(K = K.to(torch.float64)); float32 sums lose the small eigenvalues the "
                                  "null space is made of")
        err = _rel(out, case.expected)
        if err < MATCH_RTOL:
            continue
        K64 = K.to(F64)
        Kc = K64 - K64.mean(dim=1, keepdim=True)  # centred keys
        ref = case.expected
        guesses = [
            (f"C is n = {n} times too large: divide K Kᵀ by the number of keys n = K.shape[1]", ref * n),
            (f"you divided by d = K.shape[0] = {d}; n is the number of keys, the columns: K.shape[1] = {n}",
             ref * n / d),
            ("you divided by n − 1: C is the uncentred second moment K Kᵀ / n, not the sample covariance",
             ref * n / (n - 1) if n > 1 else ref),
            ("you subtracted the mean (torch.cov / np.cov do that): AlphaEdit's C is the UNcentred second "
             "moment K Kᵀ / n", Kc @ Kc.T / (n - 1) if n > 1 else Kc @ Kc.T),
            ("you subtracted the mean: AlphaEdit's C is the UNcentred second moment K Kᵀ / n", Kc @ Kc.T / n),
        ]
        if _fro(out - out.T) > 1e-10 * _fro(out):
            raise _diagnose(fn, case, out, guesses, f"C is not symmetric (‖C − Cᵀ‖/‖C‖ = "
                            f"{_fro(out - out.T) / _fro(out):.1e}): K Kᵀ is always symmetric; check the "
                            "order of the factors")
        raise _diagnose(fn, case, out, guesses, f"C differs from K Kᵀ / n by a relative error "
                        f"‖C − ref‖/‖ref‖ = {err:.2e}")
    _ok(fn, "C = K Kᵀ / n", cases)


# ---------------------------------------------------------------------------------- 2. projector P
def _projector_cases() -> list[_Case]:
    gen = torch.Generator().manual_seed(202)
    U6 = _orthonormal(6, gen)
    lam6 = torch.tensor([1e-5, 3e-3, 0.5, 1.5, 3.0, 8.0], dtype=F64)
    perm = torch.randperm(6, generator=gen)  # eigenvalues not in sorted order along U's columns
    C6 = (U6 * lam6[perm]) @ U6.T
    C6 = (C6 + C6.T) / 2
    K10 = torch.randn(10, 4, generator=gen, dtype=F64)  # 4 keys in 10 dims: 6 exact null directions
    C10 = K10 @ K10.T / 4
    U9 = _orthonormal(9, gen)
    lam9 = torch.logspace(-6, 2, 9, dtype=F64)          # 1e-6 ... 1e2, one per decade
    C9 = (U9 * lam9) @ U9.T
    C9 = (C9 + C9.T) / 2
    cases = []
    for label, C, t in [
        ("C (6, 6) with eigenvalues 1e-5 … 8, threshold 2e-2", C6, 2e-2),
        ("C = K Kᵀ/n of 4 keys in 10 dims, threshold 2e-2", C10, 2e-2),
        ("the first C rescaled by 0.01, threshold 2e-2", C6 * 0.01, 2e-2),
        ("the first C with threshold 0.7", C6, 0.7),
        ("C (9, 9) with eigenvalues 1e-6 … 1e2, threshold 5e-4", C9, 5e-4),
    ]:
        cases.append(_Case(label, (C, t), null_space_projector(C, threshold=t, mode="absolute").P))
    return cases


def check_projector(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check `fn(C, threshold) -> P = Û Ûᵀ`, Û the eigenvectors of C with eigenvalue < threshold."""
    _require_callable(fn)
    cases = _projector_cases()
    for case in cases:
        C, t = case.args
        d = C.shape[0]
        lam, U = torch.linalg.eigh(C)      # ascending, eigenvectors are the columns of U
        keep = lam < t
        r = int(keep.sum())
        out = _call(fn, case)
        shape = tuple(out.shape)
        if shape == (d, r) and r != d:
            raise _fail(fn, case, f"shape (d, r) = {shape}: that is the basis Û of the kept eigenvectors; "
                                  "return the projector P = Û Ûᵀ, shape (d, d)")
        if shape == (r, r) and r != d:
            raise _fail(fn, case, f"shape (r, r) = {shape}: you computed Ûᵀ Û (which is I); "
                                  f"P = Û Ûᵀ is (d, d) = ({d}, {d})")
        if shape == (d,):
            raise _fail(fn, case, f"shape ({d},): that looks like eigenvalues or a mask; return the "
                                  f"(d, d) = ({d}, {d}) matrix P = Û Ûᵀ")
        if shape != (d, d):
            raise _fail(fn, case, f"P must have shape (d, d) = ({d}, {d}) for C of shape ({d}, {d}), got {shape}")
        _check_finite(fn, case, out)
        err = _rel(out, case.expected)
        if err < MATCH_RTOL:
            continue
        if out.dtype != F64:
            raise _fail(fn, case, f"P is {out.dtype}: compute in float64 (C is float64; the small eigenvalues "
                                  "that decide the null space do not survive float32)")

        def proj(B):  # B: (d, k) orthonormal columns → B Bᵀ
            return B @ B.T

        top = U[:, d - r:] if r else U[:, :0]
        rows = U.T[:, keep]  # rows of U used as if they were eigenvectors
        rel_keep = lam < t * float(lam.max())
        guesses = [
            ("P keeps the directions with LARGE eigenvalues: the null space is where eigenvalues are below "
             "the threshold (keep λ < threshold)", proj(U[:, ~keep])),
            (f"P keeps the {r} eigenvectors with the LARGEST eigenvalues: torch.linalg.eigh sorts eigenvalues "
             "in ascending order, so the small ones come first", proj(top)),
            ("you took ROWS of U (U.T[...] or U[i]): torch.linalg.eigh returns the eigenvectors as the "
             "COLUMNS of U, U[:, i] belongs to λ[i]", proj(rows)),
            ("you weighted the eigenvectors by their eigenvalues (Û diag(λ) Ûᵀ): a projector has 0/1 weights, "
             "P = Û Ûᵀ", (U[:, keep] * lam[keep]) @ U[:, keep].T),
            ("you compared eigenvalues with threshold × λ_max (a relative threshold): this exercise asks for "
             "an absolute one, λ < threshold", proj(U[:, rel_keep])),
            ("your P does not change with the threshold: compare the eigenvalues with the `threshold` "
             "argument, not a constant", proj(U[:, lam < 2e-2])),
            ("you returned I − P, the projector onto the preserved directions: P keeps the eigenvectors "
             "whose eigenvalue is below the threshold", torch.eye(d, dtype=F64) - case.expected),
        ]
        sym = _fro(out - out.T) / max(_fro(out), 1e-300)
        idem = _fro(out @ out - out) / max(_fro(out), 1e-300)
        if sym > 1e-8:
            raise _diagnose(fn, case, out, guesses, f"P is not symmetric (‖P − Pᵀ‖/‖P‖ = {sym:.1e}): build "
                            "P = Û Ûᵀ from the kept eigenvectors as columns")
        if idem > 1e-8:
            raise _diagnose(fn, case, out, guesses, f"P is not idempotent (‖P² − P‖/‖P‖ = {idem:.1e}): "
                            "P = Û Ûᵀ needs orthonormal eigenvectors (columns of U), not eigenvalues "
                            "or rows")
        k = round(float(torch.trace(out.to(F64))))
        if k != r:
            raise _diagnose(fn, case, out, guesses, f"P keeps {k} directions but {r} eigenvalues of C are "
                            f"below the threshold {t:g}: keep exactly the eigenvectors with λ < threshold")
        raise _diagnose(fn, case, out, guesses, f"P is a projector of the right rank {r} but onto the wrong "
                        f"directions (‖P − ref‖/‖ref‖ = {err:.2e}): keep the eigenvectors whose eigenvalue "
                        "is below the threshold")
    _ok(fn, "P = Û Ûᵀ from the eigenvectors with λ < threshold", cases)


# ------------------------------------------------------------- 8. the room an edit has: ‖Pk‖²/‖k‖²
def _share_cases() -> list[_Case]:
    from alphaedit_lite.core.verify import null_space_share

    gen = torch.Generator().manual_seed(808)
    cases = []
    for label, d, r, n, scale in [("d = 8, a null space of rank 3, 5 keys", 8, 3, 5, 1.0),
                                  ("d = 20, rank 12, 40 keys rescaled by 100", 20, 12, 40, 100.0)]:
        U = _orthonormal(d, gen)[:, :r]                               # (d, r) the kept directions
        P = U @ U.T                                                   # (d, d)
        K = torch.randn(d, n, generator=gen, dtype=F64) * scale       # (d, n) keys as columns
        cases.append(_Case(label, (K, P), null_space_share(K, P)))
    U = _orthonormal(6, gen)
    P = U[:, :2] @ U[:, :2].T
    K = torch.cat([U[:, :2] @ torch.randn(2, 3, generator=gen, dtype=F64),       # inside: share 1
                   U[:, 2:] @ torch.randn(4, 3, generator=gen, dtype=F64)], 1)   # outside: share 0
    cases.append(_Case("keys wholly inside, then wholly outside the null space", (K, P), null_space_share(K, P)))
    return cases


def check_null_space_share(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check `fn(K, P) -> s` with s_j = ‖P k_j‖² / ‖k_j‖² for each key k_j (column of K), shape (n,)."""
    _require_callable(fn)
    cases = _share_cases()
    for case in cases:
        K, P = case.args
        out = _call(fn, case)
        n = K.shape[1]
        if out.numel() == 1 and n > 1:
            raise _fail(fn, case, f"one number for all {n} keys: return one share per key (column of K), "
                                  f"shape ({n},); ‖P K‖²_F/‖K‖²_F is their energy-weighted average")
        if tuple(out.shape) != (n,):
            raise _fail(fn, case, f"return one share per key (column of K), shape ({n},), got {tuple(out.shape)}")
        _check_finite(fn, case, out)
        if _rel(out, case.expected) < MATCH_RTOL:
            continue
        ref = case.expected
        PK = P @ K                                                    # (d, n)
        raise _diagnose(fn, case, out, [
            ("you measured the share OUTSIDE the null space (I − P): P keeps the editable directions, so "
             "the share is ‖P k‖²/‖k‖²", 1 - ref),
            ("you forgot the squares: the share of energy is ‖P k‖² / ‖k‖², not ‖P k‖ / ‖k‖", ref.sqrt()),
            ("you did not divide by ‖k‖²: a key twice as long would count four times as much",
             PK.norm(dim=0) ** 2),
        ], f"off by {_rel(out, ref):.1e} (relative) from ‖P k‖² / ‖k‖² per key; ‖P k‖ is P @ K, norms over dim=0")
    _ok(fn, "s_j = ‖P k_j‖² / ‖k_j‖² per key", cases)
