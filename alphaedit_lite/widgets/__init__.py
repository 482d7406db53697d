"""ipywidgets explorers over tested library functions (each also shows a static PNG + table without a widget front end).

* :func:`null_space_explorer`, :func:`lambda_explorer` (:mod:`.nullspace`): threshold/noise and λ sliders;
* :func:`edit_explorer` (:mod:`.editing`): edit a real model, compare before/after, restore;
* :func:`drift_scrubber` (:mod:`.scrubber`): a slider over the steps of finished sequential runs.
"""
from alphaedit_lite.widgets.scrubber import (DriftReading, DriftScrubber, DriftTrack, drift_reading, drift_scrubber,
                                             load_drift_track)
from alphaedit_lite.widgets.editing import EditExplorer, EditReading, EditSession, edit_explorer
from alphaedit_lite.widgets.nullspace import (ExplorerReading, LambdaExplorer, LambdaReading, NullSpaceExplorer,
                                              lambda_explorer, null_space_explorer)

__all__ = ["null_space_explorer", "NullSpaceExplorer", "ExplorerReading", "lambda_explorer", "LambdaExplorer",
           "LambdaReading", "edit_explorer", "EditExplorer", "EditSession", "EditReading", "drift_scrubber",
           "DriftScrubber", "DriftTrack", "DriftReading", "drift_reading", "load_drift_track"]
