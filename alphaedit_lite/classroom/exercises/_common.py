"""Shared helpers of the exercise checkers: running the learner's function on copies of its inputs,
one-sentence failures, the diagnosis of a wrong answer by the typical wrong answers it matches, and
the editing inputs shared by the checkers of AlphaEdit's Eq. 13 and Eq. 14 (`closed_form.py`).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from alphaedit_lite.core.nullspace import null_space_projector

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


def _invoke(fn: Callable, case: _Case, args) -> Any:
    """Call the learner's function on ``args``; a raise or a missing ``return`` becomes one-sentence advice."""
    try:
        out = fn(*args)
    except NotImplementedError as exc:
        raise _fail(fn, None, f"not written yet ({exc}): replace the `raise NotImplementedError` line "
                              "with your code, run that cell, then run this one again") from None
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything; report it in one line
        raise _fail(fn, case, f"your function raised {type(exc).__name__}: {exc}") from exc
    if out is None:
        raise _fail(fn, case, "your function returned None: did you forget the `return`?")
    return out


def _call(fn: Callable, case: _Case) -> torch.Tensor:
    """Run the learner's function on copies of the case's inputs; return its answer as a tensor."""
    out = _invoke(fn, case, [_clone(a) for a in case.args])
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
