"""Automatic checks for the notebooks' "your turn" exercises.

Each `check_*` function takes the learner's function, runs it against the library's reference
implementation on several inputs (random shapes, rank-deficient keys, a rescaled case, ...),
prints one "✓ ..." line on success, and otherwise raises `AssertionError` with one sentence that
names the most likely mistake (so a failing exercise stops a headless run). The mistakes are
recognised by recomputing the typical wrong answers and comparing; when none matches, the
message gives the measured error.

| checker | learner writes | paper |
|---|---|---|
| `check_covariance(fn)` | `fn(K) -> C = K Kᵀ / n`, keys as columns K (d, n) | AlphaEdit Eq. 8 (its input) |
| `check_projector(fn)` | `fn(C, threshold) -> P = Û Ûᵀ`, Û = eigenvectors with λ < threshold | AlphaEdit Eq. 8-9 |
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

Files of this package (import every checker from here: ``from alphaedit_lite.classroom.exercises import
check_x``):

- `_common.py`: the shared helpers (run the learner's function, fail in one sentence, name a mistake)
  and the editing inputs of Eq. 13 and 14
- `null_space.py`: `check_covariance`, `check_projector`, `check_null_space_share` (notebooks 01, 04)
- `null_space_writes.py`: `check_projection`, `check_null_space_write`, `check_written_fraction`
  (notebooks 03, 00, 04)
- `closed_form.py`: `check_grad_J`, `check_alphaedit_delta`, `check_memit_normal_equations` (notebooks 02, 00)
- `model_keys.py`: `check_subject_key` (notebook 03)
- `drift.py`: `check_relative_drift`, `check_common_shift_share` (notebook 05)
- `tracing.py`: `check_corrupt_subject`, `check_group_effects` (notebook 06)
"""
from __future__ import annotations

from alphaedit_lite.classroom.exercises import _common, closed_form, model_keys, null_space_writes
from alphaedit_lite.classroom.exercises.closed_form import (check_alphaedit_delta, check_grad_J,
                                                            check_memit_normal_equations)
from alphaedit_lite.classroom.exercises.drift import check_common_shift_share, check_relative_drift
from alphaedit_lite.classroom.exercises.model_keys import check_subject_key
from alphaedit_lite.classroom.exercises.null_space import check_covariance, check_null_space_share, check_projector
from alphaedit_lite.classroom.exercises.null_space_writes import (check_null_space_write, check_projection,
                                                                  check_written_fraction)
from alphaedit_lite.classroom.exercises.tracing import check_corrupt_subject, check_group_effects

__all__ = ["check_covariance", "check_projector", "check_grad_J", "check_alphaedit_delta", "check_subject_key",
           "check_projection", "check_memit_normal_equations", "check_null_space_share", "check_relative_drift",
           "check_null_space_write", "check_written_fraction", "check_common_shift_share", "check_corrupt_subject",
           "check_group_effects"]

# Still importable from here as from the single-file module, though not in __all__: its public
# constants, and the private helpers tests/test_exercises.py reaches as ``ex._rel`` and so on.
F64, MATCH_RTOL, GUESS_RTOL = _common.F64, _common.MATCH_RTOL, _common.GUESS_RTOL
SUBJECT_KEY_CASES, KEY_RTOL = model_keys.SUBJECT_KEY_CASES, model_keys.KEY_RTOL
_rel = _common._rel
_memit_cases = closed_form._memit_cases
_null_space_write_cases = null_space_writes._null_space_write_cases
_written_fraction_cases = null_space_writes._written_fraction_cases
