"""Checkers of updates written inside the null space: AlphaEdit's plug-in Δ P for a MEMIT update
(Sec. 3), the exact write Δ = R (K1ᵀPK1)⁻¹ (PK1)ᵀ (Eq. 14 with α → 0) and the fraction
‖P k‖² / (‖P k‖² + α) of a residual that Eq. 14 writes for one key. Notebooks 03, 00 and 04.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta

from alphaedit_lite.classroom.exercises._common import (F64, MATCH_RTOL, _Case, _fro, _rel, _name, _require_callable,
                                                        _fail, _call, _check_finite, _diagnose, _orthonormal, _ok)


# -------------------------------------------------------------------- 6. the projection plug-in Δ P
def _projection_cases() -> list[dict]:
    """MEMIT updates Δ (d_out, d_in) and null-space projectors P of preserved keys K0 (d_in, n)."""
    gen = torch.Generator().manual_seed(606)
    out = []
    for label, d_in, d_out, r, u, lam in [
        ("d_in 8, d_out 5, rank(K0) 5, 5 new facts", 8, 5, 5, 5, 1.0),
        ("square Δ: d_in = d_out = 6, rank(K0) 3, 4 new facts", 6, 6, 3, 4, 0.1),
        ("d_in 10, d_out 12, rank(K0) 7, 5 new facts", 10, 12, 7, 5, 10.0),
        ("d_in 16, d_out 4, rank(K0) 11, 7 new facts, λ 1e4 (MEMIT's strong constraint)", 16, 4, 11, 7, 1e4),
    ]:
        # u > d_in − r new keys: λC0 + K1K1ᵀ is invertible although C0 has an exact null space, and
        # MEMIT's Δ then has a part outside that null space (ΔK0 ≠ 0) for the projection to remove
        Us = torch.linalg.qr(torch.randn(d_in, r, generator=gen, dtype=F64))[0]      # (d_in, r)
        K0 = Us @ torch.randn(r, 30 * r, generator=gen, dtype=F64)                     # (d_in, n), rank r
        C0 = K0 @ K0.T / K0.shape[1]                                                   # (d_in, d_in)
        P = null_space_projector(C0, threshold=1e-9, mode="absolute").P                # (d_in, d_in), rank d_in − r
        K1 = torch.randn(d_in, u, generator=gen, dtype=F64)                            # (d_in, u)
        R = torch.randn(d_out, u, generator=gen, dtype=F64)                            # (d_out, u)
        out.append(dict(label=label, Delta=memit_delta(R, K1, C0, lam), P=P, K0=K0))
    return out


def check_projection(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check `fn(Delta, P) -> Δ P`: AlphaEdit's one-line plug-in turns any update Δ (d_out, d_in)
    into one that leaves the preserved keys' outputs alone, (Δ P) K0 ≈ 0."""
    _require_callable(fn)
    worst, memit_worst = 0.0, 0.0
    cases = []
    for c in _projection_cases():
        D, P, K0 = c["Delta"], c["P"], c["K0"]
        case = _Case(c["label"], (D, P), D @ P)
        cases.append(case)
        d_out, d_in = D.shape
        try:
            out = _call(fn, case)
        except AssertionError as exc:
            cause = str(exc.__cause__ or "")
            if isinstance(exc.__cause__, RuntimeError) and "cannot be multiplied" in cause:
                raise _fail(fn, case, f"you multiplied on the wrong side (P Δ): Δ is (d_out, d_in) = ({d_out}, {d_in}) "
                                      f"and acts on keys from the right (Δ k), so the projection goes on the right: "
                                      "Δ @ P") from exc.__cause__
            if isinstance(exc.__cause__, RuntimeError) and "must match the size" in cause:
                raise _fail(fn, case, "you multiplied element by element (Δ * P); the projection is the matrix "
                                      "product Δ @ P") from exc.__cause__
            raise
        if tuple(out.shape) == (d_in, d_out) and d_in != d_out:
            raise _fail(fn, case, f"shape (d_in, d_out) = {tuple(out.shape)}: you returned (ΔP)ᵀ; the update keeps Δ's "
                                  f"shape (d_out, d_in) = ({d_out}, {d_in})")
        if tuple(out.shape) != (d_out, d_in):
            raise _fail(fn, case, f"the projected update must keep Δ's shape (d_out, d_in) = ({d_out}, {d_in}), "
                                  f"got {tuple(out.shape)}")
        _check_finite(fn, case, out)
        err = _rel(out, case.expected)
        if err < MATCH_RTOL:
            worst = max(worst, _fro(out.to(F64) @ K0) / (_fro(D) * _fro(K0)))
            memit_worst = max(memit_worst, _fro(D @ K0) / (_fro(D) * _fro(K0)))
            continue
        if out.dtype != F64:
            raise _fail(fn, case, f"your Δ P is {out.dtype}: keep float64 (Δ and P are float64; float32 rounding "
                                  "leaves a visible (ΔP)K0)")
        I = torch.eye(d_in, dtype=F64)
        guesses = [
            ("you multiplied on the wrong side (P Δ): Δ acts on keys from the right (Δ k), so the projection goes "
             "on the right: Δ @ P", P @ D if d_out == d_in else torch.full((1,), float("nan"))),
            ("you multiplied element by element (Δ * P); the projection is the matrix product Δ @ P",
             D * P if d_out == d_in else torch.full((1,), float("nan"))),
            ("you returned Δ(I − P), the part that touches the preserved keys; keep Δ P, the part in the null "
             "space", D @ (I - P)),
            ("you returned Δ unchanged; project it: Δ @ P", D),
            ("you returned P itself; return the projected update Δ @ P", P),
        ]
        leak = _fro(out.to(F64) @ K0) / max(_fro(D) * _fro(K0), 1e-300)
        raise _diagnose(fn, case, out.to(F64), guesses, f"your update differs from Δ P by a relative error {err:.2e} "
                        f"and moves the preserved outputs by ‖(ΔP)K0‖/(‖Δ‖‖K0‖) = {leak:.1e}; return Δ @ P")
    print(f"✓ {_name(fn)}: Δ P — matches the reference on {len(cases)} MEMIT updates ({'; '.join(c.label for c in cases)}); "
          f"preserved outputs move by ‖(ΔP)K0‖/(‖Δ‖‖K0‖) ≤ {worst:.1e}, against up to {memit_worst:.1e} "
          "for MEMIT's Δ itself")


