"""Sequential editing from the command line: `alphaedit-lite sequential` and the `make demo` job.

One call runs N edits in batches of b for each requested method (MEMIT, AlphaEdit, the projection
plug-in variants "MEMIT+P", "PRUNE+P", "RECT+P", ...) through :func:`alphaedit_lite.runner.run_sequential`
(checkpoints, `--resume`, drift), each into its own run folder, restoring the original weights
between methods, then writes the report: metric/drift/update-norm curves (PNG and interactive
HTML), the paper's Figure-5 view (PCA) and a Markdown table like Table 1.

Models: "tiny-world" (the shipped model organism: its records are the edits, its own training
text is K0, its unedited facts are the drift probes) or any model `alphaedit_lite.models.load_model`
knows (e.g. "smollm2-135m": CounterFact records from `../shared/data` or `--requests`, ROME's known
facts as drift probes, WikiText-2 key statistics).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TINY = "tiny-world"
SUBWORD = "subword-world"
WORLDS = (SUBWORD, TINY)
PLUGIN_SUFFIX = "+P"

__all__ = ["Setup", "prepare", "method_variant", "run_methods", "write_report", "add_sequential_parser",
           "cmd_sequential", "cmd_demo", "DEMO_DEFAULTS"]


@dataclass
class Setup:
    """What a sequential run needs besides the method: model, requests, K0 statistics, probes."""

    model_name: str
    model: Any
    tok: Any
    requests: list
    stats: Any = None                       # {layer: SecondMoment} or None (computed by the method)
    probe_prompts: list[str] = field(default_factory=list)
    extra_eval: Callable | None = None      # (model, tok) -> dict of extra figures per evaluation
    world: Any = None
    load_seconds: float = 0.0
    stats_fn: Callable | None = None        # layers -> {layer: SecondMoment} (the organisms' K0)


def method_variant(label: str) -> tuple[str, bool]:
    """"AlphaEdit" -> ("AlphaEdit", False); "MEMIT+P" -> ("MEMIT", True) (the projection plug-in)."""
    from .edit_cli import method_name

    if label.upper().endswith(PLUGIN_SUFFIX):
        base = method_name(label[: -len(PLUGIN_SUFFIX)])
        if base in ("AlphaEdit", "FT", "ROME"):
            raise ValueError(f"the projection plug-in '+P' applies to MEMIT, PRUNE and RECT, not {base}")
        return base, True
    return method_name(label), False


def hparams_for(label: str, model_name: str, overrides: dict | None = None):
    from .hparams import load_hparams

    base, plug = method_variant(label)
    hp = load_hparams(base, model_name)
    changes = dict(overrides or {})
    if plug:
        changes["project"] = True
    return hp.replace(**changes) if changes else hp


def prepare(model_name: str, n_edits: int, *, layers_hint=None, device: str | None = None,
            requests_path: str | None = None, n_probes: int = 300, eval_unedited: int = 1000,
            progress: bool = True) -> Setup:
    """Load the model and everything a run on it needs (see the module docstring)."""
    t0 = time.perf_counter()
    if model_name in WORLDS:
        import functools

        from .world import load_subword_world, load_tiny_world
        from .world.editing import (perplexity_ratio, subword_stats, unedited_accuracy, untouched_accuracy,
                                    world_probe_prompts, world_stats)

        if requests_path:
            raise ValueError(f"--requests does not apply to {model_name}: its edits are its own records; "
                             "leave --requests out, or choose another --model")
        model, tok, world = (load_subword_world if model_name == SUBWORD else load_tiny_world)(device=device)
        if n_edits > len(world.records):
            raise ValueError(f"the {model_name} organism has {len(world.records)} records; ask for at most that many edits")
        reqs = world.records[:n_edits]
        stats_fn = functools.partial(subword_stats if model_name == SUBWORD else world_stats, model, tok, world,
                                     progress=progress)
        stats = stats_fn(layers_hint) if layers_hint else None
        base_nll = None
        if model_name == SUBWORD:
            from .world.background import background_sentences
            from .world.editing import HELDOUT_SENTENCES
            from .world.subword import background_nll
            base_nll = background_nll(model, tok, background_sentences(world, "heldout", HELDOUT_SENTENCES))

        def extra(m, t, _w=world, _r=reqs):
            out = {"unedited_acc": unedited_accuracy(m, t, _w, _r, k=eval_unedited)}
            untouched = untouched_accuracy(m, t, _w, _r, k=eval_unedited)
            if untouched is not None:
                out["untouched_acc"] = untouched
            if base_nll is not None:
                out["perplexity_ratio"] = perplexity_ratio(m, t, _w, base_nll)
            return out
        return Setup(model_name, model, tok, reqs, stats, world_probe_prompts(world, reqs, n_probes), extra, world,
                     time.perf_counter() - t0, stats_fn)
    from .models import load_model
    from .requests import load_counterfact, load_knowns, load_requests

    model, tok = load_model(model_name, device=device)
    reqs = list(load_requests(requests_path, limit=n_edits) if requests_path else load_counterfact(limit=n_edits))
    if len(reqs) < n_edits:
        raise ValueError(f"only {len(reqs)} requests are available but --edits {n_edits} was asked")
    edited_subjects = {r.subject for r in reqs}
    try:
        knowns = [k for k in load_knowns() if k.subject not in edited_subjects][:n_probes]
        probes = [k.prompt for k in knowns]
    except (FileNotFoundError, ValueError):
        probes = []
    extra = heldout_perplexity_eval(model, tok, hp_for_heldout(model_name))
    return Setup(model_name, model, tok, reqs, None, probes, extra, None, time.perf_counter() - t0)


#: held-out WikiText-2 text for the perplexity ratio of real models: rows after the statistics' rows
HELDOUT_ROWS = 32


def hp_for_heldout(model_name: str):
    """The AlphaEdit hyper-parameters of ``model_name`` (their statistics corpus and size), or None."""
    from .hparams import load_hparams

    try:
        return load_hparams("AlphaEdit", model_name)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def heldout_perplexity_eval(model, tok, hp=None, n_rows: int = HELDOUT_ROWS) -> Callable | None:
    """An ``extra_eval`` giving ``perplexity_ratio``: held-out corpus perplexity now / unedited.

    The text is the ``n_rows`` rows of ``mom2_seq_len`` tokens of the statistics corpus that come
    right after the rows K0 was read from (so P never saw them). None when the corpus is unavailable.
    """
    import math

    from .evaluate import token_nll
    from .stats import corpus_tokens

    if hp is None:
        return None
    n_stats, seq = hp.mom2_n_samples * hp.mom2_seq_len, hp.mom2_seq_len
    try:
        _, ids, mask = corpus_tokens(tok, hp.mom2_dataset, n_stats + n_rows * seq, seq, progress=False)
    except (FileNotFoundError, ValueError, OSError):
        return None
    first = n_stats // seq
    ids, mask = ids[first:], mask[first:]
    base = token_nll(model, ids, mask)

    def extra(m, t):
        return {"perplexity_ratio": math.exp(token_nll(m, ids, mask) - base)}
    return extra


def run_methods(setup: Setup, labels: list[str], out: Path, *, n_edits: int, batch: int, eval_every: int = 1,
                checkpoint_every: int = 1, eval_limit: int | None = 200, fluency_every: int = 0,
                hidden_every: int = 1, fluency_limit: int | None = 20, resume: bool = False, overrides: dict | None = None,
                stop_after_batches: int | None = None, progress: bool = True, log=print,
                save_final: Path | None = None) -> dict[str, Path]:
    """Run every method label into ``out/<label>/``; the model's weights are restored after each.

    ``save_final``: also save each method's finally edited model as a transformers folder
    ``save_final/<label>/`` (before the weights are restored; only for a finished run)."""
    from .runner import Schedule, restore_original, run_sequential

    sched = Schedule(n_edits=n_edits, batch_size=batch, eval_every=eval_every, fluency_every=fluency_every,
                     checkpoint_every=checkpoint_every, eval_limit=eval_limit, hidden_every=hidden_every,
                     fluency_limit=fluency_limit)
    dirs: dict[str, Path] = {}
    for label in labels:
        base, _ = method_variant(label)
        hp = hparams_for(label, setup.model_name, overrides)
        stats = setup.stats
        if setup.stats_fn is not None and (stats is None or any(l not in stats for l in hp.layers)):
            stats = setup.stats_fn(hp.layers)
        run_dir = out / label.replace("+", "_plus_")
        original = None
        from .models import get_rewrite_weight
        original = {l: get_rewrite_weight(setup.model, l).clone() for l in hp.layers}
        log(f"[{label}] {n_edits} edits in batches of {batch} -> {run_dir}")
        try:
            res = run_sequential(setup.model, setup.tok, setup.requests, hp, base, run_dir, sched,
                                 probe_prompts=setup.probe_prompts or None, stats=stats, resume=resume,
                                 extra_eval=setup.extra_eval, stop_after_batches=stop_after_batches,
                                 progress=progress, model_name=setup.model_name)
            finished = res.metrics and res.metrics[-1].get("edits") == n_edits
            if save_final is not None and finished:
                from .models import save_edited_model
                where = save_edited_model(setup.model, setup.tok, Path(save_final) / run_dir.name,
                                          {"method": label, "model": setup.model_name, "edits": n_edits,
                                           "batch": batch, "run": str(run_dir), "layers": list(hp.layers)},
                                          overwrite=True)
                log(f"[{label}] edited model saved to {where}")
        finally:
            restore_original(setup.model, original)
        last = res.metrics[-1] if res.metrics else {}
        log(f"[{label}] done in {res.seconds:.0f} s: " + ", ".join(
            f"{k} {last[k]:.1f}" for k in ("efficacy", "generalization", "specificity", "unedited_acc")
            if last.get(k) is not None))
        dirs[label] = run_dir
    return dirs


def evaluate_unedited(setup: Setup, eval_limit: int | None = 200) -> dict:
    """The figures of an evaluation before any edit, on the sample a finished run evaluates last:
    an even sample of at most ``eval_limit`` of the setup's requests, plus the setup's extra figures."""
    from .evaluate import evaluate_requests
    from .runner import _even_sample

    t0 = time.perf_counter()
    reqs = setup.requests
    row = dict(evaluate_requests(setup.model, setup.tok, [reqs[i] for i in _even_sample(len(reqs), eval_limit)])["summary"])
    if setup.extra_eval is not None:
        row.update(setup.extra_eval(setup.model, setup.tok))
    row.update(drift_last_edited_layer=0.0, drift_final=0.0, seconds=round(time.perf_counter() - t0, 1))
    return row


def write_report(runs: dict[str, Path], out: Path, title: str = "", unedited: dict | None = None) -> dict[str, Path]:
    """PNG + HTML curves, the PCA before/after view, summary.md and summary.json; returns their paths.

    ``unedited``: the unedited model's figures (:func:`evaluate_unedited`), written as the first row
    of summary.json."""
    from .report import plot_embedding_png, plot_runs_png, summary_json, summary_table, write_runs_html

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


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
DEMO_DEFAULTS = dict(model=TINY, methods=["MEMIT", "AlphaEdit"], edits=2000, batch=100, out="runs/demo",
                     live_edits=40, live_batch=20)


def _parse_set(items: list[str] | None) -> dict:
    """``--set KEY=VALUE`` options as {field: value}: VALUE is read as JSON (else kept as a string),
    then checked against the field's declared type (:func:`alphaedit_lite.hparams.check_overrides`)
    so that a bad value stops the command before the model loads."""
    from .hparams import check_overrides

    out = {}
    for it in items or []:
        k, eq, v = it.partition("=")
        k = k.strip()
        if not eq or not k:
            raise ValueError(f"--set takes KEY=VALUE (a JSON value), e.g. --set L2=10, got {it!r}")
        if k in out:
            raise ValueError(f"--set {k} is given twice ({out[k]!r} and {v!r}); keep one")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return check_overrides(out, source="--set")


def cmd_sequential(args: argparse.Namespace) -> int:
    from .edit_cli import cpu_threads

    n = cpu_threads(args.threads)
    labels = [m for ms in args.method for m in ms.split(",")]
    for lab in labels:
        method_variant(lab)                       # fail fast on a bad name
    for flag, v in (("--edits", args.edits), ("--batch", args.batch), ("--eval-every", args.eval_every),
                    ("--checkpoint-every", args.checkpoint_every)):
        if v < 1:
            raise ValueError(f"{flag} must be at least 1, got {v}")
    overrides = _parse_set(args.set)
    # every method's hyper-parameters, overrides included, are checked before the model loads
    hp0 = [hparams_for(lab, args.model, overrides) for lab in labels][0]
    out = Path(args.out or f"runs/{args.model}-{args.edits}x{args.batch}")
    print(f"alphaedit-lite sequential: {args.model}, {', '.join(labels)}, {args.edits} edits in batches of "
          f"{args.batch}, {n} CPU thread(s) -> {out}")
    setup = prepare(args.model, args.edits, layers_hint=hp0.layers, device=args.device,
                    requests_path=args.requests, n_probes=args.probes, progress=not args.quiet)
    t0 = time.perf_counter()
    unedited = evaluate_unedited(setup, args.eval_limit)
    runs = run_methods(setup, labels, out, n_edits=args.edits, batch=args.batch, eval_every=args.eval_every,
                       checkpoint_every=args.checkpoint_every, eval_limit=args.eval_limit,
                       fluency_every=args.fluency_every, fluency_limit=args.fluency_limit, resume=args.resume, overrides=overrides,
                       stop_after_batches=args.stop_after, progress=not args.quiet,
                       save_final=Path(args.save_final) if args.save_final else None)
    if args.stop_after is not None:
        print(f"stopped after {args.stop_after} batch(es) per method as asked; continue with --resume")
        return 0
    paths = write_report(runs, out / "report", title=f"{args.model}: {args.edits} sequential edits, batch {args.batch}",
                         unedited=unedited)
    if unedited is not None:
        print("unedited model: " + ", ".join(f"{k} {unedited[k]:.3g}" for k in ("efficacy", "generalization",
              "specificity", "unedited_acc", "perplexity_ratio") if unedited.get(k) is not None))
    if args.records:
        from .report import copy_run_records
        where = copy_run_records(runs, args.records, provenance(args, time.perf_counter() - t0), out / "report")
        paths["records"] = where
    print("\n" + (out / "report" / "summary.md").read_text())
    print(f"total {time.perf_counter() - t0:.0f} s. Report:")
    for k, p in paths.items():
        print(f"  {k:12s} {p}")
    return 0


def provenance(args: argparse.Namespace, seconds: float) -> dict:
    """What made a run: the command line, the kit's commit (when run from a git checkout), versions, threads."""
    import datetime
    import platform
    import subprocess

    import torch

    from . import __version__
    from .paths import PROJECT_ROOT

    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": "alphaedit-lite " + " ".join(sys.argv[1:]), "commit": commit, "kit_version": __version__,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds_this_command": round(seconds, 1)}


