"""Figures and tables from sequential-run folders (see `alphaedit_lite.experiments.runner`).

One function per view, each taking `{label: run_dir}` so MEMIT, AlphaEdit and plug-in variants
sit side by side: metric curves, hidden-state drift, update-norm growth (matplotlib PNG and
interactive plotly HTML), the paper's Figure-5 view of hidden states before/after (PCA/t-SNE),
and a Markdown table like the paper's Table 1.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from alphaedit_lite.experiments.runner import read_metrics

METRICS = [("efficacy", "Efficacy (%)"), ("generalization", "Generalization (%)"),
           ("specificity", "Specificity (%)"), ("fluency", "Fluency (n-gram entropy ×100)")]


def load_run(run_dir) -> dict:
    """settings, metrics rows and the list of saved hidden-state steps of one run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "settings.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no settings.json): run "
                                "`alphaedit-lite sequential ...` first, or check the path")
    hidden = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "hidden").glob("step_*.pt"))
    return {"dir": run_dir, "settings": json.loads((run_dir / "settings.json").read_text()),
            "metrics": read_metrics(run_dir), "hidden_steps": hidden}


def load_hidden(run_dir, step: int | None = None) -> tuple[dict, dict]:
    """(baseline, after) probe hidden states; `step` = a saved batch number, default the last."""
    run_dir = Path(run_dir)
    base = torch.load(run_dir / "baseline_hidden.pt", weights_only=False)
    steps = sorted((run_dir / "hidden").glob("step_*.pt"))
    if not steps:
        raise FileNotFoundError(f"{run_dir} has no saved hidden states (the run had no probe prompts)")
    path = steps[-1] if step is None else run_dir / "hidden" / f"step_{step:05d}.pt"
    return base, torch.load(path, weights_only=False)


def series(rows, key):
    xs = [r["edits"] for r in rows if key in r and r[key] is not None and not _isnan(r[key])]
    ys = [r[key] for r in rows if key in r and r[key] is not None and not _isnan(r[key])]
    return xs, ys


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def drift_keys(rows) -> list[str]:
    keys = []
    for r in rows:
        for k in r:
            if k.startswith("drift/") and k not in keys:
                keys.append(k)
    return keys