# ------------------------------------------------ 10. the exact write inside the null space (notebook 00)
def _null_space_write_cases() -> list[_Case]:
    """Inputs (R, K1, P) with u ≤ rank P keys whose projections P k are independent, and the reference
    Δ = R (PK1)⁺ = R (K1ᵀPK1)⁻¹ K1ᵀP: the smallest Δ with Δ = ΔP and ΔK1 = R."""
    gen = torch.Generator().manual_seed(1010)
    cases = []
    for label, d_in, d_out, r, u, scale in [
        ("3-D toy: one output, a null space of rank 1, one key", 3, 1, 1, 1, 1.0),
        ("square Δ: d_in = d_out = 6, a null space of rank 4, 2 keys", 6, 6, 4, 2, 1.0),
        ("d_in 10, d_out 4, rank 6, 3 keys that share most of their null-space part, rescaled by 100",
         10, 4, 6, 3, 100.0),
        ("d_in 12, d_out 7, rank 9, 5 keys", 12, 7, 9, 5, 1.0),
    ]:
        U = _orthonormal(d_in, gen)[:, :r]                                   # (d_in, r) the kept directions
        P = U @ U.T                                                          # (d_in, d_in)
        K1 = torch.randn(d_in, u, generator=gen, dtype=F64)                  # (d_in, u) keys as columns
        if u == 3:   # a common null-space direction in every key: their projections overlap strongly
            K1 = K1 + 3.0 * U[:, :1]
        K1 = K1 * scale
        R = torch.randn(d_out, u, generator=gen, dtype=F64)                  # (d_out, u)
        PK = P @ K1                                                          # (d_in, u)
        ref = torch.linalg.solve(K1.T @ PK, PK.T)                            # (u, d_in) = (K1ᵀPK1)⁻¹ (PK1)ᵀ
        cases.append(_Case(label, (R, K1, P), R @ ref))
    return cases


