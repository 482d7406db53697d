"""Tests for alphaedit_lite.locate.keys (K1, context templates, subject positions) and alphaedit_lite.locate.targets
(the truncated forward and the δ optimisation)."""
from __future__ import annotations

import pytest
import torch
import transformers as T

import editing_helpers as EH
from alphaedit_lite.locate import keys as K
from alphaedit_lite.locate import targets as TG
from alphaedit_lite.model.hooks import Trace
from alphaedit_lite.model.arch import arch_spec
from alphaedit_lite.locate.requests import EditRequest

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny():
    return EH.tiny_llama()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------------
# Subject positions
# ------------------------------------------------------------------------------------------------
def test_subject_last_token_depends_on_context(tiny):
    _, tok = tiny
    # at the start of the text the subject has no leading space, after a prefix it has one
    a = K.locate_subject(tok, "The Eiffel Tower is located in", "The Eiffel Tower")
    b = K.locate_subject(tok, "I saw it. The Eiffel Tower is located in", "The Eiffel Tower")
    for s, text in ((a, a.text), (b, b.text)):
        end = text.index("Tower") + len("Tower")
        assert s.ids == tok(text).input_ids
        assert tok.decode(s.ids[: s.subject_last + 1]) == text[:end]     # ends exactly at the subject's end
        assert tok.decode(s.ids[s.subject_last + 1:]) == text[end:]
    assert b.subject_last > a.subject_last


def test_subject_that_merges_with_following_text_uses_offsets(tiny):
    _, tok = tiny
    # the subject ends inside a token ("Fre" | "ren"): the prefix's tokens ("F", "re") are not a prefix
    # of the sentence's tokens ("F", "ren", ...), so the token holding the subject's last character wins
    assert tok.tokenize("Frenchman")[:2] == ["F", "ren"] and tok.tokenize("Fre") == ["F", "re"]
    s = K.locate_subject(tok, "Frenchman", "Fre")
    assert s.subject_last == 1
    for text, subj in (("The Parisian life", "The Paris"), ("I saw The Eiffel Tower", "The Eiffel Tower")):
        s = K.locate_subject(tok, text, subj)
        assert s.subject_last == tok(text).char_to_token(text.index(subj) + len(subj) - 1)


def test_subject_missing_names_the_record(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match=r"request #0.*does not occur"):
        K.locate_subject(tok, "Nothing here", "Eiffel", where="request #0 (case_id=7)")
    with pytest.raises(ValueError, match="case_id=7"):   # a prompt without the subject's slot
        K.compute_keys(tiny[0], tok, [{"prompt": "Where is it?", "subject": "Eiffel", "target_new": "Rome",
                                       "case_id": 7}], [0])


