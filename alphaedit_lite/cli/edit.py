"""The `edit` and `stats` sub-commands of the `alphaedit-lite` command line.

``alphaedit-lite edit`` writes ONE fact into a real model with one of the kit's methods (FT, ROME,
MEMIT, AlphaEdit, PRUNE, RECT) and prints the model's greedy continuation of the prompt and the
probabilities of the old and the new object before and after the edit. For AlphaEdit the update is
the paper's Eq. 14, Δ = R K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + αI)⁻¹ (Fang et al., ICLR 2025), with P the
null-space projector of the corpus keys' second moment K0 K0ᵀ / n (Eq. 8-9); for MEMIT it is
MEMIT's Eq. 14, Δ = R K1ᵀ (λ C0 + K1 K1ᵀ)⁻¹ (Meng et al., ICLR 2023). The edited weights live
in memory and are restored before the command returns; with ``--save DIR`` a successful edit
(p(new) > p(old) afterwards) is first written to DIR as a Hugging Face model folder
(:func:`alphaedit_lite.model.loading.save_edited_model`: safetensors, the tokenizer, and
``alphaedit_edit.json`` describing the edit), which ``load_model(DIR)`` and ``from_pretrained`` read.

``alphaedit-lite stats`` computes (or loads from the cache) the key statistics C0 = K0 K0ᵀ / n of
the rewrite module of some layers over a corpus, builds AlphaEdit's projector P for each, and
prints per layer the kept rank, the eigenvalue range and the cache files. ``--export FILE`` writes
the statistics (``--with-projector``: and P) into one file to share (:func:`alphaedit_lite.locate.share.export_stats`);
``--import FILE ...`` checks such a file (or a ROME/MEMIT ``.npz``) against the model and puts it into
the cache (:func:`alphaedit_lite.locate.share.import_stats`), after which its corpus id works as ``--corpus``.

The functions here are what the command line calls; :func:`add_edit_parser` and
:func:`add_stats_parser` register the sub-commands on an ``argparse`` sub-parser set, and
:func:`main` runs them stand-alone (``python -m alphaedit_lite.cli.edit edit ...``). Input errors
raise ``ValueError`` with a sentence saying what to change; :func:`main` (like
``alphaedit_lite.cli.app``) turns them into ``alphaedit-lite: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from alphaedit_lite.core.nullspace import MODES
from alphaedit_lite.methods.registry import METHOD_NAMES, method_name
from alphaedit_lite.util.device import cpu_threads

__all__ = [
    "METHOD_NAMES", "method_name", "cpu_threads", "check_edit_inputs", "make_request", "greedy_next_word", "target_probabilities",
    "EditReport", "run_edit", "format_edit_report", "cmd_edit", "add_edit_parser",
    "StatsRow", "run_stats", "run_import", "format_stats_report", "cmd_stats", "add_stats_parser", "check_save_dir",
]

_SLOT = "{}"


# ------------------------------------------------------------------------------------------------
# Input checks (no model needed: they run before the slow model load)
# ------------------------------------------------------------------------------------------------
def _method_type(name: str) -> str:
    """argparse ``type=`` wrapper: an unknown method is a usage error (exit status 2)."""
    try:
        return method_name(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_edit_inputs(subject: str, prompt: str, target: str, target_true: str | None = None) -> str:
    """Validate the command-line request; return the prompt template (trailing spaces removed).

    The prompt must hold ``{}`` exactly once where the subject goes. A prompt with the subject
    written out, or a subject that never occurs, gets a message saying how to write it.
    """
    for name, value in (("--subject", subject), ("--prompt", prompt), ("--target", target)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is empty; give a non-empty string, e.g. --subject 'The Eiffel Tower' "
                             "--prompt '{} is located in the city of' --target Rome")
    subject = subject.strip()
    prompt = prompt.rstrip()
    n = prompt.count(_SLOT)
    if n == 0:
        if subject in prompt:
            raise ValueError(f"the prompt {prompt!r} has no '{{}}': write the subject's place as '{{}}', e.g. "
                             f"--prompt {prompt.replace(subject, _SLOT, 1)!r}")
        raise ValueError(f"the subject {subject!r} is not in the prompt {prompt!r}, and the prompt has no '{{}}' "
                         f"marking where it goes; write the prompt as a template such as "
                         f"'{{}} is located in the city of' (the subject is put in place of '{{}}')")
    if n > 1:
        raise ValueError(f"the prompt {prompt!r} contains '{{}}' {n} times; use it exactly once, where the subject goes")
    if _SLOT in subject:
        raise ValueError(f"the subject {subject!r} contains '{{}}'; the '{{}}' belongs in --prompt")
    if prompt.strip() == _SLOT:
        raise ValueError(f"the prompt {prompt!r} is only the subject; add the relation, e.g. '{{}} is located in'")
    if target_true is not None and target_true.strip().casefold() == target.strip().casefold():
        raise ValueError(f"--target equals --target-true ({target.strip()!r}); an edit must change the answer")
    return prompt


# ------------------------------------------------------------------------------------------------
# Small model helpers
# ------------------------------------------------------------------------------------------------
_WORD_RE = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def greedy_next_word(model, tok, text: str, max_new_tokens: int = 6) -> str:
    """The first word of the model's greedy continuation of ``text`` (what it "believes" now).

    Raises ``ValueError`` when the continuation holds no word (e.g. only punctuation).
    """
    from alphaedit_lite.experiments.evaluate import generate_texts

    cont = generate_texts(model, tok, [text], max_new_tokens=max_new_tokens, include_prompt=False)[0]
    m = _WORD_RE.search(cont)
    if m is None:
        raise ValueError(f"the model continues {text!r} with {cont!r}, which holds no word; "
                         "give the current answer with --target-true")
    return m.group(0)


def make_request(model, tok, subject: str, prompt: str, target: str, target_true: str | None = None):
    """An :class:`~alphaedit_lite.locate.requests.EditRequest`; ``target_true`` defaults to the model's greedy next word."""
    from alphaedit_lite.locate.requests import EditRequest

    prompt = check_edit_inputs(subject, prompt, target, target_true)
    subject = subject.strip()
    guessed = target_true is None
    if guessed:
        target_true = greedy_next_word(model, tok, prompt.replace(_SLOT, subject, 1))
        if target_true.casefold() == target.strip().casefold():
            raise ValueError(f"the model already answers {target_true!r} to {prompt.replace(_SLOT, subject, 1)!r}; "
                             "pick a different --target (or give --target-true)")
    return EditRequest(prompt=prompt, subject=subject, target_new=target, target_true=target_true,
                       case_id="cli"), guessed


