"""Checker of the key k at the subject's last token: the input of a layer's rewrite module
(the MLP's down projection) in a real model's forward pass (MEMIT Eq. 14, ROME Sec. 3.1). Notebook 03.
"""
from __future__ import annotations

from typing import Callable

import torch

from alphaedit_lite.classroom.exercises._common import F64, _Case, _name, _require_callable, _fail, _call, _check_finite


# ------------------------------------------------------------- 5. the key at the subject's last token
#: (text, subject) pairs: subjects at the start, in the middle and at the end of a prompt, one word
#: and several words (several tokens in any tokenizer), so every typical position mistake shows.
SUBJECT_KEY_CASES = [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux"),
    ("The headquarters of the Autonomous University of Madrid is in", "Autonomous University of Madrid"),
    ("Apple was founded by", "Apple"),
    ("The Colosseum is in Rome, and so is Toko Yasuda", "Toko Yasuda"),
]
KEY_RTOL = 1e-4   # keys come from a float32 forward pass


def _token_ids(tok, text: str) -> list[int]:
    ids = tok(text).input_ids
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _subject_first_index(tok, text: str, start: int) -> int:
    """Index of the subject's first token (the space before a word belongs to the word's token)."""
    return len(_token_ids(tok, text[:start].rstrip())) if start > 0 else len(_token_ids(tok, ""))


def _all_positions(model, tok, text: str, layer: int) -> dict:
    """One forward pass: keys of every layer (T, d_in), the layer's values (T, d_out), hidden states."""
    from alphaedit_lite.model import arch as M
    from alphaedit_lite.model.hooks import TraceDict

    spec = M.arch_spec(model)
    names = [spec.rewrite_name(x) for x in range(M.num_layers(model))]
    ids = torch.tensor([_token_ids(tok, text)], device=next(model.parameters()).device)
    with TraceDict(model, names, retain_input=True, retain_output=True) as td, torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return {"keys": {x: td[n].input[0].detach().cpu().to(F64) for x, n in enumerate(names)},   # (T, d_in)
            "values": td[names[layer]].output[0].detach().cpu().to(F64),                       # (T, d_out)
            "hidden": [h[0].detach().cpu().to(F64) for h in out.hidden_states]}                # (T, d_model)


def _vrel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(F64) - b.to(F64)).norm() / max(float(b.to(F64).norm()), 1e-300))