def add_sequential_parser(sub) -> argparse.ArgumentParser:
    q = sub.add_parser("sequential", help="N sequential edits per method with checkpoints, drift and a report")
    q.add_argument("--model", default=TINY, help=f"'{TINY}' or '{SUBWORD}' (shipped organisms) or a model "
                                                "name, e.g. smollm2-135m")
    q.add_argument("--method", action="append", default=None,
                   help="method(s): MEMIT, AlphaEdit, PRUNE, RECT, FT, ROME; add '+P' for the projection plug-in "
                        "(MEMIT+P). Repeat or comma-separate. Default: MEMIT,AlphaEdit")
    q.add_argument("--edits", type=int, default=1000, help="number of sequential edits")
    q.add_argument("--batch", type=int, default=100, help="edits per batch")
    q.add_argument("--out", default=None, help="output folder (default runs/<model>-<edits>x<batch>)")
    q.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    q.add_argument("--eval-every", type=int, default=1, help="evaluate every k batches")
    q.add_argument("--checkpoint-every", type=int, default=1, help="checkpoint every k batches")
    q.add_argument("--eval-limit", type=int, default=200, help="evaluate at most this many edits so far")
    q.add_argument("--fluency-every", type=int, default=0, help="generation fluency every k batches (0: at the end)")
    q.add_argument("--fluency-limit", type=int, default=20,
                   help="generate from at most this many edits per fluency measurement (0: skip fluency)")
    q.add_argument("--probes", type=int, default=300, help="probe prompts for hidden-state drift")
    q.add_argument("--requests", default=None, help="a JSON file of requests (default: the model's own records "
                                                   "or CounterFact from ../shared/data)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyper-parameter (JSON value)")
    q.add_argument("--save-final", default=None, metavar="DIR",
                   help="also save each method's edited model as a transformers folder DIR/<method>/")
    q.add_argument("--records", default=None, metavar="DIR",
                   help="also copy the finished runs' light records (settings, metrics, first and last probe "
                        "states, report; no weights) to DIR, with the command and commit in provenance.json")
    q.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    q.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: cores left free)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_sequential_with_defaults)
    return q