def target_probabilities(model, tok, text: str, targets: Sequence[str]) -> list[float]:
    """p(" " + target | text) for each target: the product over its tokens (teacher forcing)."""
    from alphaedit_lite.experiments.evaluate import target_logprobs

    sc = target_logprobs(model, tok, [text] * len(targets), list(targets))
    return [math.exp(float(x)) for x in sc.sum]


def _load(model_name: str, device: str | None, threads: int | None = None):
    from alphaedit_lite.model.loading import load_model

    n = cpu_threads(threads)
    print(f"using {n} CPU thread(s)", file=sys.stderr)
    t0 = time.perf_counter()
    model, tok = load_model(model_name, device=device)
    return model, tok, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# edit
# ------------------------------------------------------------------------------------------------
@dataclass
class EditReport:
    """What one `edit` run measured (probabilities are of the whole target, all its tokens)."""

    method: str
    model: str
    layers: list[int]
    text: str                        # the filled prompt
    target_new: str
    target_true: str
    target_true_guessed: bool        # True: taken from the model's own greedy answer
    p_new_before: float
    p_true_before: float
    p_new_after: float
    p_true_after: float
    generation_before: str
    generation_after: str
    corpus: str | None
    n_tokens: int | None
    summary: str                     # EditResult.summary()
    seconds: dict[str, float]
    restored: bool                   # the weights were put back bit for bit afterwards
    save_dir: str | None = None      # where --save asked the edited model to go
    saved: bool = False              # it was written there (only a successful edit is)

    @property
    def success(self) -> bool:
        """The new object is now more probable than the old one."""
        return self.p_new_after > self.p_true_after


