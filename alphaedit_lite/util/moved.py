"""Old module paths of alphaedit-lite, from before the layered subpackages, as aliases.

``import alphaedit_lite.stats`` (an old path) imports ``alphaedit_lite.locate.stats`` and warns
once with a :class:`DeprecationWarning` naming the new path. Only modules that moved whole are
listed; names that moved to a module split off later are re-exported by the new module where a
notebook or the README used them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "alphaedit_lite._checks": "alphaedit_lite.core.validate",
    "alphaedit_lite.covariance": "alphaedit_lite.core.covariance",
    "alphaedit_lite.nullspace": "alphaedit_lite.core.nullspace",
    "alphaedit_lite.solvers": "alphaedit_lite.core.solvers",
    "alphaedit_lite.verify": "alphaedit_lite.core.verify",
    "alphaedit_lite.check": "alphaedit_lite.core.selfcheck",
    "alphaedit_lite.paths": "alphaedit_lite.util.paths",
    "alphaedit_lite.device": "alphaedit_lite.util.device",
    "alphaedit_lite.models": "alphaedit_lite.model.arch",
    "alphaedit_lite.hooks": "alphaedit_lite.model.hooks",
    "alphaedit_lite.requests": "alphaedit_lite.locate.requests",
    "alphaedit_lite.keys": "alphaedit_lite.locate.keys",
    "alphaedit_lite.targets": "alphaedit_lite.locate.targets",
    "alphaedit_lite.stats": "alphaedit_lite.locate.stats",
    "alphaedit_lite.tracing": "alphaedit_lite.locate.tracing",
    "alphaedit_lite.hparams": "alphaedit_lite.methods.hparams",
    "alphaedit_lite.evaluate": "alphaedit_lite.experiments.evaluate",
    "alphaedit_lite.drift": "alphaedit_lite.experiments.drift",
    "alphaedit_lite.runner": "alphaedit_lite.experiments.runner",
    "alphaedit_lite.report": "alphaedit_lite.experiments.records",
    "alphaedit_lite.sequential": "alphaedit_lite.experiments.sequential",
    "alphaedit_lite.viz": "alphaedit_lite.plots.viz",
    "alphaedit_lite.explorers": "alphaedit_lite.widgets",
    "alphaedit_lite.exercises": "alphaedit_lite.classroom.exercises",
    "alphaedit_lite.make_exercises": "alphaedit_lite.classroom.make_exercises",
    "alphaedit_lite.edit_cli": "alphaedit_lite.cli.edit",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):  # the module returned by create_module is already loaded
        pass


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
