"""Edit requests: the typed ``EditRequest`` and loaders for CounterFact, zsRE, known facts and the kit's own files.

An edit request asks a model to change one fact ``(s, r, o) -> (s, r, o*)``: the formulation of
ROME/MEMIT that AlphaEdit (Fang et al., ICLR 2025) adopts. It is written as a prompt template with
a slot for the subject, e.g. ``{"prompt": "{} was the founder of", "subject": "Steve Jobs",
"target_new": {"str": "Microsoft"}}``; the template is what an editing method reads the key ``k``
(at the subject's last token) and optimises the target value ``v*`` from — one column of ``K1``
and of ``V1`` in the closed forms of MEMIT and AlphaEdit. The evaluation prompts that travel with
a request are the ones the papers' metrics use:

- ``paraphrase_prompts``: other wordings of the same fact (Generalization),
- ``neighborhood_prompts``: other subjects whose answer is this request's ``target_true``, in the
  CounterFact sense (Specificity: they must still prefer ``target_true`` after the edit); for
  zsRE-style requests they are unrelated questions with their own answers in
  ``neighborhood_targets``,
- ``generation_prompts``: free-generation prefixes (Fluency).

Targets are stored without a leading space; evaluation and editing code tokenize them as
``" " + target`` after the prompt, as the reference code does.

Loaders (all return a ``RequestList``, a list with a ``.skipped`` report of records left out):

- ``load_counterfact(path=None, limit=None)`` — ROME's CounterFact JSON (the shared 1,031-record
  subset, or the full 21,919-record file downloaded from the ROME site).
- ``load_zsre(path=None, limit=None)`` — MEND's zsRE evaluation JSON.
- ``load_knowns(path=None)`` — ROME's known facts (``KnownFact`` records, not edits).
- ``load_requests(path)`` — the kit's own JSON files, e.g. ``data/requests/smollm2_known_facts.json``.

Any function that takes requests accepts ``EditRequest`` objects or plain ROME-style dicts;
``as_request(x)`` normalises one.

Record formats ``as_request`` and ``load_requests`` read (``load_counterfact`` reads the first and
third, ``load_zsre`` MEND's zsRE records and the third):

- CounterFact/ROME: ``{"case_id", "requested_rewrite": {"prompt", "subject", "target_new": {"str"},
  "target_true": {"str"}, "relation_id"}, "paraphrase_prompts", "neighborhood_prompts",
  "generation_prompts"}``, plus the kit's ``neighborhood_targets`` (zsRE-style answers).
- The kit's flat edit dict: the ``EditRequest`` field names (``target_new``/``target_true`` a
  string or ``{"str": ...}``).
- EasyEdit's flat records (the toolkit's CounterFact and zsRE edit files), mapped to the closest
  ``EditRequest`` fields:

  ============================  ====================================================================
  EasyEdit key                  ``EditRequest`` field
  ============================  ====================================================================
  ``prompt``                    ``prompt``: the full sentence with the first occurrence of
                                ``subject`` replaced by ``"{}"`` (a prompt that already has ``{}`` is
                                kept as is)
  ``subject``                   ``subject``
  ``target_new``                ``target_new``
  ``ground_truth``              ``target_true`` (a list, as in some zsRE files, gives its first
                                answer)
  ``rephrase_prompt``           ``paraphrase_prompts`` (a string or a list of strings)
  ``locality_prompt``           ``neighborhood_prompts`` (a string or a list of strings)
  ``locality_ground_truth``     one answer per locality prompt. When every answer equals
                                ``ground_truth`` (EasyEdit's CounterFact: neighbours share the true
                                object) the request keeps CounterFact semantics and
                                ``neighborhood_targets`` stays ``None``; otherwise (zsRE: unrelated
                                questions) the answers go to ``neighborhood_targets``.
  ``case_id``                   ``case_id``
  ============================  ====================================================================

  A record is read as EasyEdit's when it has no ``requested_rewrite`` and holds one of
  ``ground_truth``, ``rephrase_prompt``, ``locality_prompt`` or ``locality_ground_truth``;
  ``locality_prompt`` needs ``locality_ground_truth`` (and the other way round).

Unknown keys. A key that the record's format does not define raises ``UnknownKeysError`` (a
``ValueError``) that lists the keys, suggests close spellings (``target_ture`` ->
``target_true``) and names the record and file: a misspelt field must not be dropped silently.
The loaders raise it even with ``on_error="skip"`` (it is a problem of the file's format, not of
one record). The extra keys of the public datasets are accepted by name and ignored:
CounterFact's ``pararel_idx``, ``attribute_prompts`` and ``portability`` (the shared subset's
extra field) and the targets' Wikidata ``id``; zsRE's ``pred``, ``cond`` and ``portability``.
``unknown_keys="ignore"`` (an argument of ``as_request``, ``as_requests``, ``load_requests``,
``load_counterfact`` and ``load_zsre``) drops any other key on purpose.

A file that is not valid JSON (e.g. truncated by an interrupted download) raises a
``ValueError`` naming the file and the position of the fault.

``edited_neighbours(requests)`` lists the neighbourhood prompts that mention a subject edited by
another request of the same list and relation: after a sequential run such a prompt has changed on
purpose, so it would count an intended edit as a Specificity failure. The shipped set has none;
the sequential runner warns when a user's set has some.
"""
from __future__ import annotations

