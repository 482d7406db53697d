"""The one list of editing methods, their spelling, and the projection plug-in rule.

Every other place that needs method names reads them from here: the hyper-parameter classes
(:data:`alphaedit_lite.methods.hparams.METHODS`), the edit functions
(:data:`alphaedit_lite.methods.APPLY`), the command line's choices and the sequential runs'
labels. A label is a method name in any letter case, optionally with the suffix ``+P``: MEMIT,
PRUNE or RECT followed by AlphaEdit's projection ``Δ ← Δ P`` (``hparams.project = True``).
"""
from __future__ import annotations

#: canonical spellings, in the order the README's table lists them
METHOD_NAMES = ("FT", "ROME", "MEMIT", "AlphaEdit", "PRUNE", "RECT")
#: the suffix that adds the projection plug-in, and the methods it applies to
PLUGIN_SUFFIX = "+P"
PLUGIN_BASES = ("MEMIT", "PRUNE", "RECT")

__all__ = ["METHOD_NAMES", "PLUGIN_SUFFIX", "PLUGIN_BASES", "method_name", "method_variant"]


def method_name(name: str) -> str:
    """The canonical spelling of a method name given in any case (``"alphaedit"`` → ``"AlphaEdit"``)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}")
    canon = {m.lower(): m for m in METHOD_NAMES}
    key = name.strip().lower()
    if key not in canon:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)} (any letter case)")
    return canon[key]


def method_variant(label: str) -> tuple[str, bool]:
    """``"AlphaEdit"`` → ``("AlphaEdit", False)``; ``"MEMIT+P"`` → ``("MEMIT", True)`` (the projection plug-in)."""
    if isinstance(label, str) and label.upper().endswith(PLUGIN_SUFFIX):
        base = method_name(label[: -len(PLUGIN_SUFFIX)])
        if base not in PLUGIN_BASES:
            raise ValueError(f"the projection plug-in '{PLUGIN_SUFFIX}' applies to {', '.join(PLUGIN_BASES)}, "
                             f"not {base}")
        return base, True
    return method_name(label), False