def _sequential_with_defaults(args: argparse.Namespace) -> int:
    if args.method is None:
        args.method = ["MEMIT,AlphaEdit"]
    return cmd_sequential(args)


#: the target settings of the shipped SmolLM2 run and the demo's live part (benchmarks/README.md measures
#: them against the defaults): stop once the new object is the argmax, layers above L in bfloat16
FAST_TARGETS = ("v_stop=most_probable", "v_dtype=bfloat16")

#: the shipped 1,000-edit SmolLM2 run (records only) under the kit's data folder
SHIPPED_RUN = "runs/smollm2-135m-1000x100"


def shipped_run_dir() -> Path:
    """The folder of the shipped SmolLM2 run's records (data/runs/smollm2-135m-1000x100)."""
    from .paths import shipped_data_dir

    return shipped_data_dir() / SHIPPED_RUN


def _sequential_args(**kw) -> argparse.Namespace:
    base = dict(method=[",".join(DEMO_DEFAULTS["methods"])], resume=True, eval_every=1, checkpoint_every=1,
                eval_limit=200, fluency_every=0, fluency_limit=20, probes=300, requests=None, set=None,
                stop_after=None, save_final=None, records=None, device=None, threads=None, quiet=False)
    base.update(kw)
    return argparse.Namespace(**base)


