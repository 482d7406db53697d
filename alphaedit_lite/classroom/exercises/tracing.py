"""Checkers of causal tracing (ROME Sec. 2.1, Fig. 2): the corrupted run's noise on the subject's
embeddings and the mean indirect effect per position group. Notebook 06.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.classroom.exercises._common import (F64, MATCH_RTOL, _Case, _rel, _require_callable, _fail, _call,
                                                        _invoke, _diagnose, _ok)


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
        out = _invoke(fn, case, (emb, first, last, scale, seed))      # uncloned: in-place edits are checked below
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
