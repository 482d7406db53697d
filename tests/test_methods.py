"""Tests for alphaedit_lite.methods (FT, ROME, MEMIT, AlphaEdit, PRUNE, RECT) and alphaedit_lite.methods.hparams.

Fast tests use a tiny random Llama (editing_helpers): every method must raise the new target's
probability well above where it was and above the old target's, restore must be exact, and a
failure injected part way must leave every parameter bit for bit as it was. Tests marked ``model``
edit SmolLM2-135M and compare AlphaEdit's and MEMIT's disturbance of held-out corpus keys.
"""
from __future__ import annotations

import json

import pytest
import torch

import editing_helpers as EH
from alphaedit_lite.methods import hparams as HP
from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML
from alphaedit_lite.locate import stats as S
from alphaedit_lite.locate import corpus as SCO
from alphaedit_lite.model.hooks import Trace
from alphaedit_lite.methods import (APPLY, EditState, apply_alphaedit, apply_memit, apply_method, apply_prune,
                                    apply_rect)
from alphaedit_lite.methods.prune import restrain_singular_values
from alphaedit_lite.methods.rect import rect_mask
from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.core.verify import nullspace_residual, preserved_change

pytestmark = pytest.mark.usefixtures("single_thread")

REQS = EH.TINY_REQUESTS[:2]
COMMON = dict(layers=[1, 2], context_n_prefixes=2, context_prefix_tokens=5, v_num_grad_steps=15,
              clamp_norm_factor=4.0, mom2_n_samples=60, mom2_seq_len=64)


def tiny_hparams(method: str, **over):
    base = {
        "FT": dict(layers=[2], lr=5e-2, norm_constraint=0.05, num_steps=20),
        "ROME": {**COMMON, "layers": [2]},
        "MEMIT": {**COMMON, "mom2_update_weight": 1000.0},
        "AlphaEdit": {**COMMON, "nullspace_threshold": 0.05, "nullspace_mode": "energy", "L2": 0.5},
        "PRUNE": {**COMMON, "mom2_update_weight": 1000.0},
        "RECT": {**COMMON, "mom2_update_weight": 1000.0},
    }[method]
    return HP.from_dict(method, {**base, **over})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = EH.tiny_llama()
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:100_000], encoding="utf-8")
    import os
    old = os.environ.get("ALPHAEDIT_CACHE")
    os.environ["ALPHAEDIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        st = S.layer_stats(model, tok, [0, 1, 2, 3], corpus, n_tokens=3840, seq_len=64, progress=False)
        yield model, tok, st
    finally:
        if old is None:
            os.environ.pop("ALPHAEDIT_CACHE", None)
        else:
            os.environ["ALPHAEDIT_CACHE"] = old


# ------------------------------------------------------------------------------------------------
# hparams
# ------------------------------------------------------------------------------------------------
def test_shipped_hparams_load():
    have = HP.available_hparams()
    for method in ("MEMIT", "AlphaEdit", "ROME", "PRUNE", "RECT", "FT"):
        assert "smollm2-135m" in have[method]
        for model_name in have[method]:
            hp = HP.load_hparams(method, model_name)
            assert isinstance(hp, HP.METHODS[method])
    ae = {m: HP.load_hparams("AlphaEdit", m) for m in ("gpt2-xl", "gpt-j-6b", "llama3-8b")}
    assert ae["gpt2-xl"].layers == [13, 14, 15, 16, 17] and ae["gpt-j-6b"].layers == [3, 4, 5, 6, 7, 8]
    assert ae["llama3-8b"].layers == [4, 5, 6, 7, 8]
    assert all(h.nullspace_threshold == 2e-2 and h.L2 == 10 for h in ae.values())
    lam = {m: HP.load_hparams("MEMIT", m).mom2_update_weight for m in ("gpt2-xl", "gpt-j-6b", "llama3-8b")}
    assert lam == {"gpt2-xl": 20000, "gpt-j-6b": 15000, "llama3-8b": 15000}


def test_hparams_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"layers": [1], "v_lr": 0.1, "not_a_field": 3, "_comment": "ok"}))
    with pytest.raises(ValueError, match="not_a_field"):
        HP.load_hparams("MEMIT", p)
    with pytest.raises(ValueError, match="unknown method"):
        HP.load_hparams("SERAC", "smollm2-135m")
    with pytest.raises(ValueError, match="no MEMIT hyper-parameters"):
        HP.load_hparams("MEMIT", "no-such-model")
    with pytest.raises(ValueError, match="exactly one layer"):
        HP.from_dict("ROME", {"layers": [1, 2]})
    hp = HP.load_hparams("memit", "smollm2-135m", layers=[2, 3])
    assert hp.layers == [2, 3]
    with pytest.raises(ValueError, match="no field"):
        hp.replace(lamda=3)


