"""The headline targets table (alphaedit_lite.experiments.targets): each row's arithmetic and its errors."""
from __future__ import annotations

import pytest

from alphaedit_lite.experiments.targets import check_targets, targets_markdown


def _methods(**alpha):
    a = dict(efficacy=96.0, generalization=80.0, unedited_acc=92.0, perplexity_ratio=1.01,
             drift_last_edited_layer=0.1, seconds=100.0)
    a.update(alpha)
    return {"unedited": {"unedited_acc": 95.0},
            "MEMIT": dict(unedited_acc=35.0, drift_last_edited_layer=1.0, seconds=130.0),
            "AlphaEdit": a}


def test_each_target_is_computed_from_the_figures():
    rows = {r["target"]: r for r in check_targets(_methods(), room=0.25,
                                                  organism={"shipped_bytes": 14e6, "train_seconds": 1900, "threads": 2})}
    met = {k: r["met"] for k, r in rows.items()}
    assert met["AlphaEdit efficacy ≥ 95 %"] is True and met["AlphaEdit generalization ≥ 85 %"] is False
    assert met["AlphaEdit held-out perplexity within 5 % of the unedited model"] is True
    assert met["AlphaEdit unedited facts within 5 points of the unedited model"] is True        # −3 points
    assert met["AlphaEdit's loss of unedited facts ≤ 1/3 of MEMIT's"] is True                  # 3 against 60
    assert "0.05×" in rows["AlphaEdit's loss of unedited facts ≤ 1/3 of MEMIT's"]["measured"]
    assert met["AlphaEdit drift at the last edited layer ≤ 1/5 of MEMIT's"] is True            # 0.1 against 1.0
    assert met["edit keys keep ≥ 30 % of their energy in the null space"] is False
    assert met["≤ 120 s per method (2 cores)"] is False                                        # MEMIT took 130 s
    assert met["organism ≤ 20 MB"] is True and met["organism trained in ≤ 30 min"] is False    # 31.7 min
    assert "32 min on 2 thread(s)" in rows["organism trained in ≤ 30 min"]["measured"]
    assert rows["AlphaEdit unedited facts within 5 points of the unedited model"]["measured"] == "92.0 % of 95.0 % (−3.0 points)"


def test_unedited_facts_row_says_whose_facts_were_lost_when_measured():
    m = _methods(edited_subjects_acc=63.3, known_acc=96.6)
    m["unedited"].update(edited_subjects_acc=99.2, known_acc=98.2)
    row = next(r for r in check_targets(m) if r["target"].startswith("AlphaEdit unedited facts"))
    assert row["measured"] == ("92.0 % of 95.0 % (−3.0 points; edited subjects' other facts 63.3 % of 99.2, "
                               "subjects K0 knows 96.6 % of 98.2)")


def test_missing_figures_are_unmeasured_not_failed():
    rows = check_targets(_methods(perplexity_ratio=None, drift_last_edited_layer=None))
    by = {r["target"]: r["met"] for r in rows}
    assert by["AlphaEdit held-out perplexity within 5 % of the unedited model"] is None
    assert by["AlphaEdit drift at the last edited layer ≤ 1/5 of MEMIT's"] is None
    assert by["edit keys keep ≥ 30 % of their energy in the null space"] is None and by["organism ≤ 20 MB"] is None
    md = targets_markdown(rows)
    assert md.startswith("| target | measured | met |") and "**no**" in md and "| – |" in md
    n_checked = sum(v is not None for v in by.values())
    assert md.rstrip().endswith(f"{sum(v is True for v in by.values())} of {n_checked} measured targets met.")


def test_both_methods_are_needed():
    with pytest.raises(ValueError, match=r"\['MEMIT'\] missing"):
        check_targets({"unedited": {}, "AlphaEdit": {}})
