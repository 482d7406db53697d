"""Model layer: which weight gets edited and how to read and write it, in the paper's orientation.

AlphaEdit (Fang et al., ICLR 2025) and MEMIT (Meng et al., 2023) treat the output projection
``W_out`` of a transformer MLP as a linear associative memory ``V = W K`` (the key-value view in
both papers): the *keys* ``K`` are the MLP's hidden activations (the input of the output
projection, ``d_in = d_ff``) and the *values* ``V`` are what the projection writes into the
residual stream (``d_out = d_model``). Every editing method in this kit computes an update ``Δ``
of ``W``'s shape and applies ``W ← W + Δ`` (the final step of both MEMIT and AlphaEdit; for
AlphaEdit ``Δ`` is the perturbation projected onto the null space of the preserved keys).
This module provides

* an **architecture table** (:data:`ARCHITECTURES`, one frozen :class:`ArchSpec` per
  ``config.model_type``) naming the modules the algorithms need in each model family;
* **weight access in the paper's orientation**: :func:`get_rewrite_weight` always returns ``W``
  as ``(d_out, d_in) = (d_model, d_ff)`` and :func:`apply_weight_delta` adds a ``Δ`` of that
  shape. GPT-2's ``Conv1D`` stores its weight transposed, as ``(d_in, d_out)``; that is handled
  here, in ``_oriented`` / :func:`apply_weight_delta`, and nowhere else.

Loading models (hub, local folders, the offline SmolLM2 GGUF cache) is :mod:`alphaedit_lite.model.loading`.

Adding a model family: add one :class:`ArchSpec` entry to :data:`ARCHITECTURES`, keyed by the
family's ``config.model_type`` (print ``model.config.model_type`` and ``[n for n, _ in
model.named_modules()]`` to find the names), and set ``rewrite_transposed=True`` only if the
rewrite module stores its weight as ``(d_in, d_out)`` like GPT-2's ``Conv1D``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from alphaedit_lite.model.hooks import get_module

__all__ = [
    "ArchSpec",
    "mixed_attention",
    "ARCHITECTURES",
    "arch_spec",
    "get_module",
    "layer_module",
    "rewrite_module",
    "rewrite_module_name",
    "get_rewrite_weight",
    "check_layers",
    "snapshot_weights",
    "restore_weights",
    "set_rewrite_weight",
    "apply_weight_delta",
    "num_layers",
    "hidden_size",
    "mlp_width",
    "final_norm",
    "unembed",
    "embed",
]


# --------------------------------------------------------------------------------------------
# Architecture table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArchSpec:
    """Dotted module names one model family uses; ``{}`` is replaced by the layer index.

    Attributes:
        family: human-readable family name (for messages and plots).
        layers: the ``nn.ModuleList`` of transformer blocks, e.g. ``"model.layers"``.
        rewrite: the edited linear map ``W`` (the MLP output projection), e.g.
            ``"model.layers.{}.mlp.down_proj"``. Its input is the key ``k`` (``d_ff``), its output
            the value ``v`` (``d_model``).
        mlp: the whole MLP block of a layer (its output is the rewrite module's output plus bias
            and dropout), e.g. ``"model.layers.{}.mlp"``.
        attn: the attention block of a layer, e.g. ``"model.layers.{}.self_attn"``.
        final_norm: the norm applied before the unembedding, e.g. ``"model.norm"``.
        unembed: the output embedding (logits = unembed(final_norm(h))), e.g. ``"lm_head"``.
        embed: the input token embedding, e.g. ``"model.embed_tokens"``.
        rewrite_transposed: ``True`` when the rewrite module stores its weight as
            ``(d_in, d_out)`` (GPT-2's ``Conv1D``) instead of ``nn.Linear``'s ``(d_out, d_in)``.
    """

    family: str
    layers: str
    rewrite: str
    mlp: str
    attn: str
    final_norm: str
    unembed: str
    embed: str
    rewrite_transposed: bool = False

    @property
    def layer(self) -> str:
        """Template of one transformer block, e.g. ``"model.layers.{}"``."""
        return self.layers + ".{}"

    def layer_name(self, i: int) -> str:
        """Dotted name of block ``i`` (no range check; use :func:`layer_module` for that)."""
        return self.layer.format(i)

    def rewrite_name(self, i: int) -> str:
        """Dotted name of the rewrite module (MLP output projection) of layer ``i``."""
        return self.rewrite.format(i)

    def mlp_name(self, i: int) -> str:
        """Dotted name of the MLP block of layer ``i``."""
        return self.mlp.format(i)

    def attn_name(self, i: int) -> str:
        """Dotted name of the attention block of layer ``i``."""
        return self.attn.format(i)


def _llama_like(family: str) -> ArchSpec:
    return ArchSpec(
        family=family,
        layers="model.layers",
        rewrite="model.layers.{}.mlp.down_proj",
        mlp="model.layers.{}.mlp",
        attn="model.layers.{}.self_attn",
        final_norm="model.norm",
        unembed="lm_head",
        embed="model.embed_tokens",
    )


#: One entry per supported ``config.model_type``. SmolLM2 is a Llama (``model_type == "llama"``).
ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        family="GPT-2",
        layers="transformer.h",
        rewrite="transformer.h.{}.mlp.c_proj",
        mlp="transformer.h.{}.mlp",
        attn="transformer.h.{}.attn",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
        rewrite_transposed=True,  # Conv1D weight is (d_in, d_out) = (d_ff, d_model)
    ),
    "gptj": ArchSpec(
        family="GPT-J",
        layers="transformer.h",
        rewrite="transformer.h.{}.mlp.fc_out",
        mlp="transformer.h.{}.mlp",
        attn="transformer.h.{}.attn",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
    ),
    "gpt_neox": ArchSpec(
        family="GPT-NeoX / Pythia",
        layers="gpt_neox.layers",
        rewrite="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        mlp="gpt_neox.layers.{}.mlp",
        attn="gpt_neox.layers.{}.attention",
        final_norm="gpt_neox.final_layer_norm",
        # transformers 5.x names the output embedding "lm_head"; 4.x called it "embed_out".
        # unembed() falls back to model.get_output_embeddings() when the name is absent.
        unembed="lm_head",
        embed="gpt_neox.embed_in",
    ),
    "llama": _llama_like("Llama / Llama-3 / SmolLM2"),
    "mistral": _llama_like("Mistral"),
    "qwen2": _llama_like("Qwen2 / Qwen2.5"),
}


def _model_type(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    config = getattr(obj, "config", obj)
    mt = getattr(config, "model_type", None)
    if not isinstance(mt, str) or not mt:
        raise TypeError(
            f"arch_spec() needs a Hugging Face model, its config, or a model_type string; got "
            f"{type(obj).__name__} without a `config.model_type`. Pass the loaded model itself."
        )
    return mt


def arch_spec(model_or_config: Any) -> ArchSpec:
    """The :class:`ArchSpec` for a model, its config, or a ``model_type`` string.

    Raises ``ValueError`` for an unsupported family; the message lists the supported
    ``model_type`` values and says how to add one.
    """
    mt = _model_type(model_or_config)
    spec = ARCHITECTURES.get(mt)
    if spec is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"unsupported architecture model_type={mt!r}; supported model_type values are: "
            f"{supported}. To add one, add an ArchSpec entry keyed by {mt!r} to "
            f"alphaedit_lite.model.arch.ARCHITECTURES naming its layers, MLP output projection "
            f"(the rewrite module), MLP, attention, final norm, unembedding and embedding "
            f"(list them with [n for n, _ in model.named_modules()])."
        )
    return spec


# --------------------------------------------------------------------------------------------
# Module and weight access
# --------------------------------------------------------------------------------------------
def _check_layer(model: torch.nn.Module, layer: int) -> int:
    """One layer index, negative ones counted from the end (-1 is the last block)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__} ({layer!r})")
    n = num_layers(model)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range: this model has {n} layers (0..{n - 1}).")
    return layer % n


