"""The report folder of a sequential run, and the shipped SmolLM2 run rendered beside the paper's Table 1.

:func:`write_report`: curves (PNG and interactive HTML), the Figure-5 PCA view, summary.md and
summary.json. :func:`show_shipped_run`: the same views of the records under ``data/runs``.
"""
from __future__ import annotations

import json
from pathlib import Path

from alphaedit_lite.experiments.records import summary_json, summary_table, table1_markdown
from alphaedit_lite.experiments.sequential import shipped_run_dir, shipped_runs
from alphaedit_lite.plots.runs import plot_embedding_png, plot_runs_png, write_runs_html

__all__ = ["write_report", "show_shipped_run"]


def write_report(runs: dict[str, Path], out: Path, title: str = "", unedited: dict | None = None) -> dict[str, Path]:
    """PNG + HTML curves, the PCA before/after view, summary.md and summary.json; returns their paths.

    ``unedited``: the unedited model's figures (:func:`evaluate_unedited`), written as the first row
    of summary.json."""

    out.mkdir(parents=True, exist_ok=True)
    paths = {"curves_png": plot_runs_png(runs, out / "curves.png", title=title),
             "curves_html": write_runs_html(runs, out / "curves.html", title=title)}
    with_hidden = {k: v for k, v in runs.items() if any((Path(v) / "hidden").glob("step_*.pt"))}
    if with_hidden:
        paths["pca_png"] = plot_embedding_png(with_hidden, out / "hidden_pca.png", key="final", method="pca")
    table = summary_table(runs)
    md = out / "summary.md"
    md.write_text(f"# {title or 'Sequential editing'}\n\n{table}\n\n"
                  "Eff./Gen./Spe.: CounterFact efficacy, generalization (paraphrases), specificity "
                  "(neighbourhood), in %, on an even sample of the edits made so far; drift: relative change "
                  "of probe hidden states against the unedited model.\n")
    paths["summary_md"] = md
    js = out / "summary.json"
    js.write_text(json.dumps(summary_json(runs, unedited), indent=2, allow_nan=False) + "\n")
    paths["summary_json"] = js
    return paths


def show_shipped_run(out: Path, log=print) -> dict | None:
    """Render the shipped SmolLM2 runs into ``out`` and print them beside the paper's Table 1.

    The runs are :func:`~alphaedit_lite.experiments.sequential.shipped_runs` (MEMIT at its shipped λ,
    MEMIT at matched efficacy when shipped, AlphaEdit). Returns the main run's summary.json (or None
    when the records are not there)."""

    src = shipped_run_dir()
    runs = shipped_runs()
    if not {"MEMIT", "AlphaEdit"} <= set(runs):
        log(f"(the shipped SmolLM2 run is not in {src}; skipped)")
        return None
    prov = json.loads((src / "provenance.json").read_text())
    summary = json.loads((src / "report" / "summary.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    title = "smollm2-135m: 1,000 sequential CounterFact edits in batches of 100 (shipped records)"
    plot_runs_png(runs, out / "curves.png", title=title)
    write_runs_html(runs, out / "curves.html", title=title)
    plot_embedding_png(runs, out / "hidden_pca.png", key="final", method="pca")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"== 1. The paper's headline on a real model: the shipped SmolLM2 run ({src}) ==")
    log(f"   made by: {prov.get('command')} (commit {str(prov.get('commit'))[:10]})")
    log(table1_markdown(runs, "SmolLM2-135M", summary["methods"].get("unedited")))
    log(f"   curves: {out / 'curves.png'}, {out / 'curves.html'}; Figure 5 view: {out / 'hidden_pca.png'}\n")
    return summary
