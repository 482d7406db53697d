"""Typed hyper-parameters of the editing methods, loaded from ``hparams/<METHOD>/<model>.json``.

Each method has one frozen-by-convention dataclass (:class:`FTHParams`, :class:`ROMEHParams`,
:class:`MEMITHParams`, :class:`AlphaEditHParams`, :class:`PRUNEHParams`, :class:`RECTHParams`).
The names follow the reference code of ROME / MEMIT (Meng et al. 2022, 2023) and AlphaEdit
(Fang et al., ICLR 2025) so that the paper's JSON files read the same:

* ``layers``: the edited layers; the target vector z is optimised at the LAST of them.
* ``v_*``: the target optimisation (MEMIT Eq. 16 / AlphaEdit Sec. 2): ``v_num_grad_steps`` Adam
  steps of learning rate ``v_lr``; ``v_weight_decay`` scales the norm penalty
  ``‖δ‖ / ‖h‖²``; ``clamp_norm_factor`` bounds ``‖δ‖ ≤ factor · ‖h‖``; ``kl_factor`` weighs the
  KL term on the ``"{} is a"`` prompt, or, with ``kl_relation_prompts`` ({relation_id: template}),
  on the subject's other relations; ``v_early_stop_loss`` stops once the loss is below it.
* ``mom2_*``: the key statistics C0 = K0 K0ᵀ / n (MEMIT Eq. 14): corpus (``mom2_dataset``),
  number of text samples (``mom2_n_samples`` fixed-length chunks of ``mom2_seq_len`` tokens, so
  ``n_tokens = mom2_n_samples · mom2_seq_len``) and MEMIT's λ (``mom2_update_weight``).
* ``nullspace_threshold`` / ``nullspace_mode``: AlphaEdit's projector P (Eq. 8-9), see
  :func:`alphaedit_lite.core.nullspace.null_space_projector`. ``L2`` is AlphaEdit's α (Eq. 14).
* ``project``: AlphaEdit's plug-in for MEMIT, PRUNE and RECT (the paper's "one line": every
  layer update Δ is replaced by Δ P before it is applied).

A JSON file may hold keys starting with ``_`` (comments, provenance); any other key that is not a
field of the method's dataclass raises ``ValueError`` naming it and listing the valid fields.

Values are checked against each field's declared type, in JSON files (:func:`from_dict`), in
``load_hparams(..., **overrides)``, in :meth:`BaseHParams.replace` and in the command line's
``--set KEY=VALUE`` (:func:`check_overrides`), before anything runs; a bad value raises
``ValueError`` naming the field, the value and the expected type:

* ``int`` fields take whole numbers (NumPy integers too): a bool (``true``) or a fraction
  (``2.5``) is refused, an integral float (``25.0``, ``1e3``) becomes an ``int``;
* ``float`` fields take finite ints or floats (a NumPy scalar becomes a float); bools and
  strings are refused;
* ``bool`` fields take only ``true``/``false``;
* ``list[int]`` fields (``layers``) take a list of whole numbers such as ``[3, 4]``;
* ``dict[str, str]`` fields (``kl_relation_prompts``) take an object of strings, each value a template
  with one ``{}``;
* ``str`` fields take strings; ``fact_token`` and ``nullspace_mode`` only their known choices
  (:data:`CHOICES`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphaedit_lite.core.nullspace import MODES
from alphaedit_lite.methods.registry import METHOD_NAMES, method_name
from alphaedit_lite.util.paths import PACKAGE_DIR

HPARAMS_DIR = PACKAGE_DIR / "hparams"

__all__ = [
    "HPARAMS_DIR", "BaseHParams", "FTHParams", "ROMEHParams", "MEMITHParams", "AlphaEditHParams",
    "PRUNEHParams", "RECTHParams", "METHODS", "CHOICES", "load_hparams", "hparams_path", "available_hparams",
    "check_value", "check_overrides",
]

#: The values a ``str`` field may take, where only some are meaningful.
CHOICES: dict[str, tuple[str, ...]] = {
    "fact_token": ("subject_last", "last"),
    "nullspace_mode": MODES,
    "v_stop": ("loss", "most_probable"),
    "v_dtype": ("float32", "bfloat16", "auto"),
    "mom2_forward_dtype": ("float32", "bfloat16", "auto"),
}


@dataclass
class BaseHParams:
    """Fields every locate-then-edit method shares."""

    model_name: str = ""
    layers: list[int] = field(default_factory=list)
    fact_token: str = "subject_last"
    # context templates ("{}" plus model-sampled prefixes, MEMIT's get_context_templates)
    context_n_prefixes: int = 10
    context_prefix_tokens: int = 10

    def validate(self) -> None:
        if not isinstance(self.layers, list) or not self.layers or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in self.layers):
            raise ValueError(f"layers must be a non-empty list of ints, got {self.layers!r}")
        if sorted(set(self.layers)) != list(self.layers):
            raise ValueError(f"layers must be strictly increasing without repeats, got {self.layers}")
        if self.fact_token not in CHOICES["fact_token"]:
            raise ValueError(f"fact_token {self.fact_token!r} is not supported; use 'subject_last' (the "
                             "subject's last token, as ROME/MEMIT/AlphaEdit do) or 'last' (the prompt's last token)")
        if self.context_n_prefixes < 0 or self.context_prefix_tokens < 1:
            raise ValueError("context_n_prefixes must be ≥ 0 and context_prefix_tokens ≥ 1")

    def replace(self, **changes) -> "BaseHParams":
        """A copy with some fields changed (validated, unknown names rejected)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ValueError(f"{type(self).__name__} has no field(s) {bad}; valid fields: {sorted(names)}")
        changes = {k: check_value(type(self), k, v, source="override") for k, v in changes.items()}
        out = dataclasses.replace(self, **changes)
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TargetHParams(BaseHParams):
    """Fields of the target-vector optimisation shared by ROME, MEMIT and its descendants."""

    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_loss_layer: int = -1          # the reference code's loss layer; here always the model's output
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    # {relation_id: template}: KL on the subject's OTHER relations instead of "{} is a" (compute_targets)
    kl_relation_prompts: dict[str, str] = field(default_factory=dict)
    v_early_stop_loss: float = 5e-2
    v_stop: str = "loss"            # "most_probable": also stop once o* is the argmax on every prompt
    v_dtype: str = "float32"        # "bfloat16": the layers above L run under bf16 autocast;
    #                                 "auto": bf16 where the device has fast bf16 (has_fast_bfloat16)
    mom2_dataset: str = "wikitext-2"
    mom2_n_samples: int = 1000
    mom2_seq_len: int = 128
    mom2_dtype: str = "float64"     # statistics are always accumulated in float64 here
    mom2_forward_dtype: str = "float32"  # the statistics' forward pass: "bfloat16" under bf16 autocast
    #                                      (keys cast to float32 for the products), "auto" where bf16 is fast

    def validate(self) -> None:
        super().validate()
        if self.v_num_grad_steps < 1:
            raise ValueError(f"v_num_grad_steps must be ≥ 1, got {self.v_num_grad_steps}")
        for name in ("v_lr", "clamp_norm_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("v_weight_decay", "kl_factor", "v_early_stop_loss"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("v_stop", "v_dtype", "mom2_forward_dtype"):
            if getattr(self, name) not in CHOICES[name]:
                raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {getattr(self, name)!r}")
        if self.mom2_n_samples < 1 or self.mom2_seq_len < 2:
            raise ValueError("mom2_n_samples must be ≥ 1 and mom2_seq_len ≥ 2")

    @property
    def mom2_n_tokens(self) -> int:
        """Token budget of the key statistics: mom2_n_samples chunks of mom2_seq_len tokens."""
        return int(self.mom2_n_samples) * int(self.mom2_seq_len)


@dataclass
class ROMEHParams(TargetHParams):
    """ROME (Meng et al. 2022): rank-one update of one layer, Δ = (v − W k)(C⁻¹k)ᵀ / (kᵀC⁻¹k)."""

    clamp_norm_factor: float = 4.0
    mom2_adjustment: bool = True    # False: C = I (no covariance whitening)

    def validate(self) -> None:
        super().validate()
        if len(self.layers) != 1:
            raise ValueError(f"ROME edits exactly one layer; got layers={self.layers}")


@dataclass
class MEMITHParams(TargetHParams):
    """MEMIT (Meng et al. 2023): Δ = R K1ᵀ (λ C0 + Kp Kpᵀ + K1 K1ᵀ)⁻¹ per layer, residual spread."""

    mom2_update_weight: float = 15000.0
    project: bool = False                     # AlphaEdit plug-in: Δ ← Δ P
    nullspace_threshold: float = 2e-2
    nullspace_mode: str = "absolute"
    keep_prev_keys: bool = False              # sequential MEMIT: add earlier edits' Kp Kpᵀ

    def validate(self) -> None:
        super().validate()
        if self.mom2_update_weight < 0:
            raise ValueError(f"mom2_update_weight (λ) must be ≥ 0, got {self.mom2_update_weight}")
        if self.nullspace_mode not in CHOICES["nullspace_mode"]:
            raise ValueError(f"nullspace_mode must be one of {', '.join(MODES)}, got {self.nullspace_mode!r}")


@dataclass
class AlphaEditHParams(MEMITHParams):
    """AlphaEdit (Fang et al. 2025, Eq. 14): Δ = R K1ᵀ P (Kp Kpᵀ P + K1 K1ᵀ P + α I)⁻¹."""

    L2: float = 10.0                          # α, the ridge weight of Eq. 14
    project: bool = True                      # always: P is part of the method
    keep_prev_keys: bool = True               # always: the Kp Kpᵀ cache of Eq. 14

    def validate(self) -> None:
        super().validate()
        if not self.L2 > 0:
            raise ValueError(f"L2 (α) must be > 0, got {self.L2}")
        if not (self.project and self.keep_prev_keys):
            raise ValueError("AlphaEdit always projects with P and keeps the previous keys' cache; "
                             "project and keep_prev_keys must stay true (use MEMIT to switch them off)")


@dataclass
class PRUNEHParams(MEMITHParams):
    """PRUNE (Ma et al. 2024) on top of MEMIT: restrain large singular values of the summed Δ."""

    prune_log_base: float = 2.718281828459045  # F(σ) = log_b σ + σ_max(W) − log_b σ_max(W)

    def validate(self) -> None:
        super().validate()
        if not self.prune_log_base > 1:
            raise ValueError(f"prune_log_base must be > 1, got {self.prune_log_base}")


@dataclass
class RECTHParams(MEMITHParams):
    """RECT (Gu et al. 2024) on top of MEMIT: keep the top-k% relative changes |Δ|/|W| only."""

    rect_top_percent: float = 40.0
    rect_eps: float = 1e-8

    def validate(self) -> None:
        super().validate()
        if not 0 < self.rect_top_percent <= 100:
            raise ValueError(f"rect_top_percent must be in (0, 100], got {self.rect_top_percent}")


@dataclass
class FTHParams(BaseHParams):
    """FT-L (Zhu et al. 2020 as run by ROME): Adam on W with an L∞ clamp ‖W − W0‖∞ ≤ norm_constraint."""

    num_steps: int = 25
    lr: float = 5e-4
    weight_decay: float = 0.0
    norm_constraint: float = 5e-4             # ≤ 0 disables the clamp (unconstrained FT)
    early_stop_loss: float = 1e-2
    context_n_prefixes: int = 0               # FT trains on the bare prompt by default

    def validate(self) -> None:
        super().validate()
        if self.num_steps < 1 or not self.lr > 0:
            raise ValueError("num_steps must be ≥ 1 and lr > 0")


METHODS: dict[str, type[BaseHParams]] = {
    "FT": FTHParams, "ROME": ROMEHParams, "MEMIT": MEMITHParams,
    "AlphaEdit": AlphaEditHParams, "PRUNE": PRUNEHParams, "RECT": RECTHParams,
}
assert tuple(METHODS) == METHOD_NAMES, "methods/registry.py and METHODS list different methods"




def _model_key(model_name: str) -> str:
    if not isinstance(model_name, str) or not model_name.strip():
        raise TypeError(f"model_name must be a non-empty string like 'smollm2-135m', got {model_name!r}")
    return model_name.strip().lower().replace("/", "_")


def hparams_path(method: str, model_name: str) -> Path:
    """``HPARAMS_DIR / <METHOD> / <model>.json`` (the file may not exist)."""
    return HPARAMS_DIR / method_name(method) / f"{_model_key(model_name)}.json"


def available_hparams() -> dict[str, list[str]]:
    """{method: [model names with a shipped file]}."""
    return {m: sorted(p.stem for p in (HPARAMS_DIR / m).glob("*.json")) for m in METHODS}


# ------------------------------------------------------------------------------------------------
# value checks against the declared field types
# ------------------------------------------------------------------------------------------------
_EXAMPLES = {bool: "true", int: "25", float: "0.5", str: '"text"'}


def _example(cls: type[BaseHParams], name: str, kind: Any) -> str:
    """A valid value of field ``name`` as JSON, for error messages: its default where that is one."""
    if name in CHOICES:
        return CHOICES[name][0]
    if kind == list[int]:
        return "[3,4]"
    if kind == dict[str, str]:
        return '{"P19":"{} was born in"}'
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    if default is dataclasses.MISSING or (kind is str and not default):
        return _EXAMPLES.get(kind, "...")
    return default if kind is str else json.dumps(default)


def _kind_of(x: Any) -> str:
    """The JSON-ish kind of ``x`` for messages: "a bool", "a string", "null", ..."""
    names = {bool: "a bool", int: "an int", float: "a float", str: "a string", list: "a list", tuple: "a tuple",
             dict: "a dict", type(None): "null"}
    return names.get(type(x), f"a {type(x).__name__}")


def _is_whole(x: Any) -> bool:
    """An integer (not a bool; NumPy integers count) or a float with an integral value."""
    if isinstance(x, bool):
        return False
    return isinstance(x, numbers.Integral) or (isinstance(x, float) and math.isfinite(x) and x.is_integer())


def check_value(cls: type[BaseHParams], name: str, value: Any, source: str = "override") -> Any:
    """Return ``value`` fit for field ``name`` of ``cls`` (an integral float becomes an int).

    Raises ``ValueError`` naming ``source`` (a file, or "override"), the field, the value and the
    expected type (rules in the module docstring). Unknown names raise too.
    """
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ValueError(f"{source}: {cls.__name__} has no field {name!r}; valid fields: {sorted(hints)}")
    kind = hints[name]

    def bad(expected: str) -> ValueError:
        ex = _example(cls, name, kind)
        return ValueError(f"{source}: {name}={value!r} ({_kind_of(value)}) is not valid: {name} must be "
                          f"{expected}, e.g. {name}={ex} (on the command line: --set {name}={ex})")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if not _is_whole(value):
            raise bad("a whole number (int)")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad("a number (float)")
        if not math.isfinite(value):
            raise bad("a finite number (float)")
        return value if isinstance(value, (int, float)) else float(value)   # NumPy scalars become floats
    if kind == list[int]:
        if not isinstance(value, (list, tuple)) or not all(_is_whole(x) for x in value):
            raise bad("a list of whole numbers (layer indices)")
        return [int(x) for x in value]
    if kind == dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.count("{}") == 1
                                                  for k, v in value.items()):
            raise bad("a JSON object of relation ids and templates with one {} each")
        return dict(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        if name in CHOICES and value not in CHOICES[name]:
            raise bad(f"one of {list(CHOICES[name])}")
        return value
    raise TypeError(f"{cls.__name__}.{name} has a type ({kind}) that check_value does not know; add it there")


def check_overrides(overrides: dict[str, Any], method: str | None = None, source: str = "override") -> dict[str, Any]:
    """Check ``{field: value}`` overrides before anything runs; return them with values normalised.

    With ``method`` the fields of that method's dataclass are used; without, a name must be a
    field of at least one method (the command line checks ``--set`` this way before it knows which
    methods will read it) and its value is checked against that field's type. ``source`` starts
    the error messages (e.g. ``"--set"``).
    """
    classes = [METHODS[method_name(method)]] if method is not None else list(METHODS.values())
    out = {}
    for name, value in overrides.items():
        owner = next((c for c in classes if name in {f.name for f in dataclasses.fields(c)}), None)
        if owner is None:
            valid = sorted({f.name for c in classes for f in dataclasses.fields(c)})
            where = f"of {method}" if method is not None else "of any method"
            guess = [g for g in valid if g.lower() == str(name).lower()]
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise ValueError(f"{source}: {name!r} is not a hyper-parameter {where}{hint}; valid names: {valid}")
        out[name] = check_value(owner, name, value, source=source)
    return out


def from_dict(method: str, data: dict[str, Any], source: str = "<dict>") -> BaseHParams:
    """Build and validate the dataclass of ``method`` from a dict; unknown keys raise ValueError."""
    cls = METHODS[method_name(method)]
    if not isinstance(data, dict):
        raise TypeError(f"{source}: hyper-parameters must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    clean = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(clean) - names)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys are "
                         f"{sorted(names)} (prefix a key with '_' to keep it as a comment)")
    hp = cls(**{k: check_value(cls, k, v, source=source) for k, v in clean.items()})
    hp.validate()
    return hp


def load_hparams(method: str, model_name: str | os.PathLike, **overrides) -> BaseHParams:
    """Load ``hparams/<METHOD>/<model>.json`` (or a JSON file path) into the method's dataclass.

    ``overrides`` replace fields after loading (e.g. ``layers=[3, 4]``), validated the same way.
    """
    m = method_name(method)
    p = Path(model_name) if isinstance(model_name, os.PathLike) or str(model_name).endswith(".json") else None
    if p is None:
        p = hparams_path(m, str(model_name))
        if not p.is_file():
            have = available_hparams()[m]
            raise ValueError(f"no {m} hyper-parameters for model {model_name!r} (looked for {p}); "
                             f"shipped: {have}. Copy one of them to a JSON file and pass its path.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from e
    hp = from_dict(m, data, source=str(p))
    if overrides:
        hp = hp.replace(**overrides)
    return hp