def check_layers(model: torch.nn.Module, layers, *, what: str = "layers", hint: str = "") -> list[int]:
    """The one check of layer indices: ``layers`` (an int or a list of ints) as a list, each in 0..N−1.

    Raises ``TypeError`` for a non-integer, ``ValueError`` for an empty list or an index out of range;
    the message names ``what`` (e.g. "--layers", "hparams.layers") and ends with ``hint``.
    """
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError as e:
        raise TypeError(f"{what} must be an int or a list of ints, got {layers!r}") from e
    wrong = [x for x in layers if isinstance(x, bool) or not isinstance(x, int)]
    if wrong:
        raise TypeError(f"{what} must be ints, got {wrong!r}")
    if not layers:
        raise ValueError(f"{what} is empty; name at least one layer")
    n = num_layers(model)
    bad = [x for x in layers if not 0 <= x < n]
    if bad:
        raise ValueError(f"{what} {bad} out of range: this model has {n} layers (0..{n - 1})" + (f"; {hint}" if hint else ""))
    return layers


def mixed_attention(model: torch.nn.Module, layers) -> bool:
    """Whether ``layers`` differ in attention type (the config's ``layer_types``, e.g. sliding-window and
    full attention): their blocks then receive different attention masks in one forward pass, and blocks
    re-run by hand need each its own (:func:`alphaedit_lite.model.hooks.per_block_kwargs`)."""
    types = getattr(getattr(model, "config", None), "layer_types", None)
    return bool(types) and len({types[i] for i in layers}) > 1


