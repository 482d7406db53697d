"""Sequential editing runs: load a model and its edits, run several methods one after another.

One call of :func:`run_methods` runs N edits in batches of b for each requested method (MEMIT, AlphaEdit, the projection
plug-in variants "MEMIT+P", "PRUNE+P", "RECT+P", ...) through :func:`alphaedit_lite.experiments.runner.run_sequential`
(checkpoints, `--resume`, drift), each into its own run folder, restoring the original weights
between methods. The report of the runs is :func:`alphaedit_lite.plots.report.write_report`; the
command line (`alphaedit-lite sequential`, `alphaedit-lite demo`) is :mod:`alphaedit_lite.cli.sequential`.

Models: "tiny-world" (the shipped model organism: its records are the edits, its own training
text is K0, its unedited facts are the drift probes), "subword-world" (the same, except that its drift probes
are facts of subjects no edit touches, read at the subject's last token at the edited layers) or any model `alphaedit_lite.model.loading.load_model`
knows (e.g. "smollm2-135m": CounterFact records from `../shared/data` or `--requests`, ROME's known
facts as drift probes, WikiText-2 key statistics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from alphaedit_lite.methods.registry import method_variant
from alphaedit_lite.model.arch import restore_weights, snapshot_weights

TINY = "tiny-world"
SUBWORD = "subword-world"
WORLDS = (SUBWORD, TINY)

__all__ = ["Setup", "prepare", "hparams_for", "run_methods", "evaluate_unedited", "heldout_perplexity_eval",
           "hp_for_heldout", "shipped_run_dir", "shipped_runs", "FAST_TARGETS", "SHIPPED_RUN", "MATCHED_LABEL", "TINY", "SUBWORD", "WORLDS"]


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
    probe_positions: list[int] | None = None  # token read per probe at the edited layers (None: the last)


def hparams_for(label: str, model_name: str, overrides: dict | None = None):
    from alphaedit_lite.methods.hparams import load_hparams

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

        from alphaedit_lite.world import load_subword_world, load_tiny_world
        from alphaedit_lite.world.editing import (fact_accuracies, perplexity_ratio, subject_probes, subword_stats,
                                                  world_probe_prompts, world_stats)
        from alphaedit_lite.world.model import k0_known_subjects

        if requests_path:
            raise ValueError(f"--requests does not apply to {model_name}: its edits are its own records; "
                             "leave --requests out, or choose another --model")
        model, tok, world = (load_subword_world if model_name == SUBWORD else load_tiny_world)(device=device)
        known = k0_known_subjects() if model_name == SUBWORD else 0
        if n_edits > len(world.records) - known:
            raise ValueError(f"the {model_name} organism has {len(world.records)} records"
                             + (f", of which the last {known} are about subjects its preserved text (K0) knows and "
                                "no edit may touch" if known else "") + f"; ask for at most {len(world.records) - known} edits")
        reqs = world.records[:n_edits]
        stats_fn = functools.partial(subword_stats, model, tok, world, known=known, progress=progress) \
            if model_name == SUBWORD else functools.partial(world_stats, model, tok, world, progress=progress)
        stats = stats_fn(layers_hint) if layers_hint else None
        base_nll = None
        if model_name == SUBWORD:
            from alphaedit_lite.world.background import background_sentences
            from alphaedit_lite.world.editing import HELDOUT_SENTENCES
            from alphaedit_lite.world.subword import background_nll
            base_nll = background_nll(model, tok, background_sentences(world, "heldout", HELDOUT_SENTENCES))

        def extra(m, t, _w=world, _r=reqs):
            out = fact_accuracies(m, t, _w, _r, known, k=eval_unedited)   # one pass over every sample's prompts
            if base_nll is not None:
                out["perplexity_ratio"] = perplexity_ratio(m, t, _w, base_nll)
            return out
        if model_name == SUBWORD:   # facts live at the subject's last token: drift is read there
            probes, positions = subject_probes(world, tok, reqs, n_probes)
        else:
            probes, positions = world_probe_prompts(world, reqs, n_probes), None
        return Setup(model_name, model, tok, reqs, stats, probes, extra, world, time.perf_counter() - t0, stats_fn,
                     probe_positions=positions)
    from alphaedit_lite.model.loading import load_model
    from alphaedit_lite.locate.requests import load_counterfact, load_knowns, load_requests

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
    from alphaedit_lite.methods.hparams import load_hparams

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

    from alphaedit_lite.experiments.evaluate import token_nll
    from alphaedit_lite.locate.corpus import corpus_tokens

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
    from alphaedit_lite.experiments.runner import Schedule, run_sequential

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
        original = snapshot_weights(setup.model, hp.layers)
        log(f"[{label}] {n_edits} edits in batches of {batch} -> {run_dir}")
        try:
            res = run_sequential(setup.model, setup.tok, setup.requests, hp, base, run_dir, sched,
                                 probe_prompts=setup.probe_prompts or None, probe_positions=setup.probe_positions,
                                 stats=stats, resume=resume,
                                 extra_eval=setup.extra_eval, stop_after_batches=stop_after_batches,
                                 progress=progress, model_name=setup.model_name)
            finished = res.metrics and res.metrics[-1].get("edits") == n_edits
            if save_final is not None and finished:
                from alphaedit_lite.model.loading import save_edited_model
                where = save_edited_model(setup.model, setup.tok, Path(save_final) / run_dir.name,
                                          {"method": label, "model": setup.model_name, "edits": n_edits,
                                           "batch": batch, "run": str(run_dir), "layers": list(hp.layers)},
                                          overwrite=True)
                log(f"[{label}] edited model saved to {where}")
        finally:
            restore_weights(setup.model, original)
        last = res.metrics[-1] if res.metrics else {}
        log(f"[{label}] done in {res.seconds:.0f} s: " + ", ".join(
            f"{k} {last[k]:.1f}" for k in ("efficacy", "generalization", "specificity", "unedited_acc")
            if last.get(k) is not None))
        dirs[label] = run_dir
    return dirs


def evaluate_unedited(setup: Setup, eval_limit: int | None = 200) -> dict:
    """The figures of an evaluation before any edit, on the sample a finished run evaluates last:
    an even sample of at most ``eval_limit`` of the setup's requests, plus the setup's extra figures."""
    from alphaedit_lite.experiments.evaluate import evaluate_requests
    from alphaedit_lite.experiments.runner import _even_sample

    t0 = time.perf_counter()
    reqs = setup.requests
    row = dict(evaluate_requests(setup.model, setup.tok, [reqs[i] for i in _even_sample(len(reqs), eval_limit)])["summary"])
    if setup.extra_eval is not None:
        row.update(setup.extra_eval(setup.model, setup.tok))
    row.update(drift_last_edited_layer=0.0, drift_final=0.0, seconds=round(time.perf_counter() - t0, 1))
    return row


# ------------------------------------------------------------------------------------------------
# the shipped runs
# ------------------------------------------------------------------------------------------------
#: the target settings of the shipped SmolLM2 run and the demo's live part (benchmarks/README.md measures
#: them against the defaults): stop once the new object is the argmax, layers above L in bfloat16
FAST_TARGETS = ("v_stop=most_probable", "v_dtype=bfloat16")

#: the shipped 1,000-edit SmolLM2 run (records only) under the kit's data folder
SHIPPED_RUN = "runs/smollm2-135m-1000x100"


#: MEMIT on the same 1,000 edits with λ = 2,000, the λ at which its first batch writes ≥ 95 % of its edits
#: (benchmarks/first_batch_scan.py), so that it compares with AlphaEdit at matched efficacy
SHIPPED_MATCHED_RUN = "runs/smollm2-135m-1000x100-memit-lambda2000"
MATCHED_LABEL = "MEMIT λ=2000"


def shipped_run_dir() -> Path:
    """The folder of the shipped SmolLM2 run's records (data/runs/smollm2-135m-1000x100)."""
    from alphaedit_lite.util.paths import shipped_data_dir

    return shipped_data_dir() / SHIPPED_RUN


def shipped_runs() -> dict[str, Path]:
    """The shipped 1,000-edit SmolLM2 runs that are present, ``{label: run folder}``, in the order
    MEMIT (its shipped λ = 15,000), MEMIT at λ = 2,000 (matched efficacy), AlphaEdit."""
    from alphaedit_lite.util.paths import shipped_data_dir

    main, matched = shipped_run_dir(), shipped_data_dir() / SHIPPED_MATCHED_RUN
    found = {"MEMIT": main / "MEMIT", MATCHED_LABEL: matched / "MEMIT", "AlphaEdit": main / "AlphaEdit"}
    return {lab: d for lab, d in found.items() if (d / "settings.json").is_file()}


