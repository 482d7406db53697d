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
from .covariance import SecondMoment
from .device import pick_device
from .nullspace import Projector, null_space_projector, projector_from_keys
from .solvers import alphaedit_delta, memit_delta
from .verify import nullspace_residual, preserved_change, projector_errors

__version__ = "0.1.0"

# Names imported on first access (module-level __getattr__, PEP 562): name -> submodule.
_LAZY = {"load_model": "models", "load_hparams": "hparams", "apply_method": "methods"}

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
