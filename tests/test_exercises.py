"""The "your turn" exercises: checkers accept the reference and name typical mistakes; the
generator strips every solution and writes valid notebooks; notebooks carry ≥ 2 checks each.

Notebook 03's key exercise needs a model: here the tiny random Llama of editing_helpers stands in
for SmolLM2 (and one test marked `model` runs the checker on SmolLM2 itself)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from alphaedit_lite.classroom import exercises as ex
from alphaedit_lite.classroom.make_exercises import (ANSWER_REMOVED, BEGIN, END, generate, main, strip_answers,
                                                    strip_solutions)

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
F64 = torch.float64
EXERCISE_NOTEBOOKS = ["00_editing_as_a_tradeoff", "01_null_space_geometry", "02_closed_form_derivation",
                      "03_editing_a_real_model", "04_memit_vs_alphaedit", "05_hidden_state_drift",
                      "06_locating_facts"]
# notebooks with conceptual questions whose answers are folded (<details><summary>Answer…</summary>)
ANSWER_NOTEBOOKS = EXERCISE_NOTEBOOKS
ANSWER_BLOCK = re.compile(r"<details>\s*<summary>\s*Answer\b[^<]*</summary>(.*?)</details>", re.S | re.I)
HINT_SUMMARY = re.compile(r"<summary>\s*Hint\b", re.I)
CHECK_CALL = re.compile(r"^\s*(check_\w+)\((\w+)[,)]", re.M)   # check_x(my_fn) or check_x(my_fn, model, ...)


@pytest.fixture(scope="module")
def tiny_model():
    import editing_helpers as EH

    return EH.tiny_llama()


def _notebook_namespace(name: str, tiny_model) -> dict:
    """What an exercise and its check cell may use from the cells above them."""
    ns: dict = {"torch": torch}
    if name.startswith("03_"):
        ns.update(model=tiny_model[0], tok=tiny_model[1], L=1)   # SmolLM2's stand-in: layer 1 of the tiny Llama
    return ns


def _eye(d):
    return torch.eye(d, dtype=F64)


# ------------------------------------------------------------------ reference and wrong answers
def cov_ok(K):
    K = K.to(F64)
    return K @ K.T / K.shape[1]


def proj_ok(C, t):
    lam, U = torch.linalg.eigh(C)
    B = U[:, lam < t]
    return B @ B.T


def grad_ok(D, R, K1, P, a, KK):
    DP = D @ P
    return 2 * ((DP @ K1 - R) @ K1.T @ P + a * DP + DP @ KK @ P)


def ae_ok(R, K1, P, a, KK):
    A = (KK + K1 @ K1.T) @ P + a * _eye(K1.shape[0])
    return torch.linalg.solve(A.T, (R @ K1.T @ P).T).T


def _bracket(K1, P, a, KK):
    return (KK + K1 @ K1.T) @ P + a * _eye(K1.shape[0])


MISTAKES = {
    # checker: [(wrong function, expected message text), ...]
    "check_covariance": [
        (lambda K: K.to(F64).T @ K.to(F64) / K.shape[1], "shape (n, n)"),
        (lambda K: K.to(F64) @ K.to(F64).T, "times too large: divide K Kᵀ by the number of keys"),
        (lambda K: K.to(F64) @ K.to(F64).T / K.shape[0], "you divided by d = K.shape[0]"),
        (lambda K: K.to(F64) @ K.to(F64).T / (K.shape[1] - 1), "you divided by n − 1"),
        (lambda K: torch.cov(K.to(F64)), "you subtracted the mean"),
        (lambda K: K @ K.T / K.shape[1], "covariances are float64"),
        (lambda K: torch.tril(cov_ok(K)), "C is not symmetric"),
        (lambda K: cov_ok(K)[:-1, :-1], "C must have shape (d, d)"),
        (lambda K: cov_ok(K) * 1.001, "C differs from K Kᵀ / n by a relative error"),
    ],
    "check_projector": [
        (lambda C, t: proj_ok(C, t) * 0 + _proj_large(C, t), "P keeps the directions with LARGE eigenvalues"),
        (lambda C, t: _proj_top(C, t), "eigenvectors with the LARGEST eigenvalues"),
        (lambda C, t: _proj_rows(C, t), "you took ROWS of U"),
        (lambda C, t: _basis(C, t), "that is the basis Û"),
        (lambda C, t: _basis(C, t).T @ _basis(C, t), "you computed Ûᵀ Û"),
        (lambda C, t: _weighted(C, t), "weighted the eigenvectors by their eigenvalues"),
        (lambda C, t: proj_ok(C, t * float(torch.linalg.eigvalsh(C).max())), "relative threshold"),
        (lambda C, t: proj_ok(C, 2e-2), "does not change with the threshold"),
        (lambda C, t: proj_ok(C, t) + 1e-3 * C, "P is not idempotent"),
        (lambda C, t: proj_ok(C, t) + 1e-3 * torch.triu(C), "P is not symmetric"),
        (lambda C, t: proj_ok(C.float(), t), "compute in float64"),
    ],
    "check_grad_J": [
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK) / 2, "forgot the factor 2"),
        (lambda D, R, K1, P, a, KK: 2 * ((D @ P @ K1 - R) @ K1.T + a * D @ P + D @ P @ KK), "trailing P"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK) - 4 * (D @ P @ K1 - R) @ K1.T @ P,
         "sign of the fit term is flipped"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK) + 2 * a * (D - D @ P), "not 2αΔ"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK) - 2 * D @ P @ KK @ P, "‖ΔPKp‖² is missing"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK).T, "transposed"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK) * 1.01, "differs from autograd's"),
        (lambda D, R, K1, P, a, KK: grad_ok(D, R, K1, P, a, KK).float(), "compute in float64"),
    ],
    "check_alphaedit_delta": [
        (lambda R, K1, P, a, KK: torch.linalg.solve(_bracket(K1, P, a, KK).T, (R @ K1.T).T).T,
         "did you forget the P after K1ᵀ?"),
        (lambda R, K1, P, a, KK: torch.linalg.solve(_bracket(K1, P, a, KK), (R @ K1.T @ P).T).T,
         "you used the bracket transposed"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, a, KK).T, "you returned Δᵀ"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, 10.0, KK), "ignores the `alpha` argument"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, a, torch.zeros_like(KK)), "ignores prev_cov"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, 1 / a, KK), "α is on the wrong side"),
        (lambda R, K1, P, a, KK: torch.linalg.solve(((KK + K1 @ K1.T + a * _eye(K1.shape[0])) @ P).T,
                                                    (R @ K1.T @ P).T).T, "α must be added as α·I"),
        (lambda R, K1, P, a, KK: torch.linalg.solve((P @ (KK + K1 @ K1.T) + a * _eye(K1.shape[0])).T,
                                                    (R @ K1.T @ P).T).T, "P is on the wrong side of KKᵀ, or torch.linalg.solve(A, B.T).T"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, a, KK).float(), "compute in float64"),
        (lambda R, K1, P, a, KK: ae_ok(R, K1, P, a, KK) * 1.01, "differs from alphaedit_delta"),
    ],
}


def _eig(C):
    return torch.linalg.eigh(C)


def _basis(C, t):
    lam, U = _eig(C)
    return U[:, lam < t]


def _proj_large(C, t):
    lam, U = _eig(C)
    B = U[:, lam >= t]
    return B @ B.T


def _proj_top(C, t):
    lam, U = _eig(C)
    r = int((lam < t).sum())
    B = U[:, len(lam) - r:]
    return B @ B.T


def _proj_rows(C, t):
    lam, U = _eig(C)
    B = U.T[:, lam < t]
    return B @ B.T


def _weighted(C, t):
    lam, U = _eig(C)
    k = lam < t
    return (U[:, k] * lam[k]) @ U[:, k].T


def ae_with_inverse(R, K1, P, alpha, prev_cov):
    A = (prev_cov + K1 @ K1.T) @ P + alpha * torch.eye(K1.shape[0], dtype=torch.float64)
    return R @ K1.T @ P @ torch.linalg.inv(A)


def project_ok(D, P):
    return D @ P


MISTAKES["check_projection"] = [
    (lambda D, P: P @ D, "you multiplied on the wrong side (P Δ)"),
    (lambda D, P: (P @ D) if D.shape[0] == D.shape[1] else D @ P, "you multiplied on the wrong side (P Δ)"),
    (lambda D, P: D * P, "element by element"),
    (lambda D, P: (D * P) if D.shape[0] == D.shape[1] else D @ P, "element by element"),
    (lambda D, P: D @ (torch.eye(P.shape[0], dtype=F64) - P), "you returned Δ(I − P)"),
    (lambda D, P: D.clone(), "you returned Δ unchanged"),
    (lambda D, P: P if D.shape[0] == D.shape[1] else D @ P, "you returned P itself"),
    (lambda D, P: (D @ P).T, "you returned (ΔP)ᵀ"),
    (lambda D, P: (D @ P)[:, :-1], "must keep Δ's shape"),
    (lambda D, P: (D @ P).float(), "keep float64"),
    (lambda D, P: D @ P * 1.01, "differs from Δ P by a relative error"),
]

def share_ok(K, P):
    return (P @ K).norm(dim=0) ** 2 / K.norm(dim=0) ** 2


def drift_ok(H0, H):
    return float(((H - H0).norm(dim=1) / H0.norm(dim=1)).mean())


MISTAKES["check_null_space_share"] = [
    (lambda K, P: 1 - share_ok(K, P), "OUTSIDE the null space"),
    (lambda K, P: share_ok(K, P).sqrt(), "forgot the squares"),
    (lambda K, P: (P @ K).norm(dim=0) ** 2, "did not divide by ‖k‖²"),
    (lambda K, P: (P @ K).norm() ** 2 / K.norm() ** 2, "one number for all"),
    (lambda K, P: share_ok(K, P)[:-1], "one share per key"),
    (lambda K, P: share_ok(K, P) * 1.01, "off by"),
]
MISTAKES["check_relative_drift"] = [
    (lambda H0, H: float((H - H0).norm() / H0.norm()), "‖H − H0‖_F / ‖H0‖_F"),
    (lambda H0, H: float((H - H0).norm(dim=1).mean()), "forgot to divide by ‖h0‖"),
    (lambda H0, H: float(((H - H0).norm(dim=0) / H0.norm(dim=0)).mean()), "over the probes (dim=0)"),
    (lambda H0, H: float(((H - H0).norm(dim=1) / H.norm(dim=1)).mean()), "after editing"),
    (lambda H0, H: (H - H0).norm(dim=1) / H0.norm(dim=1), "return one number"),
]



def ns_write_ok(R, K1, P):                 # notebook 00: the smallest Δ = ΔP with ΔK1 = R
    PK = P @ K1
    return R @ torch.linalg.solve(K1.T @ PK, PK.T)


def ns_write_pinv(R, K1, P):               # the same with a pseudo-inverse: accepted too
    return R @ torch.linalg.pinv(P @ K1)


def written_ok(K, P, alpha):               # notebook 04: ‖Pk‖² / (‖Pk‖² + α) per key
    pk2 = (P @ K).norm(dim=0) ** 2
    return pk2 / (pk2 + alpha)


def common_ok(H0, H):                      # notebook 05: ‖mean d‖² / mean ‖d‖²
    D = H - H0
    return float(D.mean(0).norm() ** 2 / (D.norm(dim=1) ** 2).mean())


MISTAKES["check_null_space_write"] = [
    (lambda R, K1, P: R @ torch.linalg.pinv(K1), "you returned the smallest write R K1⁺"),
    (lambda R, K1, P: R @ torch.linalg.pinv(K1) @ P, "you projected the smallest write"),
    (lambda R, K1, P: R @ torch.linalg.solve(K1.T @ K1, (P @ K1).T), "not K1ᵀK1"),
    (lambda R, K1, P: R @ (P @ K1 / ((P @ K1) ** 2).sum(0)).T, "you normalised each key on its own"),
    (lambda R, K1, P: R @ (P @ K1).T, "you forgot to normalise"),
    (lambda R, K1, P: R @ torch.linalg.pinv((torch.eye(P.shape[0], dtype=F64) - P) @ K1), "the complement I − P"),
    (lambda R, K1, P: ns_write_ok(R, K1, P).T, "you returned Δᵀ"),
    (lambda R, K1, P: ns_write_ok(R, K1, P).T if R.shape[0] == K1.shape[0] else ns_write_ok(R, K1, P),
     "you returned Δᵀ"),     # the square case: the shapes fit, the values name it
    (lambda R, K1, P: P @ ns_write_ok(R, K1, P) if R.shape[0] == K1.shape[0] else ns_write_ok(R, K1, P),
     "you put the projector on the left"),
    (lambda R, K1, P: ns_write_ok(R, K1, P).float(), "compute in float64"),
    (lambda R, K1, P: ns_write_ok(R, K1, P)[:, :-1], "must have W's shape"),
    (lambda R, K1, P: ns_write_ok(R, K1, P) * 1.01, "does not write the keys"),
    (lambda R, K1, P: ns_write_ok(R, K1, P) + (R @ torch.linalg.pinv(K1)) @ (torch.eye(P.shape[0], dtype=F64) - P),
     "is not in the null space"),
    (lambda R, K1, P: ns_write_ok(R, K1, P) + torch.ones(R.shape[0], 1, dtype=F64) @ _orth_to(P @ K1, P),
     "not the smallest such update"),
]


def _orth_to(PK, P):
    """(1, d) a row in P's kept directions orthogonal to every projected key (0 if there is none)."""
    Q = torch.linalg.qr(PK)[0]                                        # (d, u) basis of the projected keys
    v = P @ torch.arange(1, P.shape[0] + 1, dtype=F64)
    v = v - Q @ (Q.T @ v)
    return v[None, :]


