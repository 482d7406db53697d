"""The shared contract of every editing method, and the MEMIT-family engine.

Contract: ``apply_<method>(model, tok, requests, hparams, *, state=None, stats=None, ...) -> EditResult``.
The model is edited in place; :class:`EditResult` records, per edited module, the update ``Δ``
(d_out, d_in) as applied (float32) and a clone of the original ``W``; ``result.restore(model)``
puts the original weights back bit for bit. A method that fails part way leaves the model exactly
as it was: every ``Δ`` is computed first (weights changed temporarily and restored in a
``finally``), then all are applied inside a ``try`` whose ``except`` restores the snapshot.

The MEMIT-family engine (:func:`run_memit_family`, used by MEMIT, AlphaEdit, PRUNE and RECT;
MEMIT Alg. 1 / AlphaEdit Alg. 1):

1. target values z at the last edited layer L (:func:`alphaedit_lite.locate.targets.compute_targets`);
2. for each edited layer l (ascending), with the earlier layers' updates already in place:
   keys K1 at l and the current output h of layer L at the subject's last token, read in ONE
   forward pass; residual R = (z − h) / (number of layers left), MEMIT's spreading;
3. Δ_l from a closed form (:mod:`alphaedit_lite.core.solvers`): MEMIT Eq. 14 ``R K1ᵀ (λC0 + KpKpᵀ +
   K1K1ᵀ)⁻¹`` or AlphaEdit Eq. 14 ``R K1ᵀ P (KpKpᵀP + K1K1ᵀP + αI)⁻¹``, then a method-specific
   post-processing (PRUNE's singular-value restraint, RECT's sparsification, the projection Δ P);
4. after the last layer, the keys of all layers are read once more from the edited model: they
   become the "previous keys" Kp of sequential editing (AlphaEdit's cache, kept in
   :class:`EditState`), as in the AlphaEdit reference code.

Sequential editing: pass the same :class:`EditState` to successive calls; it carries
``Kp Kpᵀ`` per layer (float64), PRUNE's accumulated update per layer and σ_max of the original W.
While there are few previous keys (m ≤ d_in / 2) it also keeps the keys themselves, Kp (d_in, m),
so that the solvers can use the low-rank route (Woodbury identity, O(d_in² m) instead of
O(d_in³); see :mod:`alphaedit_lite.methods.alphaedit` and :mod:`alphaedit_lite.methods.memit`).

Cost (what one call runs): the target optimisation (:mod:`alphaedit_lite.locate.targets`, most of the
time); one pass of the blocks below the first edited layer for the keys (a
:class:`~alphaedit_lite.locate.keys.KeyReader`), then per edited layer only the blocks from the first
edited layer up to L; one more read of the keys afterwards only when they are kept (Kp).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from alphaedit_lite.model import arch as M
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.methods.hparams import MEMITHParams, TargetHParams
from alphaedit_lite.locate.keys import KeyReader, context_templates
from alphaedit_lite.locate.requests import EditRequest, as_request
from alphaedit_lite.locate.stats import layer_stats
from alphaedit_lite.locate.targets import TargetResult, compute_targets

__all__ = ["EditResult", "EditState", "run_memit_family", "check_layers", "check_stats", "resolve_stats",
           "apply_all", "prepare_requests"]


# ------------------------------------------------------------------------------------------------
# Results and state
# ------------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    """What one call of a method did. Shapes: Δ and W are (d_out, d_in) = (d_model, d_ff)."""

    method: str
    deltas: dict[str, torch.Tensor]                 # module name -> Δ as applied, float32, CPU
    original: dict[str, torch.Tensor]               # module name -> W before the call (clone, model dtype)
    layers: dict[str, int]                          # module name -> layer index
    targets: list[dict] = field(default_factory=list)   # per request: steps, forward/backward passes, nll, prob...
    timing: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    state: "EditState | None" = None

    def restore(self, model: torch.nn.Module) -> None:
        """Put the original weights back, bit for bit."""
        for name, W in self.original.items():
            M.set_rewrite_weight(model, self.layers[name], W)

    @property
    def n_requests(self) -> int:
        return len(self.targets)

    def summary(self) -> str:
        norms = ", ".join(f"L{self.layers[n]}: ‖Δ‖={float(d.norm()):.3g}" for n, d in self.deltas.items())
        t = self.timing.get("total", float("nan"))
        fb = sum(s.get("forward", 0) for s in self.targets)
        return f"{self.method}: {self.n_requests} request(s), {t:.1f} s, {fb} target forward passes; {norms}"


@dataclass
class EditState:
    """What sequential calls carry: previous keys, PRUNE's running update, the original spectrum.

    ``prev_cov[l]``: Kp Kpᵀ (d_in, d_in) float64, the keys of all earlier edits at layer l.
    ``prev_keys[l]``: Kp itself (d_in, m) float64, kept by :func:`run_memit_family` while
    m ≤ d_in / 2 (for the low-rank solvers); :meth:`prev_factor` returns it only while
    ``prev_cov[l]`` is still the matrix it was built with (changing ``prev_cov`` by hand disables it).
    ``accumulated[l]``: the sum of all updates applied so far at layer l (PRUNE), float64.
    ``sigma_max[l]``: the largest singular value of the ORIGINAL W_l (PRUNE's threshold).
    """

    prev_cov: dict[int, torch.Tensor] = field(default_factory=dict)
    accumulated: dict[int, torch.Tensor] = field(default_factory=dict)
    sigma_max: dict[int, float] = field(default_factory=dict)
    n_requests: int = 0
    n_calls: int = 0
    prev_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    prev_keys_of: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # the prev_cov Kp belongs to

    def prev(self, layer: int) -> torch.Tensor | None:
        return self.prev_cov.get(layer)

    def prev_factor(self, layer: int) -> torch.Tensor | None:
        """Kp (d_in, m) with Kp Kpᵀ = ``prev_cov[layer]``, or None when unknown (then use ``prev_cov``).

        With no previous keys at ``layer`` it returns None as well; check :meth:`prev` first.
        """
        cov = self.prev_cov.get(layer)
        keys = getattr(self, "prev_keys", {}).get(layer)      # getattr: states pickled before this field
        if cov is None or keys is None or getattr(self, "prev_keys_of", {}).get(layer) is not cov:
            return None
        return keys

    def add_prev_keys(self, layer: int, K: torch.Tensor) -> None:
        """Kp Kpᵀ += K Kᵀ for new keys K (d_in, u) (and Kp ← [Kp, K] while m ≤ d_in / 2)."""
        K = K.detach().to("cpu", torch.float64)
        prev = self.prev_cov.get(layer)
        old = self.prev_factor(layer) if prev is not None else K.new_zeros(K.shape[0], 0)
        cov = K @ K.T if prev is None else prev + K @ K.T
        self.prev_cov[layer] = cov
        if not hasattr(self, "prev_keys"):
            self.prev_keys, self.prev_keys_of = {}, {}
        if old is not None and old.shape[1] + K.shape[1] <= K.shape[0] // 2:
            self.prev_keys[layer] = torch.cat([old, K], 1)
            self.prev_keys_of[layer] = cov
        else:
            self.prev_keys.pop(layer, None)
            self.prev_keys_of.pop(layer, None)


# ------------------------------------------------------------------------------------------------
# Checks and helpers
# ------------------------------------------------------------------------------------------------
def prepare_requests(requests) -> list[EditRequest]:
    if isinstance(requests, (EditRequest, dict)):
        requests = [requests]
    out = []
    for i, r in enumerate(requests):
        out.append(as_request(r, where=f"request #{i}") if not isinstance(r, EditRequest) else r)
    if not out:
        raise ValueError("no requests given: pass at least one edit request")
    return out


def check_layers(model, layers: Sequence[int]) -> list[int]:
    return M.check_layers(model, layers, what="hparams.layers", hint="fix hparams.layers (e.g. hparams.replace(layers=[...]))")


def check_stats(model, stats: dict, layers: Sequence[int]) -> None:
    d_in = M.mlp_width(model)
    missing = [x for x in layers if x not in stats]
    if missing:
        raise ValueError(f"the statistics hold layers {sorted(stats)} but layers {missing} are edited; "
                         "compute them with alphaedit_lite.locate.stats.layer_stats(model, tok, layers)")
    for x in layers:
        sm = stats[x]
        if not isinstance(sm, SecondMoment):
            raise TypeError(f"stats[{x}] must be a SecondMoment, got {type(sm).__name__}")
        if sm.dim != d_in:
            raise ValueError(f"statistics of layer {x} have dimension {sm.dim} but this model's keys (MLP width) "
                             f"have dimension {d_in}: they belong to another model")


def resolve_stats(model, tok, hp: TargetHParams, stats, progress: bool = True) -> dict[int, SecondMoment]:
    """Given statistics (checked) or None (computed/loaded from the cache with hp's corpus settings)."""
    check_layers(model, hp.layers)
    if stats is None:
        stats = layer_stats(model, tok, hp.layers, hp.mom2_dataset, hp.mom2_n_tokens, hp.mom2_seq_len,
                            progress=progress, forward_dtype=hp.mom2_forward_dtype)
    check_stats(model, stats, hp.layers)
    return stats


def apply_all(model, deltas: dict[int, torch.Tensor], snap: dict[int, torch.Tensor]) -> None:
    """Apply every Δ; on any exception restore ``snap`` bit for bit and re-raise."""
    try:
        for x, d in deltas.items():
            M.apply_weight_delta(model, x, d)
    except BaseException:
        M.restore_weights(model, snap)
        raise


def make_result(method: str, model, deltas: dict[int, torch.Tensor], snap: dict[int, torch.Tensor],
                targets: list[dict], timing: dict, info: dict, state) -> EditResult:
    spec = M.arch_spec(model)
    names = {x: spec.rewrite_name(x) for x in deltas}
    return EditResult(method=method,
                      deltas={names[x]: d.detach().to("cpu", torch.float32) for x, d in deltas.items()},
                      original={names[x]: snap[x] for x in deltas},
                      layers={names[x]: x for x in deltas}, targets=targets, timing=timing, info=info, state=state)


# ------------------------------------------------------------------------------------------------
# The MEMIT-family engine
# ------------------------------------------------------------------------------------------------
Solver = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]          # (layer, R, K1) -> Δ
Post = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]            # (layer, Δ, W) -> Δ applied