def check_subject_key(fn: Callable, model, tok, layer: int | None = None) -> None:
    """Check `fn(model, tok, text, subject, layer) -> k`: the input of layer `layer`'s rewrite module
    (the MLP's output projection, W of shape (d_out, d_in)) at the subject's LAST token, shape (d_in,).

    The reference is `alphaedit_lite.locate.keys.compute_keys` on the plain prompt; a wrong answer is
    matched against the keys at every other position, of every other layer, against the module's
    output and the residual stream, to name the mistake.
    """
    from alphaedit_lite.model import arch as M
    from alphaedit_lite.locate.keys import compute_keys, locate_subject
    from alphaedit_lite.locate.requests import EditRequest

    _require_callable(fn)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"pass the model as the second argument, check_subject_key(fn, model, tok, layer), got "
                        f"{type(model).__name__}")
    n_layers = M.num_layers(model)
    layer = n_layers // 2 if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer must be an int in 0..{n_layers - 1}, got {layer!r}")
    d_in = M.mlp_width(model)
    labels = []
    multi = False
    for text, subject in SUBJECT_KEY_CASES:
        start = text.index(subject)
        sent = locate_subject(tok, text, subject, subject_start=start)
        i = sent.subject_last
        first = _subject_first_index(tok, text, start)
        multi = multi or first < i
        req = EditRequest(prompt=text[:start] + "{}" + text[start + len(subject):], subject=subject, target_new="x")
        ref = compute_keys(model, tok, [req], layer)[layer][:, 0].detach().cpu().to(F64)        # (d_in,)
        ids = sent.ids
        toks = [tok.decode([t]) for t in ids]
        label = f"{subject!r} in {text!r}"
        labels.append(f"{subject!r} ({i - first + 1} token{'s' if i > first else ''})")
        case = _Case(label, (model, tok, text, subject, layer), ref)
        out = _call(fn, case).to(F64)
        shape = tuple(out.shape)
        if shape == (1, d_in):
            raise _fail(fn, case, f"shape {shape}: you kept the batch dimension; return the key of one token, shape "
                                  f"(d_in,) = ({d_in},), e.g. tr.input[0, index]")
        if shape == (len(ids), d_in) or shape == (1, len(ids), d_in):
            raise _fail(fn, case, f"shape {shape}: those are the keys of all {len(ids)} tokens; return only the one at "
                                  f"the subject's last token, shape ({d_in},)")
        if shape != (d_in,):
            pos = _all_positions(model, tok, text, layer)
            if shape == tuple(pos["values"][i].shape) and _vrel(out, pos["values"][i]) < KEY_RTOL:
                raise _fail(fn, case, "that is the module's OUTPUT (the value v = W k), not its input: the key is "
                                      "what goes into the down projection, read it with retain_input=True (tr.input)")
            for h in pos["hidden"]:
                if shape == tuple(h[i].shape) and _vrel(out, h[i]) < KEY_RTOL:
                    raise _fail(fn, case, "that is the residual stream (a hidden state), not the key: the key is the "
                                          f"input of the MLP's down projection, {d_in} wide, read with a Trace on "
                                          "spec.rewrite_name(layer) and retain_input=True")
            raise _fail(fn, case, f"the key must have shape (d_in,) = ({d_in},), the width of the MLP's hidden layer; "
                                  f"got {shape}")
        _check_finite(fn, case, out)
        err = _vrel(out, ref)
        if err < KEY_RTOL:
            continue
        pos = _all_positions(model, tok, text, layer)
        keys = pos["keys"][layer]                                                               # (T, d_in)
        match = [j for j in range(keys.shape[0]) if _vrel(out, keys[j]) < KEY_RTOL]
        where = f"token {i} ({toks[i]!r})"
        if match:
            j = match[0]
            if j == first and first < i:
                raise _fail(fn, case, f"you took the FIRST token of the subject ({toks[j]!r}, index {j}); the key is "
                                      f"read at its LAST token, {where}")
            if j == i + 1:
                raise _fail(fn, case, f"one token too far: index {j} ({toks[j]!r}) is the token after the subject; "
                                      f"its last token is {where} (the length of the tokenized prefix minus 1)")
            if j == len(ids) - 1:
                raise _fail(fn, case, f"you took the prompt's last token ({toks[j]!r}, index {j}); the key is read at "
                                      f"the subject's last token, {where}")
            if j == i - 1:
                raise _fail(fn, case, f"one token too early: index {j} ({toks[j]!r}); the subject's last token is {where}")
            raise _fail(fn, case, f"you read the key at token {j} ({toks[j]!r}); the subject's last token is {where}")
        mean = keys[first:i + 1].mean(0)
        if first < i and _vrel(out, mean) < KEY_RTOL:
            raise _fail(fn, case, "you averaged the keys of the subject's tokens; the key is the one at the subject's "
                                  f"last token, {where} (MEMIT averages over context templates, not over tokens)")
        for x, kx in pos["keys"].items():
            if x != layer and _vrel(out, kx[i]) < KEY_RTOL:
                raise _fail(fn, case, f"right token, wrong layer: your key comes from layer {x}, not layer {layer}; "
                                      "trace spec.rewrite_name(layer) of the layer you were given")
        raise _fail(fn, case, f"your key differs from alphaedit_lite.locate.keys' by a relative error {err:.2e}; read the "
                              f"input of layer {layer}'s rewrite module at the subject's last token, {where}")
    assert multi, "internal: the cases need a subject of several tokens"
    print(f"✓ {_name(fn)}: key at the subject's last token (layer {layer}) — matches alphaedit_lite.locate.keys on "
          f"{len(SUBJECT_KEY_CASES)} prompts ({'; '.join(labels)})")