MISTAKES["check_written_fraction"] = [
    (lambda K, P, a: (s := share_ok(K, P)) / (s + a), "you compared the SHARE"),
    (lambda K, P, a: a / ((P @ K).norm(dim=0) ** 2 + a), "the part NOT written"),
    (lambda K, P, a: (P @ K).norm(dim=0) / ((P @ K).norm(dim=0) + a), "you forgot the squares"),
    (lambda K, P, a: K.norm(dim=0) ** 2 / (K.norm(dim=0) ** 2 + a), "you used ‖k‖² where ‖Pk‖² belongs"),
    (lambda K, P, a: written_ok(K, torch.eye(P.shape[0], dtype=F64) - P, a), "the complement I − P"),
    (lambda K, P, a: (P @ K).norm(dim=0) ** 2 / a, "dropped ‖Pk‖² from the denominator"),
    (lambda K, P, a: share_ok(K, P), "you returned the share"),
    (lambda K, P, a: (P @ K).norm(dim=0) ** 2 / (K.norm(dim=0) ** 2 + a), "you put ‖k‖² in the denominator"),
    (lambda K, P, a: written_ok(K, P, 10.0), "does not change with `alpha`"),
    (lambda K, P, a: written_ok(K, P, a).mean(), "one number for all"),
    (lambda K, P, a: written_ok(K, P, a)[:-1], "one fraction per key"),
    (lambda K, P, a: written_ok(K, P, a) * 1.01, "off by"),
]
MISTAKES["check_common_shift_share"] = [
    (lambda H0, H: 1 - common_ok(H0, H), "the scattered part"),
    (lambda H0, H: float((H - H0).norm(dim=1).mean() ** 2 / ((H - H0).norm(dim=1) ** 2).mean()),
     "you averaged the LENGTHS of the moves"),
    (lambda H0, H: common_ok(H0, H) ** 0.5, "you forgot the squares"),
    (lambda H0, H: float((H - H0).mean(0).norm() / (H - H0).norm(dim=1).mean()), "you compared norms"),
    (lambda H0, H: float((H - H0).mean(1).norm() ** 2 / ((H - H0).norm(dim=1) ** 2).mean()),
     "averaged over the hidden dimensions"),
    (lambda H0, H: float((H - H0).mean(0).norm() ** 2 / ((H - H0).norm(dim=1) ** 2).sum()), "divided by the SUM"),
    (lambda H0, H: float((H - H0).mean(0).norm() ** 2 / (H0.norm(dim=1) ** 2).mean()), "the states' energy"),
    (lambda H0, H: float(H.mean(0).norm() ** 2 / (H.norm(dim=1) ** 2).mean()), "the mean of the states"),
    (lambda H0, H: (H - H0).mean(0), "return one number"),
    (lambda H0, H: common_ok(H0, H) * 1.01 + 1e-3, "your share is"),
]