# ------------------------------------------------------------------------------------------------
# Every method edits, restores exactly
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(APPLY))
def test_method_edits_and_restores(tiny, method):
    model, tok, st = tiny
    snap = EH.all_params(model)
    before = EH.new_vs_old(model, tok, REQS)
    res = apply_method(method, model, tok, REQS, tiny_hparams(method), stats=st, progress=False)
    after = EH.new_vs_old(model, tok, REQS)
    for (n0, _), (n1, o1) in zip(before, after):
        assert n1 > o1, (method, before, after)            # the new target beats the old one
        assert n1 > n0 + 0.5, (method, before, after)       # and gained at least 0.5 nats
    spec = M.arch_spec(model)
    expected = tiny_hparams(method).layers
    assert sorted(res.layers.values()) == expected
    for name, d in res.deltas.items():
        layer = res.layers[name]
        assert name == spec.rewrite_name(layer)
        assert d.dtype == torch.float32 and d.shape == (48, 96)
        W_now = M.get_rewrite_weight(model, layer)
        assert torch.allclose(W_now, res.original[name] + d, atol=1e-6)    # Δ is what was applied
    assert len(res.targets) == 2 and all(t["forward"] >= 1 for t in res.targets)
    res.restore(model)
    assert EH.same_params(model, snap)                       # bit for bit


@pytest.mark.parametrize("phase", ["compute", "apply"])
@pytest.mark.parametrize("method", ["MEMIT", "AlphaEdit", "ROME"])
def test_failure_part_way_leaves_weights_untouched(tiny, monkeypatch, method, phase):
    model, tok, st = tiny
    hp = tiny_hparams(method, layers=[0, 1, 2, 3]) if method != "ROME" else tiny_hparams(method)
    snap = EH.all_params(model)
    real = M.apply_weight_delta
    n_layers = len(hp.layers)
    # compute phase: each Δ is applied temporarily (ROME: once per request, MEMIT-family: once per
    # layer); apply phase: once per layer for real. Fail on the 2nd temporary application, or on
    # the 3rd layer (ROME: its only layer) of the real one.
    n_compute = len(REQS) if method == "ROME" else n_layers
    fail_at = 2 if phase == "compute" else n_compute + min(3, n_layers)
    calls = {"n": 0}

    def flaky(model_, layer, delta):
        calls["n"] += 1
        if calls["n"] == fail_at:
            real(model_, layer, delta)                        # half-done work must be undone too
            raise RuntimeError("injected failure")
        return real(model_, layer, delta)
    monkeypatch.setattr(M, "apply_weight_delta", flaky)
    state = EditState()
    with pytest.raises(RuntimeError, match="injected"):
        APPLY[method](model, tok, REQS, hp, stats=st, state=state, progress=False)
    assert calls["n"] == fail_at
    assert EH.same_params(model, snap)
    assert state.n_calls == 0 and not state.prev_cov          # nothing recorded for a failed call


def test_bad_inputs(tiny):
    model, tok, st = tiny
    with pytest.raises(ValueError, match="out of range"):
        apply_memit(model, tok, REQS, tiny_hparams("MEMIT", layers=[2, 9]), stats=st)
    import transformers as T
    cfg = T.LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=True)
    wrong = T.LlamaForCausalLM(cfg).eval()                 # MLP width 64, the statistics have 96
    with pytest.raises(ValueError, match="another model"):
        apply_memit(wrong, tok, REQS, tiny_hparams("MEMIT"), stats=st)
    with pytest.raises(ValueError, match="layers"):
        apply_memit(model, tok, REQS, tiny_hparams("MEMIT"), stats={1: st[1]})
    with pytest.raises(TypeError, match="MEMITHParams"):
        apply_memit(model, tok, REQS, tiny_hparams("FT"), stats=st)
    with pytest.raises(ValueError, match="unknown method"):
        apply_method("KN", model, tok, REQS, tiny_hparams("MEMIT"))


