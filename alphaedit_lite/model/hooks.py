"""Forward-hook utilities: read a module's input/output, rewrite its output, stop a forward early.

Knowledge editing reads and writes the linear memory ``V = W K`` inside the MLP (the key-value
view of MEMIT and AlphaEdit): the *keys* ``k`` are the **input** of the MLP output projection
(read with ``Trace(..., retain_input=True)``), the *values* ``v`` its **output**, and the target
value ``v* = v + δ`` (MEMIT's target-value step, reused by AlphaEdit) is found by **editing the
output** of a layer during a forward pass (``edit_output=``) and optimising ``δ``. Statistics over
a corpus only need the forward up to the edited layer, so ``stop=True`` ends the pass there.

Everything here is a context manager that removes its hooks on exit, also when the body raises::

    with Trace(model, "model.layers.3.mlp.down_proj", retain_input=True, stop=True) as tr:
        model(**batch)              # ends right after layer 3's down_proj
    keys = tr.input                 # (batch, seq, d_ff): rows, not columns

Shapes: retained tensors are exactly what the module saw / produced, typically
``(batch, seq, d)`` with activations as **rows**; transpose to the paper's key columns
``K (d_in, n)`` yourself. Modules that return a tuple or a ``ModelOutput`` (attention blocks;
decoder layers in transformers 4.x) are handled by acting on their **first** element, the hidden
state: ``.output`` is that tensor and ``edit_output`` receives and returns that tensor, the other
elements pass through unchanged. Decoder layers in transformers 5.x return a plain tensor.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

__all__ = ["Trace", "TraceDict", "get_module", "block_inputs", "per_block_kwargs", "run_blocks"]

EditFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


def get_module(model: torch.nn.Module, dotted_name: str) -> torch.nn.Module:
    """Return the sub-module called ``dotted_name`` (``""`` is the model itself).

    Raises ``ValueError`` listing the closest existing names when there is no such module.
    """
    if not isinstance(dotted_name, str):
        raise TypeError(
            f"module name must be a str like 'model.layers.3.mlp', got {type(dotted_name).__name__}"
        )
    if dotted_name == "":
        return model
    try:
        return model.get_submodule(dotted_name)
    except AttributeError:
        pass
    names = [n for n, _ in model.named_modules() if n]
    near = difflib.get_close_matches(dotted_name, names, n=5, cutoff=0.5)
    if not near:  # fall back to the children of the longest prefix that exists
        parts = dotted_name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:cut]) + "."
            near = [n for n in names if n.startswith(prefix) and n.count(".") == prefix.count(".")][:8]
            if near:
                break
    if near:
        hint = f" Near names: {', '.join(near)}."
    else:
        hint = f" Top-level modules: {', '.join(n for n in names if '.' not in n) or '(none)'}."
    raise ValueError(
        f"{type(model).__name__} has no module named {dotted_name!r}.{hint} "
        f"List all names with [n for n, _ in model.named_modules()]."
    )


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early; swallowed by the context that asked for it."""

    def __init__(self, owner: object):
        super().__init__("forward pass stopped early by an alphaedit_lite.model.hooks context")
        self.owner = owner