def corrupt_ok(emb, first, last, scale, seed):
    out = emb.clone()
    out[first:last + 1] += torch.randn(last - first + 1, emb.shape[1], generator=torch.Generator().manual_seed(seed),
                                       dtype=emb.dtype) * scale
    return out


def _corrupt_in_place(emb, first, last, scale, seed):
    emb[first:last + 1] += torch.randn(last - first + 1, emb.shape[1], generator=torch.Generator().manual_seed(seed),
                                       dtype=emb.dtype) * scale
    return emb


def groups_ok(p, pc, rng):
    first, last = rng
    ie = p - pc
    T = ie.shape[1]
    spans = [[first], list(range(first + 1, last)), [last], list(range(last + 1, T - 1)), [T - 1]]
    return torch.stack([ie[:, s].mean(1) if s else torch.full((ie.shape[0],), float("nan"), dtype=ie.dtype)
                        for s in spans])


MISTAKES["check_corrupt_subject"] = [
    (lambda e, f, l, s, sd: corrupt_ok(e, f, l - 1, s, sd) if l > f else corrupt_ok(e, f, l, s, sd) * 1.1,
     "Python slices exclude their end"),
    (lambda e, f, l, s, sd: e + torch.randn(*e.shape, generator=torch.Generator().manual_seed(sd), dtype=e.dtype) * s,
     "you corrupted every token"),
    (lambda e, f, l, s, sd: corrupt_ok(e, f, l, 1.0, sd), "the noise is not scaled"),
    (_corrupt_in_place, "in place"),
    (lambda e, f, l, s, sd: corrupt_ok(e, f, l, s, sd + 1), "draw the noise with"),
    (lambda e, f, l, s, sd: corrupt_ok(e, f, l, s, sd)[:-1], "return a tensor of the embeddings' shape"),
]
MISTAKES["check_group_effects"] = [
    (lambda p, pc, r: groups_ok(p + pc, pc, r), "you averaged p_restored itself"),
    (lambda p, pc, r: groups_ok(p, pc, r).T, "put the 5 groups first"),
    (lambda p, pc, r: torch.nan_to_num(groups_ok(p, pc, r)), "must be NaN"),
    (lambda p, pc, r: groups_ok(p, pc, r) * 1.5, "off by"),
]

