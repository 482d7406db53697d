"""alphaedit-lite: a small, readable kit for null-space constrained knowledge editing.

The numeric core needs no model:

>>> import torch
>>> from alphaedit_lite import SecondMoment, null_space_projector, alphaedit_delta
>>> K0 = torch.randn(16, 8, dtype=torch.float64) @ torch.randn(8, 400, dtype=torch.float64)
>>> pj = null_space_projector(SecondMoment.from_keys(K0).cov, threshold=1e-8)
>>> pj.kept_rank
8
"""
from .covariance import SecondMoment
from .device import pick_device
from .nullspace import Projector, null_space_projector, projector_from_keys
from .solvers import alphaedit_delta, memit_delta
from .verify import nullspace_residual, preserved_change, projector_errors

__version__ = "0.1.0"

__all__ = [
    "SecondMoment", "Projector", "null_space_projector", "projector_from_keys",
    "alphaedit_delta", "memit_delta", "preserved_change", "nullspace_residual",
    "projector_errors", "pick_device", "__version__",
]