# ------------------------------------------------------------------------------------------------
# AlphaEdit specifics
# ------------------------------------------------------------------------------------------------
def test_alphaedit_update_lies_in_the_null_space(tiny):
    model, tok, st = tiny
    hp = tiny_hparams("AlphaEdit")
    res = apply_alphaedit(model, tok, REQS, hp, stats=st, progress=False)
    pjs = S.projectors({x: st[x] for x in hp.layers}, hp.nullspace_threshold, hp.nullspace_mode)
    for name, d in res.deltas.items():
        layer = res.layers[name]
        assert nullspace_residual(d, pjs[layer].P) < 1e-5
        # in-sample guarantee: mean ‖Δk‖² over the keys of C0 = tr(Δ C0 Δᵀ) ≤ ‖Δ‖₂² Σ_kept λ
        C0 = st[layer].cov
        D = d.double()
        lhs = float(torch.trace(D @ C0 @ D.T))
        assert lhs <= float(torch.linalg.matrix_norm(D, 2)) ** 2 * pjs[layer].rms_leak ** 2 * (1 + 1e-6)
    res.restore(model)


@pytest.mark.parametrize("method", ["MEMIT", "PRUNE", "RECT"])
def test_projection_switch(tiny, method):
    model, tok, st = tiny
    hp = tiny_hparams(method, project=True, nullspace_threshold=0.05, nullspace_mode="energy")
    res = APPLY[method](model, tok, REQS, hp, stats=st, progress=False)
    assert res.method == f"{method}+P"
    pjs = S.projectors({x: st[x] for x in hp.layers}, 0.05, "energy")
    for name, d in res.deltas.items():
        assert nullspace_residual(d, pjs[res.layers[name]].P) < 1e-5
    res.restore(model)


def _first_keys(model, tok, reqs, layers):
    from alphaedit_lite.locate.keys import compute_keys
    return compute_keys(model, tok, reqs, layers, ["{}"])


def test_sequential_alphaedit_with_cache(tiny):
    model, tok, st = tiny
    snap = EH.all_params(model)
    hp = tiny_hparams("AlphaEdit")
    state = EditState()
    results = []
    for j in range(3):
        req = EH.TINY_REQUESTS[j]
        before = EH.new_vs_old(model, tok, [req])[0]
        res = apply_alphaedit(model, tok, [req], hp, stats=st, state=state, progress=False)
        after = EH.new_vs_old(model, tok, [req])[0]
        assert after[0] > after[1] and after[0] > before[0] + 0.5
        results.append(res)
        assert state.n_calls == j + 1 and state.n_requests == j + 1
        assert set(state.prev_cov) == set(hp.layers)
    assert float(torch.trace(state.prev_cov[2])) > 0
    # the cache changes the solution: without it the third edit disturbs earlier keys more
    Kp = state.prev_cov[2]
    d_with = results[2].deltas["model.layers.2.mlp.down_proj"].double()
    for r in reversed(results):
        r.restore(model)
    assert EH.same_params(model, snap)
    # replay the first two edits, then the third one without the cache
    st2 = EditState()
    r1 = apply_alphaedit(model, tok, [EH.TINY_REQUESTS[0]], hp, stats=st, state=st2, progress=False)
    r2 = apply_alphaedit(model, tok, [EH.TINY_REQUESTS[1]], hp, stats=st, state=st2, progress=False)
    Kp_two = st2.prev_cov[2]
    r3 = apply_alphaedit(model, tok, [EH.TINY_REQUESTS[2]], hp, stats=st, state=None, progress=False)
    d_without = r3.deltas["model.layers.2.mlp.down_proj"].double()
    for r in (r3, r2, r1):
        r.restore(model)
    assert EH.same_params(model, snap)
    disturb = lambda d: float(torch.trace(d @ Kp_two @ d.T))            # Σ_p ‖Δ k_p‖²
    assert disturb(d_with) < disturb(d_without)
    # the replay is deterministic, so the third call added exactly one key: Kp − Kp_two = k3 k3ᵀ
    lam = torch.linalg.eigvalsh(Kp - Kp_two)
    assert float(lam.min()) > -1e-9 * float(lam.max())
    assert int((lam > 1e-6 * float(lam.max())).sum()) == 1