REFERENCES = {"check_covariance": cov_ok, "check_projector": proj_ok, "check_grad_J": grad_ok,
              "check_alphaedit_delta": ae_ok, "check_projection": project_ok,
              "check_null_space_share": share_ok, "check_relative_drift": drift_ok,
              "check_null_space_write": ns_write_ok, "check_written_fraction": written_ok,
              "check_common_shift_share": common_ok, "check_corrupt_subject": corrupt_ok,
              "check_group_effects": groups_ok}


# ------------------------------------------------------------------------------------- checkers
@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_checker_accepts_the_reference(checker, capsys):
    getattr(ex, checker)(REFERENCES[checker])
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "matches the reference" in out


@pytest.mark.parametrize("checker,wrong,expected", [
    pytest.param(c, fn, msg, id=f"{c}-{i}") for c, items in MISTAKES.items() for i, (fn, msg) in enumerate(items)])
def test_checker_diagnoses_typical_mistake(checker, wrong, expected):
    with pytest.raises(AssertionError) as info:
        getattr(ex, checker)(wrong)
    msg = str(info.value)
    assert msg.startswith("✗ ") and expected in msg, msg


NEW_CHECKERS = ["check_null_space_write", "check_written_fraction", "check_common_shift_share",
                "check_corrupt_subject", "check_group_effects"]


@pytest.mark.parametrize("checker,wrong", [
    pytest.param(c, fn, id=f"{c}-{i}") for c in NEW_CHECKERS for i, (fn, _) in enumerate(MISTAKES[c])])
def test_new_checkers_diagnose_in_one_sentence(checker, wrong):
    with pytest.raises(AssertionError) as info:
        getattr(ex, checker)(wrong)
    msg = str(info.value)
    assert msg.count(". ") <= 1 and not msg.rstrip().endswith(". "), f"one sentence per mistake: {msg}"


@pytest.mark.parametrize("checker", [c for c in NEW_CHECKERS if c != "check_corrupt_subject"])
def test_new_checkers_survive_a_function_that_overwrites_its_inputs(checker, capsys):
    """The cases are the checker's own: a learner's in-place edit must not corrupt the reference or later cases.
    (check_corrupt_subject is left out: there an in-place edit IS the mistake it names, tested in MISTAKES.)"""
    ref = REFERENCES[checker]

    def overwrite(*args):
        out = ref(*args)
        for a in args:
            if isinstance(a, torch.Tensor):
                a.zero_()
        return out

    getattr(ex, checker)(overwrite)
    getattr(ex, checker)(ref)
    assert capsys.readouterr().out.count("✓ ") == 2
    assert checker in ex.__all__ and f"`{checker}(fn)`" in ex.__doc__


def test_written_fraction_reference_is_what_the_solver_writes():
    """‖Pk‖²/(‖Pk‖² + α) is exactly what alphaedit_delta writes for one key (Sherman-Morrison), per case."""
    for case in ex._written_fraction_cases():
        K, P, alpha = case.args
        assert ex._rel(written_ok(K, P, alpha), case.expected) < 1e-10, case.label


def test_null_space_write_is_alphaedit_without_the_ridge():
    """The exact null-space write is AlphaEdit's Eq. 14 as α → 0 (no earlier edits): α = 1e-6 is close."""
    from alphaedit_lite.core.solvers import alphaedit_delta

    for case in ex._null_space_write_cases():
        R, K1, P = case.args
        D = case.expected
        assert ex._rel(D @ K1, R) < 1e-10 and ex._rel(D @ P, D) < 1e-10, case.label
        assert ex._rel(alphaedit_delta(R, K1, P, alpha=1e-6), D) < 1e-4, case.label


def test_explicit_inverse_is_refused_even_with_right_values():
    assert float(torch.linalg.matrix_norm(ae_with_inverse(*_small_ae_args()) - ae_ok(*_small_ae_args()))) < 1e-10
    with pytest.raises(AssertionError, match=r"explicit inverse \(linalg\.inv\).*linear solve"):
        ex.check_alphaedit_delta(ae_with_inverse)


def _small_ae_args():
    g = torch.Generator().manual_seed(0)
    K1, R = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(3, 2, generator=g, dtype=F64)
    return R, K1, proj_ok(_eye(5) * torch.tensor([0, 0, 1, 1, 1.0], dtype=F64), 0.5), 10.0, torch.zeros(5, 5, dtype=F64)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_unwritten_exercise_says_so(checker):
    def todo(*args):
        raise NotImplementedError("your turn: write this part")

    with pytest.raises(AssertionError, match="not written yet"):
        getattr(ex, checker)(todo)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_checker_reports_crashes_and_bad_returns(checker):
    def crash(*args):
        raise IndexError("index 9 is out of bounds")

    with pytest.raises(AssertionError, match="your function raised IndexError: index 9"):
        getattr(ex, checker)(crash)
    with pytest.raises(AssertionError, match="forget the `return`"):
        getattr(ex, checker)(lambda *a: None)
    with pytest.raises(TypeError, match="pass your function itself"):
        getattr(ex, checker)(torch.zeros(3))


def test_checkers_do_not_touch_the_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name, fn in REFERENCES.items():
        getattr(ex, name)(fn)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------ generator
