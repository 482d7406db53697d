"""Tests for alphaedit_lite.model.hooks on tiny random Llama and GPT-2 models (built locally, float64)."""
from __future__ import annotations

import pytest
import torch
import transformers as T

from alphaedit_lite.model.hooks import Trace, TraceDict, get_module

VOCAB = 50


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = T.LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64,
                        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return T.AutoModelForCausalLM.from_config(cfg).double().eval()


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = T.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=VOCAB, n_positions=64,
                       bos_token_id=1, eos_token_id=1)
    return T.AutoModelForCausalLM.from_config(cfg).double().eval()


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))


def _all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _count_calls(module):
    calls = {"n": 0}

    def probe(mod, args, out):
        calls["n"] += 1

    return calls, module.register_forward_hook(probe)


def test_llama_down_proj_input_is_act_gate_times_up(llama, ids):
    mlp_name, down_name = "model.layers.1.mlp", "model.layers.1.mlp.down_proj"
    with TraceDict(llama, [mlp_name, down_name], retain_input=True) as td, torch.no_grad():
        llama(ids)
    x = td[mlp_name].input  # (batch, seq, d_model): the MLP's input
    mlp = get_module(llama, mlp_name)
    with torch.no_grad():
        by_hand = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)  # (batch, seq, d_ff)
    k = td[down_name].input
    assert k.shape == (2, 7, 48)
    torch.testing.assert_close(k, by_hand, rtol=0, atol=1e-12)
    # the retained output of down_proj is W k (no bias in Llama) and equals the MLP output
    W = mlp.down_proj.weight  # (d_out, d_in)
    torch.testing.assert_close(td[down_name].output, k @ W.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(td[mlp_name].output, td[down_name].output, rtol=0, atol=0)
    assert _all_hooks(llama) == 0


def test_gpt2_c_proj_input_is_act_of_c_fc(gpt2, ids):
    with TraceDict(gpt2, ["transformer.h.2.mlp", "transformer.h.2.mlp.c_proj"], retain_input=True) as td:
        with torch.no_grad():
            gpt2(ids)
    mlp = get_module(gpt2, "transformer.h.2.mlp")
    with torch.no_grad():
        by_hand = mlp.act(mlp.c_fc(td["transformer.h.2.mlp"].input))
    torch.testing.assert_close(td["transformer.h.2.mlp.c_proj"].input, by_hand, rtol=0, atol=1e-12)
    assert td["transformer.h.2.mlp.c_proj"].input.shape == (2, 7, 128)


def test_retained_tensors_detached_unless_asked(llama, ids):
    with Trace(llama, "model.layers.0") as tr:
        llama(ids)
    assert not tr.output.requires_grad
    with Trace(llama, "model.layers.0", detach=False) as tr:
        llama(ids)
    assert tr.output.requires_grad and tr.output.grad_fn is not None
    with Trace(llama, "model.layers.0.mlp.down_proj", retain_input=True, clone=True) as tr:
        with torch.no_grad():
            llama(ids)
    assert tr.input is not None and tr.output is not None and tr.input._base is None


def test_edit_output_changes_logits_and_is_undone_after(llama, ids):
    with torch.no_grad():
        base = llama(ids).logits
        # exact check: zero the final norm's output -> logits = lm_head(0) = 0 (no bias)
        with Trace(llama, "model.norm", edit_output=lambda out, name: torch.zeros_like(out)) as tr:
            zeroed = llama(ids).logits
        assert torch.count_nonzero(zeroed) == 0 and torch.count_nonzero(tr.output) == 0
        # a shift in a middle layer's output changes the logits
        seen = []

        def shift(out, name):
            seen.append(name)
            return out + 0.5

        with Trace(llama, "model.layers.1", edit_output=shift):
            shifted = llama(ids).logits
        assert seen == ["model.layers.1"]
        assert (shifted - base).abs().max() > 1e-3
        # an in-place edit that returns None also counts
        with Trace(llama, "model.layers.1.mlp", edit_output=lambda out, name: out.mul_(0.0)):
            inplace = llama(ids).logits
        assert (inplace - base).abs().max() > 1e-3
        after = llama(ids).logits
    torch.testing.assert_close(after, base, rtol=0, atol=0)  # hooks gone, model unchanged
    assert _all_hooks(llama) == 0


def test_edit_output_on_gpt2(gpt2, ids):
    with torch.no_grad():
        base = gpt2(ids).logits
        with Trace(gpt2, "transformer.h.0.mlp.c_proj", edit_output=lambda out, name: out * 2):
            edited = gpt2(ids).logits
    assert (edited - base).abs().max() > 1e-3


def test_tuple_outputs(llama, ids):
    """Attention returns (hidden, weights): .output is the hidden state; edits replace only it."""
    name = "model.layers.0.self_attn"
    received = []

    def edit(out, n):
        received.append(out)
        return torch.zeros_like(out)

    raw = {}
    handle = get_module(llama, name).register_forward_hook(lambda m, a, o: raw.setdefault("o", o))
    try:
        with Trace(llama, name, edit_output=edit) as tr, torch.no_grad():
            llama(ids)
    finally:
        handle.remove()
    assert isinstance(raw["o"], tuple)  # the module really returns a tuple
    assert isinstance(received[0], torch.Tensor) and received[0].shape == (2, 7, 32)
    assert isinstance(tr.output, torch.Tensor) and torch.count_nonzero(tr.output) == 0

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x + 1, "extra"

    toy = torch.nn.Sequential(Pair())
    with Trace(toy, "0", edit_output=lambda out, n: out * 10) as tr:
        y = toy(torch.ones(3))
    assert y[1] == "extra" and torch.equal(y[0], torch.full((3,), 20.0))
    assert torch.equal(tr.output, y[0])


def test_stop_prevents_later_modules(llama, ids):
    later, h1 = _count_calls(get_module(llama, "model.layers.1"))
    head, h2 = _count_calls(get_module(llama, "lm_head"))
    try:
        reached = False
        with Trace(llama, "model.layers.0.mlp.down_proj", retain_input=True, stop=True) as tr:
            with torch.no_grad():
                llama(ids)
            reached = True  # skipped: the forward pass was aborted
        assert not reached
        assert tr.input.shape == (2, 7, 48) and tr.output.shape == (2, 7, 32)
        assert later["n"] == 0 and head["n"] == 0
        # without stop the same modules do run
        with Trace(llama, "model.layers.0.mlp.down_proj"), torch.no_grad():
            llama(ids)
        assert later["n"] == 1 and head["n"] == 1
    finally:
        h1.remove(), h2.remove()
    assert _all_hooks(llama) == 0


def test_tracedict_stop_after_last_in_forward_order(llama, ids):
    names = ["model.layers.1.mlp", "model.layers.0.mlp"]  # given out of forward order
    norm, h1 = _count_calls(get_module(llama, "model.norm"))
    attn2, h2 = _count_calls(get_module(llama, "model.layers.2.self_attn"))
    attn1, h3 = _count_calls(get_module(llama, "model.layers.1.self_attn"))
    try:
        for _ in range(2):  # the stop state resets between forward calls
            with TraceDict(llama, names, stop=True) as td, torch.no_grad():
                llama(ids)
            assert all(td[n].output.shape == (2, 7, 32) for n in names)
        assert attn1["n"] == 2  # layer 1 ran up to its MLP ...
        assert attn2["n"] == 0 and norm["n"] == 0  # ... and nothing after it
    finally:
        h1.remove(), h2.remove(), h3.remove()
    assert _all_hooks(llama) == 0


def test_hooks_removed_after_exceptions(llama, ids):
    mod = get_module(llama, "model.layers.1.mlp.down_proj")
    with pytest.raises(RuntimeError, match="boom"):
        with Trace(llama, "model.layers.1.mlp.down_proj", retain_input=True):
            assert len(mod._forward_hooks) == 1
            raise RuntimeError("boom")
    assert len(mod._forward_hooks) == 0

    def bad_edit(out, name):
        raise KeyError("edit failed")

    with pytest.raises(KeyError, match="edit failed"):
        with TraceDict(llama, ["model.layers.0", "model.layers.1.mlp.down_proj"], edit_output=bad_edit, stop=True):
            llama(ids)
    assert len(mod._forward_hooks) == 0 and _all_hooks(llama) == 0

    # a typo in the second name: nothing stays registered on the first
    with pytest.raises(ValueError, match="model.layers.1.mlp.down_proj"):
        TraceDict(llama, ["model.layers.1.mlp.down_proj", "model.layers.1.mlp.down_prj"])
    assert _all_hooks(llama) == 0


def test_nested_stop_is_swallowed_by_its_owner_only(llama, ids):
    outer_done = False
    with Trace(llama, "model.layers.2") as outer:
        with Trace(llama, "model.layers.0", stop=True) as inner, torch.no_grad():
            llama(ids)
        assert inner.output is not None and outer.output is None  # stopped before layer 2
        with torch.no_grad():
            llama(ids)  # outer context is still active
        outer_done = True
    assert outer_done and outer.output is not None
    assert _all_hooks(llama) == 0


def test_get_module_errors(llama):
    assert get_module(llama, "") is llama
    assert get_module(llama, "model.layers.2.mlp") is llama.model.layers[2].mlp
    with pytest.raises(ValueError) as err:
        get_module(llama, "model.layers.0.mlp.down_prj")
    assert "model.layers.0.mlp.down_proj" in str(err.value) and "named_modules" in str(err.value)
    with pytest.raises(ValueError, match="model.layers.0"):
        get_module(llama, "model.layers.0.feedforward.w2")
    with pytest.raises(TypeError):
        get_module(llama, 3)
    with pytest.raises(TypeError):
        Trace(llama, "model.norm", edit_output="not callable")
    with pytest.raises(ValueError):
        TraceDict(llama, [])