# ------------------------------------------------------------------------------------------------
# PRUNE and RECT pieces
# ------------------------------------------------------------------------------------------------
def test_restrain_singular_values():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(20, 5, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(30, 5, generator=g, dtype=torch.float64))
    s = torch.tensor([50.0, 20.0, 8.0, 3.0, 1.0], dtype=torch.float64)
    D = (U * s) @ V.T
    out = restrain_singular_values(D, sigma_bar=5.0)
    s2 = torch.linalg.svdvals(out)
    import math
    expect = [math.log(50) + 5 - math.log(5), math.log(20) + 5 - math.log(5), math.log(8) + 5 - math.log(5), 3.0, 1.0]
    assert torch.allclose(s2[:5], torch.tensor(expect, dtype=torch.float64), atol=1e-9)
    assert float(s2[5:].abs().max()) < 1e-9
    assert torch.allclose(out @ V @ V.T, out, atol=1e-9)              # same singular vectors
    assert torch.equal(restrain_singular_values(D, sigma_bar=100.0), D)


def test_prune_restrains_the_accumulated_update(tiny):
    model, tok, st = tiny
    hp = tiny_hparams("PRUNE", prune_log_base=100.0)    # F(σ) < σ needs σ > σ̄ > 1 / ln b
    plain = apply_memit(model, tok, REQS, tiny_hparams("MEMIT"), stats=st, progress=False)
    plain.restore(model)
    state = EditState()
    state.sigma_max = {1: 0.3, 2: 0.3}                    # pretend W's spectrum is small: force the restraint
    res = apply_prune(model, tok, REQS, hp, stats=st, state=state, progress=False)
    for name in res.deltas:
        assert float(res.deltas[name].norm()) < float(plain.deltas[name].norm())
        s = torch.linalg.svdvals(res.deltas[name].double())
        assert float(s.max()) < float(torch.linalg.svdvals(plain.deltas[name].double()).max())
    for layer in (1, 2):
        assert torch.allclose(state.accumulated[layer].float(), res.deltas[f"model.layers.{layer}.mlp.down_proj"])
    res.restore(model)


def test_rect_mask_and_sparsity(tiny):
    W = torch.tensor([[1.0, 10.0], [0.1, 2.0]])
    D = torch.tensor([[0.5, 0.5], [0.5, 0.1]])               # relative changes 0.5, 0.05, 5, 0.05
    assert rect_mask(D, W, 50).tolist() == [[True, False], [True, False]]
    assert rect_mask(D, W, 25).tolist() == [[False, False], [True, False]]
    model, tok, st = tiny
    res = apply_rect(model, tok, REQS, tiny_hparams("RECT", rect_top_percent=20), stats=st, progress=False)
    for d in res.deltas.values():
        frac = float((d != 0).float().mean())
        assert 0.15 < frac <= 0.2 + 1e-3
    res.restore(model)


