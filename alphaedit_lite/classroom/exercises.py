"""Automatic checks for the notebooks' "your turn" exercises.

Each `check_*` function takes the learner's function, runs it against the library's reference
implementation on several inputs (random shapes, rank-deficient keys, a rescaled case, ...),
prints one "✓ ..." line on success, and otherwise raises `AssertionError` with one sentence that
names the most likely mistake (so a failing exercise stops a headless run). The mistakes are
recognised by recomputing the typical wrong answers and comparing; when none matches, the
message gives the measured error.

| checker | learner writes | paper |
|---|---|---|
| `check_covariance(fn)` | `fn(K) -> C = K Kᵀ / n`, keys as columns K (d, n) | AlphaEdit Eq. 7-8 |
| `check_projector(fn)` | `fn(C, threshold) -> P = Û Ûᵀ`, Û = eigenvectors with λ < threshold | AlphaEdit Eq. 5-7 |
| `check_grad_J(fn)` | `fn(Delta, R, K1, P, alpha, prev_cov) -> ∇J(Δ)` | AlphaEdit Eq. 13 |
| `check_alphaedit_delta(fn)` | `fn(R, K1, P, alpha, prev_cov) -> Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹` | AlphaEdit Eq. 14 |
| `check_subject_key(fn, model, tok, layer)` | `fn(model, tok, text, subject, layer) -> k` (d_in,), the rewrite module's input at the subject's last token | MEMIT Eq. 14 / ROME Sec. 3.1 |
| `check_projection(fn)` | `fn(Delta, P) -> Δ P`, AlphaEdit's plug-in for a MEMIT update: (ΔP)K0 = 0 | AlphaEdit Sec. 3 ("one line of code") |
| `check_memit_normal_equations(fn)` | `fn(W, K1, V1, C0, lam) -> Δ = R K1ᵀ (λ C0 + K1 K1ᵀ)⁻¹`, R = V1 − W K1 | MEMIT Eq. 14 (one layer, no earlier edits) |
| `check_null_space_share(fn)` | `fn(K, P) -> ‖P k‖² / ‖k‖²` per key (column), shape (n,) | AlphaEdit Sec. 3: the room an edit has |
| `check_relative_drift(fn)` | `fn(H0, H) -> mean ‖h − h₀‖ / ‖h₀‖` over probes (rows) | AlphaEdit Fig. 5, the drift of unedited probes |
| `check_null_space_write(fn)` | `fn(R, K1, P) -> Δ = R (K1ᵀPK1)⁻¹ (PK1)ᵀ`, the smallest Δ = ΔP with ΔK1 = R | AlphaEdit Eq. 14 with α → 0 |
| `check_written_fraction(fn)` | `fn(K, P, alpha) -> ‖P k‖² / (‖P k‖² + α)` per key, shape (n,) | AlphaEdit Eq. 14 for one key: room against the ridge |
| `check_common_shift_share(fn)` | `fn(H0, H) -> ‖mean d‖² / mean ‖d‖²`, d = h − h₀ per probe (row) | AlphaEdit Fig. 5: a shifted cloud or scatter |
| `check_corrupt_subject(fn)` | `fn(emb, first, last, scale, seed) -> emb` with seeded noise on rows first..last | ROME Sec. 2.1, the corrupted run |
| `check_group_effects(fn)` | `fn(p_restored, p_corrupt, subject_range) -> (5, L)` mean IE per position group | ROME Fig. 2, the average indirect effect |

Shapes follow CONTRIBUTING.md: keys are columns (d_in, n), Δ and W are (d_out, d_in),
`prev_cov` is Kp Kpᵀ (d_in, d_in), everything is float64.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Callable

import torch

from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta

__all__ = ["check_covariance", "check_projector", "check_grad_J", "check_alphaedit_delta", "check_subject_key",
           "check_projection", "check_memit_normal_equations", "check_null_space_share", "check_relative_drift",
           "check_null_space_write", "check_written_fraction", "check_common_shift_share", "check_corrupt_subject",
           "check_group_effects"]

F64 = torch.float64
MATCH_RTOL = 1e-8   # a learner's answer this close (relative Frobenius norm) to the reference passes
GUESS_RTOL = 1e-6   # a learner's answer this close to a typical wrong answer is diagnosed as that mistake


@dataclass
class _Case:
    label: str      # what the input is, for messages ("float32 keys", "rescaled C", ...)
    args: tuple     # positional arguments for the learner's function
    expected: torch.Tensor


# ------------------------------------------------------------------------------------------ helpers
def _fro(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.to(F64)))   # the Frobenius norm for matrices; also vectors, scalars


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖_F / ‖b‖_F (‖a − b‖_F when b = 0)."""
    nb = _fro(b)
    return _fro(a.to(F64) - b.to(F64)) / (nb if nb > 0 else 1.0)


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _require_callable(fn) -> None:
    if not callable(fn):
        raise TypeError(f"pass your function itself (e.g. check(my_function), without parentheses), got {type(fn).__name__}")