def test_strip_solutions_replaces_each_block_at_its_indentation():
    src = ("def f(x):\n    \"\"\"doc\"\"\"\n    # BEGIN SOLUTION: square \"it\"\n    y = x * x\n\n    return y\n"
           "    # END SOLUTION\n\n# BEGIN SOLUTION\nz = 1\n# END SOLUTION\nprint('kept')")
    out, n = strip_solutions(src)
    assert n == 2
    assert out.splitlines() == [
        "def f(x):", '    """doc"""', '    raise NotImplementedError("your turn: square \\"it\\"")', "",
        'raise NotImplementedError("your turn: write this part")', "print('kept')"]
    ns: dict = {}
    exec(compile(out.split("\nraise")[0], "<cell>", "exec"), ns)
    with pytest.raises(NotImplementedError, match='square "it"'):
        ns["f"](3)


@pytest.mark.parametrize("src,msg", [
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without a BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "inside the block"),
    ("# BEGIN SOLUTION\n\n# END SOLUTION", "empty solution block"),
])
def test_strip_solutions_rejects_broken_markers(src, msg):
    with pytest.raises(ValueError, match=msg):
        strip_solutions(src, where="nb, cell 3")


def test_strip_answers_removes_folded_answers_and_keeps_hints():
    src = ("**Question**: why ΔP?\n\n<details><summary>Answer</summary>\n\nBecause keys act from the right.\n"
           "</details>\n\n<details><summary>Hint 1</summary>Look at the shapes.</details>\n"
           "<details><summary>Answer (open after predicting)</summary>It shrinks like 1/λ.</details> after\n"
           "<details><summary>Hint 2 (almost the answer)</summary>Δ @ P</details>")
    out, n = strip_answers(src)
    assert n == 2
    assert out.count(ANSWER_REMOVED) == 2
    assert "keys act from the right" not in out and "1/λ" not in out
    assert "<details><summary>Hint 1</summary>Look at the shapes.</details>" in out
    assert "<details><summary>Hint 2 (almost the answer)</summary>Δ @ P</details>" in out
    assert out.startswith("**Question**: why ΔP?\n\n" + ANSWER_REMOVED)
    assert f"{ANSWER_REMOVED} after" in out
    assert strip_answers("no folded blocks here") == ("no folded blocks here", 0)


@pytest.mark.parametrize("src,msg", [
    ("<details><summary>Answer</summary>\nnever closed", "never closed"),
    ("<details><summary>Answer</summary><details><summary>Hint</summary>x</details> y</details>", "inside a folded answer"),
])
def test_strip_answers_rejects_broken_blocks(src, msg):
    with pytest.raises(ValueError, match=msg):
        strip_answers(src, where="nb, cell 2")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("exercises")
    return out, {r.name: r for r in generate(NB_DIR, out)}


def _solution_blocks(source: str) -> list[list[str]]:
    blocks, cur = [], None
    for line in source.splitlines():
        if BEGIN.match(line):
            cur = []
        elif END.match(line):
            blocks.append(cur)
            cur = None
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return blocks


def test_generator_writes_every_notebook_as_valid_output_free_ipynb_and_py(generated):
    out, results = generated
    sources = sorted(p.stem for p in NB_DIR.glob("*.py") if not p.name.startswith("_"))
    assert sorted(results) == sources
    for name in sources:
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        src_nb = jupytext.read(NB_DIR / f"{name}.py")
        assert len(nb.cells) == len(src_nb.cells)
        assert [c.cell_type for c in nb.cells] == [c.cell_type for c in src_nb.cells]
        assert (out / f"{name}.py").read_text(encoding="utf-8").startswith("# ---")


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_generator_strips_every_solution(generated, name):
    out, results = generated
    src_nb = jupytext.read(NB_DIR / f"{name}.py")
    ex_nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
    n_blocks = 0
    for c_src, c_ex in zip(src_nb.cells, ex_nb.cells):
        if c_src.cell_type != "code":
            continue
        blocks = _solution_blocks(c_src.source)
        n_blocks += len(blocks)
        assert "SOLUTION" not in c_ex.source
        if not blocks:
            assert c_ex.source == c_src.source, "cells without solutions must be copied unchanged"
            continue
        assert c_ex.source.count('raise NotImplementedError("your turn: ') == len(blocks)
        for line in (x for b in blocks for x in b):
            assert line not in [y.strip() for y in c_ex.source.splitlines()], f"solution line survived: {line!r}"
    assert results[name].exercises == n_blocks >= 2
    assert "Exercise version" in ex_nb.cells[0].source


@pytest.mark.parametrize("name", ANSWER_NOTEBOOKS)
def test_committed_notebooks_keep_their_answers(name):
    """The reviewed notebooks hold the answers (only the exercise version hides them)."""
    md = [c.source for c in jupytext.read(NB_DIR / f"{name}.py").cells if c.cell_type == "markdown"]
    answers = [m.group(1).strip() for src in md for m in ANSWER_BLOCK.finditer(src)]
    assert answers, f"{name}: no folded answer (<details><summary>Answer</summary> … </details>)"
    assert all(len(a) > 40 for a in answers), f"{name}: an empty or one-word answer: {answers}"
    assert not any(ANSWER_REMOVED in src for src in md)


def test_notebook_02_asks_why_the_update_is_delta_p_not_p_delta():
    md = "\n".join(c.source for c in jupytext.read(NB_DIR / "02_closed_form_derivation.py").cells
                   if c.cell_type == "markdown")
    q = md.index("why is the update ΔP and not PΔ?")
    assert ANSWER_BLOCK.search(md, q) and "key" in ANSWER_BLOCK.search(md, q).group(1)