def run_edit(model, tok, method: str, subject: str, prompt: str, target: str, target_true: str | None = None, *,
             hparams: Any = None, model_name: str = "smollm2-135m", layers: Sequence[int] | None = None,
             corpus: str | None = None, n_tokens: int | None = None, threshold: float | None = None,
             mode: str | None = None, steps: int | None = None, prefixes: int | None = None,
             max_new_tokens: int = 20,
             restore: bool = True, progress: bool = True, stats: Any = None,
             save: str | Path | None = None, overwrite: bool = False) -> EditReport:
    """Edit ``model`` with ``method`` and measure it; the weights are restored afterwards unless ``restore=False``.

    With ``save`` (a folder), a successful edit (p(new) > p(old) afterwards) is saved there before
    the weights are restored (:func:`alphaedit_lite.model.loading.save_edited_model`; ``overwrite``
    replaces a non-empty folder); an unsuccessful one is not saved (``EditReport.saved`` says which).

    ``hparams`` (a dataclass or a JSON path) defaults to the shipped file for ``model_name``;
    ``layers``, ``corpus`` (``hparams.mom2_dataset``), ``n_tokens`` (``hparams.mom2_n_tokens``),
    ``threshold``/``mode`` (AlphaEdit's projector), ``steps`` (``v_num_grad_steps`` / FT's
    ``num_steps``) and ``prefixes`` (``context_n_prefixes``) override it.
    """
    import torch

    from alphaedit_lite.methods.hparams import BaseHParams, FTHParams, MEMITHParams, TargetHParams, load_hparams
    from alphaedit_lite.methods import apply_method
    from alphaedit_lite.locate.stats import layer_stats

    method = method_name(method)
    t0 = time.perf_counter()
    request, guessed = make_request(model, tok, subject, prompt, target, target_true)
    text = request.filled_prompt
    if isinstance(hparams, BaseHParams):
        hp = hparams
    else:
        hp = load_hparams(method, hparams if hparams is not None else model_name)
    changes: dict[str, Any] = {}
    if layers:
        changes["layers"] = sorted({int(x) for x in layers})
    if steps is not None:
        changes["num_steps" if isinstance(hp, FTHParams) else "v_num_grad_steps"] = int(steps)
    if prefixes is not None:
        changes["context_n_prefixes"] = int(prefixes)
    if isinstance(hp, MEMITHParams):
        if threshold is not None:
            changes["nullspace_threshold"] = float(threshold)
        if mode is not None:
            changes["nullspace_mode"] = mode
    if changes:
        hp = hp.replace(**changes)
    from alphaedit_lite.model.arch import check_layers, mlp_width
    check_layers(model, hp.layers, what="--layers")

    gen_before = _generate(model, tok, text, max_new_tokens)
    p_new0, p_true0 = target_probabilities(model, tok, text, [request.target_new, request.target_true])
    seconds = {"before": time.perf_counter() - t0}

    uses_stats = isinstance(hp, TargetHParams) and not isinstance(hp, FTHParams) and \
        getattr(hp, "mom2_adjustment", True)
    corpus_used = tokens_used = None
    if uses_stats and stats is None:
        corpus_used = corpus or hp.mom2_dataset
        tokens_used = int(n_tokens) if n_tokens is not None else hp.mom2_n_tokens
        d_in = mlp_width(model)
        if method != "AlphaEdit" and tokens_used < d_in:
            raise ValueError(f"--tokens {tokens_used} is below the key dimension d_ff = {d_in}: C0 = K0K0ᵀ/n then has "
                             f"rank < {d_in} and {method}'s linear system (λC0 + K1K1ᵀ) is singular. Use --tokens "
                             f"≥ {3 * d_in} (the shipped setting is {hp.mom2_n_tokens}), or --method AlphaEdit")
        t1 = time.perf_counter()
        stats = layer_stats(model, tok, hp.layers, corpus_used, tokens_used, min(hp.mom2_seq_len, max(tokens_used, 2)),
                            progress=progress, forward_dtype=hp.mom2_forward_dtype)
        seconds["stats"] = time.perf_counter() - t1

    snap = {n: p.detach().clone() for n, p in model.named_parameters()}
    t2 = time.perf_counter()
    result = apply_method(method, model, tok, [request], hp, stats=stats, progress=progress)
    seconds["edit"] = time.perf_counter() - t2
    saved = False
    try:
        gen_after = _generate(model, tok, text, max_new_tokens)
        p_new1, p_true1 = target_probabilities(model, tok, text, [request.target_new, request.target_true])
        if save is not None and p_new1 > p_true1:
            t3 = time.perf_counter()
            info = _edit_info(model, method, model_name, hp, request, result, (p_new0, p_true0, p_new1, p_true1),
                              corpus_used or getattr(stats, "corpus_id", None),
                              tokens_used or getattr(stats, "n_tokens", None))
            _save_model(model, tok, save, info, overwrite)
            saved = True
            seconds["save"] = time.perf_counter() - t3
    finally:
        if restore:
            result.restore(model)
    restored = restore and all(torch.equal(p, snap[n]) for n, p in model.named_parameters())
    if restore and not restored:
        raise RuntimeError("restoring the original weights after the edit failed; this is a bug, please report it")
    seconds["total"] = time.perf_counter() - t0
    return EditReport(method=method, model=model_name, layers=list(hp.layers), text=text,
                      target_new=request.target_new, target_true=request.target_true, target_true_guessed=guessed,
                      p_new_before=p_new0, p_true_before=p_true0, p_new_after=p_new1, p_true_after=p_true1,
                      generation_before=gen_before, generation_after=gen_after, corpus=corpus_used,
                      n_tokens=tokens_used, summary=result.summary(), seconds=seconds, restored=restored,
                      save_dir=None if save is None else str(save), saved=saved)