def show_shipped_run(out: Path, log=print) -> dict | None:
    """Render the shipped SmolLM2 run's report into ``out`` and print it beside the paper's Table 1.

    Returns its summary.json (or None when the records are not there)."""
    from .report import plot_embedding_png, plot_runs_png, table1_markdown, write_runs_html

    src = shipped_run_dir()
    runs = {lab: src / lab for lab in DEMO_DEFAULTS["methods"] if (src / lab / "settings.json").is_file()}
    if len(runs) < 2:
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


def cmd_demo(args: argparse.Namespace) -> int:
    """`make demo`: (1) the shipped 1,000-edit SmolLM2 run rendered beside the paper's Table 1, (2) a short
    live SmolLM2 sequence with MEMIT and AlphaEdit, (3) an organism (the tiny world by default) as the
    counterexample where the null space has no room; finished parts are reused, killed ones resumed."""
    from .paths import shared_data_dir

    out = Path(args.out)
    t0 = time.perf_counter()
    combined: dict[str, Any] = {"parts": {}}
    shipped = show_shipped_run(out / "smollm2-shipped")
    if shipped is not None:
        combined["parts"]["smollm2_shipped"] = shipped
    if args.live_edits > 0:
        if shared_data_dir() is None:
            print("== 2. live SmolLM2 sequence: skipped (CounterFact from ../shared/data is not here) ==")
        else:
            print(f"== 2. A short live SmolLM2 sequence: {args.live_edits} edits in batches of {args.live_batch}, "
                  f"targets with {', '.join(FAST_TARGETS)} as in part 1 ==")
            live = out / "smollm2-live"
            cmd_sequential(_sequential_args(model="smollm2-135m", edits=args.live_edits, batch=args.live_batch,
                                            out=str(live), eval_limit=args.live_edits, fluency_limit=0, probes=100,
                                            set=list(FAST_TARGETS), device=args.device, threads=args.threads,
                                            quiet=args.quiet))
            combined["parts"]["smollm2_live"] = json.loads((live / "report" / "summary.json").read_text())
    print(f"\n== 3. The counterexample: the {args.model} organism, {args.edits} edits in batches of {args.batch} ==")
    world = out / args.model
    cmd_sequential(_sequential_args(model=args.model, edits=args.edits, batch=args.batch, out=str(world),
                                    device=args.device, threads=args.threads, quiet=args.quiet))
    combined["parts"][args.model.replace("-", "_")] = json.loads((world / "report" / "summary.json").read_text())
    head = "smollm2_shipped" if "smollm2_shipped" in combined["parts"] else args.model.replace("-", "_")
    combined = {"methods": combined["parts"][head]["methods"], "methods_from": head, **combined}
    combined["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "summary.json").write_text(json.dumps(combined, indent=2, allow_nan=False) + "\n")
    print(f"\ndemo finished in {combined['seconds']:.0f} s; all figures: {out / 'report' / 'summary.json'}")
    return 0


def add_demo_flags(q) -> None:
    q.add_argument("--model", default=DEMO_DEFAULTS["model"], choices=list(WORLDS),
                   help=f"the organism (default {DEMO_DEFAULTS['model']}; {SUBWORD} is the second design, see "
                        "data/subword_world/README.md)")
    q.add_argument("--edits", type=int, default=DEMO_DEFAULTS["edits"], help="sequential edits per method")
    q.add_argument("--batch", type=int, default=DEMO_DEFAULTS["batch"], help="edits per batch")
    q.add_argument("--live-edits", type=int, default=DEMO_DEFAULTS["live_edits"],
                   help="edits of the short live SmolLM2 sequence (0: skip it)")
    q.add_argument("--live-batch", type=int, default=DEMO_DEFAULTS["live_batch"], help="its batch size")
    q.add_argument("--out", default=DEMO_DEFAULTS["out"], help="output folder (an existing demo is resumed)")
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--quiet", action="store_true")