@pytest.mark.parametrize("name", sorted(p.stem for p in NB_DIR.glob("*.py") if not p.name.startswith("_")))
def test_generator_removes_answers_and_keeps_hints(generated, name):
    out, results = generated
    src_md = [c.source for c in jupytext.read(NB_DIR / f"{name}.py").cells if c.cell_type == "markdown"]
    ex_md = [c.source for c in nbformat.read(out / f"{name}.ipynb", as_version=4).cells if c.cell_type == "markdown"]
    n_answers = sum(len(ANSWER_BLOCK.findall(src)) for src in src_md)
    assert results[name].answers == n_answers
    assert sum(src.count(ANSWER_REMOVED) for src in ex_md) == n_answers
    for src, exs in zip(src_md, ex_md):
        assert not ANSWER_BLOCK.search(exs), f"{name}: an answer survived in the exercise version"
        for m in ANSWER_BLOCK.finditer(src):
            body = m.group(1).strip()
            assert body.splitlines()[0] not in exs, f"{name}: answer text survived: {body[:60]!r}"
        assert len(HINT_SUMMARY.findall(exs)) == len(HINT_SUMMARY.findall(src)), f"{name}: hints must stay"
        if not ANSWER_BLOCK.search(src) and src != src_md[0]:
            assert exs == src, "markdown cells without answers are copied unchanged"


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_every_exercise_has_a_header_and_folded_hints(name):
    """ARENA-style: difficulty, importance, a time budget and at least one folded hint before each exercise."""
    cells = jupytext.read(NB_DIR / f"{name}.py").cells
    found = 0
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or not _solution_blocks(cell.source):
            continue
        md = next(c.source for c in reversed(cells[:i]) if c.cell_type == "markdown")   # the exercise's own text
        low = md.lower()
        assert "difficulty" in low and re.search(r"🔴+⚪*|\d/5", md), f"{name}, cell {i}: no difficulty (🔴🔴⚪⚪⚪)"
        assert "importance" in low, f"{name}, cell {i}: no importance"
        assert re.search(r"about \d+ min", md), f"{name}, cell {i}: no time budget ('about 10 min')"
        assert HINT_SUMMARY.search(md), f"{name}, cell {i}: no folded hint (<details><summary>Hint 1</summary>)"
        assert md.count("<details>") == md.count("</details>")
        found += 1
    assert found >= 2


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_generated_exercise_cells_raise_and_their_checks_say_not_written(generated, name, tiny_model):
    out, _ = generated
    cells = [c for c in nbformat.read(out / f"{name}.ipynb", as_version=4).cells if c.cell_type == "code"]
    found = 0
    for i, cell in enumerate(cells):
        if "your turn: " not in cell.source:
            continue
        ns = _notebook_namespace(name, tiny_model)
        exec(compile(cell.source, f"{name}[{i}]", "exec"), ns)
        fns = [v for k, v in ns.items() if callable(v) and k.startswith("my_")]
        assert fns, f"{name}: exercise cell {i} defines no my_* function"
        for fn in fns:
            with pytest.raises(NotImplementedError, match="your turn"):
                fn(*[None] * fn.__code__.co_argcount)
        check = cells[i + 1].source
        assert CHECK_CALL.search(check), f"{name}: the cell after exercise cell {i} must call a checker"
        with pytest.raises(AssertionError, match="not written yet"):
            exec(compile(check, f"{name}[{i + 1}]", "exec"), ns)
        found += 1
    assert found >= 2


def test_generator_refuses_to_overwrite_the_notebooks(tmp_path, capsys):
    with pytest.raises(ValueError, match="overwrite the solutions"):
        generate(NB_DIR, NB_DIR)
    assert main(["--src", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generator_command_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "ex")]) == 0
    printed = capsys.readouterr().out
    assert f"written to {tmp_path / 'ex'}/" in printed
    for name in EXERCISE_NOTEBOOKS:
        assert (tmp_path / "ex" / f"{name}.ipynb").exists() and f"{name}: 2 exercise(s)" in printed
    for name in ANSWER_NOTEBOOKS:
        assert re.search(rf"{name}: 2 exercise\(s\), [1-9]\d* answer\(s\) removed", printed), printed
    assert re.search(r"\d+ exercises and [1-9]\d* hidden answers in \d+ notebooks", printed)


# ------------------------------------------------------------------------------------ notebooks
@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_notebook_has_at_least_two_checked_exercises(name):
    cells = [c for c in jupytext.read(NB_DIR / f"{name}.py").cells if c.cell_type == "code"]
    checked = []
    for i, cell in enumerate(cells):
        if not _solution_blocks(cell.source):
            continue
        nxt = cells[i + 1].source if i + 1 < len(cells) else ""
        m = CHECK_CALL.search(nxt)
        assert m and "from alphaedit_lite.classroom.exercises import" in nxt, \
            f"{name}: the exercise cell {i} must be followed by a cell calling a checker from alphaedit_lite.classroom.exercises"
        assert hasattr(ex, m.group(1)) and f"def {m.group(2)}(" in cell.source
        checked.append(m.group(1))
    assert len(set(checked)) >= 2, f"{name}: {checked}"


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_notebook_solutions_pass_their_checks(name, capsys, tiny_model):
    """The solutions as committed pass (fast, without running the whole notebook)."""
    cells = [c for c in jupytext.read(NB_DIR / f"{name}.py").cells if c.cell_type == "code"]
    for i, cell in enumerate(cells):
        if _solution_blocks(cell.source):
            ns = _notebook_namespace(name, tiny_model)
            exec(compile(cell.source, f"{name}[{i}]", "exec"), ns)
            m = CHECK_CALL.search(cells[i + 1].source)
            call = cells[i + 1].source[m.start(1):].splitlines()[0].strip()   # e.g. check_x(my_fn, model, tok, layer=L)
            ns[m.group(1)] = getattr(ex, m.group(1))
            exec(compile(call, f"{name}[{i + 1}]", "exec"), ns)
            assert capsys.readouterr().out.startswith("✓ ")



# ------------------------------------------------------------------ the key at the subject's last token
def _trace_keys(model, tok, text, layer):
    """(T, d_in) keys of every token, (T, d_out) the module's outputs, the hidden states."""
    from alphaedit_lite.model import arch as M
    from alphaedit_lite.model.hooks import Trace

    with Trace(model, M.arch_spec(model).rewrite_name(layer), retain_input=True, retain_output=True) as tr, \
            torch.no_grad():
        out = model(input_ids=torch.tensor([tok(text).input_ids]), output_hidden_states=True)
    return tr.input[0], tr.output[0], [h[0] for h in out.hidden_states]


