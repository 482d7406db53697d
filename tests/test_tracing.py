"""alphaedit_lite.locate.tracing (ROME's causal tracing, Meng et al. 2022 Sec. 2.1) and viz.plot_trace.

Exact properties on a tiny random Llama with a byte-level BPE tokenizer (built locally, no
download): restoring the last layer's hidden state at the last position gives back p_clean;
restoring anything before the subject changes nothing (the noise is on the subject only and
attention is causal); the noise touches only the subject's embeddings; the result depends only on
the seed, not on how the restorations are batched. Then one real fact of the shipped tiny world.
"""
from __future__ import annotations

import math

import pytest
import torch
import transformers as T

import editing_helpers as EH
from alphaedit_lite.locate.tracing import GROUPS, KINDS, TraceResult, average_indirect_effect, trace

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPT = "The mother tongue of {} is"
SUBJECT = "Danielle Darrieux"


@pytest.fixture(scope="module")
def tiny():
    """(model, tok): 3-layer random Llama, d_model 32, on the kit's tiny BPE tokenizer."""
    tok = EH.tiny_tokenizer()
    cfg = T.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                        initializer_range=0.3, bos_token_id=None, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return T.LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def result(tiny):
    model, tok = tiny
    return trace(model, tok, PROMPT, SUBJECT, "French")


def test_shapes_tokens_and_subject_range(tiny, result):
    model, tok = tiny
    text = PROMPT.format(SUBJECT)
    ids = tok(text).input_ids
    assert len(result.tokens) == len(ids) and "".join(result.tokens) == text
    first, last = result.subject_range
    assert 0 < first <= last < len(ids) - 1
    assert "".join(result.tokens[first:last + 1]).strip() == SUBJECT
    assert set(result.effects) == set(KINDS)
    for k in KINDS:
        assert result.effects[k].shape == (3, len(ids))
        assert torch.isfinite(result.effects[k]).all()
        assert torch.allclose(result.indirect_effect(k), result.effects[k] - result.p_corrupt)
    assert result.answer_id == tok(" French", add_special_tokens=False).input_ids[0]
    assert 0 < result.p_clean < 1 and 0 < result.p_corrupt < 1
    assert result.p_corrupt != pytest.approx(result.p_clean, abs=1e-6)  # the noise does something


def test_restoring_last_hidden_state_at_last_token_gives_p_clean(result):
    assert result.effects["hidden"][-1, -1].item() == pytest.approx(result.p_clean, abs=1e-5)


def test_restoring_before_the_subject_changes_nothing(result):
    first, _ = result.subject_range
    for k in KINDS:
        ie = result.indirect_effect(k)[:, :first]  # (n_layers, first)
        assert ie.abs().max().item() < 1e-6, k


def _reference_p(model, ids, first, last, answer_id, restore=None, seed=0, noise=3.0):
    """p(answer) of ONE corrupted run, written out plainly (no batching, no TraceDict): noise on the
    subject's embeddings via inputs_embeds; restore = (module, t, clean (T, d)) sets one state back."""
    E = model.model.embed_tokens.weight.detach()
    eps = torch.randn(last - first + 1, E.shape[1], generator=torch.Generator().manual_seed(seed))
    x = E[ids].clone()[None]  # (1, T, d)
    x[0, first:last + 1] += eps * noise * E.std()
    handle = None
    if restore is not None:
        module, t, clean = restore

        def hook(mod, args, out):
            h = out[0] if isinstance(out, tuple) else out  # (1, T, d)
            h = h.clone()
            h[0, t] = clean[t]
            return (h, *out[1:]) if isinstance(out, tuple) else h
        handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return torch.softmax(model(inputs_embeds=x).logits[0, -1], -1)[answer_id].item()
    finally:
        if handle is not None:
            handle.remove()