def summary_table(runs: dict) -> str:
    """A Markdown table like the paper's Table 1: the last evaluated step of each run."""
    loaded = {name: load_run(d) for name, d in runs.items()}
    extra = [k for k in ("unedited_acc", "edited_subjects_acc", "untouched_acc", "known_acc", "perplexity_ratio")
             if any(k in r for run in loaded.values() for r in run["metrics"])]
    names = {"unedited_acc": "Unedited facts (%)", "edited_subjects_acc": "Edited subjects' other facts (%)",
             "untouched_acc": "Untouched subjects (%)", "known_acc": "Subjects K0 knows (%)",
             "perplexity_ratio": "Held-out perplexity ÷ unedited"}
    head = ["method", "edits", "Eff.", "Gen.", "Spe.", "Flu.", *[names[k] for k in extra],
            "drift (last edited layer)", "drift (final)", "‖W − W₀‖", "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, run in loaded.items():
        if not run["metrics"]:
            lines.append(f"| {name} | (no metrics yet) |" + " |" * (len(head) - 2))
            continue
        r = run["metrics"][-1]
        dk = drift_keys(run["metrics"])
        last_layer = next((r.get(k) for k in dk if not k.endswith("final")), None)

        def f(v, fmt="{:.1f}"):
            return "–" if v is None or _isnan(v) else fmt.format(v)
        lines.append("| " + " | ".join([
            name, str(r["edits"]), f(r.get("efficacy")), f(r.get("generalization")), f(r.get("specificity")),
            f(r.get("fluency")), *[f(r.get(k), "{:.3f}" if k == "perplexity_ratio" else "{:.1f}") for k in extra],
            f(last_layer, "{:.2e}"), f(r.get("drift/final"), "{:.2e}"),
            f(update_norm_total(r), "{:.3g}"), f(r.get("seconds"), "{:.0f}")]) + " |")
    return "\n".join(lines)


#: the figures of summary.json, per method (issue 13's list)
SUMMARY_KEYS = ("efficacy", "generalization", "specificity", "unedited_acc", "perplexity_ratio",
                "drift_last_edited_layer", "drift_final", "seconds")
#: figures added where a run measured them (the organisms split unedited facts by whose facts they are)
OPTIONAL_SUMMARY_KEYS = ("edited_subjects_acc", "untouched_acc", "known_acc")


def final_figures(run_dir) -> dict:
    """The last evaluated step of a run folder as {key: value} with the keys of :data:`SUMMARY_KEYS`
    (None where the run did not measure it) plus ``edits``."""
    rows = load_run(run_dir)["metrics"]
    if not rows:
        raise ValueError(f"{run_dir} has no metrics yet; finish (or --resume) the run first")
    r = rows[-1]
    dk = [k for k in drift_keys(rows) if not k.endswith("final")]
    out = {k: r.get(k) for k in SUMMARY_KEYS}
    out["drift_last_edited_layer"] = r.get(dk[-1]) if dk else None
    out["drift_final"] = r.get("drift/final")
    out["edits"] = r.get("edits")
    out.update({k: r[k] for k in OPTIONAL_SUMMARY_KEYS if k in r})
    return {k: (None if _isnan(v) else v) for k, v in out.items()}


def summary_json(runs: dict, unedited: dict | None = None) -> dict:
    """``{"methods": {"unedited": {...}, label: {...}, ...}}``: each run's final figures (see
    :func:`final_figures`); ``unedited`` is the unedited model's row (the same evaluation before any edit)."""
    methods = {}
    if unedited is not None:
        methods["unedited"] = {k: unedited.get(k) for k in SUMMARY_KEYS}
        methods["unedited"].update({k: unedited[k] for k in OPTIONAL_SUMMARY_KEYS if k in unedited})
    for name, d in runs.items():
        methods[name] = final_figures(d)
    return {"methods": methods}


#: the files of a run folder that make its record (everything but the weight checkpoint and the lock)
RECORD_FILES = ("settings.json", "metrics.jsonl", "baseline_hidden.pt")


def copy_run_records(runs: dict, dest, provenance: dict | None = None, report_dir=None) -> Path:
    """Copy the light records of finished runs to ``dest`` (a few MB, no weights), for sharing or shipping.

    Per run ``dest/<folder name>/``: settings.json, metrics.jsonl, baseline_hidden.pt and the LAST
    saved probe states (hidden/step_*.pt); with ``report_dir`` its summary.md, summary.json and
    curves.png go to ``dest/report/``; ``provenance`` (the commands, the commit, the machine) is
    written to ``dest/provenance.json``. The copy loads with :func:`load_run` like the run itself.
    """
    import shutil

    dest = Path(dest)
    for name, d in runs.items():
        d = Path(d)
        run = load_run(d)
        if not run["metrics"] or run["metrics"][-1]["edits"] != run["settings"]["schedule"]["n_edits"]:
            raise ValueError(f"run {name} in {d} is not finished; finish it (--resume) before copying its records")
        out = dest / d.name
        (out / "hidden").mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            if (d / f).is_file():
                shutil.copy2(d / f, out / f)
        steps = sorted((d / "hidden").glob("step_*.pt"))
        for old in (out / "hidden").glob("step_*.pt"):
            old.unlink()
        if steps:
            shutil.copy2(steps[-1], out / "hidden" / steps[-1].name)
    if report_dir is not None:
        (dest / "report").mkdir(parents=True, exist_ok=True)
        for f in ("summary.md", "summary.json", "curves.png"):
            if (Path(report_dir) / f).is_file():
                shutil.copy2(Path(report_dir) / f, dest / "report" / f)
    if provenance is not None:
        (dest / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return dest


#: AlphaEdit paper (Fang et al., ICLR 2025), Table 1: 2,000 sequential CounterFact edits in batches of
#: 100; Efficacy / Generalization / Specificity (%) and Fluency (n-gram entropy ×100)
PAPER_TABLE1 = {
    ("LLaMA3-8B", "MEMIT"): (65.65, 64.65, 51.56, 437.43),
    ("LLaMA3-8B", "AlphaEdit"): (98.90, 94.22, 67.88, 622.49),
    ("GPT2-XL", "MEMIT"): (94.70, 85.82, 60.50, 477.26),
    ("GPT2-XL", "AlphaEdit"): (99.50, 93.95, 66.39, 597.88),
}


def table1_markdown(runs: dict, model: str, unedited: dict | None = None) -> str:
    """The paper's Table 1 rows beside the last evaluated step of each run in ``runs`` ({label: folder})."""
    def f(v):
        return "–" if v is None or _isnan(v) else f"{v:.1f}"
    head = "| model | method | edits | Eff. | Gen. | Spe. | Flu. | source |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for (m, meth), (e, g, sp, fl) in PAPER_TABLE1.items():
        lines.append(f"| {m} | {meth} | 2000 | {e:.2f} | {g:.2f} | {sp:.2f} | {fl:.2f} | paper, Table 1 |")
    if unedited is not None:
        lines.append(f"| {model} | unedited | 0 | {f(unedited.get('efficacy'))} | {f(unedited.get('generalization'))} | "
                     f"{f(unedited.get('specificity'))} | {f(unedited.get('fluency'))} | measured here |")
    for name, d in runs.items():
        rows = load_run(d)["metrics"]
        if rows:
            r = rows[-1]
            lines.append(f"| {model} | {name} | {r['edits']} | {f(r.get('efficacy'))} | {f(r.get('generalization'))} | "
                         f"{f(r.get('specificity'))} | {f(r.get('fluency'))} | measured here |")
    return "\n".join(lines)


def update_norm_total(r) -> float:
    """‖W − W₀‖ over the edited layers; NaN when a layer's norm was not finite (stored as null)."""
    vals = [v for k, v in r.items() if k.startswith("update_norm/")]
    if any(v is None for v in vals):
        return float("nan")
    return math.sqrt(sum(v ** 2 for v in vals))