def check_save_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check a ``--save`` folder before the slow work: it may not be a file, nor a non-empty folder
    (unless ``overwrite``), and the nearest existing folder above it must be writable."""
    import os

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"--save {p}: that is a file; give a folder path for the edited model")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise ValueError(f"--save {p}: the folder exists and is not empty; pick a new folder, or add --overwrite "
                         f"to replace its content")
    parent = p.absolute().parent        # the model is written beside DIR first, then renamed into place
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--save {p}: cannot write into {parent}; pick a folder you can write to")
    return p


def _edit_info(model, method, model_name, hp, request, result, probs, corpus, n_tokens) -> dict:
    """What ``alphaedit_edit.json`` of a saved model records about the edit."""
    import dataclasses

    from alphaedit_lite.locate.cache import model_id

    p_new0, p_true0, p_new1, p_true1 = probs
    return {
        "method": method, "model": model_name, "model_id": model_id(model), "layers": list(hp.layers),
        "request": {"prompt": request.prompt, "subject": request.subject, "target_new": request.target_new,
                    "target_true": request.target_true},
        "probabilities": {"p_new_before": p_new0, "p_true_before": p_true0,
                          "p_new_after": p_new1, "p_true_after": p_true1},
        "statistics": {"corpus": corpus, "n_tokens": n_tokens},
        "edited_modules": {name: {"layer": result.layers[name], "delta_norm": float(d.norm())}
                           for name, d in result.deltas.items()},
        "hparams": dataclasses.asdict(hp) if dataclasses.is_dataclass(hp) else str(hp),
    }


def _save_model(model, tok, folder, info: dict, overwrite: bool) -> Path:
    from alphaedit_lite.model.loading import save_edited_model

    try:
        return save_edited_model(model, tok, folder, info, overwrite=overwrite)
    except OSError as e:   # disk full, permissions: the kit's error convention, with what to do
        raise ValueError(f"could not save the edited model to {folder} ({type(e).__name__}: {e}); the edit itself "
                         f"worked but nothing was saved: free disk space or pick a writable folder") from e


def _generate(model, tok, text: str, max_new_tokens: int) -> str:
    from alphaedit_lite.experiments.evaluate import generate_texts

    return generate_texts(model, tok, [text], max_new_tokens=max_new_tokens, include_prompt=True)[0]


def _one_line(s: str) -> str:
    return " ".join(s.split())


def format_edit_report(r: EditReport) -> str:
    """The human-readable report `alphaedit-lite edit` prints."""
    guess = " (the model's own greedy answer)" if r.target_true_guessed else ""
    stats = f"; statistics: {r.n_tokens} tokens of {r.corpus}" if r.corpus else ""
    w = max(len(r.target_new), len(r.target_true)) + 2
    lines = [
        f"{r.method} edit of {r.model}, layers {r.layers}{stats}",
        f"prompt: {r.text!r}   new target: {r.target_new!r}   old target: {r.target_true!r}{guess}",
        "",
        f"{'':{w}}  {'before':>10}  {'after':>10}",
        f"{r.target_new!r:{w}}  {r.p_new_before:10.3e}  {r.p_new_after:10.3e}   p(new)",
        f"{r.target_true!r:{w}}  {r.p_true_before:10.3e}  {r.p_true_after:10.3e}   p(old)",
        "",
        f"greedy before: {_one_line(r.generation_before)}",
        f"greedy after:  {_one_line(r.generation_after)}",
        "",
        r.summary,
        ("edit succeeded: p(new) > p(old) after the edit" if r.success
         else "edit did NOT flip the answer: p(new) ≤ p(old) after the edit"),
        ("weights restored bit for bit" + ("" if r.saved else " (nothing was saved)") if r.restored
         else "weights left edited in memory"),
        *([f"edited model saved to {r.save_dir} (load it with load_model({r.save_dir!r}))"] if r.saved else []),
        *([f"NOT saved to {r.save_dir}: only an edit that flips the answer is saved"]
          if r.save_dir is not None and not r.saved else []),
        "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.seconds.items()),
    ]
    return "\n".join(lines)


def cmd_edit(args: argparse.Namespace) -> int:
    """`alphaedit-lite edit`: validate, load the model, edit, print the report. Exit 0 if p(new) > p(old) after."""
    method = method_name(args.method)
    check_edit_inputs(args.subject, args.prompt, args.target, args.target_true)  # before the slow load
    if args.tokens is not None and args.tokens < 1:
        raise ValueError(f"--tokens must be a positive number of corpus tokens, got {args.tokens}")
    save = getattr(args, "save", None)
    overwrite = bool(getattr(args, "overwrite", False))
    if overwrite and save is None:
        raise ValueError("--overwrite only goes with --save DIR")
    if save is not None:
        check_save_dir(save, overwrite)
    model, tok, secs = _load(args.model, args.device, args.threads)
    print(f"loaded {args.model} in {secs:.1f} s on {next(model.parameters()).device}", file=sys.stderr)
    r = run_edit(model, tok, method, args.subject, args.prompt, args.target, args.target_true,
                 hparams=args.hparams, model_name=args.model, layers=args.layers, corpus=args.corpus,
                 n_tokens=args.tokens, threshold=args.threshold, mode=args.mode, steps=args.steps,
                 prefixes=args.prefixes, max_new_tokens=args.max_new_tokens, progress=not args.quiet,
                 save=save, overwrite=overwrite)
    print(format_edit_report(r))
    return 0 if r.success else 1


def add_edit_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``edit`` on an ``argparse`` sub-parser set (``parser.add_subparsers()``)."""
    q = subparsers.add_parser(
        "edit", help="edit one fact in a real model and show probabilities and generations before/after",
        description="Edit one fact in a real model (in memory; with --save DIR a successful edit is also saved "
                    "as a model folder) and print the model's greedy continuation and p(new), p(old) before and "
                    "after. Example: alphaedit-lite edit --model smollm2-135m --method alphaedit --subject 'The "
                    "Eiffel Tower' --prompt '{} is located in the city of' --target Rome --save edited-smollm2")
    q.add_argument("--model", default="smollm2-135m", help="model alias, local folder or hub id (default smollm2-135m)")
    q.add_argument("--method", default="AlphaEdit", type=_method_type, metavar="METHOD",
                   help=f"one of {', '.join(METHOD_NAMES)}, any case (default AlphaEdit)")
    q.add_argument("--subject", required=True, help="the subject, e.g. 'The Eiffel Tower'")
    q.add_argument("--prompt", required=True, help="the prompt with '{}' where the subject goes")
    q.add_argument("--target", required=True, help="the new object, e.g. Rome")
    q.add_argument("--target-true", default=None,
                   help="the current object (default: the model's own greedy next word)")
    q.add_argument("--layers", type=int, nargs="+", default=None, help="edited layers (default: the hparams file's)")
    q.add_argument("--corpus", default=None,
                   help="key-statistics corpus: wikitext-2, a text file/folder, model-samples, or the corpus id of "
                        "statistics imported with `stats --import` (default: the hparams file's, wikitext-2)")
    q.add_argument("--tokens", type=int, default=None,
                   help="corpus tokens for the statistics (default: the hparams file's, 102400)")
    q.add_argument("--threshold", type=float, default=None, help="AlphaEdit's null-space threshold (default 2e-2)")
    q.add_argument("--mode", default=None, choices=list(MODES),
                   help="how the threshold is read (default absolute)")
    q.add_argument("--steps", type=int, default=None, help="optimisation steps of the target vector (default 25)")
    q.add_argument("--prefixes", type=int, default=None,
                   help="number of model-sampled context prefixes the key and target are averaged over (default 10)")
    q.add_argument("--hparams", default=None, help="a JSON hyper-parameter file instead of the shipped one")
    q.add_argument("--max-new-tokens", type=int, default=20, help="length of the greedy generations (default 20)")
    q.add_argument("--save", default=None, metavar="DIR",
                   help="if the edit succeeds (p(new) > p(old) after it), save the edited model to the folder DIR "
                        "(safetensors + tokenizer + alphaedit_edit.json describing the edit; load it with "
                        "load_model(DIR) or from_pretrained(DIR)). DIR must not exist or be empty")
    q.add_argument("--overwrite", action="store_true", help="with --save: replace the content of a non-empty DIR")
    q.add_argument("--device", default=None, help="cpu, cuda, mps (default: picked automatically)")
    q.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores other jobs leave free, at least 1)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_edit)
    return q