# ------------------------------------------------------------------------------------------------
# Context templates
# ------------------------------------------------------------------------------------------------
def test_context_templates_seeded_and_cached(tiny, cache, monkeypatch):
    model, tok = tiny
    tpl = K.context_templates(model, tok, n_prefixes=4, prefix_tokens=6, seed=0)
    assert len(tpl) == 5 and tpl[0] == "{}"
    for t in tpl[1:]:
        assert t.endswith(". {}") and t.count("{") == 1 and "\n" not in t
    assert K.context_templates(model, tok, 4, 6, seed=0, cache=False) == tpl     # seeded
    monkeypatch.setattr(K, "sample_from_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("resampled")))
    assert K.context_templates(model, tok, 4, 6, seed=0) == tpl                  # from the cache file
    assert K.context_templates(model, tok, 0, 6) == ["{}"]


# ------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------
def test_keys_match_unpadded_single_sentences(tiny):
    model, tok = tiny
    templates = ["{}", "A short one. {}", "A much longer context prefix than the other one. {}"]
    reqs = EH.TINY_REQUESTS[:2]
    keys = K.compute_keys(model, tok, reqs, [1, 3], templates)
    assert set(keys) == {1, 3} and keys[1].shape == (96, 2)
    w = torch.tensor([0.5, 0.25, 0.25])                    # MEMIT: "{}" half, the prefixed group half
    for layer in (1, 3):
        name = arch_spec(model).rewrite_name(layer)
        for j, r in enumerate(reqs):
            req = EditRequest(prompt=r["prompt"], subject=r["subject"], target_new=r["target_new"]["str"])
            ks = []
            for t in templates:
                text, start = K._fill(t, req)
                s = K.locate_subject(tok, text, req.subject, subject_start=start)
                with torch.no_grad(), Trace(model, name, retain_input=True) as tr:
                    model(input_ids=torch.tensor([s.ids]))
                ks.append(tr.input[0, s.subject_last])
            ref = (torch.stack(ks) * w[:, None]).sum(0)
            assert torch.allclose(keys[layer][:, j], ref, atol=1e-5, rtol=1e-4)
    uni = K.compute_keys(model, tok, reqs, [1], templates, weighting="uniform")[1]
    assert not torch.allclose(uni, keys[1])


def test_keys_and_values_value_is_plain_prompt_block_output(tiny):
    model, tok = tiny
    _, H = K.keys_and_values(model, tok, EH.TINY_REQUESTS[:1], [0], ["{}", "Hello there. {}"], value_layer=2)
    r = EH.TINY_REQUESTS[0]
    s = K.locate_subject(tok, r["prompt"].replace("{}", r["subject"]), r["subject"])
    with torch.no_grad(), Trace(model, "model.layers.2") as tr:
        model(input_ids=torch.tensor([s.ids]))
    assert torch.allclose(H[:, 0], tr.output[0, s.subject_last], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Truncated forward
# ------------------------------------------------------------------------------------------------
def _gpt2_tiny(tok):
    cfg = T.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=len(tok), n_positions=128,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_truncated_forward_equals_full_forward(tiny, family):
    model, tok = tiny
    if family == "gpt2":
        model = _gpt2_tiny(tok)
    texts = ["The mother tongue of Danielle Darrieux", "Paris", "The Eiffel Tower is located in the city of"]
    ids, mask = K.right_pad([tok(t).input_ids for t in texts], tok.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
    rows = torch.tensor([0, 0, 1, 2, 2])
    pos = torch.tensor([0, 5, 0, 3, 9])
    n = model.config.num_hidden_layers
    for start in range(n + 1):
        run = TG.ResidualRunner(model, ids, mask, start)
        with torch.no_grad():
            got = run.logits_at(run.hidden, rows, pos)
            assert torch.allclose(got, full[rows, pos], atol=1e-5, rtol=1e-5), start
            sub = torch.tensor([2, 0])                            # a subset of the rows, as the optimiser uses
            got2 = run.logits_at(run.hidden[sub], torch.tensor([0, 1]), torch.tensor([9, 5]), rows=sub)
            assert torch.allclose(got2, full[[2, 0], [9, 5]], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------
TEMPLATES = ["{}", "Some words first. {}"]


def test_targets_raise_probability_and_respect_clamp(tiny):
    model, tok = tiny
    res = TG.compute_targets(model, tok, EH.TINY_REQUESTS[:2], 1, TEMPLATES, v_num_grad_steps=15, v_lr=0.5,
                             clamp_norm_factor=2.0)
    assert res.z.shape == (48, 2) and res.layer == 1
    assert torch.allclose(res.z, res.h + res.delta)
    for j, st in enumerate(res.stats):
        assert st["forward"] == st["steps"] and st["backward"] in (st["steps"] - 1, st["steps"])
        assert st["delta_norm"] <= 2.0 * st["h_norm"] * (1 + 1e-5)          # MEMIT's clamp
        assert st["prob"] > 0.05                                            # from ~1/600 before
    # z really makes the model say the target: put it at the subject's last token of the plain prompt
    for j, r in enumerate(EH.TINY_REQUESTS[:2]):
        s = K.locate_subject(tok, r["prompt"].replace("{}", r["subject"]), r["subject"])
        tgt = TG.target_token_ids(tok, r["target_new"]["str"])[0]

        def put(out, name, j=j, s=s):
            out = out.clone()
            out[0, s.subject_last] = res.z[:, j]
            return out
        with torch.no_grad():
            before = torch.softmax(model(input_ids=torch.tensor([s.ids])).logits[0, -1], -1)[tgt]
            with Trace(model, "model.layers.1", edit_output=put):
                after = torch.softmax(model(input_ids=torch.tensor([s.ids])).logits[0, -1], -1)[tgt]
        assert after > 10 * before


def test_targets_batched_equal_separate(tiny):
    model, tok = tiny
    kw = dict(v_num_grad_steps=6, v_lr=0.5, clamp_norm_factor=4.0)
    both = TG.compute_targets(model, tok, EH.TINY_REQUESTS[:2], 2, TEMPLATES, **kw)
    for j in range(2):
        one = TG.compute_targets(model, tok, [EH.TINY_REQUESTS[j]], 2, TEMPLATES, **kw)
        assert torch.allclose(both.delta[:, j], one.delta[:, 0], atol=1e-4, rtol=1e-3)
        assert both.stats[j]["steps"] == one.stats[0]["steps"]


def test_targets_early_stop_per_request(tiny):
    model, tok = tiny
    res = TG.compute_targets(model, tok, EH.TINY_REQUESTS[:2], 2, TEMPLATES, v_num_grad_steps=10,
                             v_early_stop_loss=1e9)
    for st in res.stats:
        assert st["stopped_early"] and st["steps"] == 1 and st["forward"] == 1 and st["backward"] == 0
    assert torch.count_nonzero(res.delta) == 0


def test_targets_leave_no_gradients_on_the_model(tiny):
    model, tok = tiny
    flags = [p.requires_grad for p in model.parameters()]
    TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 1, TEMPLATES, v_num_grad_steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags


# KL on the subject's other relations (kl_relation_prompts)
RELATION_PROMPTS = {"P103": "The mother tongue of {} is", "P19": "{} was born in the city of",
                    "P31": "{} is a kind of"}


def _with_relation(r: dict, rel: str) -> dict:
    return {**r, "relation_id": rel}


def _answer_distributions(model, tok, z, layer, request, templates):
    """Next-token distributions at the last token of each template, with z put at the subject's last token."""
    out = []
    for t in templates:
        s = K.locate_subject(tok, t.replace("{}", request["subject"]), request["subject"])

        def put(o, name, s=s):
            o = o.clone()
            o[0, s.subject_last] = z
            return o
        with torch.no_grad(), Trace(model, f"model.layers.{layer}", edit_output=put):
            out.append(torch.log_softmax(model(input_ids=torch.tensor([s.ids])).logits[0, -1], -1))
    return out


def test_relation_kl_keeps_the_subjects_other_relations(tiny):
    model, tok = tiny
    req = _with_relation(EH.TINY_REQUESTS[1], "P103")          # the mother tongue of Danielle Darrieux
    others = [t for rel, t in RELATION_PROMPTS.items() if rel != "P103"]
    kw = dict(v_num_grad_steps=20, v_lr=0.5, clamp_norm_factor=4.0, v_early_stop_loss=0.0)
    free = TG.compute_targets(model, tok, [req], 0, TEMPLATES, kl_factor=0.0, **kw)
    # a random model's other answers hardly depend on δ, so only a large weight shows the term's pull
    kept = TG.compute_targets(model, tok, [req], 0, TEMPLATES, kl_factor=1000.0, kl_relation_prompts=RELATION_PROMPTS, **kw)
    assert kept.stats[0]["kl"] > 0
    base = _answer_distributions(model, tok, kept.h[:, 0], 0, req, others)

    def kl_to_base(z):
        return sum(float((lp.exp() * (lp - b)).sum()) for lp, b in zip(_answer_distributions(model, tok, z, 0, req, others), base))
    # the other relations' answers (read at each prompt's LAST token) move less with the KL term
    # (measured: 0.0021 against 0.0048); the trained organism's test shows the effect at the real weight
    assert kl_to_base(kept.z[:, 0]) < 0.6 * kl_to_base(free.z[:, 0])


def test_relation_kl_skips_the_requests_own_relation(tiny):
    model, tok = tiny
    req = _with_relation(EH.TINY_REQUESTS[1], "P103")
    kw = dict(v_num_grad_steps=6, v_lr=0.5, clamp_norm_factor=4.0)
    own_only = TG.compute_targets(model, tok, [req], 2, TEMPLATES, kl_factor=10.0,
                                  kl_relation_prompts={"P103": RELATION_PROMPTS["P103"]}, **kw)
    no_kl = TG.compute_targets(model, tok, [req], 2, TEMPLATES, kl_factor=0.0, **kw)
    assert own_only.stats[0]["kl"] == 0.0
    assert torch.allclose(own_only.delta, no_kl.delta, atol=1e-5, rtol=1e-4)


def test_relation_kl_refuses_requests_without_relation_and_bad_templates(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="no relation_id"):
        TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 2, TEMPLATES, kl_relation_prompts=RELATION_PROMPTS)
    with pytest.raises(ValueError, match="exactly one"):
        TG.compute_targets(model, tok, [_with_relation(EH.TINY_REQUESTS[1], "P103")], 2, TEMPLATES,
                           kl_relation_prompts={"P19": "born in"})


def test_targets_bad_layer(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="out of range"):
        TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 4, TEMPLATES)


# ------------------------------------------------------------------------------------------------
# SmolLM2
# ------------------------------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.slow
def test_smollm2_targets(cache):
    from alphaedit_lite.model.loading import load_model

    model, tok = load_model("smollm2-135m", device="cpu")
    req = EH.REQUESTS[0]
    res = TG.compute_targets(model, tok, [req], 6, ["{}", "Yesterday I read a book. {}"], v_num_grad_steps=12)
    st = res.stats[0]
    assert st["prob"] > 0.5, st
    assert st["forward"] <= 12