def test_matches_an_unbatched_reference(tiny, result):
    model, tok = tiny
    ids = torch.tensor(tok(PROMPT.format(SUBJECT)).input_ids)
    first, last = result.subject_range
    assert _reference_p(model, ids, first, last, result.answer_id) == pytest.approx(result.p_corrupt, abs=1e-6)
    for kind, attr in (("hidden", None), ("mlp", "mlp"), ("attn", "self_attn")):
        for layer, t in ((0, last), (1, first), (2, len(ids) - 1), (1, last + 1)):
            block = model.model.layers[layer]
            module = block if attr is None else getattr(block, attr)
            seen = {}
            def record(mod, args, out):  # returns None: the output is kept as it is
                seen["h"] = (out[0] if isinstance(out, tuple) else out)[0].clone()  # (T, d)
            h = module.register_forward_hook(record)
            try:
                with torch.no_grad():
                    model(input_ids=ids[None])
            finally:
                h.remove()
            p = _reference_p(model, ids, first, last, result.answer_id, restore=(module, t, seen["h"]))
            assert result.effects[kind][layer, t].item() == pytest.approx(p, abs=1e-5), (kind, layer, t)


def test_noise_only_on_subject_tokens_and_same_in_every_row(tiny, result):
    model, tok = tiny
    seen = []  # inputs of block 0 = the (possibly corrupted) token embeddings, one entry per forward
    h = model.model.layers[0].register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    try:
        trace(model, tok, PROMPT, SUBJECT, "French", batch_size=16)
    finally:
        h.remove()
    clean, corrupted = seen[0][0], torch.cat(seen[1:])  # (T, d), (1 + rows, T, d)
    assert corrupted.shape[0] == 1 + 3 * 3 * clean.shape[0]
    first, last = result.subject_range
    changed = (corrupted - clean).abs().amax(-1) > 0  # (rows, T)
    expected = torch.zeros(clean.shape[0], dtype=torch.bool)
    expected[first:last + 1] = True
    assert (changed == expected).all()
    assert (corrupted == corrupted[:1]).all()  # one noise sample, shared by every row
    noise_std = (corrupted[0, first:last + 1] - clean[first:last + 1]).std().item()
    emb_std = model.model.embed_tokens.weight.std().item()
    assert noise_std == pytest.approx(3 * emb_std, rel=0.25)


def test_same_seed_same_result_and_batching_does_not_matter(tiny, result):
    model, tok = tiny
    again = trace(model, tok, PROMPT, SUBJECT, "French", batch_size=7)
    assert again.p_corrupt == pytest.approx(result.p_corrupt, abs=1e-6)
    for k in KINDS:
        assert torch.allclose(again.effects[k], result.effects[k], atol=1e-6)
    other = trace(model, tok, PROMPT, SUBJECT, "French", seed=1)
    assert other.p_corrupt != pytest.approx(result.p_corrupt, abs=1e-7)


def test_prompt_with_subject_text_answer_none_kinds_and_window(tiny, result):
    model, tok = tiny
    r = trace(model, tok, PROMPT.format(SUBJECT), SUBJECT, kinds=("mlp",), window=3)
    assert list(r.effects) == ["mlp"] and r.subject_range == result.subject_range
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([tok(PROMPT.format(SUBJECT)).input_ids])).logits[0, -1], -1)
    assert r.answer_id == int(probs.argmax()) and r.p_clean == pytest.approx(float(probs.max()), abs=1e-6)
    # a window restores more layers than one, so it differs; before the subject it is still zero
    r1 = trace(model, tok, PROMPT, SUBJECT, kinds=("mlp",))
    assert not torch.allclose(r.effects["mlp"], r1.effects["mlp"], atol=1e-7)
    assert r.indirect_effect("mlp")[:, :r.subject_range[0]].abs().max() < 1e-6
    # a window of 7 > 2·L - 1 layers centred on any layer covers all 3 layers: every row is the same
    wide = trace(model, tok, PROMPT, SUBJECT, kinds=("mlp",), window=7)
    assert torch.allclose(wide.effects["mlp"], wide.effects["mlp"][:1].expand(3, -1))


@pytest.mark.parametrize("prompt, subject, answer, match", [
    ("The mother tongue of Ann is", SUBJECT, "French", "does not occur"),
    (PROMPT, SUBJECT, "", "answer"),
    (PROMPT, SUBJECT, "   ", "answer"),
    (PROMPT, "", "French", "subject is empty"),
])
def test_bad_input_says_what_to_fix(tiny, prompt, subject, answer, match):
    model, tok = tiny
    with pytest.raises(ValueError, match=match):
        trace(model, tok, prompt, subject, answer)