def _fail(fn: Callable, case: _Case | None, sentence: str) -> AssertionError:
    where = f" (input: {case.label})" if case is not None else ""
    return AssertionError(f"✗ {_name(fn)}{where}: {sentence}")


def _clone(a):
    return a.clone() if isinstance(a, torch.Tensor) else a


def _call(fn: Callable, case: _Case) -> torch.Tensor:
    """Run the learner's function on copies of the case's inputs; return its answer as a tensor."""
    try:
        out = fn(*[_clone(a) for a in case.args])
    except NotImplementedError as exc:
        raise _fail(fn, None, f"not written yet ({exc}): replace the `raise NotImplementedError` line "
                              "with your code, run that cell, then run this one again") from None
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; report it in one line
        raise _fail(fn, case, f"your function raised {type(exc).__name__}: {exc}") from exc
    if out is None:
        raise _fail(fn, case, "your function returned None: did you forget the `return`?")
    if not isinstance(out, torch.Tensor):
        try:
            out = torch.as_tensor(out)
        except Exception as exc:  # noqa: BLE001
            raise _fail(fn, case, f"return a torch.Tensor, got {type(out).__name__}") from exc
    if not torch.is_floating_point(out):
        raise _fail(fn, case, f"your answer has dtype {out.dtype}; return a floating-point tensor (float64)")
    return out.detach().cpu()


def _check_finite(fn, case, out, hint: str = "") -> None:
    if not torch.isfinite(out).all():
        raise _fail(fn, case, f"your answer contains NaN or Inf{hint}")


def _diagnose(fn, case, out, guesses: list[tuple[str, torch.Tensor]], generic: str) -> AssertionError:
    """The first typical wrong answer that `out` matches, else the generic message."""
    for sentence, guess in guesses:
        if guess.shape == out.shape and torch.isfinite(guess).all() and _rel(out, guess) < GUESS_RTOL:
            return _fail(fn, case, sentence)
    return _fail(fn, case, generic)