def num_layers(model: torch.nn.Module) -> int:
    """Number of transformer blocks."""
    return len(get_module(model, arch_spec(model).layers))


def layer_module(model: torch.nn.Module, i: int) -> torch.nn.Module:
    """Transformer block ``i`` (negative indices count from the end)."""
    i = _check_layer(model, i)
    return get_module(model, arch_spec(model).layer_name(i))


def rewrite_module_name(model: torch.nn.Module, layer: int) -> str:
    """Dotted name of the edited module (MLP output projection) of ``layer``."""
    layer = _check_layer(model, layer)
    return arch_spec(model).rewrite_name(layer)


def rewrite_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The edited module (``nn.Linear``, or ``Conv1D`` for GPT-2) of ``layer``."""
    return get_module(model, rewrite_module_name(model, layer))


def _weight_param(model: torch.nn.Module, layer: int) -> tuple[torch.nn.Parameter, bool]:
    mod = rewrite_module(model, layer)
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise TypeError(
            f"rewrite module {rewrite_module_name(model, layer)!r} is a {type(mod).__name__} without a 2-D "
            f"`weight`; fix the ArchSpec entry for model_type={_model_type(model)!r}."
        )
    return w, arch_spec(model).rewrite_transposed


def _oriented(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The single place where storage orientation is turned into the paper's (d_out, d_in)."""
    return w.T if transposed else w


def get_rewrite_weight(model: torch.nn.Module, layer: int) -> torch.Tensor:
    """``W`` of ``layer`` in the paper's orientation, shape ``(d_out, d_in) = (d_model, d_ff)``.

    Returns a **detached view** that shares memory with the model (no copy; for GPT-2 it is the
    transpose of the stored ``Conv1D`` weight and not contiguous). It therefore reflects later
    edits: call ``.clone()`` to keep a snapshot, and change the model only through
    :func:`apply_weight_delta` / :func:`set_rewrite_weight`.
    """
    w, transposed = _weight_param(model, layer)
    W = _oriented(w.detach(), transposed)  # (d_out, d_in)
    d_model = hidden_size(model)
    if W.shape[0] != d_model:
        raise ValueError(
            f"rewrite weight of layer {layer} has shape {tuple(W.shape)} after orientation but its output "
            f"should be d_model={d_model}; the ArchSpec's rewrite_transposed flag for "
            f"model_type={_model_type(model)!r} is probably wrong."
        )
    return W