def check_null_space_write(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check `fn(R, K1, P) -> Δ = R (K1ᵀPK1)⁻¹ K1ᵀP`: the smallest update with Δ = ΔP (rows in the null
    space) that writes the new keys exactly, ΔK1 = R; AlphaEdit's Eq. 14 with α → 0 and no earlier edits."""
    _require_callable(fn)
    cases = _null_space_write_cases()
    for case in cases:
        R, K1, P = case.args
        (d_out, _), d_in = R.shape, K1.shape[0]
        out = _call(fn, case)
        if tuple(out.shape) == (d_in, d_out) and d_in != d_out:
            raise _fail(fn, case, f"shape (d_in, d_out) = {tuple(out.shape)}: you returned Δᵀ; the update has W's "
                                  f"shape (d_out, d_in) = ({d_out}, {d_in})")
        if tuple(out.shape) != (d_out, d_in):
            raise _fail(fn, case, f"Δ must have W's shape (d_out, d_in) = ({d_out}, {d_in}), got {tuple(out.shape)}")
        _check_finite(fn, case, out, ": is the matrix you solve with K1ᵀPK1 (u × u, invertible here)?")
        ref = case.expected
        err = _rel(out, ref)
        if err < MATCH_RTOL:
            continue
        if out.dtype != F64:
            raise _fail(fn, case, f"your Δ is {out.dtype}: compute in float64 like the inputs")
        I = torch.eye(d_in, dtype=F64)
        PK, Q = P @ K1, I - P
        nan = torch.full((1,), float("nan"), dtype=F64)
        smallest = R @ torch.linalg.pinv(K1)                                 # (d_out, d_in) = R (K1ᵀK1)⁻¹K1ᵀ
        guesses = [
            ("you returned the smallest write R K1⁺ (section 1's rank-one write for several keys): it writes the "
             "keys but is not in the null space (ΔP ≠ Δ), so build it from the projected keys P K1", smallest),
            ("you projected the smallest write, (R K1⁺) P = R (K1ᵀK1)⁻¹ (PK1)ᵀ: it lies in the null space but no "
             "longer writes the keys (ΔK1 ≠ R), so solve with K1ᵀPK1, the matrix of the projected keys, not K1ᵀK1",
             smallest @ P),
            ("you normalised each key on its own, R diag(1/‖Pk‖²) (PK1)ᵀ: that is the one-key formula; with "
             "several keys their projections overlap, so solve with the whole matrix K1ᵀPK1",
             R @ (PK / (PK ** 2).sum(0)).T),
            ("you forgot to normalise: R (PK1)ᵀ has the right direction but not the right length; solve with "
             "K1ᵀPK1 so that ΔK1 = R", R @ PK.T),
            ("you used the complement I − P: the update must live in P's kept directions (Δ = ΔP), where the "
             "preserved keys do not reach", R @ torch.linalg.pinv(Q @ K1)),
            ("you returned Δᵀ: transpose it back to W's shape (d_out, d_in)", ref.T if d_in == d_out else nan),
            ("you put the projector on the left (P Δ): P acts on the key side, Δ = Δ P",
             P @ ref if d_in == d_out else nan),
        ]
        writes = _rel(out.to(F64) @ K1, R)
        leak = _fro(out.to(F64) @ Q) / max(_fro(out), 1e-300)
        if writes < 1e-6 and leak < 1e-6:
            generic = (f"your Δ writes the keys (ΔK1 = R) inside the null space but is not the smallest such update "
                       f"(‖Δ‖ = {_fro(out):.4g}, smallest {_fro(ref):.4g}): use Δ = R (K1ᵀPK1)⁻¹ (PK1)ᵀ")
        elif leak >= 1e-6:
            generic = (f"your Δ is not in the null space, ‖Δ(I − P)‖/‖Δ‖ = {leak:.1e}: build it from the projected "
                       "keys P K1 so that Δ = ΔP")
        else:
            generic = (f"your Δ lies in the null space but does not write the keys, ‖ΔK1 − R‖/‖R‖ = {writes:.1e}: "
                       "solve (K1ᵀPK1) X = (PK1)ᵀ and return R X")
        raise _diagnose(fn, case, out.to(F64), guesses, generic)
    _ok(fn, "Δ = R (K1ᵀPK1)⁻¹ (PK1)ᵀ, the exact write inside the null space", cases)


# ------------------------------- 11. how much of an edit AlphaEdit writes: ‖Pk‖² against α (notebook 04)
def _written_fraction_cases() -> list[_Case]:
    """Inputs (K, P, α) and the fraction of its residual that AlphaEdit writes for each key k alone,
    read off the library's solver: Δ = alphaedit_delta(r, k, P, α), fraction = ⟨Δk, r⟩ / ‖r‖²."""
    gen = torch.Generator().manual_seed(1111)

    def keys_and_projector(d, r, n):
        U = _orthonormal(d, gen)[:, :r]                                          # (d, r) the kept directions
        K = torch.randn(d, n, generator=gen, dtype=F64)
        K = K / K.norm(dim=0) * torch.logspace(-0.5, 1.0, n, dtype=F64)          # (d, n), ‖k‖ from 0.3 to 10
        return K, U @ U.T

    K8, P8 = keys_and_projector(8, 3, 5)
    K20, P20 = keys_and_projector(20, 12, 30)
    U6 = _orthonormal(6, gen)
    K6 = torch.cat([U6[:, :2] @ torch.randn(2, 2, generator=gen, dtype=F64),     # inside the kept directions
                    U6[:, 2:] @ torch.randn(4, 2, generator=gen, dtype=F64)], 1)  # outside them
    cases = []
    for label, K, P, alpha in [
        ("d = 8, kept rank 3, 5 keys of very different lengths, α = 10 (the paper's)", K8, P8, 10.0),
        ("d = 20, kept rank 12, 30 keys, α = 1", K20, P20, 1.0),
        ("the same 30 keys, α = 100", K20, P20, 100.0),
        ("keys wholly inside, then wholly outside the kept directions, α = 0.5", K6, U6[:, :2] @ U6[:, :2].T, 0.5),
    ]:
        rvec = torch.randn(3, 1, generator=gen, dtype=F64)                       # any residual: the fraction is the same
        frac = []
        for j in range(K.shape[1]):
            k = K[:, j:j + 1]                                                    # (d, 1) one key alone
            D = alphaedit_delta(rvec, k, P, alpha=alpha)                         # (3, d)
            frac.append(float(((D @ k) * rvec).sum() / (rvec * rvec).sum()))
        cases.append(_Case(label, (K, P, alpha), torch.tensor(frac, dtype=F64)))
    return cases


def check_written_fraction(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Check `fn(K, P, alpha) -> f` with f_j = ‖P k_j‖² / (‖P k_j‖² + α) for each key (column of K), shape (n,):
    the fraction of its residual that AlphaEdit's Eq. 14 writes for that key alone (one layer, no Kp)."""
    _require_callable(fn)
    cases = _written_fraction_cases()
    for case in cases:
        K, P, alpha = case.args
        n = K.shape[1]
        out = _call(fn, case)
        if out.numel() == 1 and n > 1:
            raise _fail(fn, case, f"one number for all {n} keys: return one fraction per key (column of K), shape ({n},)")
        if tuple(out.shape) != (n,):
            raise _fail(fn, case, f"return one fraction per key (column of K), shape ({n},), got {tuple(out.shape)}")
        _check_finite(fn, case, out)
        ref = case.expected
        if _rel(out, ref) < 1e-8:
            continue
        pk2 = (P @ K).norm(dim=0) ** 2                                           # (n,) ‖Pk‖²
        k2 = K.norm(dim=0) ** 2                                                  # (n,) ‖k‖²
        share = pk2 / k2
        qk2 = ((torch.eye(K.shape[0], dtype=F64) - P) @ K).norm(dim=0) ** 2
        raise _diagnose(fn, case, out.to(F64), [
            ("you compared the SHARE ‖Pk‖²/‖k‖² with α: α is an absolute ridge, so what competes with it is "
             "‖Pk‖² itself (a longer key with the same share is written more)", share / (share + alpha)),
            ("that is the part NOT written, α / (‖Pk‖² + α); the written fraction is ‖Pk‖² / (‖Pk‖² + α)",
             alpha / (pk2 + alpha)),
            ("you forgot the squares: the fraction is ‖Pk‖² / (‖Pk‖² + α), with ‖Pk‖ squared",
             pk2.sqrt() / (pk2.sqrt() + alpha)),
            ("you used ‖k‖² where ‖Pk‖² belongs: AlphaEdit writes only through the part of the key in P's kept "
             "directions", k2 / (k2 + alpha)),
            ("you used the complement I − P: AlphaEdit writes through P k, the part of the key in the kept "
             "directions", qk2 / (qk2 + alpha)),
            ("you dropped ‖Pk‖² from the denominator: ‖Pk‖²/α is the small-key approximation, the fraction "
             "saturates at 1 as ‖Pk‖² outgrows α", pk2 / alpha),
            ("you returned the share ‖Pk‖²/‖k‖²: the fraction written also depends on the ridge α",
             share),
            ("you put ‖k‖² in the denominator: for one key Δ = r (Pk)ᵀ / (‖Pk‖² + α), so Δk = r ‖Pk‖² / (‖Pk‖² + α)",
             pk2 / (k2 + alpha)),
            ("your answer does not change with `alpha`: you used α = 10 whatever the argument",
             pk2 / (pk2 + 10.0)),
        ], f"off by {_rel(out, ref):.1e} (relative) from ‖P k‖² / (‖P k‖² + α) per key, which is what "
           "alphaedit_delta writes for each key alone")
    _ok(fn, "f_j = ‖P k_j‖² / (‖P k_j‖² + α), the share of the residual AlphaEdit writes", cases)