def _uses_explicit_inverse(fn: Callable) -> str | None:
    """The inverse call in the learner's source (inv(, pinv(, inverse(, ** -1), or None if none/unknown."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    src = "\n".join(line.split("#", 1)[0] for line in src.splitlines())  # ignore comments
    src = re.sub(r'"""(.*?)"""', "", src, flags=re.S)                   # and the docstring
    m = re.search(r"\b(?:linalg\.)?(inv|pinv|inverse|inv_ex)\s*\(|\*\*\s*\(?\s*-\s*1\b", src)
    return m.group(0) if m else None


def _orthonormal(d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))[0]  # (d, d)


def _ok(fn: Callable, what: str, cases: list[_Case]) -> None:
    print(f"✓ {_name(fn)}: {what} — matches the reference on {len(cases)} inputs "
          f"({'; '.join(c.label for c in cases)})")


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


# ------------------------------------------------------------------- shared data for Eq. 13 and 14
def _editing_cases() -> list[dict]:
    """Inputs of one layer's edit: R (d_out, u), K1 (d_in, u), P (d_in, d_in), α, Kp Kpᵀ; d_out ≠ d_in."""
    gen = torch.Generator().manual_seed(303)
    out = []
    for label, d_in, d_out, r, u, p, alpha, scale, noise in [
        ("d_in 8, d_out 5, rank(K0) 5, 3 new facts, 2 earlier edits, α 10", 8, 5, 5, 3, 2, 10.0, 1.0, 0.0),
        ("d_in 12, d_out 7, rank(K0) 6, 5 new facts, no earlier edits, α 0.5", 12, 7, 6, 5, 0, 0.5, 1.0, 0.0),
        ("keys rescaled by 100, noisy K0, α 10", 10, 4, 6, 4, 3, 10.0, 100.0, 1e-3),
        ("d_in 16, d_out 9, rank(K0) 10, 8 new facts, 6 earlier edits, α 3", 16, 9, 10, 8, 6, 3.0, 1.0, 0.0),
    ]:
        Us = torch.linalg.qr(torch.randn(d_in, r, generator=gen, dtype=F64))[0]        # (d_in, r)
        K0 = Us @ torch.randn(r, 40 * r, generator=gen, dtype=F64) * scale               # (d_in, n)
        K0 = K0 + noise * scale * torch.randn(K0.shape, generator=gen, dtype=F64)

        def keys(m):
            return (Us @ torch.randn(r, m, generator=gen, dtype=F64) * 2
                    + torch.randn(d_in, m, generator=gen, dtype=F64)) * scale             # (d_in, m)

        C0 = K0 @ K0.T / K0.shape[1]
        P = null_space_projector(C0, threshold=2e-2 * scale**2, mode="absolute").P       # (d_in, d_in)
        K1, Kp = keys(u), keys(p)
        R = torch.randn(d_out, u, generator=gen, dtype=F64) * scale                      # (d_out, u)
        out.append(dict(label=label, R=R, K1=K1, P=P, alpha=alpha, prev_cov=Kp @ Kp.T,
                        Delta=torch.randn(d_out, d_in, generator=gen, dtype=F64)))
    return out


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


# ------------------------------------------------------------- 5. the key at the subject's last token
#: (text, subject) pairs: subjects at the start, in the middle and at the end of a prompt, one word
#: and several words (several tokens in any tokenizer), so every typical position mistake shows.
SUBJECT_KEY_CASES = [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux"),
    ("The headquarters of the Autonomous University of Madrid is in", "Autonomous University of Madrid"),
    ("Apple was founded by", "Apple"),
    ("The Colosseum is in Rome, and so is Toko Yasuda", "Toko Yasuda"),
]
KEY_RTOL = 1e-4   # keys come from a float32 forward pass


def _token_ids(tok, text: str) -> list[int]:
    ids = tok(text).input_ids
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _subject_first_index(tok, text: str, start: int) -> int:
    """Index of the subject's first token (the space before a word belongs to the word's token)."""
    return len(_token_ids(tok, text[:start].rstrip())) if start > 0 else len(_token_ids(tok, ""))


def _all_positions(model, tok, text: str, layer: int) -> dict:
    """One forward pass: keys of every layer (T, d_in), the layer's values (T, d_out), hidden states."""
    from alphaedit_lite.model import arch as M
    from alphaedit_lite.model.hooks import TraceDict

    spec = M.arch_spec(model)
    names = [spec.rewrite_name(x) for x in range(M.num_layers(model))]
    ids = torch.tensor([_token_ids(tok, text)], device=next(model.parameters()).device)
    with TraceDict(model, names, retain_input=True, retain_output=True) as td, torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return {"keys": {x: td[n].input[0].detach().cpu().to(F64) for x, n in enumerate(names)},   # (T, d_in)
            "values": td[names[layer]].output[0].detach().cpu().to(F64),                       # (T, d_out)
            "hidden": [h[0].detach().cpu().to(F64) for h in out.hidden_states]}                # (T, d_model)


def _vrel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(F64) - b.to(F64)).norm() / max(float(b.to(F64).norm()), 1e-300))


