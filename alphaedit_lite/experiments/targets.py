"""The targets the kit's headline organism is held to (issue 13), checked against a finished run.

`make demo` prints :func:`targets_markdown` of :func:`check_targets` after its organism part and
writes the rows into ``runs/demo/report/summary.json`` (``"targets"``), so a class sees at once which
of the paper's claims the organism reproduces and which it does not. Each row says what was asked,
what was measured and whether it is met (None: not measured in this run).
"""
from __future__ import annotations

__all__ = ["check_targets", "targets_markdown"]


def _row(target: str, measured: str, met: bool | None) -> dict:
    return {"target": target, "measured": measured, "met": met}


def check_targets(methods: dict, *, room: float | None = None, organism: dict | None = None) -> list[dict]:
    """Rows ``{"target", "measured", "met"}`` for a summary's ``methods`` (``unedited``, ``MEMIT``, ``AlphaEdit``
    with the keys of :data:`alphaedit_lite.experiments.records.SUMMARY_KEYS`).

    ``room``: the mean share ‖Pk‖²/‖k‖² of edit keys at the edited layer (e.g. from
    :func:`alphaedit_lite.world.editing.subword_key_room`); ``organism``: its ``metrics.json`` (for the
    size and training time). Rows whose figures are missing have ``met`` None.
    """
    missing = [k for k in ("unedited", "MEMIT", "AlphaEdit") if k not in methods]
    if missing:
        raise ValueError(f"check_targets needs the figures of the unedited model, MEMIT and AlphaEdit; "
                         f"{missing} missing (run both methods: --method MEMIT,AlphaEdit)")
    u, m, a = methods["unedited"], methods["MEMIT"], methods["AlphaEdit"]

    def get(d, k):
        v = d.get(k)
        return None if v is None else float(v)

    rows = []
    for key, label, bound in (("efficacy", "efficacy", 95.0), ("generalization", "generalization", 85.0)):
        v = get(a, key)
        rows.append(_row(f"AlphaEdit {label} ≥ {bound:g} %", "–" if v is None else f"{v:.1f} %",
                         None if v is None else v >= bound))
    ppl = get(a, "perplexity_ratio")
    rows.append(_row("AlphaEdit held-out perplexity within 5 % of the unedited model",
                     "–" if ppl is None else f"× {ppl:.3f}", None if ppl is None else abs(ppl - 1) <= 0.05))
    u0, ua, um = get(u, "unedited_acc"), get(a, "unedited_acc"), get(m, "unedited_acc")
    if None in (u0, ua, um):
        rows += [_row("AlphaEdit unedited facts within 5 points of the unedited model", "–", None),
                 _row("AlphaEdit's loss of unedited facts ≤ 1/3 of MEMIT's", "–", None)]
    else:
        la, lm = u0 - ua, u0 - um
        parts = [f"{name} {get(a, k):.1f} % of {get(u, k):.1f}" for k, name in
                 (("edited_subjects_acc", "edited subjects' other facts"), ("known_acc", "subjects K0 knows"))
                 if get(a, k) is not None and get(u, k) is not None]
        split = f"; {', '.join(parts)}" if parts else ""
        rows.append(_row("AlphaEdit unedited facts within 5 points of the unedited model",
                         f"{ua:.1f} % of {u0:.1f} % (−{la:.1f} points{split})", la <= 5.0))
        rows.append(_row("AlphaEdit's loss of unedited facts ≤ 1/3 of MEMIT's",
                         f"{la:.1f} against {lm:.1f} points ({la / lm:.2f}×)" if lm > 0 else f"{la:.1f} against {lm:.1f}",
                         la <= lm / 3 if lm > 0 else la <= 0))
    da, dm = get(a, "drift_last_edited_layer"), get(m, "drift_last_edited_layer")
    rows.append(_row("AlphaEdit drift at the last edited layer ≤ 1/5 of MEMIT's",
                     "–" if None in (da, dm) else f"{da:.3g} against {dm:.3g} ({da / dm:.2f}×)" if dm else f"{da:.3g}",
                     None if None in (da, dm) or not dm else da <= dm / 5))
    rows.append(_row("edit keys keep ≥ 30 % of their energy in the null space",
                     "–" if room is None else f"{100 * room:.1f} %", None if room is None else room >= 0.30))
    secs = [get(d, "seconds") for d in (m, a)]
    rows.append(_row("≤ 120 s per method (2 cores)",
                     "–" if None in secs else f"MEMIT {secs[0]:.0f} s, AlphaEdit {secs[1]:.0f} s",
                     None if None in secs else max(secs) <= 120))
    org = organism or {}
    size, train = org.get("shipped_bytes"), org.get("train_seconds")
    rows.append(_row("organism ≤ 20 MB", "–" if size is None else f"{size / 1e6:.1f} MB",
                     None if size is None else size <= 20e6))
    rows.append(_row("organism trained in ≤ 30 min", "–" if train is None else
                     f"{train / 60:.0f} min on {org.get('threads', '?')} thread(s)",
                     None if train is None else train <= 30 * 60))
    return rows


def targets_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table: target | measured | met (yes / NO / –)."""
    mark = {True: "yes", False: "**no**", None: "–"}
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {r['target']} | {r['measured']} | {mark[r['met']]} |" for r in rows]
    n_met = sum(r["met"] is True for r in rows)
    n_checked = sum(r["met"] is not None for r in rows)
    return "\n".join(lines) + f"\n\n{n_met} of {n_checked} measured targets met."


def organism_targets(model_name: str, methods: dict) -> list[dict]:
    """:func:`check_targets` for an organism of the kit, with its key room and its ``metrics.json``.

    The room is measured for the subword world (:func:`alphaedit_lite.world.editing.subword_key_room`
    at its AlphaEdit hyper-parameters' last layer, with the subjects K0 knows in K0); other organisms
    get no room figure.
    """
    import json

    from alphaedit_lite.experiments.sequential import SUBWORD, WORLDS, hparams_for

    if model_name not in WORLDS:
        raise ValueError(f"organism_targets is for the kit's organisms {WORLDS}, got {model_name!r}")
    from alphaedit_lite.world.model import METRICS_FILE, default_subword_dir, default_world_dir, k0_known_subjects

    folder = default_subword_dir() if model_name == SUBWORD else default_world_dir()
    organism = json.loads((folder / METRICS_FILE).read_text()) if (folder / METRICS_FILE).is_file() else None
    room = None
    if model_name == SUBWORD:
        from alphaedit_lite.world import load_subword_world
        from alphaedit_lite.world.editing import subword_key_room

        model, tok, world = load_subword_world(device="cpu")
        hp = hparams_for("AlphaEdit", model_name)
        room = subword_key_room(model, tok, world, hp, known=k0_known_subjects())[hp.layers[-1]]["edit"]
    return check_targets(methods, room=room, organism=organism)