# ------------------------------------------------------------------------------------------------
# stats
# ------------------------------------------------------------------------------------------------
@dataclass
class StatsRow:
    """One layer's statistics and projector."""

    layer: int
    dim: int
    count: int
    kept_rank: int
    eig_min: float
    eig_max: float
    cutoff: float
    relative_leak: float
    stats_path: Path
    projector_path: Path | None


def run_stats(model, tok, layers: Sequence[int], corpus: str = "wikitext-2", n_tokens: int = 102_400, *,
              seq_len: int = 128, threshold: float = 2e-2, mode: str = "absolute", force: bool = False,
              progress: bool = True, forward_dtype: str = "float32") -> tuple[Any, list[StatsRow]]:
    """Compute or load C0 of ``layers`` and AlphaEdit's P for each; returns ``(LayerStats, rows)``."""
    from alphaedit_lite.locate import stats as S
    from alphaedit_lite.locate import cache as SC

    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"--tokens must be a positive number of corpus tokens, got {n_tokens!r}")
    seq_len = min(int(seq_len), max(n_tokens, 2))
    st = S.layer_stats(model, tok, list(layers), corpus, n_tokens, seq_len, force_recompute=force, progress=progress,
                       forward_dtype=forward_dtype)
    pjs = S.projectors(st, threshold=threshold, mode=mode, cache=True)
    rows = []
    for layer in st:
        pj = pjs[layer]
        lam = pj.eigenvalues
        path = SC.stats_cache_path(st.model_id, st.module_names[layer], st.corpus_id, st.n_tokens, st.forward_dtype)
        ppath = getattr(S, "_projector_path", None)
        pp = ppath(st, layer, threshold, mode) if ppath is not None else None
        rows.append(StatsRow(layer=layer, dim=int(lam.numel()), count=st[layer].count, kept_rank=pj.kept_rank,
                             eig_min=float(lam.min()), eig_max=float(lam.max()), cutoff=pj.cutoff,
                             relative_leak=pj.relative_leak, stats_path=path,
                             projector_path=pp if pp is not None and pp.is_file() else None))
    return st, rows