def check_subject_key(fn: Callable, model, tok, layer: int | None = None) -> None:
    """Check `fn(model, tok, text, subject, layer) -> k`: the input of layer `layer`'s rewrite module
    (the MLP's output projection, W of shape (d_out, d_in)) at the subject's LAST token, shape (d_in,).

    The reference is `alphaedit_lite.locate.keys.compute_keys` on the plain prompt; a wrong answer is
    matched against the keys at every other position, of every other layer, against the module's
    output and the residual stream, to name the mistake.
    """
    from alphaedit_lite.model import arch as M
    from alphaedit_lite.locate.keys import compute_keys, locate_subject
    from alphaedit_lite.locate.requests import EditRequest

    _require_callable(fn)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"pass the model as the second argument, check_subject_key(fn, model, tok, layer), got "
                        f"{type(model).__name__}")
    n_layers = M.num_layers(model)
    layer = n_layers // 2 if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an int in 0..{n_layers - 1}, got {layer!r}")
    d_in = M.mlp_width(model)
    labels = []
    multi = False
    for text, subject in SUBJECT_KEY_CASES:
        start = text.index(subject)
        sent = locate_subject(tok, text, subject, subject_start=start)
        i = sent.subject_last
        first = _subject_first_index(tok, text, start)
        multi = multi or first < i
        req = EditRequest(prompt=text[:start] + "{}" + text[start + len(subject):], subject=subject, target_new="x")
        ref = compute_keys(model, tok, [req], layer)[layer][:, 0].detach().cpu().to(F64)        # (d_in,)
        ids = sent.ids
        toks = [tok.decode([t]) for t in ids]
        label = f"{subject!r} in {text!r}"
        labels.append(f"{subject!r} ({i - first + 1} token{'s' if i > first else ''})")
        case = _Case(label, (model, tok, text, subject, layer), ref)
        out = _call(fn, case).to(F64)
        shape = tuple(out.shape)
        if shape == (1, d_in):
            raise _fail(fn, case, f"shape {shape}: you kept the batch dimension; return the key of one token, shape "
                                  f"(d_in,) = ({d_in},), e.g. tr.input[0, index]")
        if shape == (len(ids), d_in) or shape == (1, len(ids), d_in):
            raise _fail(fn, case, f"shape {shape}: those are the keys of all {len(ids)} tokens; return only the one at "
                                  f"the subject's last token, shape ({d_in},)")
        if shape != (d_in,):
            pos = _all_positions(model, tok, text, layer)
            if shape == tuple(pos["values"][i].shape) and _vrel(out, pos["values"][i]) < KEY_RTOL:
                raise _fail(fn, case, "that is the module's OUTPUT (the value v = W k), not its input: the key is "
                                      "what goes into the down projection, read it with retain_input=True (tr.input)")
            for h in pos["hidden"]:
                if shape == tuple(h[i].shape) and _vrel(out, h[i]) < KEY_RTOL:
                    raise _fail(fn, case, "that is the residual stream (a hidden state), not the key: the key is the "
                                          f"input of the MLP's down projection, {d_in} wide, read with a Trace on "
                                          "spec.rewrite_name(layer) and retain_input=True")
            raise _fail(fn, case, f"the key must have shape (d_in,) = ({d_in},), the width of the MLP's hidden layer; "
                                  f"got {shape}")
        _check_finite(fn, case, out)
        err = _vrel(out, ref)
        if err < KEY_RTOL:
            continue
        pos = _all_positions(model, tok, text, layer)
        keys = pos["keys"][layer]                                                               # (T, d_in)
        match = [j for j in range(keys.shape[0]) if _vrel(out, keys[j]) < KEY_RTOL]
        where = f"token {i} ({toks[i]!r})"
        if match:
            j = match[0]
            if j == first and first < i:
                raise _fail(fn, case, f"you took the FIRST token of the subject ({toks[j]!r}, index {j}); the key is "
                                      f"read at its LAST token, {where}")
            if j == i + 1:
                raise _fail(fn, case, f"one token too far: index {j} ({toks[j]!r}) is the token after the subject; "
                                      f"its last token is {where} (the length of the tokenized prefix minus 1)")
            if j == len(ids) - 1:
                raise _fail(fn, case, f"you took the prompt's last token ({toks[j]!r}, index {j}); the key is read at "
                                      f"the subject's last token, {where}")
            if j == i - 1:
                raise _fail(fn, case, f"one token too early: index {j} ({toks[j]!r}); the subject's last token is {where}")
            raise _fail(fn, case, f"you read the key at token {j} ({toks[j]!r}); the subject's last token is {where}")
        mean = keys[first:i + 1].mean(0)
        if first < i and _vrel(out, mean) < KEY_RTOL:
            raise _fail(fn, case, "you averaged the keys of the subject's tokens; the key is the one at the subject's "
                                  f"last token, {where} (MEMIT averages over context templates, not over tokens)")
        for x, kx in pos["keys"].items():
            if x != layer and _vrel(out, kx[i]) < KEY_RTOL:
                raise _fail(fn, case, f"right token, wrong layer: your key comes from layer {x}, not layer {layer}; "
                                      "trace spec.rewrite_name(layer) of the layer you were given")
        raise _fail(fn, case, f"your key differs from alphaedit_lite.locate.keys' by a relative error {err:.2e}; read the "
                              f"input of layer {layer}'s rewrite module at the subject's last token, {where}")
    assert multi, "internal: the cases need a subject of several tokens"
    print(f"✓ {_name(fn)}: key at the subject's last token (layer {layer}) — matches alphaedit_lite.locate.keys on "
          f"{len(SUBJECT_KEY_CASES)} prompts ({'; '.join(labels)})")


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