def _last(tok, text, subject):
    end = text.index(subject) + len(subject)
    return len(tok(text[:end]).input_ids) - 1


def _first(tok, text, subject):
    start = text.index(subject)
    return len(tok(text[:start].rstrip()).input_ids) if start else 0


def key_ok(model, tok, text, subject, layer):
    return _trace_keys(model, tok, text, layer)[0][_last(tok, text, subject)]


KEY_MISTAKES = [
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0][_first(t, text, s)], "you took the FIRST token of the subject"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0][-1], "you took the prompt's last token"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0][_last(t, text, s) + 1], "one token too far"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0][_last(t, text, s) - 1], "one token too early"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0][_first(t, text, s):_last(t, text, s) + 1].mean(0),
     "you averaged the keys of the subject's tokens"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l - 1)[0][_last(t, text, s)], "wrong layer: your key comes from layer 0"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[1][_last(t, text, s)], "the module's OUTPUT (the value v = W k)"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[2][l + 1][_last(t, text, s)], "the residual stream"),
    (lambda m, t, text, s, l: key_ok(m, t, text, s, l)[None], "you kept the batch dimension"),
    (lambda m, t, text, s, l: _trace_keys(m, t, text, l)[0], "those are the keys of all"),
    (lambda m, t, text, s, l: key_ok(m, t, text, s, l) * 1.01, "differs from alphaedit_lite.locate.keys'"),
]


def test_subject_key_checker_accepts_the_reference(tiny_model, capsys):
    model, tok = tiny_model
    ex.check_subject_key(key_ok, model, tok, layer=1)
    out = capsys.readouterr().out
    assert out.startswith("✓ key_ok: key at the subject's last token (layer 1)") and "5 prompts" in out
    # the cases include subjects of several tokens at the start, in the middle and at the end of a prompt
    lasts = [(_first(tok, t, s), _last(tok, t, s), len(tok(t).input_ids)) for t, s in ex.SUBJECT_KEY_CASES]
    assert any(f < l for f, l, _ in lasts) and lasts[0][0] == 0 and lasts[-1][1] == lasts[-1][2] - 1
    assert any(0 < f < l < n - 1 for f, l, n in lasts)


@pytest.mark.parametrize("wrong,expected", [pytest.param(fn, msg, id=f"key-{i}") for i, (fn, msg) in enumerate(KEY_MISTAKES)])
def test_subject_key_checker_names_the_mistake(tiny_model, wrong, expected):
    model, tok = tiny_model
    with pytest.raises(AssertionError) as info:
        ex.check_subject_key(wrong, model, tok, layer=1)
    msg = str(info.value)
    assert msg.startswith("✗ ") and expected in msg, msg


def test_subject_key_checker_reports_unwritten_and_bad_arguments(tiny_model):
    model, tok = tiny_model

    def todo(model, tok, text, subject, layer):
        raise NotImplementedError("your turn: write this part")

    with pytest.raises(AssertionError, match="not written yet"):
        ex.check_subject_key(todo, model, tok, layer=1)
    with pytest.raises(TypeError, match="pass the model as the second argument"):
        ex.check_subject_key(key_ok, tok, model)
    with pytest.raises(ValueError, match=r"layer must be an int in 0\.\.3"):
        ex.check_subject_key(key_ok, model, tok, layer=4)


@pytest.mark.model
@pytest.mark.slow
def test_subject_key_checker_on_smollm2(capsys):
    from alphaedit_lite.model import loading as ML

    try:
        model, tok = ML.load_model("smollm2-135m", device="cpu")
    except ML.ModelNotAvailableError as exc:
        pytest.skip(f"SmolLM2 is not installed here: {exc}")
    ex.check_subject_key(key_ok, model, tok, layer=8)
    assert capsys.readouterr().out.startswith("✓ ")
    with pytest.raises(AssertionError, match="you took the FIRST token of the subject"):
        ex.check_subject_key(KEY_MISTAKES[0][0], model, tok, layer=8)


# ------------------------------------------ notebook 00: MEMIT's closed form from the normal equations
NB00 = "00_editing_as_a_tradeoff"


def memit_ok(W, K1, V1, C0, lam):
    return torch.linalg.solve(lam * C0 + K1 @ K1.T, K1 @ (V1 - W @ K1).T).T


def memit_inv(W, K1, V1, C0, lam):   # the textbook form with an explicit inverse is accepted too
    return (V1 - W @ K1) @ K1.T @ torch.linalg.inv(lam * C0 + K1 @ K1.T)


def _right(M, B):   # B M⁻¹
    return torch.linalg.solve(M.T, B.T).T


MEMIT_MISTAKES = [
    (lambda W, K1, V1, C0, lam: _right(C0 + K1 @ K1.T, (V1 - W @ K1) @ K1.T), "you forgot λ"),
    (lambda W, K1, V1, C0, lam: _right(lam * C0 + K1.T @ K1, (V1 - W @ K1) @ K1.T), "instead of K1K1ᵀ"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, 2 * W @ K1 - V1, C0, lam), "the sign is flipped"),
    (lambda W, K1, V1, C0, lam: torch.linalg.inv(lam * C0 + K1 @ K1.T) @ (V1 - W @ K1) @ K1.T,
     "inverse on the wrong side"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam).T, "you returned Δᵀ"),
    (lambda W, K1, V1, C0, lam: _right(C0 + lam * K1 @ K1.T, (V1 - W @ K1) @ K1.T), "λ weights the PRESERVED term"),
    (lambda W, K1, V1, C0, lam: _right(C0 / lam + K1 @ K1.T, (V1 - W @ K1) @ K1.T), "it does not divide it"),
    (lambda W, K1, V1, C0, lam: _right(lam * C0, (V1 - W @ K1) @ K1.T), "missing K1K1ᵀ"),
    (lambda W, K1, V1, C0, lam: _right(lam * _eye(K1.shape[0]) + K1 @ K1.T, (V1 - W @ K1) @ K1.T), "not λI"),
    (lambda W, K1, V1, C0, lam: _right(lam * C0 + K1 @ K1.T, V1 @ K1.T), "you used V1 where the residual"),
    (lambda W, K1, V1, C0, lam: W + memit_ok(W, K1, V1, C0, lam), "not the edited weight W + Δ"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam).float(), "compute in float64"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam)[:, :-1], "must have W's shape"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam) * 1.01, "differs from memit_delta by a relative error"),
    # a mistake that only shows on non-square inputs: the shapes stop fitting, and the message says where to look
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam) if W.shape[0] == W.shape[1]
     else torch.linalg.inv(lam * C0 + K1 @ K1.T) @ (V1 - W @ K1) @ K1.T, "the shapes do not fit"),
    (lambda W, K1, V1, C0, lam: memit_ok(W, K1, V1, C0, lam) if W.shape[0] == W.shape[1]
     else memit_ok(W, K1, V1, C0, lam).T, "you returned Δᵀ"),
]