def _main_tensor(output: Any) -> Any:
    """The hidden state inside a module output: itself, a tuple's first item, or a ModelOutput's first value."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0] if len(output) else None
    if isinstance(output, Mapping):
        for v in output.values():
            return v
        return None
    return output


def _replace_main(output: Any, new: Any) -> Any:
    if isinstance(output, torch.Tensor) or output is None:
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    if isinstance(output, Mapping) and len(output):
        key = next(iter(output.keys()))
        output[key] = new
        return output
    return new


def _first_input(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return v
    return None


def _check_edit_fn(edit_output: Any) -> None:
    if edit_output is not None and not callable(edit_output):
        raise TypeError(
            f"edit_output must be a function (output, module_name) -> new_output, got {type(edit_output).__name__}"
        )


class Trace:
    """Hook one module for the duration of a ``with`` block.

    Args:
        model: the model (any ``nn.Module``) that contains the module.
        module_name: dotted name, e.g. ``"model.layers.3.mlp.down_proj"`` (see ``get_module``).
        retain_input: keep the module's first input in ``.input`` (the key for the rewrite module).
        retain_output: keep the module's output (its first element for tuple outputs) in ``.output``.
        edit_output: ``fn(output, module_name) -> new_output`` called on every forward of the module;
            ``output`` is the hidden-state tensor, the return value replaces it (return ``None`` to
            keep a tensor you changed in place). ``.output`` then holds the edited value.
        stop: after the module has run (and been recorded/edited), abort the forward pass; the
            ``with`` block swallows the abort, so code after ``model(...)`` inside the block is
            skipped and execution continues after the block.
        detach: retained tensors are ``.detach()``-ed (set ``False`` to backpropagate through them).
        clone: retained tensors are cloned (use it when a later in-place op would overwrite them).

    Each forward overwrites ``.input``/``.output``; after several calls they hold the last one.
    Hooks are removed on exit even if the body raises; ``close()`` removes them without ``with``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        module_name: str,
        retain_input: bool = False,
        retain_output: bool = True,
        edit_output: EditFn | None = None,
        stop: bool = False,
        detach: bool = True,
        clone: bool = False,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _check_edit_fn(edit_output)
        self.module_name = module_name
        self.module = get_module(model, module_name)
        self.retain_input = bool(retain_input)
        self.retain_output = bool(retain_output)
        self.edit_output = edit_output
        self.stop = bool(stop)
        self.detach = bool(detach)
        self.clone = bool(clone)
        self.input: Any = None
        self.output: Any = None
        self._handles = [self.module.register_forward_hook(self._hook, with_kwargs=True)]

    def _keep(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if self.detach:
                x = x.detach()
            if self.clone:
                x = x.clone()
        return x

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.retain_input:
            self.input = self._keep(_first_input(args, kwargs))
        replaced = None
        if self.edit_output is not None:
            main = _main_tensor(output)
            new = self.edit_output(main, self.module_name)
            if new is not None and new is not main:
                replaced = output = _replace_main(output, new)
        if self.retain_output:
            self.output = self._keep(_main_tensor(output))
        if self.stop:
            raise _StopForward(self)
        return replaced  # None keeps the module's own output

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return isinstance(exc, _StopForward) and exc.owner is self

    def __repr__(self) -> str:
        return f"Trace({self.module_name!r}, active={bool(self._handles)})"


class TraceDict(OrderedDict):
    """Several :class:`Trace` objects at once, as an ordered ``{module_name: Trace}`` dict.

    Same arguments as :class:`Trace` (``edit_output`` receives the module name as its second
    argument, so one function can treat layers differently). With ``stop=True`` the forward pass
    is aborted right after the **last** of the modules (in execution order) has run, i.e. once
    every listed module has run at least once in the current forward call.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        names: Iterable[str],
        retain_input: bool = False,
        retain_output: bool = True,
        edit_output: EditFn | None = None,
        stop: bool = False,
        detach: bool = True,
        clone: bool = False,
    ):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(names, str):
            names = [names]
        names = list(dict.fromkeys(names))  # de-duplicate, keep order
        if not names:
            raise ValueError("TraceDict needs at least one module name")
        _check_edit_fn(edit_output)
        for n in names:  # resolve all first so a typo leaves no hooks behind
            get_module(model, n)
        self.stop = bool(stop)
        self._pending: set[str] = set()
        self._handles: list = []
        try:
            for n in names:
                self[n] = Trace(model, n, retain_input, retain_output, edit_output,
                                stop=False, detach=detach, clone=clone)
            if self.stop:
                self._handles.append(model.register_forward_pre_hook(self._reset))
                for n in names:  # registered after the Trace hook, so it runs after recording
                    self._handles.append(self[n].module.register_forward_hook(self._make_stop_hook(n)))
                self._reset()
        except BaseException:
            self.close()
            raise

    def _reset(self, *_: Any) -> None:
        self._pending = set(self.keys())

    def _make_stop_hook(self, name: str):
        def hook(module, args, output):
            self._pending.discard(name)
            if not self._pending:
                self._reset()
                raise _StopForward(self)
        return hook

    def close(self) -> None:
        """Remove all hooks (idempotent)."""
        for tr in self.values():
            tr.close()
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "TraceDict":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return isinstance(exc, _StopForward) and exc.owner is self

    def __repr__(self) -> str:
        return f"TraceDict({list(self.keys())!r})"


def _run_until_stopped(model: torch.nn.Module, handles: list, token: object, forward_kwargs: dict) -> None:
    """``model(**forward_kwargs)``, ended early by a hook raising ``_StopForward(token)``; hooks removed after."""
    try:
        model(**forward_kwargs)
    except _StopForward as exc:
        if exc.owner is not token:
            raise
    finally:
        for h in handles:
            h.remove()


def block_inputs(model: torch.nn.Module, block: torch.nn.Module, *, output: bool = False,
                 **forward_kwargs: Any) -> tuple[torch.Tensor, tuple, dict]:
    """Run ``model(**forward_kwargs)`` only until ``block`` is reached; return what enters it.

    Returns ``(hidden, args, kwargs)``: the hidden states entering ``block`` (detached), its other
    positional arguments and its keyword arguments (attention mask, position embeddings, cache...),
    so that the blocks from ``block`` on can be run again by hand with different inputs (the
    target optimisation and the key reader do this). ``output=True`` returns ``block``'s output
    instead (``args`` and ``kwargs`` empty), for "after the last block". The pass is stopped by
    raising inside the hook, so nothing above ``block`` runs.
    """
    rec: dict[str, Any] = {}
    token = object()

    def pre(mod, args, kwargs):
        rec["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
        rec["args"] = tuple(args[1:])
        rec["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _StopForward(token)

    def post(mod, args, kwargs, out):
        rec["h"], rec["args"], rec["kwargs"] = _main_tensor(out).detach(), (), {}
        raise _StopForward(token)

    handle = (block.register_forward_hook(post, with_kwargs=True) if output
              else block.register_forward_pre_hook(pre, with_kwargs=True))
    _run_until_stopped(model, [handle], token, forward_kwargs)
    if "h" not in rec:
        raise RuntimeError(f"{type(block).__name__} was never called during the forward pass")
    return rec["h"], rec["args"], rec["kwargs"]


def per_block_kwargs(model: torch.nn.Module, blocks, **forward_kwargs: Any) -> tuple[torch.Tensor, list[dict]]:
    """What enters the first of ``blocks`` and the keyword arguments each of them receives in ``model(**forward_kwargs)``.

    Returns ``(hidden, [kwargs of each block])`` (hidden state left out of the kwargs). For models whose
    layers differ in attention type (sliding-window and full-attention layers, e.g. Qwen2 with
    ``layer_types``, Gemma 2/3), each block gets its own attention mask, so the arguments
    :func:`block_inputs` records at one block are wrong for the others. One pass, stopped when the
    last of ``blocks`` is reached (that block does not run). Keyword-argument blocks only (no GPT-2).
    """
    blocks = list(blocks)
    rec: list[dict | None] = [None] * len(blocks)
    first: dict[str, torch.Tensor] = {}
    token = object()

    def make(i):
        def pre(mod, args, kwargs):
            if i == 0:
                first["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
            rec[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            if i == len(blocks) - 1:
                raise _StopForward(token)
        return pre

    handles = [blk.register_forward_pre_hook(make(i), with_kwargs=True) for i, blk in enumerate(blocks)]
    _run_until_stopped(model, handles, token, forward_kwargs)
    missing = [i for i, r in enumerate(rec) if r is None]
    if missing:
        raise RuntimeError(f"blocks {missing} (of the {len(blocks)} given) were never called during the forward pass")
    return first["h"], rec


def run_blocks(blocks, hidden: torch.Tensor, *args: Any, block_kwargs: list[dict] | None = None,
               **kwargs: Any) -> torch.Tensor:
    """Run transformer ``blocks`` in order on ``hidden``, each called as ``block(h, *args, **kwargs)``.

    The other half of :func:`block_inputs`: with the arguments it recorded, this re-runs the blocks
    from one layer on, on a changed hidden state, without the layers below. ``block_kwargs`` (from
    :func:`per_block_kwargs`, one dict per block) replaces ``kwargs`` block by block, for models whose
    blocks get different attention masks. Returns the last hidden state.
    """
    if block_kwargs is not None and len(block_kwargs) != len(blocks):
        raise ValueError(f"block_kwargs has {len(block_kwargs)} entries for {len(blocks)} blocks")
    h = hidden
    for i, blk in enumerate(blocks):
        h = _main_tensor(blk(h, *args, **(kwargs if block_kwargs is None else block_kwargs[i])))
    return h