def _check_matrix(name: str, x: Any, shape: tuple[int, int]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but the rewrite weight is (d_out, d_in) = {shape}; "
            f"build it as (d_model, d_ff) (e.g. R @ K.T ...), not transposed."
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; refusing to write it into the model.")
    return x


def apply_weight_delta(model: torch.nn.Module, layer: int, delta: torch.Tensor) -> None:
    """In place: ``W ← W + Δ`` for the rewrite weight of ``layer`` (the edit step of MEMIT/AlphaEdit).

    ``delta`` has the paper's shape ``(d_out, d_in)`` on any device and in any float dtype; it is
    transposed for GPT-2's ``Conv1D`` and moved to the weight's device. The sum is formed in at
    least float32 (float64 if ``delta`` is float64) and rounded once to the weight's dtype, so a
    float64 update on a bf16 model loses as little as possible.
    """
    w, transposed = _weight_param(model, layer)
    W = _oriented(w, transposed)  # (d_out, d_in) view of the parameter
    delta = _check_matrix("delta", delta, tuple(W.shape))
    if not delta.is_floating_point():
        raise TypeError(f"delta must be a floating-point tensor, got dtype {delta.dtype}")
    acc = torch.promote_types(torch.promote_types(W.dtype, delta.dtype), torch.float32)
    with torch.no_grad():
        new = W.to(acc) + delta.to(device=W.device, dtype=acc)
        W.copy_(new.to(W.dtype))


def set_rewrite_weight(model: torch.nn.Module, layer: int, W_new: torch.Tensor) -> None:
    """In place: overwrite the rewrite weight of ``layer`` with ``W_new`` of shape ``(d_out, d_in)``.

    Use it to restore a snapshot taken with ``get_rewrite_weight(model, layer).clone()``.
    """
    w, transposed = _weight_param(model, layer)
    W = _oriented(w, transposed)
    W_new = _check_matrix("W_new", W_new, tuple(W.shape))
    with torch.no_grad():
        W.copy_(W_new.to(device=W.device, dtype=W.dtype))


def snapshot_weights(model: torch.nn.Module, layers) -> dict[int, torch.Tensor]:
    """``{layer: W}`` copies of the rewrite weights of ``layers`` (model dtype), for :func:`restore_weights`."""
    return {x: get_rewrite_weight(model, x).detach().clone() for x in layers}


def restore_weights(model: torch.nn.Module, snap: dict[int, torch.Tensor]) -> None:
    """Put the weights of a :func:`snapshot_weights` back, bit for bit."""
    for x, W in snap.items():
        set_rewrite_weight(model, x, W)


def hidden_size(model: torch.nn.Module) -> int:
    """Width of the residual stream ``d_model`` (the rewrite module's output size)."""
    hs = getattr(model.config, "hidden_size", None)
    if isinstance(hs, int):
        return hs
    w, transposed = _weight_param(model, 0)
    return int(_oriented(w, transposed).shape[0])


def mlp_width(model: torch.nn.Module) -> int:
    """MLP hidden width ``d_ff`` = the key dimension ``d_in`` of the rewrite weight."""
    w, transposed = _weight_param(model, 0)
    return int(_oriented(w, transposed).shape[1])


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm before the unembedding (``model.norm``, ``transformer.ln_f``, ...)."""
    return get_module(model, arch_spec(model).final_norm)


def unembed(model: torch.nn.Module) -> torch.nn.Module:
    """The output embedding (``lm_head``); falls back to ``get_output_embeddings()``."""
    spec = arch_spec(model)
    try:
        return get_module(model, spec.unembed)
    except ValueError:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is None:
            raise
        return out


def embed(model: torch.nn.Module) -> torch.nn.Module:
    """The input token embedding; falls back to ``get_input_embeddings()``."""
    spec = arch_spec(model)
    try:
        return get_module(model, spec.embed)
    except ValueError:
        if hasattr(model, "get_input_embeddings"):
            return model.get_input_embeddings()
        raise




@contextmanager
def attention_implementation(model: torch.nn.Module, impl: str):
    """Run the model with transformers' attention implementation ``impl`` ("eager", "sdpa", ...) inside
    the block, and put the previous one back afterwards, also on error.

    Why: on the CPU with torch 2.13, the backward pass of ``scaled_dot_product_attention`` in bfloat16
    is about ten times slower than in float32 and ate the whole bf16 gain of the target optimisation
    (profile in benchmarks/README.md); eager attention runs its two small matrix products in bf16.
    Models without a transformers config (the kit's own organisms) are left as they are.
    """
    config = getattr(model, "config", None)
    old = getattr(config, "_attn_implementation", None)
    if old is None or old == impl:
        yield
        return
    config._attn_implementation = impl
    try:
        yield
    finally:
        config._attn_implementation = old