# ------------------------------------------------------------------------ causal tracing (notebook 06)
def _corrupt_cases() -> list[_Case]:
    cases = []
    for label, T, d, first, last, scale, seed in [("8 tokens, subject 2..4", 8, 6, 2, 4, 0.5, 11),
                                                  ("a one-token subject at position 0", 5, 4, 0, 0, 2.0, 12),
                                                  ("subject ending at the last token", 7, 5, 3, 6, 1.0, 13)]:
        emb = torch.randn(T, d, generator=torch.Generator().manual_seed(100 + seed), dtype=F64)
        noise = torch.randn(last - first + 1, d, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale
        expected = emb.clone()
        expected[first:last + 1] += noise
        cases.append(_Case(label, (emb, first, last, scale, seed), expected))
    return cases


def check_corrupt_subject(fn: Callable) -> None:
    """Check `fn(emb, first, last, scale, seed) -> a corrupted copy of emb` (T, d): Gaussian noise
    ``torch.randn(last - first + 1, d, generator=torch.Generator().manual_seed(seed)) * scale`` added to the
    rows of the subject's tokens, first..last INCLUSIVE (ROME's corrupted run, Sec. 2.1)."""
    _require_callable(fn)
    cases = _corrupt_cases()
    for case in cases:
        emb, first, last, scale, seed = case.args
        original = emb.clone()
        try:
            out = fn(emb, first, last, scale, seed)
        except NotImplementedError as exc:
            raise _fail(fn, None, f"not written yet ({exc}): replace the `raise NotImplementedError` line "
                                  "with your code, run that cell, then run this one again") from None
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; report it in one line
            raise _fail(fn, case, f"your function raised {type(exc).__name__}: {exc}") from exc
        if out is None:
            raise _fail(fn, case, "your function returned None: did you forget the `return`?")
        if not torch.equal(emb, original):
            raise _fail(fn, case, "you changed the input embeddings in place; clone them first, because the clean "
                                  "run (and every restored run) needs them unchanged")
        if not isinstance(out, torch.Tensor) or out.shape != emb.shape:
            raise _fail(fn, case, f"return a tensor of the embeddings' shape {tuple(emb.shape)}, got "
                                  f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        if _rel(out, case.expected) < MATCH_RTOL:
            continue
        gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731 - a fresh generator per guess
        T, d = emb.shape
        guesses = []
        if last > first:
            g = emb.clone()
            g[first:last] += torch.randn(last - first, d, generator=gen(), dtype=F64) * scale
            guesses.append(("the subject's last token got no noise: Python slices exclude their end, so use "
                            "first:last + 1", g))
        g = emb + torch.randn(T, d, generator=gen(), dtype=F64) * scale
        guesses.append(("you corrupted every token; ROME adds noise to the subject's tokens only, so that what "
                        "the trace finds is where the SUBJECT's information goes", g))
        g = emb.clone()
        g[first:last + 1] += torch.randn(last - first + 1, d, generator=gen(), dtype=F64)
        guesses.append(("the noise is not scaled: multiply it by `scale` (3 × the embedding matrix's standard "
                        "deviation in ROME)", g))
        raise _diagnose(fn, case, out, guesses,
                        f"off by {_rel(out, case.expected):.1e} (relative); draw the noise with "
                        "torch.randn(last - first + 1, d, generator=torch.Generator().manual_seed(seed))")
    _ok(fn, "noise on the subject's rows only, first..last inclusive, input untouched", cases)


def _group_cases() -> list[_Case]:
    from alphaedit_lite.locate.tracing import TraceResult

    gen = torch.Generator().manual_seed(1212)
    cases = []
    for label, L, T, first, last in [("a 3-token subject in the middle", 4, 9, 2, 4),
                                     ("a 1-token subject right before the last token", 3, 6, 4, 4),
                                     ("a 2-token subject at the start", 5, 7, 0, 1)]:
        p = torch.rand(L, T, generator=gen, dtype=torch.float32)
        p_corrupt = 0.05
        r = TraceResult(tokens=[f"t{i}" for i in range(T)], subject_range=(first, last), answer="x", answer_id=0,
                        p_clean=0.9, p_corrupt=p_corrupt, effects={"mlp": p})
        cases.append(_Case(label, (p.to(F64), p_corrupt, (first, last)), r.grouped("mlp").to(F64)))
    return cases


def check_group_effects(fn: Callable) -> None:
    """Check `fn(p_restored, p_corrupt, subject_range) -> (5, L)` indirect effects averaged over ROME's five
    position groups (subject first, subject middle, subject last, further, last token), NaN for an empty
    group; p_restored is (L, T), subject_range (first, last) inclusive (ROME Fig. 2's grouping)."""
    _require_callable(fn)
    cases = _group_cases()
    for case in cases:
        out = _call(fn, case)
        p, pc, (first, last) = case.args
        if out.shape != case.expected.shape:
            hint = " (layers × groups? put the 5 groups first)" if out.shape == case.expected.T.shape else ""
            raise _fail(fn, case, f"return shape (5, n_layers) = {tuple(case.expected.shape)}, got "
                                  f"{tuple(out.shape)}{hint}")
        exp = case.expected
        nan_ok = torch.equal(torch.isnan(out), torch.isnan(exp))
        if nan_ok and _rel(torch.nan_to_num(out), torch.nan_to_num(exp)) < 1e-6:
            continue
        if not nan_ok:
            empty = [i for i in range(5) if bool(torch.isnan(exp[i]).all())]
            raise _fail(fn, case, "an empty group must be NaN (a mean over no positions), and only an empty one; "
                                  f"here group(s) {empty} are empty (0 = subject first … 4 = last token)")
        T = p.shape[1]
        ie = p - pc

        def grouped(x, spans):
            return torch.stack([x[:, s].mean(1) if len(s) else torch.full((x.shape[0],), float("nan"), dtype=F64)
                                for s in spans])

        right = [[first], list(range(first + 1, last)), [last], list(range(last + 1, T - 1)), [T - 1]]
        guesses = [("you averaged p_restored itself; the indirect effect subtracts the corrupted run's "
                    "probability: IE = p_restored − p_corrupt", grouped(p, right))]
        if last > first + 1:
            guesses.append(("the middle group should hold the subject's tokens strictly between its first and last "
                            "(first + 1 … last − 1); the last one is its own group",
                            grouped(ie, [[first], list(range(first + 1, last + 1)), [last],
                                         list(range(last + 1, T - 1)), [T - 1]])))
        if last + 1 < T - 1:
            guesses.append(("'further' ends before the prompt's last token, which is its own group",
                            grouped(ie, [[first], list(range(first + 1, last)), [last],
                                         list(range(last + 1, T)), [T - 1]])))
        raise _diagnose(fn, case, torch.nan_to_num(out), [(s, torch.nan_to_num(g)) for s, g in guesses],
                        f"off by {_rel(torch.nan_to_num(out), torch.nan_to_num(exp)):.1e} (relative) from the "
                        "group means of p_restored − p_corrupt")
    _ok(fn, "indirect effects averaged over the five position groups", cases)