def test_bad_kinds_and_window(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="kinds"):
        trace(model, tok, PROMPT, SUBJECT, "French", kinds=("mlp", "residual"))
    with pytest.raises(ValueError, match="window"):
        trace(model, tok, PROMPT, SUBJECT, "French", window=0)


def test_gpt2_tuple_outputs():
    """GPT-2's blocks and attention return tuples in some transformers versions: both are handled."""
    tok = EH.tiny_tokenizer()
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = T.GPT2LMHeadModel(cfg).eval()
    r = trace(model, tok, PROMPT, SUBJECT, "French")
    assert r.effects["attn"].shape == (2, len(r.tokens))
    assert r.effects["hidden"][-1, -1].item() == pytest.approx(r.p_clean, abs=1e-5)
    assert r.indirect_effect("attn")[:, :r.subject_range[0]].abs().max() < 1e-6


def test_average_indirect_effect_groups():
    eff = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7)  # (layers, tokens)
    a = TraceResult(tokens=list("abcdefg"), subject_range=(1, 3), answer="x", answer_id=0, p_clean=1.0,
                    p_corrupt=1.0, effects={"mlp": eff})
    b = TraceResult(tokens=list("abcde"), subject_range=(1, 2), answer="x", answer_id=0, p_clean=1.0,
                    p_corrupt=0.0, effects={"mlp": torch.zeros(2, 5)})
    g = a.grouped("mlp")  # IE = eff - 1
    assert g.shape == (len(GROUPS), 2)
    assert g[:, 0].tolist() == [0.0, 1.0, 2.0, 3.5, 5.0]  # first 1, middle 2, last 3, further 4-5, last 6
    assert math.isnan(b.grouped("mlp")[1, 0])  # two-token subject: no middle
    out = average_indirect_effect([a, b], "mlp")
    assert out["groups"] == list(GROUPS) and out["n_traces"] == 2 and out["p_corrupt"] == 0.5
    assert out["aie"][1].tolist() == g[1].tolist()  # NaN-aware mean: only `a` has a middle
    assert torch.allclose(out["aie"][0], g[0] / 2)
    with pytest.raises(ValueError, match="was not traced"):
        average_indirect_effect([a], "attn")


def test_tiny_world_fact():
    from alphaedit_lite.world import load_tiny_world

    model, tok, world = load_tiny_world(device="cpu")
    probe = world.probes("train")[0]
    r = trace(model, tok, probe.prompt, probe.fact.subject, probe.target)
    assert r.p_clean > 0.5
    assert "".join(r.tokens[r.subject_range[0]:r.subject_range[1] + 1]).replace(" ", "") == \
        probe.fact.subject.replace(" ", "")
    for k in KINDS:
        assert r.effects[k].shape == (4, len(r.tokens)) and torch.isfinite(r.effects[k]).all()
    assert r.effects["hidden"][-1, -1].item() == pytest.approx(r.p_clean, abs=1e-5)


def test_plot_trace_figure(result):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from alphaedit_lite.plots.viz import figure_to_png, plot_trace

    fig = plot_trace(result)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    first, last = result.subject_range
    assert [lab.endswith("*") for lab in labels] == [first <= i <= last for i in range(len(result.tokens))]
    assert fig.axes[0].images[0].get_array().shape == (len(result.tokens), 3)  # rows tokens, columns layers
    assert figure_to_png(fig).startswith(b"\x89PNG")
    aie = {k: average_indirect_effect([result], k) for k in KINDS}
    assert len(plot_trace(aie).axes) == 3 and len(plot_trace(aie["mlp"]).axes) == 1