def format_stats_report(st, rows: Sequence[StatsRow], threshold: float, mode: str) -> str:
    """The table `alphaedit-lite stats` prints."""
    lines = [f"key statistics of {st.model_id}: {st.n_tokens} tokens of {st.corpus_id}; "
             f"projector: {mode} threshold {threshold:g}",
             f"{'layer':>5}  {'kept rank':>12}  {'λ_min':>10}  {'λ_max':>10}  {'‖PK0‖/‖K0‖':>11}"]
    for r in rows:
        lines.append(f"{r.layer:5d}  {f'{r.kept_rank}/{r.dim}':>12}  {r.eig_min:10.3e}  {r.eig_max:10.3e}  "
                     f"{r.relative_leak:11.3e}")
    lines.append("cache:")
    for r in rows:
        lines.append(f"  layer {r.layer}: statistics {r.stats_path}")
        if r.projector_path is not None:
            lines.append(f"  layer {r.layer}: projector  {r.projector_path}")
    return "\n".join(lines)


def _check_stats_files(args: argparse.Namespace) -> None:
    """Checks of --export/--import that need no model (they run before the slow load)."""
    if args.import_files and args.export:
        raise ValueError("--import and --export do different things; run `stats --import FILE` and "
                         "`stats ... --export FILE` separately")
    if args.with_projector and not args.export:
        raise ValueError("--with-projector only goes with --export FILE (it adds P to the exported file)")
    if args.corpus_id is not None and not args.import_files:
        raise ValueError("--corpus-id only goes with --import FILE (it names the imported statistics' corpus)")
    if args.export and Path(args.export).expanduser().is_dir():
        raise ValueError(f"--export {args.export}: that is a folder; give a file name, e.g. "
                         f"{Path(args.export) / 'key_stats.pt'}")
    for f in args.import_files or []:
        if not Path(f).expanduser().is_file():
            raise ValueError(f"--import {f}: no such file; give a file written by `alphaedit-lite stats ... --export "
                             f"FILE` or a ROME/MEMIT .npz")
    npz = [f for f in args.import_files or [] if str(f).endswith(".npz")]
    if npz and args.layers is not None:
        if len(npz) != len(args.import_files):
            raise ValueError("--layers with --import: import the ROME/MEMIT .npz files and the kit's export files "
                             "in separate commands")
        if len(args.layers) != len(npz):
            raise ValueError(f"--layers with ROME/MEMIT .npz files names the layer of each file, in order: got "
                             f"{len(args.layers)} layer(s) for {len(npz)} file(s)")