import contextvars
import difflib
import json
import os
import urllib.request
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from alphaedit_lite.util.paths import DATA_DIR, cache_dir, shared_data_dir

__all__ = [
    "EditRequest",
    "KnownFact",
    "RequestList",
    "SkippedRecord",
    "UnknownKeysError",
    "as_request",
    "as_requests",
    "load_counterfact",
    "load_zsre",
    "load_knowns",
    "load_requests",
    "save_requests",
    "edited_neighbours",
    "SHIPPED_REQUESTS_DIR",
    "COUNTERFACT_URL",
    "ZSRE_URL",
]

#: Folder of the request sets shipped with the kit.
SHIPPED_REQUESTS_DIR = DATA_DIR / "requests"
#: Original sources (used only when no local copy exists and the machine is online).
COUNTERFACT_URL = "https://rome.baulab.info/data/dsets/counterfact.json"
ZSRE_URL = "https://rome.baulab.info/data/dsets/zsre_mend_eval.json"
KNOWNS_URL = "https://rome.baulab.info/data/dsets/known_1000.json"

_SLOT = "{}"
# How the record being built is named in error messages (set by the loaders and as_request).
_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("_WHERE", default=None)


# ----------------------------------------------------------------------------------------------
# The request type
# ----------------------------------------------------------------------------------------------
def _as_str_list(value: Any, name: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raise TypeError(
            f"{where}: {name} must be a list of strings, got a single string {value!r}; "
            f"wrap it in a list."
        )
    if not isinstance(value, Iterable):
        raise TypeError(f"{where}: {name} must be a list of strings, got {type(value).__name__}.")
    out = list(value)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(
                f"{where}: {name}[{i}] must be a string, got {type(p).__name__} ({p!r})."
            )
        if not p.strip():
            raise ValueError(f"{where}: {name}[{i}] is empty; remove it or write the prompt out.")
    return out


@dataclass
class EditRequest:
    """One fact edit ``(subject, relation, target_true) -> (subject, relation, target_new)``.

    Fields
    - ``prompt``: template with ``"{}"`` exactly once where the subject goes,
      e.g. ``"{} is located in the city of"``; it must not end with whitespace (the target is
      appended as ``" " + target``).
    - ``subject``: the subject string, e.g. ``"Eiffel Tower"``.
    - ``target_new``: the new object ``o*`` (e.g. ``"Rome"``), stored without a leading space.
    - ``target_true``: the current object ``o`` (``None`` is allowed for zsRE-style requests).
    - ``paraphrase_prompts``: full prompts (subject written out) that ask for the same fact.
    - ``neighborhood_prompts``: full prompts about *other* subjects. CounterFact semantics: their
      answer is ``target_true``, so an edit that leaks makes them prefer ``target_new``.
    - ``neighborhood_targets``: zsRE-style only — one answer per neighbourhood prompt (the
      question is unrelated, so its answer is not ``target_true``). ``None`` for CounterFact.
    - ``generation_prompts``: prefixes for free generation (fluency).
    - ``case_id``, ``relation_id``: provenance (Wikidata relation such as ``"P36"``).

    The request is validated on construction; a bad field raises ``ValueError``/``TypeError``
    naming the record by its ``case_id``.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    paraphrase_prompts: list[str] = field(default_factory=list)
    neighborhood_prompts: list[str] = field(default_factory=list)
    generation_prompts: list[str] = field(default_factory=list)
    neighborhood_targets: list[str] | None = None
    case_id: int | str | None = None
    relation_id: str | None = None

    def __post_init__(self) -> None:
        self.validate(_WHERE.get())

    # -- derived ------------------------------------------------------------------------------
    @property
    def filled_prompt(self) -> str:
        """The rewrite prompt with the subject written in, e.g. ``"Eiffel Tower is located in"``."""
        return self.prompt.replace(_SLOT, self.subject, 1)

    @property
    def label(self) -> str:
        """A short human-readable name, used in error messages and tables."""
        return f"case_id={self.case_id}" if self.case_id is not None else f"subject={self.subject!r}"

    # -- checks -------------------------------------------------------------------------------
    def validate(self, where: str | None = None) -> None:
        """Check every field; normalise targets (strip surrounding whitespace) and prompt lists.

        ``where`` names the record in messages (the loaders pass ``"CounterFact record #12
        (case_id=4482)"``); by default the ``case_id`` or subject is used.
        """
        where = where or f"EditRequest ({self.label})"
        for name in ("prompt", "subject", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{where}: {name} must be a string, got {type(value).__name__} ({value!r}).")
        if self.target_true is not None and not isinstance(self.target_true, str):
            raise TypeError(
                f"{where}: target_true must be a string or None, got {type(self.target_true).__name__}."
            )
        if not self.subject.strip():
            raise ValueError(f"{where}: the subject is empty; give the entity being edited, e.g. 'Eiffel Tower'.")
        if _SLOT in self.subject:
            raise ValueError(f"{where}: the subject {self.subject!r} contains '{{}}'; the slot belongs in the prompt.")
        n_slots = self.prompt.count(_SLOT)
        if n_slots != 1:
            hint = (
                f"write the subject's place as '{{}}', e.g. {self.prompt.replace(self.subject, _SLOT, 1)!r}"
                if n_slots == 0 and self.subject in self.prompt
                else "use exactly one '{}' where the subject goes"
            )
            raise ValueError(f"{where}: the prompt {self.prompt!r} contains '{{}}' {n_slots} times; {hint}.")
        if self.prompt != self.prompt.rstrip():
            raise ValueError(
                f"{where}: the prompt {self.prompt!r} ends with whitespace; remove it — targets are "
                f"appended as ' ' + target."
            )
        if self.subject not in self.filled_prompt:
            raise ValueError(
                f"{where}: the subject {self.subject!r} is not found in the filled prompt "
                f"{self.filled_prompt!r}; check the subject string."
            )
        # Targets: stored stripped, never empty, new != true.
        self.target_new = self.target_new.strip()
        if not self.target_new:
            raise ValueError(f"{where}: target_new is empty; give the new object, e.g. 'Rome'.")
        if self.target_true is not None:
            self.target_true = self.target_true.strip()
            if not self.target_true:
                raise ValueError(
                    f"{where}: target_true is empty; give the current object or pass None (zsRE-style)."
                )
            if self.target_true.casefold() == self.target_new.casefold():
                raise ValueError(
                    f"{where}: target_new equals target_true ({self.target_new!r}); an edit must change "
                    f"the answer — pick a different target_new."
                )
        self.paraphrase_prompts = _as_str_list(self.paraphrase_prompts, "paraphrase_prompts", where)
        self.neighborhood_prompts = _as_str_list(self.neighborhood_prompts, "neighborhood_prompts", where)
        self.generation_prompts = _as_str_list(self.generation_prompts, "generation_prompts", where)
        for name in ("paraphrase_prompts", "neighborhood_prompts"):
            for i, p in enumerate(getattr(self, name)):
                if _SLOT in p:
                    raise ValueError(
                        f"{where}: {name}[{i}] {p!r} contains '{{}}'; evaluation prompts are written "
                        f"out in full (fill in the subject)."
                    )
                if p != p.rstrip():
                    raise ValueError(f"{where}: {name}[{i}] {p!r} ends with whitespace; remove it.")
        if self.neighborhood_targets is not None:
            self.neighborhood_targets = [t.strip() for t in _as_str_list(
                self.neighborhood_targets, "neighborhood_targets", where)]
            if len(self.neighborhood_targets) != len(self.neighborhood_prompts):
                raise ValueError(
                    f"{where}: {len(self.neighborhood_targets)} neighborhood_targets for "
                    f"{len(self.neighborhood_prompts)} neighborhood_prompts; give one answer per prompt."
                )
        if self.relation_id is not None and not isinstance(self.relation_id, str):
            raise TypeError(f"{where}: relation_id must be a string such as 'P36', got {self.relation_id!r}.")

    # -- conversions --------------------------------------------------------------------------
    def to_rome(self) -> dict:
        """The request as a CounterFact/ROME record (the format the kit's JSON files use)."""
        rewrite: dict[str, Any] = {
            "prompt": self.prompt,
            "subject": self.subject,
            "target_new": {"str": self.target_new},
        }
        if self.target_true is not None:
            rewrite["target_true"] = {"str": self.target_true}
        if self.relation_id is not None:
            rewrite["relation_id"] = self.relation_id
        rec: dict[str, Any] = {"case_id": self.case_id, "requested_rewrite": rewrite,
                               "paraphrase_prompts": list(self.paraphrase_prompts),
                               "neighborhood_prompts": list(self.neighborhood_prompts),
                               "generation_prompts": list(self.generation_prompts)}
        if self.neighborhood_targets is not None:
            rec["neighborhood_targets"] = list(self.neighborhood_targets)
        return rec

    def to_edit_dict(self) -> dict:
        """The flat ROME edit contract ``{"prompt", "subject", "target_new": {"str"}, ...}``."""
        d: dict[str, Any] = {"prompt": self.prompt, "subject": self.subject,
                             "target_new": {"str": self.target_new}, "case_id": self.case_id}
        if self.target_true is not None:
            d["target_true"] = {"str": self.target_true}
        return d


@dataclass(frozen=True)
class KnownFact:
    """One of ROME's known facts: a prompt the model completes correctly (used to probe states)."""

    known_id: int
    subject: str
    prompt: str          # full prompt, subject written out, e.g. "Vinson Massif is located in the continent of"
    attribute: str       # the expected completion, e.g. "Antarctica"
    relation_id: str | None = None
    template: str | None = None  # "{} is located in the continent" (may lack the prompt's last word)


@dataclass(frozen=True)
class SkippedRecord:
    """A source record a loader left out, and why."""

    index: int
    case_id: Any
    reason: str


class RequestList(list):
    """A ``list`` of ``EditRequest`` with ``.skipped`` (``SkippedRecord``s) and ``.source`` (path)."""

    def __init__(self, items: Iterable = (), skipped: Sequence[SkippedRecord] = (), source: str | None = None):
        super().__init__(items)
        self.skipped: list[SkippedRecord] = list(skipped)
        self.source = source


# ----------------------------------------------------------------------------------------------
# Normalising plain dicts
# ----------------------------------------------------------------------------------------------
UNKNOWN_KEYS_MODES = ("error", "ignore")

# The keys each record format defines (module docstring). ``*_IGNORED``: extra keys of the public
# datasets, accepted by name and not used.
_FLAT_KEYS = frozenset(f.name for f in fields(EditRequest))
_COUNTERFACT_KEYS = frozenset({"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
                               "generation_prompts", "neighborhood_targets", "relation_id"})
_COUNTERFACT_IGNORED = frozenset({"pararel_idx", "attribute_prompts", "portability"})
_REWRITE_KEYS = frozenset({"prompt", "subject", "target_new", "target_true", "relation_id"})
_TARGET_KEYS, _TARGET_IGNORED = frozenset({"str"}), frozenset({"id"})
_EASYEDIT_KEYS = frozenset({"case_id", "prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
                            "locality_prompt", "locality_ground_truth"})
_EASYEDIT_MARKERS = ("ground_truth", "rephrase_prompt", "locality_prompt", "locality_ground_truth")
_ZSRE_KEYS = frozenset({"case_id", "subject", "src", "alt", "answers", "rephrase", "loc", "loc_ans"})
_ZSRE_IGNORED = frozenset({"pred", "cond", "portability"})


class UnknownKeysError(ValueError):
    """A record holds keys that its format does not define (a misspelt field, another format)."""


def _check_unknown_keys_mode(unknown_keys: Any) -> None:
    if unknown_keys not in UNKNOWN_KEYS_MODES:
        raise ValueError(f"unknown_keys must be 'error' (the default) or 'ignore', got {unknown_keys!r}.")


def _check_keys(d: dict, known: frozenset, ignored: frozenset, what: str, where: str, unknown_keys: str) -> None:
    """Raise ``UnknownKeysError`` for keys of ``d`` outside ``known`` and ``ignored`` (unless ignoring)."""
    if unknown_keys == "ignore":
        return
    extra = sorted(str(k) for k in d if k not in known and k not in ignored)
    if not extra:
        return
    guesses = [f"{k!r} -> {m[0]!r}" for k in extra if (m := difflib.get_close_matches(k, sorted(known), 1, 0.7))]
    hint = f" Did you mean {', '.join(guesses)}?" if guesses else ""
    raise UnknownKeysError(
        f"{where}: unknown key(s) {extra} in {what}, which takes {sorted(known)}.{hint} Fix the key names, "
        f"or pass unknown_keys='ignore' to drop such keys on purpose."
    )


def _is_easyedit(d: dict) -> bool:
    return "requested_rewrite" not in d and any(k in d for k in _EASYEDIT_MARKERS)


def _target_str(value: Any, name: str, where: str, unknown_keys: str = "error") -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        _check_keys(value, _TARGET_KEYS, _TARGET_IGNORED, name, where, unknown_keys)
        if "str" not in value:
            raise ValueError(f"{where}: {name} is a dict without a 'str' key ({value!r}); use {{'str': 'Rome'}}.")
        value = value["str"]
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a string or {{'str': ...}}, got {type(value).__name__}.")
    return value


def _templated(prompt: Any, subject: Any, where: str) -> str:
    """Return ``prompt`` with a ``{}`` slot, building it from the subject's occurrence if needed."""
    if not isinstance(prompt, str) or not isinstance(subject, str):
        raise TypeError(f"{where}: prompt and subject must be strings, got "
                        f"{type(prompt).__name__} and {type(subject).__name__}.")
    if _SLOT in prompt or not subject.strip():
        return prompt
    n = prompt.count(subject)
    if n == 0:
        raise ValueError(
            f"{where}: the subject {subject!r} is not found in its prompt {prompt!r} and the prompt has "
            f"no '{{}}' slot; write the prompt as a template such as '{{}} was born in'."
        )
    if n > 1:
        raise ValueError(
            f"{where}: the subject {subject!r} occurs {n} times in its prompt {prompt!r}; mark the one "
            f"to edit with '{{}}'."
        )
    return prompt.replace(subject, _SLOT, 1)


def _from_dict(d: dict, where: str, unknown_keys: str = "error") -> EditRequest:
    token = _WHERE.set(where)
    try:
        if "requested_rewrite" in d:
            return _from_counterfact(d, where, unknown_keys)
        if _is_easyedit(d):
            return _from_easyedit(d, where, unknown_keys)
        return _from_flat(d, where, unknown_keys)
    finally:
        _WHERE.reset(token)


def _from_counterfact(d: dict, where: str, unknown_keys: str) -> EditRequest:
    """A CounterFact/ROME record ``{"case_id", "requested_rewrite": {...}, "paraphrase_prompts", ...}``."""
    _check_keys(d, _COUNTERFACT_KEYS, _COUNTERFACT_IGNORED, "a CounterFact record", where, unknown_keys)
    rw = d["requested_rewrite"]
    if not isinstance(rw, dict):
        raise TypeError(f"{where}: requested_rewrite must be a dict, got {type(rw).__name__}.")
    _check_keys(rw, _REWRITE_KEYS, frozenset(), "its requested_rewrite", where, unknown_keys)
    missing = [k for k in ("prompt", "subject", "target_new") if k not in rw]
    if missing:
        raise ValueError(f"{where}: requested_rewrite lacks {missing}; CounterFact records need "
                         f"prompt, subject and target_new.")
    return EditRequest(
        prompt=_templated(rw["prompt"], rw["subject"], where),
        subject=rw["subject"],
        target_new=_target_str(rw["target_new"], "target_new", where, unknown_keys),
        target_true=_target_str(rw.get("target_true"), "target_true", where, unknown_keys),
        paraphrase_prompts=d.get("paraphrase_prompts") or [],
        neighborhood_prompts=d.get("neighborhood_prompts") or [],
        generation_prompts=d.get("generation_prompts") or [],
        neighborhood_targets=d.get("neighborhood_targets"),
        case_id=d.get("case_id"),
        relation_id=rw.get("relation_id", d.get("relation_id")),
    )


def _from_flat(d: dict, where: str, unknown_keys: str) -> EditRequest:
    """The kit's flat edit dict: ``EditRequest``'s field names."""
    if "src" in d and "alt" in d:
        raise ValueError(f"{where}: this looks like a zsRE record of MEND's format ('src', 'alt', ...); "
                         f"load its file with load_zsre(path).")
    _check_keys(d, _FLAT_KEYS, frozenset(), "a flat edit dict", where, unknown_keys)
    missing = [k for k in ("prompt", "subject", "target_new") if k not in d]
    if missing:
        raise ValueError(
            f"{where}: the request dict lacks {missing}; give at least "
            f"{{'prompt': '{{}} was born in', 'subject': ..., 'target_new': {{'str': ...}}}}."
        )
    return EditRequest(
        prompt=_templated(d["prompt"], d["subject"], where),
        subject=d["subject"],
        target_new=_target_str(d["target_new"], "target_new", where, unknown_keys),
        target_true=_target_str(d.get("target_true"), "target_true", where, unknown_keys),
        paraphrase_prompts=d.get("paraphrase_prompts") or [],
        neighborhood_prompts=d.get("neighborhood_prompts") or [],
        generation_prompts=d.get("generation_prompts") or [],
        neighborhood_targets=d.get("neighborhood_targets"),
        case_id=d.get("case_id"),
        relation_id=d.get("relation_id"),
    )


def _easyedit_strings(value: Any, key: str, where: str) -> list[str]:
    """An EasyEdit text field (a string or a list of strings) as a list, trailing whitespace removed."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise TypeError(f"{where}: {key} must be a string or a list of strings, got {value!r}.")
    for i, x in enumerate(items):
        if not x.strip():
            name = key if isinstance(value, str) else f"{key}[{i}]"
            raise ValueError(f"{where}: {name} is empty; write the text out or remove it.")
    return [x.rstrip() for x in items]


def _from_easyedit(d: dict, where: str, unknown_keys: str) -> EditRequest:
    """An EasyEdit flat record, mapped as the module docstring's table says."""
    _check_keys(d, _EASYEDIT_KEYS, frozenset(), "an EasyEdit record", where, unknown_keys)
    missing = [k for k in ("prompt", "subject", "target_new") if d.get(k) is None]
    if missing:
        raise ValueError(f"{where}: the EasyEdit record lacks {missing}; it needs prompt (the sentence with the "
                         f"subject written in), subject and target_new.")
    prompt, subject = d["prompt"], d["subject"]
    if not isinstance(prompt, str) or not isinstance(subject, str):
        raise TypeError(f"{where}: prompt and subject must be strings, got "
                        f"{type(prompt).__name__} and {type(subject).__name__}.")
    if _SLOT not in prompt and subject.strip():       # an empty subject is reported by EditRequest
        if subject not in prompt:
            raise ValueError(f"{where}: the subject {subject!r} is not found in the prompt {prompt!r}; EasyEdit "
                             f"records write the subject into the prompt — check both strings.")
        prompt = prompt.replace(subject, _SLOT, 1)
    ground_truth = d.get("ground_truth")
    if isinstance(ground_truth, list):                 # some zsRE files list the accepted answers
        if not ground_truth:
            raise ValueError(f"{where}: ground_truth is an empty list; give the current answer or leave the key out.")
        ground_truth = ground_truth[0]
    target_true = _target_str(ground_truth, "ground_truth", where, unknown_keys)

    loc_prompts = _easyedit_strings(d.get("locality_prompt"), "locality_prompt", where)
    loc_answers = _easyedit_strings(d.get("locality_ground_truth"), "locality_ground_truth", where)
    if bool(loc_prompts) != bool(loc_answers):
        have, lack = (("locality_prompt", "locality_ground_truth") if loc_prompts
                      else ("locality_ground_truth", "locality_prompt"))
        raise ValueError(f"{where}: the EasyEdit record has {have} but no {lack}; give one answer per locality "
                         f"prompt, or remove both keys.")
    if len(loc_answers) != len(loc_prompts):
        raise ValueError(f"{where}: {len(loc_answers)} locality_ground_truth answer(s) for {len(loc_prompts)} "
                         f"locality_prompt(s); give one answer per prompt.")
    # CounterFact's neighbours share the true object: keep its semantics (answer = target_true).
    same_as_true = target_true is not None and all(
        a.strip().casefold() == target_true.strip().casefold() for a in loc_answers)
    return EditRequest(
        prompt=prompt.rstrip(),
        subject=subject,
        target_new=_target_str(d["target_new"], "target_new", where, unknown_keys),
        target_true=target_true,
        paraphrase_prompts=_easyedit_strings(d.get("rephrase_prompt"), "rephrase_prompt", where),
        neighborhood_prompts=loc_prompts,
        neighborhood_targets=None if same_as_true or not loc_answers else loc_answers,
        case_id=d.get("case_id"),
    )


def as_request(x: EditRequest | dict, where: str | None = None, unknown_keys: str = "error") -> EditRequest:
    """Normalise one request: an ``EditRequest`` (returned as is) or a ROME-style dict.

    Accepted dicts: the flat edit contract ``{"prompt": "{} was the founder of", "subject": "Steve
    Jobs", "target_new": {"str": "Microsoft"}}`` (``target_new`` may also be a plain string; a
    prompt without ``{}`` is templated at the subject's only occurrence), a full CounterFact
    record with ``requested_rewrite``, or an EasyEdit flat record (module docstring). A key the
    dict's format does not define raises ``UnknownKeysError``; ``unknown_keys="ignore"`` drops it.
    """
    _check_unknown_keys_mode(unknown_keys)
    if isinstance(x, EditRequest):
        return x
    if isinstance(x, dict):
        return _from_dict(x, where or f"request (case_id={x.get('case_id')})", unknown_keys)
    raise TypeError(
        f"a request must be an EditRequest or a ROME-style dict, got {type(x).__name__}; build one with "
        f"EditRequest(prompt='{{}} was born in', subject=..., target_new=...)."
    )


def as_requests(xs: EditRequest | dict | Iterable[EditRequest | dict],
                unknown_keys: str = "error") -> list[EditRequest]:
    """Normalise a request or a sequence of them (errors name the position in the sequence)."""
    if isinstance(xs, (EditRequest, dict)):
        xs = [xs]
    if isinstance(xs, str) or not isinstance(xs, Iterable):
        raise TypeError(f"requests must be a list of EditRequest or dicts, got {type(xs).__name__}.")
    out = []
    for i, x in enumerate(xs):
        cid = x.case_id if isinstance(x, EditRequest) else (x.get("case_id") if isinstance(x, dict) else None)
        out.append(as_request(x, where=f"request #{i} (case_id={cid})", unknown_keys=unknown_keys))
    return out


# ----------------------------------------------------------------------------------------------
# Finding data files
# ----------------------------------------------------------------------------------------------
def _online_allowed() -> bool:
    return not any(os.environ.get(k, "") not in ("", "0") for k in ("ALPHAEDIT_OFFLINE", "HF_HUB_OFFLINE"))


def _resolve(path: str | os.PathLike | None, shared_rel: str, cache_name: str, url: str, what: str) -> Path:
    """Find a data file: an explicit path, the shared data folder, the cache, or a download."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{what}: no file at {p}; pass the path of the JSON file.")
        return p
    shared = shared_data_dir()
    if shared is not None and (shared / shared_rel).is_file():
        return shared / shared_rel
    cached = cache_dir() / cache_name
    if cached.is_file():
        return cached
    hint = (
        f"{what}: no local copy found. Either pass path=..., set ALPHAEDIT_DATA to a folder holding "
        f"{shared_rel}, or put the file at {cached} (it is published at {url})."
    )
    if not _online_allowed():
        raise FileNotFoundError(hint + " (offline mode is set, so nothing was downloaded.)")
    try:  # pragma: no cover - needs the internet
        tmp = cached.with_suffix(cached.suffix + ".part")
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        tmp.replace(cached)
        return cached
    except OSError as e:  # URLError is an OSError
        raise FileNotFoundError(hint + f" (the download failed: {e}.)") from e


def _read_json_list(p: Path, what: str) -> list:
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{what}: {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file may be "
            f"truncated (an interrupted download or copy) or hand-edited: write or download it again, or fix it."
        ) from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: {p} is not UTF-8 text ({e}); is it a JSON file? Save it as UTF-8 JSON.") from e
    if isinstance(data, dict) and "requests" in data:
        data = data["requests"]
    if not isinstance(data, list):
        raise ValueError(f"{what}: {p} holds a {type(data).__name__}, expected a JSON list of records.")
    return data


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}.")


def _collect(records: list, convert, what: str, limit: int | None, on_error: str, source: Path) -> RequestList:
    """Convert each record with ``convert(rec, i, where)``; skip or raise on invalid ones.

    ``UnknownKeysError`` is raised whatever ``on_error`` says: unknown keys are a problem of the
    file's format, and skipping would drop every record of a file in another format.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}.")
    out: list[EditRequest] = []
    skipped: list[SkippedRecord] = []
    for i, rec in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        cid = rec.get("case_id", i) if isinstance(rec, dict) else i
        where = f"{what} record #{i} (case_id={cid}) in {source}"
        token = _WHERE.set(where)
        try:
            out.append(convert(rec, i, where))
        except (ValueError, TypeError, KeyError) as e:
            if on_error == "raise" or isinstance(e, UnknownKeysError):
                raise
            skipped.append(SkippedRecord(i, cid, str(e)))
        finally:
            _WHERE.reset(token)
    if skipped:
        warnings.warn(
            f"{what}: skipped {len(skipped)} record(s) that do not validate (listed in .skipped); "
            f"first: {skipped[0].reason}",
            stacklevel=3,
        )
    return RequestList(out, skipped, str(source))


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------
def load_counterfact(path: str | os.PathLike | None = None, limit: int | None = None,
                     on_error: str = "skip", unknown_keys: str = "error") -> RequestList:
    """Load CounterFact (ROME format, or EasyEdit's flat records) as ``EditRequest``s.

    ``path=None`` looks for ``counterfact/counterfact_1031.json`` in the shared data folder, then
    ``counterfact.json`` in the cache, then downloads the full set (21,919 records) from the ROME
    site when online. ``pararel_idx``, ``attribute_prompts`` and the extra ``portability`` field
    are ignored; any other key the format does not define raises ``UnknownKeysError``
    (``unknown_keys="ignore"`` drops it). ``limit`` keeps the first ``limit`` valid records.
    Invalid records are skipped and listed in ``.skipped`` (``on_error="raise"`` raises instead).
    """
    _check_limit(limit)
    _check_unknown_keys_mode(unknown_keys)
    p = _resolve(path, "counterfact/counterfact_1031.json", "counterfact.json", COUNTERFACT_URL, "CounterFact")
    records = _read_json_list(p, "CounterFact")

    def convert(rec, i, where):
        if not isinstance(rec, dict) or not ("requested_rewrite" in rec or _is_easyedit(rec)):
            raise ValueError(f"{where}: not a CounterFact record (no 'requested_rewrite', and not an EasyEdit "
                             f"record with 'ground_truth').")
        return _from_dict(rec, where, unknown_keys)

    return _collect(records, convert, "CounterFact", limit, on_error, p)


def load_zsre(path: str | os.PathLike | None = None, limit: int | None = None,
              on_error: str = "skip", new_target: str = "alt", unknown_keys: str = "error") -> RequestList:
    """Load zsRE question edits (MEND format) as ``EditRequest``s.

    Each record's question ``src`` contains its ``subject``; the prompt is ``src`` with that
    occurrence replaced by ``{}``. ``new_target="alt"`` (default, as in EasyEdit and MEND) edits
    towards the alternative answer ``alt`` and keeps ``answers[0]`` as ``target_true``; records
    where the two coincide (28 of the shared 1,037) are skipped. ``new_target="answer"`` follows
    MEMIT's ``dsets/zsre.py``: ``target_new = answers[0]``, ``target_true = None``, nothing skipped.
    ``rephrase`` is the paraphrase; ``loc`` (an unrelated Natural Questions question, ``"?"``
    appended as MEMIT does) with ``loc_ans`` is the neighbourhood prompt and its answer
    (``neighborhood_targets``). ``case_id`` is the record's own ``case_id`` if it has one, else its
    index in the file. ``pred``, ``cond`` and ``portability`` are ignored; any other unknown key
    raises ``UnknownKeysError`` (``unknown_keys="ignore"`` drops it). EasyEdit's flat records
    (``prompt``, ``target_new``, ``ground_truth``, ...) are read as ``as_request`` reads them.
    """
    _check_limit(limit)
    _check_unknown_keys_mode(unknown_keys)
    if new_target not in ("alt", "answer"):
        raise ValueError(f"new_target must be 'alt' or 'answer', got {new_target!r}.")
    p = _resolve(path, "zsre/zsre_eval_1037.json", "zsre_mend_eval.json", ZSRE_URL, "zsRE")
    records = _read_json_list(p, "zsRE")

    def convert(rec, i, where):
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: not a zsRE record (a {type(rec).__name__}).")
        if "src" not in rec and _is_easyedit(rec):
            return _from_dict(rec, where, unknown_keys)
        _check_keys(rec, _ZSRE_KEYS, _ZSRE_IGNORED, "a zsRE record", where, unknown_keys)
        missing = [k for k in ("subject", "src", "alt", "answers", "rephrase", "loc", "loc_ans") if k not in rec]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}.")
        subject, src = rec["subject"], rec["src"]
        if subject not in src:
            raise ValueError(f"{where}: the subject {subject!r} is not found in its question {src!r}.")
        answers = rec["answers"] if isinstance(rec["answers"], list) else [rec["answers"]]
        if not answers:
            raise ValueError(f"{where}: 'answers' is empty.")
        if new_target == "alt":
            t_new, t_true = rec["alt"], answers[0]
        else:
            t_new, t_true = answers[0], None
        loc = rec["loc"].rstrip()
        loc = loc if loc.endswith("?") else loc + "?"
        return EditRequest(
            prompt=src.replace(subject, _SLOT, 1).rstrip(),
            subject=subject,
            target_new=t_new,
            target_true=t_true,
            paraphrase_prompts=[rec["rephrase"].rstrip()] if rec["rephrase"].strip() else [],
            neighborhood_prompts=[loc],
            neighborhood_targets=[rec["loc_ans"]],
            case_id=rec.get("case_id", i),
            relation_id=None,
        )

    return _collect(records, convert, "zsRE", limit, on_error, p)


def load_knowns(path: str | os.PathLike | None = None) -> list[KnownFact]:
    """Load ROME's known facts (``known_1000.json``, 1,209 records) as ``KnownFact``s."""
    p = _resolve(path, "knowns/known_1000.json", "known_1000.json", KNOWNS_URL, "known facts")
    out = []
    for i, rec in enumerate(_read_json_list(p, "known facts")):
        where = f"known fact #{i}"
        if not isinstance(rec, dict) or not all(k in rec for k in ("subject", "prompt", "attribute")):
            raise ValueError(f"{where}: needs 'subject', 'prompt' and 'attribute' fields.")
        if rec["subject"] not in rec["prompt"]:
            raise ValueError(f"{where}: the subject {rec['subject']!r} is not found in its prompt {rec['prompt']!r}.")
        out.append(KnownFact(known_id=int(rec.get("known_id", i)), subject=rec["subject"],
                             prompt=rec["prompt"], attribute=rec["attribute"],
                             relation_id=rec.get("relation_id"), template=rec.get("template")))
    return out


def load_requests(path: str | os.PathLike, limit: int | None = None, unknown_keys: str = "error") -> RequestList:
    """Load one of the kit's request files (CounterFact-format records, flat edit dicts, or EasyEdit records).

    ``path`` may be a file path or the bare name of a shipped set, e.g. ``"smollm2_known_facts"``
    for ``data/requests/smollm2_known_facts.json``. Unlike the dataset loaders this raises on the
    first invalid record: the kit's own files must be clean. A key a record's format does not
    define raises ``UnknownKeysError`` naming the record and file; ``unknown_keys="ignore"`` drops
    such keys instead (module docstring).
    """
    _check_limit(limit)
    _check_unknown_keys_mode(unknown_keys)
    p = Path(path).expanduser()
    if not p.is_file():
        shipped = SHIPPED_REQUESTS_DIR / (p.name if p.suffix == ".json" else p.name + ".json")
        if shipped.is_file():
            p = shipped
        else:
            names = sorted(q.stem for q in SHIPPED_REQUESTS_DIR.glob("*.json")) if SHIPPED_REQUESTS_DIR.is_dir() else []
            raise FileNotFoundError(f"no request file at {path}; shipped sets: {names}.")
    records = _read_json_list(p, "request file")
    return _collect(records, lambda rec, i, where: as_request(rec, where, unknown_keys), "request", limit, "raise", p)


def save_requests(requests: Iterable[EditRequest | dict], path: str | os.PathLike) -> Path:
    """Write requests as a JSON list of CounterFact-format records (readable by ``load_requests``)."""
    reqs = as_requests(requests)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        json.dump([r.to_rome() for r in reqs], f, indent=1, ensure_ascii=False)
        f.write("\n")
    return p


def edited_neighbours(requests: Iterable[EditRequest | dict]) -> list[tuple[str, str, str]]:
    """``(request label, neighbourhood prompt, edited subject it mentions)`` for every CounterFact-style
    neighbourhood prompt that names the subject of another request in ``requests`` with the same
    ``relation_id`` (requests without one are compared with all). Subjects shorter than 3
    characters are ignored (too many accidental matches)."""
    reqs = as_requests(requests)
    subjects: dict[str | None, set[str]] = {}
    for r in reqs:
        subjects.setdefault(r.relation_id, set()).add(r.subject)
    everyone = {s for group in subjects.values() for s in group}
    out = []
    for r in reqs:
        if r.neighborhood_targets is not None:      # zsRE-style: unrelated questions, not neighbours
            continue
        pool = everyone if r.relation_id is None else subjects[r.relation_id] | subjects.get(None, set())
        pool = sorted(s for s in pool if s != r.subject and len(s) >= 3)
        for p in r.neighborhood_prompts:
            hit = next((s for s in pool if s in p), None)
            if hit is not None:
                out.append((r.label, p, hit))
    return out