def test_patch_subject_state(tiny):
    from alphaedit_lite.locate.tracing import patch_subject_state

    model, tok = tiny[0], tiny[1]
    same = [("The Eiffel Tower is in", "The Eiffel Tower", "The Eiffel Tower is in", "The Eiffel Tower")]
    assert patch_subject_state(model, tok, same, layer=0) == {"changed": 0.0, "became_b": 0.0, "n": 1}
    # the last block's output at the LAST token decides the answer: a subject that ends the prompt
    # and is swapped there takes the other prompt's answer with it
    pairs = [("We saw Rome", "Rome", "We saw Paris", "Paris"), ("We saw Paris", "Paris", "We saw Rome", "Rome")]
    from alphaedit_lite.model.arch import num_layers
    r = patch_subject_state(model, tok, pairs, layer=num_layers(model) - 1)
    clean = [int(model(input_ids=torch.tensor([tok(p).input_ids])).logits[0, -1].argmax()) for p, *_ in pairs]
    assert clean[0] != clean[1], "pick two prompts with different answers, or the check below says nothing"
    assert r["changed"] == 1.0 and r["became_b"] == 1.0
    with pytest.raises(ValueError, match="out of range"):
        patch_subject_state(model, tok, same, layer=99)
    with pytest.raises(ValueError, match="no pairs"):
        patch_subject_state(model, tok, [], layer=0)


def test_plot_trace_interactive_has_one_heatmap_per_kind_with_the_tokens(result):
    pytest.importorskip("plotly")
    from alphaedit_lite.plots.viz import plot_trace_interactive

    fig = plot_trace_interactive(result)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    assert fig.data[0].z.shape == (len(result.tokens), 3)                     # rows tokens, columns layers
    first, last = result.subject_range
    assert fig.layout.yaxis.ticktext[first].endswith("*") and not fig.layout.yaxis.ticktext[-1].endswith("*")
    assert "layer" in fig.data[1].hovertemplate
    aie = {k: average_indirect_effect([result], k) for k in KINDS}
    fig = plot_trace_interactive(aie, kinds=["mlp"])
    assert len(fig.data) == 1 and fig.data[0].z.shape == (len(GROUPS), 3)


def test_facts_the_model_knows_keeps_only_top1_answers():
    from alphaedit_lite.locate.tracing import facts_the_model_knows
    from alphaedit_lite.world import load_tiny_world

    model, tok, world = load_tiny_world(device="cpu")
    probes = world.probes("train")[:6]
    good = [(p.prompt, p.fact.subject, p.target) for p in probes]
    wrong = (probes[0].prompt, probes[0].fact.subject, next(p.target for p in probes if p.target != probes[0].target))
    got = facts_the_model_knows(model, tok, [wrong] + good, 3)
    assert got == good[:3]                                                     # the wrong answer was skipped
    assert len(facts_the_model_knows(model, tok, good[:2], 5)) == 2             # fewer when the facts run out
    with pytest.raises(ValueError, match="n must be"):
        facts_the_model_knows(model, tok, good, 0)
    lengths = [len(tok(p).input_ids) for p, _, _ in good]
    cap = sorted(lengths)[len(lengths) // 2]
    short = facts_the_model_knows(model, tok, good, 6, max_tokens=cap)
    assert len(set(lengths)) > 1, "the test needs prompts of different lengths"
    assert short == [g for g, n in zip(good, lengths) if n <= cap] and 0 < len(short) < len(good)
    with pytest.raises(ValueError, match="max_tokens must be"):
        facts_the_model_knows(model, tok, good, 1, max_tokens=0)


def test_world_swap_pairs_share_a_phrasing_and_differ_in_answer():
    from alphaedit_lite.world import load_tiny_world

    _, _, world = load_tiny_world(device="cpu")
    pairs = world.swap_pairs(20, seed=3)
    assert len(pairs) == 20 and pairs == world.swap_pairs(20, seed=3)
    by_prompt = {p.prompt: p for p in world.probes("train")}
    for pa, sa, pb, sb in pairs:
        a, b = by_prompt[pa], by_prompt[pb]
        assert a.fact.subject == sa and b.fact.subject == sb
        assert a.phrasing == b.phrasing and a.fact.relation_id == b.fact.relation_id and a.target != b.target
    with pytest.raises(ValueError, match="n must be"):
        world.swap_pairs(0)