def run_memit_family(method: str, model, tok, requests, hp: MEMITHParams, *, solver: Solver,
                     post: Post | None = None, state: EditState | None = None,
                     on_commit: Callable[[dict[int, torch.Tensor]], None] | None = None,
                     templates: Sequence[str] | None = None, info: dict | None = None,
                     targets: TargetResult | None = None, verbose: bool = False) -> EditResult:
    """Steps 1-4 of the module docstring; ``solver`` gives Δ_l, ``post`` transforms it.

    ``on_commit(deltas)`` runs after a successful apply (PRUNE records its running sum there).
    ``targets``: target values computed earlier for the same requests on the same (unedited)
    model state and last layer, e.g. to compare methods on identical z (skips step 1).
    """
    t0 = time.perf_counter()
    requests = prepare_requests(requests)
    layers = check_layers(model, hp.layers)
    z_layer = layers[-1]
    if templates is None:
        templates = context_templates(model, tok, hp.context_n_prefixes, hp.context_prefix_tokens)
    timing: dict[str, float] = {}

    if targets is None:
        tr = compute_targets(model, tok, requests, z_layer, templates, v_num_grad_steps=hp.v_num_grad_steps,
                             v_lr=hp.v_lr, v_weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor,
                             kl_factor=hp.kl_factor, kl_relation_prompts=hp.kl_relation_prompts,
                             v_early_stop_loss=hp.v_early_stop_loss, v_stop=hp.v_stop, v_dtype=hp.v_dtype, fact_token=hp.fact_token, verbose=verbose)
        timing["targets"] = tr.seconds
    else:
        if not isinstance(targets, TargetResult):
            raise TypeError(f"targets must be a TargetResult (from compute_targets), got {type(targets).__name__}")
        if targets.layer != z_layer or targets.z.shape[1] != len(requests):
            raise ValueError(f"the given targets are for layer {targets.layer} and {targets.z.shape[1]} request(s); "
                             f"this edit needs layer {z_layer} (the last edited layer) and {len(requests)}")
        tr = targets
        timing["targets"] = 0.0
    t1 = time.perf_counter()
    device = next(model.parameters()).device
    snap = M.snapshot_weights(model, layers)
    deltas: dict[int, torch.Tensor] = {}
    layer_info: dict[int, dict] = {}
    post_keys: dict[int, torch.Tensor] = {}
    keep = state is not None and hp.keep_prev_keys
    try:
        # the blocks below the first edited layer never change here: run them once
        reader = KeyReader(model, tok, requests, templates, layers[0], fact_token=hp.fact_token)
        for i, layer in enumerate(layers):
            keys, h = reader.read([layer], value_layer=z_layer)
            K1 = keys[layer].to(torch.float64)                               # (d_in, u)
            R = (tr.z.to(device) - h).to(torch.float64) / (len(layers) - i)  # (d_model, u)
            d = solver(layer, R, K1)
            W = M.get_rewrite_weight(model, layer)
            if post is not None:
                d = post(layer, d, W)
            d32 = d.to(torch.float32)
            layer_info[layer] = {"residual_norm": float(R.norm(dim=0).mean()) * (len(layers) - i),
                                 "delta_norm": float(d32.norm()), "weight_norm": float(W.float().norm())}
            M.apply_weight_delta(model, layer, d32)                          # temporarily: later layers see it
            deltas[layer] = d32
        if keep:
            post_keys, _ = reader.read(layers)                               # Kp of the next call
    finally:
        M.restore_weights(model, snap)
    timing["deltas"] = time.perf_counter() - t1
    apply_all(model, deltas, snap)
    if state is not None:
        if keep:
            for layer in layers:
                state.add_prev_keys(layer, post_keys[layer])                  # Kp Kpᵀ += K1 K1ᵀ
        state.n_requests += len(requests)
        state.n_calls += 1
    if on_commit is not None:
        on_commit(deltas)
    timing["total"] = time.perf_counter() - t0
    information = {"layers": layer_info, "z_layer": z_layer, "templates": list(templates), **(info or {})}
    return make_result(method, model, deltas, snap, tr.stats, timing, information, state)