def run_import(model, tok, files: Sequence[str], layers: Sequence[int] | None = None, *,
               corpus_id: str | None = None, threshold: float = 2e-2, mode: str = "absolute",
               progress: bool = True) -> list[tuple[Any, list[StatsRow]]]:
    """Import shared statistics into the cache and tabulate them.

    Returns one ``(LayerStats, rows)`` per corpus id and token count. ``layers``: for export files,
    the layers to take from each (default all); for ROME/MEMIT ``.npz`` files, the layer of each file.
    """
    from alphaedit_lite.locate import share as SSH

    groups: dict[tuple[str, int], list[int]] = {}
    all_npz = all(str(f).endswith(".npz") for f in files)
    for i, f in enumerate(files):
        if all_npz:
            st = SSH.import_stats(f, model, None if layers is None else [layers[i]], corpus_id=corpus_id)
        else:
            st = SSH.import_stats(f, model, layers, corpus_id=corpus_id)
        groups.setdefault((st.corpus_id, st.n_tokens), []).extend(st)
    return [run_stats(model, tok, sorted(set(ls)), cid, n, threshold=threshold, mode=mode, progress=progress)
            for (cid, n), ls in groups.items()]


def cmd_stats(args: argparse.Namespace) -> int:
    """`alphaedit-lite stats`: compute/cache C0 and P per layer and print the table; or export/import them."""
    from alphaedit_lite.methods.hparams import load_hparams

    if args.tokens is not None and args.tokens < 1:
        raise ValueError(f"--tokens must be a positive number of corpus tokens, got {args.tokens}")
    _check_stats_files(args)
    if args.import_files:
        model, tok, secs = _load(args.model, args.device, args.threads)
        print(f"loaded {args.model} in {secs:.1f} s on {next(model.parameters()).device}", file=sys.stderr)
        t0 = time.perf_counter()
        for st, rows in run_import(model, tok, args.import_files, args.layers, corpus_id=args.corpus_id,
                                   threshold=args.threshold, mode=args.mode, progress=not args.quiet):
            print(format_stats_report(st, rows, args.threshold, args.mode))
            print(f"imported into the cache; use them with: alphaedit-lite edit --model {args.model} --layers "
                  f"{' '.join(map(str, sorted(st)))} --corpus {st.corpus_id} --tokens {st.n_tokens} ...")
        print(f"time: {time.perf_counter() - t0:.1f} s")
        return 0
    layers = args.layers
    n_tokens, seq_len = args.tokens, args.seq_len
    try:
        hp, why = load_hparams("AlphaEdit", args.model), None
    except ValueError as exc:
        hp, why = None, exc
    if layers is None or n_tokens is None:
        if hp is None:
            raise ValueError(f"no shipped hyper-parameters for {args.model!r} to take defaults from; "
                             f"pass --layers and --tokens ({why})") from None
        layers = layers or hp.layers
        n_tokens = n_tokens or hp.mom2_n_tokens
    forward_dtype = args.forward_dtype or (hp.mom2_forward_dtype if hp is not None else "float32")
    model, tok, secs = _load(args.model, args.device, args.threads)
    print(f"loaded {args.model} in {secs:.1f} s on {next(model.parameters()).device}", file=sys.stderr)
    t0 = time.perf_counter()
    st, rows = run_stats(model, tok, layers, args.corpus, n_tokens, seq_len=seq_len, threshold=args.threshold,
                         mode=args.mode, force=args.force, progress=not args.quiet, forward_dtype=forward_dtype)
    print(format_stats_report(st, rows, args.threshold, args.mode))
    if args.export:
        from alphaedit_lite.locate.share import export_stats

        path = export_stats(args.export, st, threshold=args.threshold if args.with_projector else None,
                            mode=args.mode)
        what = f"and P ({args.mode} threshold {args.threshold:g}) " if args.with_projector else ""
        print(f"exported the statistics {what}of layers {sorted(st)} to {path} "
              f"({path.stat().st_size / 2**20:.1f} MiB); on another machine: alphaedit-lite stats --model "
              f"{args.model} --import {path.name}")
    print(f"time: {time.perf_counter() - t0:.1f} s")
    return 0