# ------------------------------------------------------------------------------------------------
# SmolLM2: AlphaEdit vs MEMIT on held-out corpus keys of real layers
# ------------------------------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared WikiText-2 file")
def test_smollm2_alphaedit_vs_memit_on_heldout_keys():
    """Edits with the shipped SmolLM2 hyper-parameters, but statistics of 25,600 WikiText-2 tokens, not
    102,400 (benchmarks/README.md's P table: 35 s instead of 141 s, held-out ‖PK‖/‖K‖ 0.511 vs 0.489).

    Both edits succeed; AlphaEdit's update lies in P's range, so on held-out keys
    ‖ΔK0‖ ≤ ‖Δ‖₂ ‖P K0‖; P generalises to held-out text (its leak ‖PK0‖/‖K0‖ matches the one
    computed from the statistics) and leaks far less than a random subspace of the same rank.
    NOT asserted, because it does not hold on SmolLM2: that AlphaEdit moves held-out outputs less
    than MEMIT for one batch of edits. SmolLM2's keys have no near-null space (C0's eigenvalues
    span ~2.5 decades), so the paper's threshold 2e-2 keeps 64-81 % of the directions, and
    MEMIT's λ = 15000 penalises ‖ΔK0‖ directly; the measured ratios are printed.
    """
    from alphaedit_lite.locate.keys import context_templates
    from alphaedit_lite.methods.common import prepare_requests
    from alphaedit_lite.locate.targets import compute_targets

    model, tok = ML.load_model("smollm2-135m", device="cpu")
    hp_m = HP.load_hparams("MEMIT", "smollm2-135m", context_n_prefixes=2, mom2_n_samples=200)
    hp_a = HP.load_hparams("AlphaEdit", "smollm2-135m", context_n_prefixes=2, mom2_n_samples=200)
    assert hp_a.mom2_n_tokens == 25_600
    layers = hp_a.layers
    st = S.layer_stats(model, tok, layers, hp_a.mom2_dataset, hp_a.mom2_n_tokens, hp_a.mom2_seq_len, progress=False)
    # held-out keys: the next 2048 tokens of the same token stream, never seen by the statistics
    n = hp_a.mom2_n_tokens
    _, ids, mask = SCO.corpus_tokens(tok, hp_a.mom2_dataset, n + 2048, hp_a.mom2_seq_len, progress=False)
    ids, mask = ids[n // hp_a.mom2_seq_len:], mask[n // hp_a.mom2_seq_len:]
    test_layers = (layers[0], layers[-1])
    heldout = {}
    for layer in test_layers:
        with torch.no_grad(), Trace(model, M.arch_spec(model).rewrite_name(layer), retain_input=True, stop=True) as tr:
            model(input_ids=ids, attention_mask=mask)
        heldout[layer] = tr.input.reshape(-1, tr.input.shape[-1])[mask.reshape(-1).bool()].T.double()
    reqs = EH.REQUESTS[:2]
    templates = context_templates(model, tok, 2, hp_a.context_prefix_tokens)
    targets = compute_targets(model, tok, prepare_requests(reqs), layers[-1], templates,
                              v_num_grad_steps=hp_a.v_num_grad_steps, v_lr=hp_a.v_lr, v_dtype=hp_a.v_dtype)
    pjs = S.projectors(st, hp_a.nullspace_threshold, hp_a.nullspace_mode)
    snap = EH.all_params(model)
    before = EH.new_vs_old(model, tok, reqs)
    leak = {}
    for name, fn, hp in (("MEMIT", apply_memit, hp_m), ("AlphaEdit", apply_alphaedit, hp_a)):
        res = fn(model, tok, reqs, hp, stats=st, targets=targets, templates=templates, progress=False)
        for (n0, _), (n1, o1) in zip(before, EH.new_vs_old(model, tok, reqs)):
            assert n1 > o1 and n1 > n0 + 1.0, name
        leak[name] = {}
        for layer in test_layers:
            d = res.deltas[f"model.layers.{layer}.mlp.down_proj"].double()
            K0 = heldout[layer]
            leak[name][layer] = preserved_change(d, K0)           # ‖ΔK0‖ / (‖Δ‖ ‖K0‖)
            if name == "AlphaEdit":
                P = pjs[layer].P
                assert nullspace_residual(d, P) < 1e-6
                PK = torch.linalg.matrix_norm(P @ K0)
                assert torch.linalg.matrix_norm(d @ K0) <= torch.linalg.matrix_norm(d, 2) * PK * (1 + 1e-9)
                # the projector generalises: held-out keys leak about as much as the keys that built it
                held_leak = float(PK / torch.linalg.matrix_norm(K0))
                assert abs(held_leak - pjs[layer].relative_leak) < 0.25 * pjs[layer].relative_leak
                rank, d_in = pjs[layer].kept_rank, P.shape[0]
                assert held_leak < 0.8 * (rank / d_in) ** 0.5      # a random rank-r subspace leaks √(r/d)
            W = res.original[f"model.layers.{layer}.mlp.down_proj"]
            leak[name][layer] = (leak[name][layer], preserved_change(d, K0, W))   # and ‖ΔK0‖ / ‖WK0‖
        res.restore(model)
        assert EH.same_params(model, snap)
    print("held-out (‖ΔK0‖/(‖Δ‖‖K0‖), ‖ΔK0‖/‖WK0‖) per layer:", leak)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared WikiText-2 file")
@pytest.mark.parametrize("method", list(APPLY))
def test_smollm2_every_method_edits(method):
    """Each method with the shipped SmolLM2 hyper-parameters, for speed with fewer context prefixes and the
    held-out test's statistics (25,600 tokens: computed once, then read from the cache)."""
    model, tok = ML.load_model("smollm2-135m", device="cpu")
    over = {} if method == "FT" else {"context_n_prefixes": 4, "mom2_n_samples": 200}
    hp = HP.load_hparams(method, "smollm2-135m", **over)
    req = EH.REQUESTS[:1]
    snap = EH.all_params(model)
    (n0, o0), = EH.new_vs_old(model, tok, req)
    res = apply_method(method, model, tok, req, hp, progress=False)
    (n1, o1), = EH.new_vs_old(model, tok, req)
    assert o0 > n0 and n1 > o1 and n1 > n0 + 2.0, (method, (n0, o0), (n1, o1))
    res.restore(model)
    assert EH.same_params(model, snap)
