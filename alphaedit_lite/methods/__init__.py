"""Editing methods with one contract: ``apply_<method>(model, tok, requests, hparams, *, state=None,
stats=None) -> EditResult`` (see :mod:`alphaedit_lite.methods.common`).

| method    | update of each edited layer                                   | paper                      |
|-----------|---------------------------------------------------------------|----------------------------|
| FT        | Adam on W, ‖W − W0‖∞ ≤ ε                                      | Zhu et al. 2020 (FT-L)     |
| ROME      | Δ = r (C⁻¹k̄)ᵀ / ((C⁻¹k̄)ᵀk), one layer                          | Meng et al. 2022, Eq. 2    |
| MEMIT     | Δ = R K1ᵀ (λC0 + KpKpᵀ + K1K1ᵀ)⁻¹, residual spread over layers  | Meng et al. 2023, Eq. 14   |
| AlphaEdit | Δ = R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹                            | Fang et al. 2025, Eq. 14   |
| PRUNE     | MEMIT, then log-restrain σ(ΣΔ) above σ_max(W0)                 | Ma et al. 2024             |
| RECT      | MEMIT, keep the top-k% of |Δ|/|W|                              | Gu et al. 2024             |

``hparams.project=True`` adds AlphaEdit's projection Δ ← Δ P to MEMIT, PRUNE and RECT.
:func:`apply_method` dispatches by name.
"""
from __future__ import annotations

from alphaedit_lite.methods.alphaedit import apply_alphaedit
from alphaedit_lite.methods.common import EditResult, EditState
from alphaedit_lite.methods.ft import apply_ft
from alphaedit_lite.methods.memit import apply_memit
from alphaedit_lite.methods.prune import apply_prune
from alphaedit_lite.methods.rect import apply_rect
from alphaedit_lite.methods.registry import METHOD_NAMES, method_name
from alphaedit_lite.methods.rome import apply_rome

APPLY = {"FT": apply_ft, "ROME": apply_rome, "MEMIT": apply_memit, "AlphaEdit": apply_alphaedit,
         "PRUNE": apply_prune, "RECT": apply_rect}
assert tuple(APPLY) == METHOD_NAMES, "methods/registry.py and APPLY list different methods"

__all__ = ["EditResult", "EditState", "APPLY", "apply_method", "apply_ft", "apply_rome", "apply_memit",
           "apply_alphaedit", "apply_prune", "apply_rect"]


def apply_method(method: str, model, tok, requests, hparams, **kwargs) -> EditResult:
    """``APPLY[method](model, tok, requests, hparams, **kwargs)`` with a clear error for unknown names."""
    return APPLY[method_name(method)](model, tok, requests, hparams, **kwargs)