@pytest.mark.parametrize("fn", [memit_ok, memit_inv], ids=["solve", "inverse"])
def test_memit_checker_accepts_the_reference(fn, capsys):
    ex.check_memit_normal_equations(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "matches the reference on 4 inputs" in out


@pytest.mark.parametrize("wrong,expected", [pytest.param(fn, msg, id=f"memit-{i}")
                                            for i, (fn, msg) in enumerate(MEMIT_MISTAKES)])
def test_memit_checker_names_the_typical_mistake(wrong, expected):
    with pytest.raises(AssertionError) as info:
        ex.check_memit_normal_equations(wrong)
    msg = str(info.value)
    assert msg.startswith("✗ ") and expected in msg, msg
    assert msg.count(". ") <= 1, f"one sentence per mistake: {msg}"


def test_memit_checker_cases_make_every_mistake_distinguishable():
    """On the square case every typical wrong answer computes, differs from the reference and from the others."""
    case = ex._memit_cases()[0]
    W, K1, V1, C0, lam = case.args
    assert W.shape[0] == W.shape[1] == K1.shape[0] == K1.shape[1]
    answers = [case.expected] + [fn(*case.args) for fn, _ in MEMIT_MISTAKES[:11]]
    for i in range(len(answers)):
        for j in range(i):
            assert ex._rel(answers[i], answers[j]) > 1e-3, (i, j)
    assert "check_memit_normal_equations(fn)" in ex.__doc__
    assert "check_memit_normal_equations" in ex.__all__


def test_memit_checker_reports_unwritten_crashes_and_bad_returns():
    def todo(*args):
        raise NotImplementedError("your turn: write this part")

    with pytest.raises(AssertionError, match="not written yet"):
        ex.check_memit_normal_equations(todo)
    with pytest.raises(AssertionError, match="your function raised IndexError: index 9"):
        ex.check_memit_normal_equations(lambda *a: (_ for _ in ()).throw(IndexError("index 9 is out of bounds")))
    with pytest.raises(AssertionError, match="forget the `return`"):
        ex.check_memit_normal_equations(lambda *a: None)
    with pytest.raises(TypeError, match="pass your function itself"):
        ex.check_memit_normal_equations(torch.zeros(3))


def test_memit_checker_does_not_touch_the_global_random_state_or_its_inputs(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)

    def overwrite(W, K1, V1, C0, lam):   # a learner's in-place edit must not corrupt later cases
        out = memit_ok(W, K1, V1, C0, lam)
        W.zero_(), K1.zero_(), V1.zero_(), C0.zero_()
        return out

    ex.check_memit_normal_equations(overwrite)
    assert torch.equal(torch.rand(3), expected)
    assert capsys.readouterr().out.startswith("✓ ")


def test_notebook_00_exercise_is_checked_and_its_solution_passes(capsys):
    cells = [c for c in jupytext.read(NB_DIR / f"{NB00}.py").cells if c.cell_type == "code"]
    found = 0
    for i, cell in enumerate(cells):
        if not _solution_blocks(cell.source):
            continue
        nxt = cells[i + 1].source
        m = CHECK_CALL.search(nxt)
        assert m and "from alphaedit_lite.classroom.exercises import" in nxt and f"def {m.group(2)}(" in cell.source
        ns: dict = {"torch": torch}
        exec(compile(cell.source, f"{NB00}[{i}]", "exec"), ns)
        getattr(ex, m.group(1))(ns[m.group(2)])
        assert capsys.readouterr().out.startswith("✓ ")
        found += 1
    assert found >= 1


def test_generator_strips_notebook_00_and_its_check_says_not_written(generated):
    out, results = generated
    assert results[NB00].exercises >= 1
    src_nb = jupytext.read(NB_DIR / f"{NB00}.py")
    ex_nb = nbformat.read(out / f"{NB00}.ipynb", as_version=4)
    assert "Exercise version" in ex_nb.cells[0].source
    code_src = [c for c in src_nb.cells if c.cell_type == "code"]
    code_ex = [c for c in ex_nb.cells if c.cell_type == "code"]
    stripped = 0
    for i, (c_src, c_ex) in enumerate(zip(code_src, code_ex)):
        blocks = _solution_blocks(c_src.source)
        assert "SOLUTION" not in c_ex.source
        if not blocks:
            assert c_ex.source == c_src.source
            continue
        for line in (x for b in blocks for x in b):
            assert line not in [y.strip() for y in c_ex.source.splitlines()], f"solution line survived: {line!r}"
        ns: dict = {"torch": torch}
        exec(compile(c_ex.source, f"{NB00}-exercise[{i}]", "exec"), ns)
        fn = next(v for k, v in ns.items() if k.startswith("my_") and callable(v))
        with pytest.raises(NotImplementedError, match="your turn"):
            fn(*[None] * fn.__code__.co_argcount)
        with pytest.raises(AssertionError, match="not written yet"):
            exec(compile(code_ex[i + 1].source, f"{NB00}-exercise[{i + 1}]", "exec"), ns)
        stripped += 1
    assert stripped == results[NB00].exercises
