"""alphaedit-lite: a small, readable kit for null-space constrained knowledge editing.

The numeric core needs no model:

>>> import torch
>>> from alphaedit_lite import SecondMoment, null_space_projector, alphaedit_delta
>>> K0 = torch.randn(16, 8, dtype=torch.float64) @ torch.randn(8, 400, dtype=torch.float64)
>>> pj = null_space_projector(SecondMoment.from_keys(K0).cov, threshold=1e-8)
>>> pj.kept_rank
8

Editing a model (the README's names): ``load_model``, ``load_hparams`` and ``apply_method`` are
imported on first use (``from alphaedit_lite import load_model`` works), so that ``import
alphaedit_lite`` stays light for the numeric core.
"""
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.core.nullspace import Projector, null_space_projector, projector_from_keys
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta
from alphaedit_lite.core.verify import nullspace_residual, preserved_change, projector_errors
from alphaedit_lite.util.device import pick_device
from alphaedit_lite.util.version import __version__

# Names imported on first access (module-level __getattr__, PEP 562): name -> module.
_LAZY = {"load_model": "model.loading", "load_hparams": "methods.hparams", "apply_method": "methods"}

__all__ = [
    "SecondMoment", "Projector", "null_space_projector", "projector_from_keys",
    "alphaedit_delta", "memit_delta", "preserved_change", "nullspace_residual",
    "projector_errors", "pick_device", "load_model", "load_hparams", "apply_method", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value          # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# Modules moved into the layered subpackages (issue 14): the old paths still import, with a warning.
from alphaedit_lite.util.moved import install as _install_moved  # noqa: E402

_install_moved()