def add_stats_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``stats`` on an ``argparse`` sub-parser set (``parser.add_subparsers()``)."""
    q = subparsers.add_parser(
        "stats", help="compute, cache, export or import key statistics K0K0ᵀ/n and AlphaEdit's projector P per layer",
        description="Compute (or load from the cache) the key statistics of some layers over a corpus, build "
                    "AlphaEdit's null-space projector for each, and print the kept rank, the eigenvalue range "
                    "and the cache files. Cached files carry a manifest (model fingerprint, module, corpus, "
                    "token count, checksum) and are rebuilt, with a warning, when damaged or mismatched. "
                    "Example: alphaedit-lite stats --model smollm2-135m --layers 4 5 6 --corpus wikitext-2 "
                    "--tokens 20000 --export smollm2_stats.pt. Sharing: --export FILE writes the statistics "
                    "(and with --with-projector, P) into one file; --import FILE ... checks that a file was made "
                    "for this model and these layers and puts it into the cache.")
    q.add_argument("--model", default="smollm2-135m", help="model alias, local folder or hub id (default smollm2-135m)")
    q.add_argument("--layers", type=int, nargs="+", default=None,
                   help="layers (default: AlphaEdit's hparams file); with --import: the layers to take from an "
                        "export file (default all), or the layer of each ROME/MEMIT .npz file, in order")
    q.add_argument("--corpus", default="wikitext-2",
                   help="wikitext-2 (shared data folder, else the hub), a text file or folder, model-samples, or the "
                        "corpus id of imported statistics")
    q.add_argument("--tokens", type=int, default=None, help="number of corpus tokens (default: the hparams file's)")
    q.add_argument("--seq-len", type=int, default=128, help="tokens per row (default 128)")
    q.add_argument("--threshold", type=float, default=2e-2, help="null-space threshold (default 2e-2)")
    q.add_argument("--mode", default="absolute", choices=list(MODES),
                   help="how the threshold is read (default absolute)")
    q.add_argument("--forward-dtype", default=None, choices=["float32", "bfloat16", "auto"],
                   help="the statistics' forward pass: float32, bfloat16 (bf16 autocast; keys cast to float32 for "
                        "the products) or auto (bf16 where the device has fast bf16); default: the hparams "
                        "file's mom2_forward_dtype, float32 without one. Cached separately")
    q.add_argument("--force", action="store_true", help="recompute even if cached")
    q.add_argument("--export", default=None, metavar="FILE",
                   help="also write the statistics into FILE, one file to share (torch.save of each layer's "
                        "Σkkᵀ and count plus a manifest: model fingerprint, layers, modules, corpus, token count, "
                        "dtype, kit version, checksums)")
    q.add_argument("--with-projector", action="store_true",
                   help="with --export: put AlphaEdit's P for --threshold/--mode into FILE too")
    q.add_argument("--import", dest="import_files", nargs="+", default=None, metavar="FILE",
                   help="instead of computing: check FILE(s) and load them into the cache. A file from --export must "
                        "be made for this model (fingerprint) and hold the --layers; a ROME/MEMIT .npz (mom2.mom2 = "
                        "Σkkᵀ, mom2.count = n; one layer, read from its name or --layers) must match this model's "
                        "key dimension. The corpus id printed then works as --corpus")
    q.add_argument("--corpus-id", default=None,
                   help="with --import: file the statistics under this corpus id (default: the export's own; for "
                        ".npz: rome-<dataset> from a <dataset>_stats folder, else rome-import)")
    q.add_argument("--device", default=None, help="cpu, cuda, mps (default: picked automatically)")
    q.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores other jobs leave free, at least 1)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_stats)
    return q


