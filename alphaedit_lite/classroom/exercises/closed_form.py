"""Checkers of the closed forms: the gradient ∇J(Δ) of AlphaEdit's objective (Eq. 13), AlphaEdit's
update Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹ (Eq. 14) and MEMIT's Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹ from its
normal equations (MEMIT Eq. 14). Notebooks 02 and 00.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta

from alphaedit_lite.classroom.exercises._common import (F64, MATCH_RTOL, GUESS_RTOL, _Case, _fro, _rel,
                                                        _require_callable, _fail, _call, _check_finite, _diagnose,
                                                        _uses_explicit_inverse, _ok, _editing_cases)


# -------------------------------------------------------------------------------- 3. gradient ∇J
def _grad_autograd(Delta, R, K1, P, alpha, prev_cov) -> torch.Tensor:
    """∇J(Δ) by autograd, J = ‖ΔPK1 − R‖² + α‖ΔP‖² + tr(ΔP KpKpᵀ (ΔP)ᵀ) (the paper's objective)."""
    X = Delta.clone().requires_grad_(True)
    DP = X @ P
    J = (DP @ K1 - R).pow(2).sum() + alpha * DP.pow(2).sum() + ((DP @ prev_cov) * DP).sum()
    J.backward()
    return X.grad.detach()


def check_grad_J(fn: Callable) -> None:
    """Check `fn(Delta, R, K1, P, alpha, prev_cov) -> ∇J(Δ)` (d_out, d_in), the paper's Eq. 13.

    J(Δ) = ‖ΔPK1 − R‖² + α‖ΔP‖² + ‖ΔPKp‖², `prev_cov` = Kp Kpᵀ; the reference is autograd.
    """
    _require_callable(fn)
    cases = []
    for c in _editing_cases():
        args = (c["Delta"], c["R"], c["K1"], c["P"], c["alpha"], c["prev_cov"])
        cases.append(_Case(c["label"], args, _grad_autograd(*args)))
    for case in cases:
        Delta, R, K1, P, alpha, KK = case.args
        out = _call(fn, case)
        if tuple(out.shape) == tuple(Delta.T.shape):
            raise _fail(fn, case, f"shape {tuple(out.shape)} is Δ's transposed: the gradient has Δ's shape "
                                  f"(d_out, d_in) = {tuple(Delta.shape)}")
        if out.shape != Delta.shape:
            raise _fail(fn, case, f"the gradient must have Δ's shape (d_out, d_in) = {tuple(Delta.shape)}, "
                                  f"got {tuple(out.shape)}")
        _check_finite(fn, case, out)
        err = _rel(out, case.expected)
        if err < MATCH_RTOL:
            continue
        if out.dtype != F64:
            raise _fail(fn, case, f"your gradient is {out.dtype}: compute in float64 like the inputs")
        DP = Delta @ P
        fit, ridge, prev = (DP @ K1 - R) @ K1.T @ P, alpha * DP, DP @ KK @ P
        guesses = [
            ("your gradient is half the true one: ∂‖X‖²/∂X = 2X, you forgot the factor 2", fit + ridge + prev),
            ("the sign of the fit term is flipped: J contains ‖ΔPK1 − R‖², its gradient is "
             "2(ΔPK1 − R)K1ᵀP, not 2(R − ΔPK1)K1ᵀP", 2 * (-fit + ridge + prev)),
            ("you forgot the trailing P (Pᵀ = P) of the chain rule: J depends on Δ only through ΔP, so every "
             "term ends in ·P", 2 * ((DP @ K1 - R) @ K1.T + alpha * DP + DP @ KK)),
            ("the ridge term is α‖ΔP‖², whose gradient is 2αΔP, not 2αΔ", 2 * (fit + alpha * Delta + prev)),
            ("the earlier edits' term ‖ΔPKp‖² is missing: add 2ΔP KpKpᵀ P", 2 * (fit + ridge)),
            ("the ridge term 2αΔP is missing", 2 * (fit + prev)),
            ("you used Δ instead of ΔP in the fit term: it is 2(ΔPK1 − R)K1ᵀP",
             2 * ((Delta @ K1 - R) @ K1.T @ P + ridge + prev)),
        ]
        raise _diagnose(fn, case, out, guesses, f"your gradient differs from autograd's by a relative error "
                        f"{err:.2e}; the gradient is 2[(ΔPK1 − R)K1ᵀP + αΔP + ΔP KpKpᵀ P]")
    _ok(fn, "∇J(Δ) (Eq. 13)", cases)


# ------------------------------------------------------------------------ 4. AlphaEdit closed form
def check_alphaedit_delta(fn: Callable) -> None:
    """Check `fn(R, K1, P, alpha, prev_cov) -> Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹` (d_out, d_in).

    The answer must match `alphaedit_delta`, lie in the null space (Δ = ΔP), and be computed with a
    linear solve, not an explicit inverse (the source is inspected when it is available).
    """
    _require_callable(fn)
    cases = []
    for c in _editing_cases():
        args = (c["R"], c["K1"], c["P"], c["alpha"], c["prev_cov"])
        cases.append(_Case(c["label"], args, alphaedit_delta(*args)))
    for case in cases:
        R, K1, P, alpha, KK = case.args
        d_in, d_out = K1.shape[0], R.shape[0]
        try:
            out = _call(fn, case)
        except AssertionError as exc:
            if isinstance(exc.__cause__, RuntimeError) and "singular" in str(exc.__cause__).lower():
                raise _fail(fn, case, "your bracket is singular: α must be added as α·I (the identity), after "
                                      "the products with P: (KpKpᵀ + K1K1ᵀ) P + α I") from exc.__cause__
            raise
        if tuple(out.shape) == (d_in, d_out):
            raise _fail(fn, case, f"shape (d_in, d_out) = {tuple(out.shape)}: you returned Δᵀ; solving "
                                  "Aᵀ Δᵀ = Bᵀ gives Δᵀ, so transpose back (… .T)")
        if tuple(out.shape) != (d_out, d_in):
            raise _fail(fn, case, f"Δ must have W's shape (d_out, d_in) = ({d_out}, {d_in}), got {tuple(out.shape)}")
        I = torch.eye(d_in, dtype=F64)
        ref = case.expected
        if not torch.isfinite(out).all() or _fro(out) > 1e6 * _fro(ref):
            raise _fail(fn, case, "your Δ is huge or not finite, so your bracket is (nearly) singular: α must be "
                                  "added as α·I (the identity), after the products with P: (KpKpᵀ + K1K1ᵀ) P + α I")
        if out.dtype != F64 and _rel(out, ref) >= MATCH_RTOL:
            raise _fail(fn, case, f"your Δ is {out.dtype}: compute in float64 (the small eigenvalues and the "
                                  "null space do not survive float32)")
        err = _rel(out, ref)
        if err < MATCH_RTOL:
            continue
        M = KK + K1 @ K1.T                        # (d_in, d_in)
        A = M @ P + alpha * I                     # the bracket
        B = R @ K1.T @ P                          # (d_out, d_in)

        def right_solve(Mat, Rhs):  # Rhs Mat⁻¹
            return torch.linalg.solve(Mat.T, Rhs.T).T

        residual = _fro(out @ P - out) / max(_fro(out), 1e-300)
        guesses = [
            (f"your Δ is not in the null space (‖ΔP − Δ‖/‖Δ‖ = {residual:.1e}): did you forget the P after K1ᵀ? "
             "Δ = R K1ᵀ P (…)⁻¹", right_solve(A, R @ K1.T)),
            ("you used the bracket transposed, Aᵀ = P(KpKpᵀ + K1K1ᵀ) + αI: either P is on the wrong side of "
             "KKᵀ, or torch.linalg.solve(A, B.T).T, which solves Δ Aᵀ = B; for Δ A = B solve Aᵀ Δᵀ = Bᵀ with "
             "torch.linalg.solve(A.T, B.T).T (or torch.linalg.solve(A, B, left=False))",
             torch.linalg.solve(A, B.T).T),
            ("the bracket is missing its P: it is KpKpᵀ P + K1K1ᵀ P + αI", right_solve(M + alpha * I, B)),
            ("your Δ ignores prev_cov (KpKpᵀ, the earlier edits): the bracket is KpKpᵀP + K1K1ᵀP + αI",
             right_solve(K1 @ K1.T @ P + alpha * I, B)),
            ("your Δ ignores the `alpha` argument: use it in the bracket's α I instead of a constant",
             right_solve(M @ P + 10.0 * I, B)),
            ("α is on the wrong side: the bracket adds α I (α‖ΔP‖² is a penalty), it does not divide by α "
             "or add I/α", right_solve(M @ P + I / alpha, B)),
            ("α must be added as α·I to the whole bracket (KpKpᵀP + K1K1ᵀP + αI), not multiplied into it",
             right_solve(alpha * M @ P + I, B)),
        ]
        for sentence, guess in guesses:  # exact typical mistakes first (a missing P also solves a singular system)
            if torch.isfinite(guess).all() and _rel(out, guess) < GUESS_RTOL:
                raise _fail(fn, case, sentence)
        for Abad in (M @ P + alpha * P, (M + alpha * I) @ P, P @ (M + alpha * I)):  # singular brackets
            if _fro(out @ Abad - B) <= 1e-8 * (_fro(out) * _fro(Abad) + _fro(B)):
                raise _fail(fn, case, "α must be added as α·I (the identity) after the products with P: the "
                                      "bracket is (KpKpᵀ + K1K1ᵀ) P + α I; yours is singular (α·P, or (… + αI) P)")
        if residual > 1e-6:
            raise _fail(fn, case, f"your Δ is not in the null space (‖ΔP − Δ‖/‖Δ‖ = {residual:.1e}): did you "
                                  "forget the P after K1ᵀ? Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹")
        raise _fail(fn, case, f"your Δ differs from alphaedit_delta by a relative error "
                              f"‖Δ − ref‖/‖ref‖ = {err:.2e}")
    inv = _uses_explicit_inverse(fn)
    if inv is not None:
        inv = inv.strip().rstrip("( ")
        raise _fail(fn, None, f"the values are right, but your code computes an explicit inverse ({inv}): "
                              "use a linear solve, torch.linalg.solve(A.T, B.T).T, which is cheaper and more "
                              "accurate when the bracket is ill-conditioned")
    _ok(fn, "Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹ (Eq. 14), in the null space, with a linear solve", cases)


# ----------------------------------------------------- 7. MEMIT's closed form from the normal equations
def _memit_cases() -> list[_Case]:
    """Inputs (W, K1, V1, C0, λ) of one MEMIT edit and the reference Δ from `memit_delta`.

    The first case is square everywhere (d_in = d_out = u), so every typical mistake that only
    changes the order of a product (K1ᵀK1, the inverse on the left) still computes and can be named.
    """
    gen = torch.Generator().manual_seed(707)
    cases = []
    for label, d_in, d_out, u, lam, scale in [
        ("all square: d_in = d_out = u = 6, λ 3", 6, 6, 6, 3.0, 1.0),
        ("d_in 10, d_out 4, 3 new keys, λ 15 000 (the paper's)", 10, 4, 3, 1.5e4, 1.0),
        ("d_in 8, d_out 12, 5 new keys, λ 0.2", 8, 12, 5, 0.2, 1.0),
        ("d_in 7, d_out 3, 1 new key, keys rescaled by 100, λ 50", 7, 3, 1, 50.0, 100.0),
    ]:
        K0 = (torch.randn(d_in, 30 * d_in, generator=gen, dtype=F64) + 0.5) * scale      # (d_in, n), full rank
        C0 = K0 @ K0.T / K0.shape[1]                                                       # (d_in, d_in)
        W = torch.randn(d_out, d_in, generator=gen, dtype=F64) / d_in ** 0.5               # (d_out, d_in)
        K1 = (torch.randn(d_in, u, generator=gen, dtype=F64) + 0.5) * scale                # (d_in, u)
        V1 = W @ K1 + torch.randn(d_out, u, generator=gen, dtype=F64) * scale              # (d_out, u)
        cases.append(_Case(label, (W, K1, V1, C0, lam), memit_delta(V1 - W @ K1, K1, C0, lam)))
    return cases


_SHAPE_ERRORS = ("size of tensor", "cannot be multiplied", "must match", "shape", "dimension")


def check_memit_normal_equations(fn: Callable) -> None:
    """Check `fn(W, K1, V1, C0, lam) -> Δ` (d_out, d_in), MEMIT's closed form
    Δ = R K1ᵀ (λ C0 + K1 K1ᵀ)⁻¹ with R = V1 − W K1, from the normal equations
    Δ (λ C0 + K1 K1ᵀ) = R K1ᵀ of ‖(W + Δ) K1 − V1‖² + λ tr(Δ C0 Δᵀ).

    The reference is `alphaedit_lite.core.solvers.memit_delta(V1 − W K1, K1, C0, lam)`; an explicit
    inverse and a linear solve are both accepted.
    """
    _require_callable(fn)
    cases = _memit_cases()
    for case in cases:
        W, K1, V1, C0, lam = case.args
        d_out, d_in = W.shape
        u = K1.shape[1]
        try:
            out = _call(fn, case)
        except AssertionError as exc:
            cause = exc.__cause__
            if isinstance(cause, RuntimeError) and any(s in str(cause) for s in _SHAPE_ERRORS):
                raise _fail(fn, case, f"the shapes do not fit ({str(cause).splitlines()[0]}): K1 K1ᵀ is "
                                      f"(d_in, d_in) = ({d_in}, {d_in}), like C0 (K1ᵀ K1 would be (u, u) = "
                                      f"({u}, {u})), and the inverse multiplies R K1ᵀ (d_out, d_in) from the "
                                      "right: Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹") from cause
            raise
        if tuple(out.shape) == (d_in, d_out) and d_in != d_out:
            raise _fail(fn, case, f"shape (d_in, d_out) = {tuple(out.shape)}: you returned Δᵀ; Δ has W's shape "
                                  f"(d_out, d_in) = ({d_out}, {d_in}) (solving A X = K1 Rᵀ gives Δᵀ: "
                                  "transpose back)")
        if tuple(out.shape) != (d_out, d_in):
            raise _fail(fn, case, f"Δ must have W's shape (d_out, d_in) = ({d_out}, {d_in}), got {tuple(out.shape)}")
        _check_finite(fn, case, out, ": is your bracket λC0 + K1K1ᵀ (C0 makes it invertible)?")
        ref = case.expected
        err = _rel(out, ref)
        if err < MATCH_RTOL:
            continue
        if out.dtype != F64:
            raise _fail(fn, case, f"your Δ is {out.dtype}: compute in float64 like the inputs (λC0 + K1K1ᵀ can "
                                  "be ill-conditioned)")
        R = V1 - W @ K1                                       # (d_out, u)
        A = lam * C0 + K1 @ K1.T                              # (d_in, d_in), symmetric

        def right(M, B=R @ K1.T):                             # B M⁻¹
            return torch.linalg.solve(M.T, B.T).T

        nan = torch.full((1,), float("nan"), dtype=F64)
        guesses = [
            ("you forgot λ: the preservation term is λ‖ΔK0‖², so the bracket is λC0 + K1K1ᵀ, "
             "not C0 + K1K1ᵀ",
             right(C0 + K1 @ K1.T)),
            ("you used K1ᵀK1 (u × u, the Gram matrix of the new keys) instead of K1K1ᵀ (d_in × d_in): the "
             "gradient of ‖ΔK1 − R‖² is 2(ΔK1 − R)K1ᵀ, so Δ meets K1K1ᵀ",
             right(lam * C0 + K1.T @ K1) if u == d_in else nan),
            ("the sign is flipped: the residual is R = V1 − W K1 (what the update must ADD on the new keys), "
             "not W K1 − V1", -ref),
            ("you multiplied by the inverse on the wrong side: Δ (λC0 + K1K1ᵀ) = R K1ᵀ is solved by "
             "Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹, the inverse on the RIGHT",
             torch.linalg.solve(A, R @ K1.T) if d_out == d_in else nan),
            ("you returned Δᵀ = (λC0 + K1K1ᵀ)⁻¹ K1 Rᵀ: transpose it back to W's shape",
             ref.T if d_out == d_in else nan),
            ("λ weights the PRESERVED term: the bracket is λC0 + K1K1ᵀ, not C0 + λK1K1ᵀ",
             right(C0 + lam * K1 @ K1.T)),
            ("λ multiplies C0, it does not divide it: the bracket is λC0 + K1K1ᵀ", right(C0 / lam + K1 @ K1.T)),
            ("the bracket is missing K1K1ᵀ (the new keys' own term): it is λC0 + K1K1ᵀ", right(lam * C0)),
            ("the preserved term is λC0, not λI: C0 = K0K0ᵀ/n says which directions preserved keys use",
             right(lam * torch.eye(d_in, dtype=F64) + K1 @ K1.T)),
            ("you used V1 where the residual R = V1 − W K1 belongs: the update only adds what W K1 lacks",
             right(A, V1 @ K1.T)),
            ("return the update Δ, not the edited weight W + Δ", W + ref),
        ]
        raise _diagnose(fn, case, out, guesses, f"your Δ differs from memit_delta by a relative error "
                        f"‖Δ − ref‖/‖ref‖ = {err:.2e}; Δ = R K1ᵀ (λC0 + K1K1ᵀ)⁻¹ with "
                        "R = V1 − W K1")
    _ok(fn, "Δ = (V1 − W K1) K1ᵀ (λC0 + K1K1ᵀ)⁻¹ (MEMIT's normal equations)", cases)
