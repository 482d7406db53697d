"""Tests of the fast paths of the editing engine (issue 6): each must give what the plain path gives.

- :class:`alphaedit_lite.locate.targets.SuffixRunner` (prefix reuse in the target optimisation) against
  the model's own forward pass, and ``compute_targets`` with and without it;
- :class:`alphaedit_lite.locate.keys.KeyReader` (blocks below the first edited layer run once) against
  :func:`alphaedit_lite.locate.keys.keys_and_values`;
- the low-rank (Woodbury) solvers against :func:`alphaedit_lite.core.solvers.alphaedit_delta` /
  :func:`~alphaedit_lite.core.solvers.memit_delta`, and the ``EditState`` bookkeeping behind them;
- ``benchmarks/bench_vs_reference.py --smoke`` runs (slow, needs SmolLM2).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as T

import editing_helpers as EH
from alphaedit_lite.methods import hparams as HP
from alphaedit_lite.locate import keys as K
from alphaedit_lite.model import arch as M
from alphaedit_lite.locate import stats as S
from alphaedit_lite.locate import targets as TG
from alphaedit_lite.methods import EditState, apply_alphaedit, apply_memit
from alphaedit_lite.core.solvers import lowrank_alphaedit_delta, lowrank_memit_delta
from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.locate.requests import as_request
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ["{}", "Some words first. {}", "A longer context prefix than that. {}"]
# the subject opens the prompt, so the KL row "{} is a" of a one-token subject has nothing before δ
EXTRA = {"prompt": "{} is the capital of", "subject": "Paris", "target_new": {"str": "Spain"},
         "target_true": {"str": "France"}, "case_id": 103}


@pytest.fixture(scope="module")
def tiny():
    return EH.tiny_llama()


def _gpt2(tok):
    cfg = T.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=len(tok), n_positions=128,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(cfg).eval()


def _model(tiny, family):
    model, tok = tiny
    return (model if family == "llama" else _gpt2(tok)), tok


# ------------------------------------------------------------------------------------------------
# SuffixRunner
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_suffix_runner_matches_full_forward(tiny, family):
    model, tok = _model(tiny, family)
    texts = ["The mother tongue of Danielle Darrieux is", "Paris", "The Eiffel Tower is located in the city of"]
    ids, mask = K.right_pad([tok(t).input_ids for t in texts], tok.pad_token_id)
    lengths = mask.sum(1)
    offsets = torch.tensor([3, 0, int(lengths[2]) - 2])                # row 1: nothing before the split
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
    n = model.config.num_hidden_layers
    for start in range(n):
        run = TG.SuffixRunner(model, ids, mask, offsets, start)
        assert run.hidden.shape[:2] == (3, int((lengths - offsets).max()))
        rows = torch.tensor([r for r in range(3) for _ in range(int(lengths[r] - offsets[r]))])
        pos = torch.cat([torch.arange(int(lengths[r] - offsets[r])) for r in range(3)])
        with torch.no_grad():
            got = run.logits_at(run.hidden, rows, pos)
            assert torch.allclose(got, full[rows, pos + offsets[rows]], atol=1e-5, rtol=1e-4), start
            sub = torch.tensor([2, 0])                                 # a subset of rows, as the optimiser runs
            got2 = run.logits_at(run.hidden[sub], torch.tensor([0, 1]), torch.tensor([1, 0]), rows=sub)
            want = full[[2, 0], [int(offsets[2]) + 1, int(offsets[0])]]
            assert torch.allclose(got2, want, atol=1e-5, rtol=1e-4)
            # what happens at the split position reaches the later positions (through the cached prefix)
            q0 = int(lengths[0] - offsets[0])                          # row 0's entries come first in `got`
            h = run.hidden.clone()
            h[0, 0] += 1.0
            moved = run.logits_at(h, torch.tensor([0]), torch.tensor([q0 - 1]))
            assert not torch.allclose(moved, got[q0 - 1][None])


def test_suffix_runner_bad_offsets(tiny):
    model, tok = tiny
    ids, mask = K.right_pad([tok("Paris is nice").input_ids], tok.pad_token_id)
    with pytest.raises(ValueError, match="offsets"):
        TG.SuffixRunner(model, ids, mask, [int(mask.sum())], 1)        # past the last real token
    with pytest.raises(ValueError, match="start"):
        TG.SuffixRunner(model, ids, mask, [0], 4)                      # no block 4 in a 4-layer model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("fact_token", ["subject_last", "last"])
def test_targets_prefix_route_equals_full_route(tiny, family, fact_token):
    model, tok = _model(tiny, family)
    reqs = EH.TINY_REQUESTS[:2] + [EXTRA]
    kw = dict(v_num_grad_steps=8, v_lr=0.5, clamp_norm_factor=4.0, fact_token=fact_token)
    fast = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, cache_prefix=True, **kw)
    assert TG._SUFFIX_CHECKED.get(model) is True                       # the prefix route was taken
    slow = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, cache_prefix=False, **kw)
    assert torch.allclose(fast.h, slow.h, atol=1e-5)
    assert torch.allclose(fast.delta, slow.delta, atol=1e-4, rtol=1e-3)
    assert [s["steps"] for s in fast.stats] == [s["steps"] for s in slow.stats]
    for a, b in zip(fast.stats, slow.stats):
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-3, abs=1e-4)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-2, abs=1e-6)
    assert float(fast.delta.norm()) > 0


def test_targets_fall_back_when_the_route_disagrees(monkeypatch):
    model, tok = EH.tiny_llama(seed=3)
    real_logits_at = TG.SuffixRunner.logits_at
    monkeypatch.setattr(TG.SuffixRunner, "logits_at", lambda self, *a, **k: real_logits_at(self, *a, **k) + 1.0)
    with pytest.warns(UserWarning, match="disagrees"):
        res = TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 1, TEMPLATES, v_num_grad_steps=3)
    assert TG._SUFFIX_CHECKED.get(model) is False
    ref = TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 1, TEMPLATES, v_num_grad_steps=3, cache_prefix=False)
    assert torch.allclose(res.delta, ref.delta)


# ------------------------------------------------------------------------------------------------
# KeyReader
# ------------------------------------------------------------------------------------------------
def test_key_reader_matches_keys_and_values(tiny):
    model, tok = EH.tiny_llama(seed=1)
    reqs = EH.TINY_REQUESTS + [EXTRA]
    reader = K.KeyReader(model, tok, reqs, TEMPLATES, 1, batch_size=5)      # several batches
    a_keys, a_h = reader.read([1, 3], value_layer=2)
    b_keys, b_h = K.keys_and_values(model, tok, reqs, [1, 3], TEMPLATES, value_layer=2)
    for layer in (1, 3):
        assert torch.allclose(a_keys[layer], b_keys[layer], atol=1e-6)
    assert torch.allclose(a_h, b_h, atol=1e-6)
    # layers at or above the reader's start may change between reads
    g = torch.Generator().manual_seed(0)
    W = M.get_rewrite_weight(model, 1)
    M.apply_weight_delta(model, 1, 0.5 * torch.randn(W.shape, generator=g))
    a_keys, a_h = reader.read([2], value_layer=3)
    b_keys, b_h = K.keys_and_values(model, tok, reqs, [2], TEMPLATES, value_layer=3)
    assert torch.allclose(a_keys[2], b_keys[2], atol=1e-6) and torch.allclose(a_h, b_h, atol=1e-6)
    with pytest.raises(ValueError, match="starts at block 1"):
        reader.read([0])
    last = K.KeyReader(model, tok, reqs[:1], TEMPLATES, 0, fact_token="last").read([0])[0][0]
    assert torch.allclose(last, K.keys_and_values(model, tok, reqs[:1], [0], TEMPLATES, fact_token="last")[0][0],
                          atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Low-rank solvers and the state behind them
# ------------------------------------------------------------------------------------------------
def _problem(d=40, d_out=12, u=3, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    P = Q[:, :25] @ Q[:, :25].T                                             # a rank-25 projector
    K0 = torch.randn(d, 4 * d, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, d, dtype=torch.float64)[:, None]
    C0 = K0 @ K0.T / K0.shape[1]
    K1 = 3 * torch.randn(d, u, generator=g, dtype=torch.float64)
    Kp = 3 * torch.randn(d, m, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, u, generator=g, dtype=torch.float64)
    return R, K1, Kp, P, C0


def test_lowrank_alphaedit_equals_dense():
    R, K1, Kp, P, _ = _problem()
    for prev in (None, Kp):
        fast = lowrank_alphaedit_delta(R, K1, P, alpha=10.0, prev_keys=prev)
        dense = alphaedit_delta(R, K1, P, alpha=10.0, prev_cov=None if prev is None else prev @ prev.T)
        assert torch.allclose(fast, dense, rtol=1e-9, atol=1e-12 * float(dense.abs().max()))
        assert torch.allclose(fast @ P, fast, atol=1e-10)                  # Δ = Δ P
    with pytest.raises(ValueError, match="alpha"):
        lowrank_alphaedit_delta(R, K1, P, alpha=0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        lowrank_alphaedit_delta(R, K1, P, prev_keys=Kp[:-1])


def test_lowrank_memit_equals_dense():
    R, K1, Kp, _, C0 = _problem()
    lam = 50.0
    L = torch.linalg.cholesky(lam * C0)
    for prev in (None, Kp):
        fast = lowrank_memit_delta(R, K1, L, prev_keys=prev)
        dense = memit_delta(R, K1, C0, lam, prev_cov=None if prev is None else prev @ prev.T)
        assert torch.allclose(fast, dense, rtol=1e-9, atol=1e-12 * float(dense.abs().max()))


def test_edit_state_keeps_keys_while_few():
    st = EditState()
    g = torch.Generator().manual_seed(0)
    A, B = (torch.randn(10, k, generator=g, dtype=torch.float64) for k in (2, 3))
    st.add_prev_keys(4, A)
    st.add_prev_keys(4, B)
    Kp = st.prev_factor(4)
    assert Kp.shape == (10, 5) and torch.allclose(Kp @ Kp.T, st.prev(4))
    st.add_prev_keys(4, A[:, :1])                                           # m = 6 > d/2: keys dropped
    assert st.prev_factor(4) is None and torch.allclose(st.prev(4), A @ A.T + B @ B.T + A[:, :1] @ A[:, :1].T)
    st.add_prev_keys(5, A)
    st.prev_cov[5] = st.prev_cov[5] * 2                                     # changed by hand: Kp no longer known
    assert st.prev_factor(5) is None and st.prev_factor(7) is None
    old = EditState()                                                       # a state pickled before the field
    del old.prev_keys, old.prev_keys_of
    old.prev_cov[1] = A @ A.T
    assert old.prev_factor(1) is None
    old.add_prev_keys(2, A)
    assert torch.allclose(old.prev_factor(2), A)


@pytest.fixture(scope="module")
def edit_setup(tmp_path_factory):
    import os
    model, tok = EH.tiny_llama(seed=2)
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:100_000], encoding="utf-8")
    old = os.environ.get("ALPHAEDIT_CACHE")
    os.environ["ALPHAEDIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        st = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=3840, seq_len=64, progress=False)
        yield model, tok, st
    finally:
        if old is None:
            os.environ.pop("ALPHAEDIT_CACHE", None)
        else:
            os.environ["ALPHAEDIT_CACHE"] = old


COMMON = dict(layers=[1, 2], context_n_prefixes=2, context_prefix_tokens=5, v_num_grad_steps=6,
              clamp_norm_factor=4.0)


@pytest.mark.parametrize("method", ["AlphaEdit", "MEMIT"])
def test_sequential_lowrank_route_equals_dense_route(edit_setup, method, monkeypatch):
    """Two sequential edits: the second one's Δ is the same with Kp known (Woodbury) and unknown (dense)."""
    model, tok, st = edit_setup
    extra = {"nullspace_threshold": 0.05, "nullspace_mode": "energy", "L2": 0.5} if method == "AlphaEdit" else \
        {"mom2_update_weight": 1000.0, "keep_prev_keys": True}
    hp = HP.from_dict(method, {**COMMON, **extra})
    fn = apply_alphaedit if method == "AlphaEdit" else apply_memit
    snap = EH.all_params(model)
    targets = [TG.compute_targets(model, tok, [r], 2, K.context_templates(model, tok, 2, 5), v_num_grad_steps=6,
                                  clamp_norm_factor=4.0) for r in EH.TINY_REQUESTS[:2]]
    out = {}
    for route in ("lowrank", "dense"):
        state = EditState()
        r1 = fn(model, tok, [EH.TINY_REQUESTS[0]], hp, stats=st, state=state, targets=targets[0], progress=False)
        assert state.prev_factor(1) is not None
        if route == "dense":
            state.prev_keys.clear()
        r2 = fn(model, tok, [EH.TINY_REQUESTS[1]], hp, stats=st, state=state, targets=targets[1], progress=False)
        out[route] = {n: d.double() for n, d in r2.deltas.items()}
        assert (state.prev_factor(2) is not None) == (route == "lowrank")
        r2.restore(model)
        r1.restore(model)
        assert EH.same_params(model, snap)
    for n in out["dense"]:
        assert torch.allclose(out["lowrank"][n], out["dense"][n], rtol=1e-6, atol=1e-9), n


# ------------------------------------------------------------------------------------------------
# The benchmark script
# ------------------------------------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared CounterFact and WikiText-2 files")
def test_bench_vs_reference_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_vs_reference.py"), "--smoke",
                           "--prefixes", "1", "--threads", "1", "--quiet", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reference operation" in proc.stdout and "s per edit" in proc.stdout
    blob = json.loads(out.read_text())
    assert blob["restored"] and blob["settings"]["edits"] == 2
    for m in ("AlphaEdit", "MEMIT"):
        r = blob["methods"][m]
        assert len(r["per_edit_s"]) == 2 and r["per_edit_op_mean"] > 0
        assert set(r["after"]) == {"efficacy", "generalization", "specificity"}
    assert blob["reference_op"]["unit_s"] > 0 and blob["stats_s"] > 0


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared WikiText-2 file")
def test_bench_layer_windows_smoke():
    """Two one-layer windows on two shipped requests: a row per window, weights restored (it asserts so)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_layer_windows.py"), "--windows", "5-5,2-2",
                           "--n", "2", "--batch", "2", "--stats-tokens", "2048", "--steps", "5", "--threads", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.strip().startswith(("unedited", "5-5", "2-2"))]
    assert [r[0] for r in rows] == ["unedited", "5-5", "2-2"]
    for r in rows:
        eff, gen, spe = (float(r[i]) for i in (1, 3, 5))
        assert all(0.0 <= x <= 100.0 for x in (eff, gen, spe))


def test_bench_layer_windows_rejects_a_bad_window():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_layer_windows as B
    assert B.parse_window("3-7") == [3, 4, 5, 6, 7]
    for bad in ("7", "7-3", "a-b"):
        with pytest.raises(SystemExit, match="window"):
            B.parse_window(bad)
    with pytest.raises(SystemExit, match="does not fit, lower --start or --n"):
        B.main(["--start", "10000", "--n", "10"])     # refused before the model loads


# ------------------------------------------------------------------------------------------------
# Issue 17's levers: most-probable early stopping and bfloat16 for the layers above L
# ------------------------------------------------------------------------------------------------
def _argmax_hits(model, tok, req, layer: int, delta: torch.Tensor) -> bool:
    """True when, with δ added to block ``layer``'s output at the subject's last token, every token of
    the new object is the argmax on every rewriting prompt (checked with the model's own forward)."""
    block = M.get_module(model, M.arch_spec(model).layer_name(layer))
    target = TG.target_token_ids(tok, as_request(req).target_new)
    for s in K.build_sentences(tok, [req], TEMPLATES, "subject_last")[0]:
        ids = torch.tensor([s.ids + target[:-1]])

        def add(mod, args, out, _p=s.key_pos):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            h[0, _p] += delta
            return (h, *out[1:]) if isinstance(out, tuple) else h
        handle = block.register_forward_hook(add)
        try:
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0]
        finally:
            handle.remove()
        pos = torch.arange(len(s.ids) - 1, len(s.ids) - 1 + len(target))
        if not bool((logits[pos].argmax(-1) == torch.tensor(target)).all()):
            return False
    return True


def test_most_probable_stop_stops_where_the_new_object_is_the_argmax(tiny):
    model, tok = tiny
    reqs = EH.TINY_REQUESTS[:3]
    kw = dict(v_num_grad_steps=20, v_lr=0.5, clamp_norm_factor=4.0, kl_factor=0.0)
    plain = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, **kw)
    mp = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, v_stop="most_probable", **kw)
    stopped = [i for i, s in enumerate(mp.stats) if s["stopped_early"]]
    assert stopped, "no request stopped early: the test would check nothing"
    for a, b in zip(mp.stats, plain.stats):
        assert a["steps"] <= b["steps"]                       # the rule only adds a way to stop
    assert sum(s["steps"] for s in mp.stats) < sum(s["steps"] for s in plain.stats)
    for i in stopped:                                         # where it stopped, o* is the argmax everywhere
        assert _argmax_hits(model, tok, reqs[i], 1, mp.delta[:, i])
    assert torch.allclose(mp.h, plain.h)


def test_bfloat16_targets_track_the_float32_path(tiny):
    model, tok = tiny
    reqs = EH.TINY_REQUESTS[:3]
    kw = dict(v_num_grad_steps=8, v_lr=0.5, clamp_norm_factor=4.0, v_early_stop_loss=0.0)
    f32 = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, **kw)
    bf = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, v_dtype="bfloat16", **kw)
    rel = float((bf.delta - f32.delta).norm() / f32.delta.norm())
    assert 0 < rel < 0.1, rel                                 # bf16 does change the numbers, but little
    assert bf.delta.dtype == torch.float32 and bf.z.dtype == torch.float32
    for a, b in zip(bf.stats, f32.stats):
        assert a["nll"] == pytest.approx(b["nll"], abs=0.05, rel=0.05)
    # h is read before any bf16 layer runs; on the CPU the bf16 call uses eager attention (float32 below L),
    # which rounds differently from SDPA in the last bits
    assert torch.allclose(bf.h, f32.h, rtol=1e-5, atol=1e-6)


def test_speed_levers_reject_unknown_values(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="v_stop"):
        TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 1, TEMPLATES, v_stop="argmax")
    with pytest.raises(ValueError, match="v_dtype"):
        TG.compute_targets(model, tok, EH.TINY_REQUESTS[:1], 1, TEMPLATES, v_dtype="float16")
    hp = HP.load_hparams("AlphaEdit", "smollm2-135m")
    with pytest.raises(ValueError, match="v_stop must be one of"):
        hp.replace(v_stop="fast")
    assert hp.replace(v_stop="most_probable", v_dtype="bfloat16").v_dtype == "bfloat16"


def test_targets_in_groups_equal_targets_in_one_pass(tiny):
    model, tok = tiny
    reqs = EH.TINY_REQUESTS[:2] + [EXTRA]
    kw = dict(v_num_grad_steps=8, v_lr=0.5, clamp_norm_factor=4.0)
    whole = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, max_requests=None, **kw)
    groups = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, max_requests=2, **kw)
    assert groups.z.shape == whole.z.shape == (model.config.hidden_size, 3)
    assert torch.allclose(groups.delta, whole.delta, atol=1e-4, rtol=1e-3)
    assert [s["steps"] for s in groups.stats] == [s["steps"] for s in whole.stats]


# ------------------------------------------------------------------------------------------------
# The held-out perplexity of real-model runs
# ------------------------------------------------------------------------------------------------
def test_token_nll_equals_the_hand_computed_mean(tiny):
    from alphaedit_lite.experiments.evaluate import token_nll

    model, tok = tiny
    rows = [tok(t).input_ids for t in ("The mother tongue of Danielle Darrieux is French", "Paris is a city")]
    ids, mask = K.right_pad(rows, tok.pad_token_id)
    want, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            lp = torch.log_softmax(model(input_ids=torch.tensor([r])).logits[0, :-1], -1)
            want -= float(lp.gather(1, torch.tensor(r[1:])[:, None]).sum())
            n += len(r) - 1
    assert token_nll(model, ids, mask, batch_size=1) == pytest.approx(want / n, rel=1e-4)
    with pytest.raises(ValueError, match="token_nll needs"):
        token_nll(model, ids[:, :1], mask[:, :1])


def test_heldout_perplexity_is_one_before_an_edit_and_moves_after(tiny):
    from alphaedit_lite.experiments.sequential import heldout_perplexity_eval

    model, tok = tiny
    hp = HP.load_hparams("AlphaEdit", "smollm2-135m").replace(mom2_n_samples=4, mom2_seq_len=32)
    extra = heldout_perplexity_eval(model, tok, hp, n_rows=4)
    assert extra is not None
    assert extra(model, tok)["perplexity_ratio"] == pytest.approx(1.0, abs=1e-6)
    W = M.get_rewrite_weight(model, 1).clone()
    try:
        M.set_rewrite_weight(model, 1, W + 0.05 * torch.randn_like(W))
        assert abs(extra(model, tok)["perplexity_ratio"] - 1.0) > 1e-3
    finally:
        M.set_rewrite_weight(model, 1, W)
    assert heldout_perplexity_eval(model, tok, None) is None


def test_auto_v_dtype_resolves_to_bfloat16_only_where_it_is_fast(tiny, monkeypatch):
    from alphaedit_lite.util import device as DV

    assert DV.has_fast_bfloat16("mps") is False
    for flags, fast in (({"avx2", "avx512f"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True),
                        ({"asimd", "bf16"}, True), (set(), False)):
        monkeypatch.setattr(DV, "_cpu_flags", lambda flags=flags: frozenset(flags))
        assert DV.has_fast_bfloat16("cpu") is fast, flags
    monkeypatch.undo()
    model, tok = tiny
    reqs = EH.TINY_REQUESTS[:2]
    kw = dict(v_num_grad_steps=4, v_lr=0.5, clamp_norm_factor=4.0, v_early_stop_loss=0.0)
    runs = {}
    for fast in (True, False):
        monkeypatch.setattr(DV, "has_fast_bfloat16", lambda dev, fast=fast: fast)
        runs[fast] = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, v_dtype="auto", **kw).delta
    assert torch.equal(runs[True], TG.compute_targets(model, tok, reqs, 1, TEMPLATES, v_dtype="bfloat16", **kw).delta)
    assert torch.equal(runs[False], TG.compute_targets(model, tok, reqs, 1, TEMPLATES, v_dtype="float32", **kw).delta)
    assert HP.load_hparams("AlphaEdit", "smollm2-135m").v_dtype == "auto"
    assert HP.load_hparams("AlphaEdit", "tiny-world").v_dtype == "float32"


def test_bfloat16_targets_on_the_cpu_use_eager_attention_and_restore_it(tiny):
    model, tok = tiny
    reqs = EH.TINY_REQUESTS[:2]
    kw = dict(v_num_grad_steps=4, v_lr=0.5, clamp_norm_factor=4.0, v_early_stop_loss=0.0, v_dtype="bfloat16")
    old = model.config._attn_implementation
    model.config._attn_implementation = "sdpa"
    try:
        switched = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, **kw).delta
        assert model.config._attn_implementation == "sdpa"               # put back
        model.config._attn_implementation = "eager"
        by_hand = TG.compute_targets(model, tok, reqs, 1, TEMPLATES, **kw).delta
        assert model.config._attn_implementation == "eager"
    finally:
        model.config._attn_implementation = old
    assert torch.equal(switched, by_hand)


def test_attention_implementation_is_restored_after_an_error(tiny):
    from alphaedit_lite.model.arch import attention_implementation

    model, _ = tiny
    old = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with attention_implementation(model, "eager" if old != "eager" else "sdpa"):
            assert model.config._attn_implementation != old
            raise RuntimeError("boom")
    assert model.config._attn_implementation == old
    with attention_implementation(torch.nn.Linear(2, 2), "eager"):   # no transformers config: nothing to do
        pass


# ------------------------------------------------------------------------------------------------
# The key statistics' bf16 forward pass (mom2_forward_dtype)
# ------------------------------------------------------------------------------------------------
def test_bfloat16_statistics_track_the_float32_path(edit_setup, tmp_path, monkeypatch):
    """bf16 keys: C within a few % of the float32 pass, cached apart, and AlphaEdit's Δ from them close."""
    from alphaedit_lite.locate import cache as SC
    from alphaedit_lite.util import device as DV

    model, tok, st32 = edit_setup
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:100_000], encoding="utf-8")
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    f32 = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=3840, seq_len=64, progress=False)
    bf = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=3840, seq_len=64, progress=False, forward_dtype="bfloat16")
    assert (f32.forward_dtype, bf.forward_dtype) == ("float32", "bfloat16")
    for layer in (1, 2):
        assert bf[layer].count == f32[layer].count == 3840
        assert torch.equal(f32[layer].sum, st32[layer].sum)              # the float32 path is unchanged
        rel = float((bf[layer].cov - f32[layer].cov).norm() / f32[layer].cov.norm())
        assert 0 < rel < 0.03, rel                                        # bf16 rounds, but little
        paths = [SC.stats_cache_path(model, bf.module_names[layer], bf.corpus_id, 3840, d)
                 for d in ("float32", "bfloat16")]
        assert paths[0] != paths[1] and all(q.is_file() for q in paths)
        assert torch.load(paths[1], weights_only=False)["manifest"]["forward_dtype"] == "bfloat16"
    # "auto" is bf16 exactly where bf16 is fast (then it is the bf16 file, loaded from the cache)
    for fast, want in ((True, bf), (False, f32)):
        monkeypatch.setattr(DV, "has_fast_bfloat16", lambda dev, fast=fast: fast)
        got = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=3840, seq_len=64, progress=False, forward_dtype="auto")
        assert all(torch.equal(got[x].sum, want[x].sum) for x in (1, 2))
    # the same edit from either statistics: Δ within 5 % (P keeps the same directions up to rounding)
    hp = HP.from_dict("AlphaEdit", {**COMMON, "nullspace_threshold": 0.05, "nullspace_mode": "energy", "L2": 0.5})
    tr = TG.compute_targets(model, tok, [EH.TINY_REQUESTS[0]], 2, K.context_templates(model, tok, 2, 5),
                            v_num_grad_steps=6, clamp_norm_factor=4.0)
    deltas = {}
    for name, st in (("f32", f32), ("bf", bf)):
        res = apply_alphaedit(model, tok, [EH.TINY_REQUESTS[0]], hp, stats=st, targets=tr, progress=False)
        deltas[name] = {x: d.double() for x, d in res.deltas.items()}
        res.restore(model)
    for x in deltas["f32"]:
        rel = float((deltas["bf"][x] - deltas["f32"][x]).norm() / deltas["f32"][x].norm())
        assert rel < 0.05, (x, rel)
    with pytest.raises(ValueError, match="forward_dtype must be"):
        S.layer_stats(model, tok, [1], corpus, n_tokens=3840, seq_len=64, progress=False, forward_dtype="float16")
    with pytest.raises(ValueError, match="mom2_forward_dtype must be one of"):
        HP.load_hparams("AlphaEdit", "smollm2-135m").replace(mom2_forward_dtype="half")
    for method in ("AlphaEdit", "MEMIT", "PRUNE", "RECT", "ROME"):            # the SmolLM2 files: bf16 where fast
        assert HP.load_hparams(method, "smollm2-135m").mom2_forward_dtype == "auto"
    assert HP.load_hparams("AlphaEdit", "tiny-world").mom2_forward_dtype == "float32"   # the organisms: float32


# ------------------------------------------------------------------------------------------------
# Models whose layers differ in attention type (sliding-window and full): each block its own mask
# ------------------------------------------------------------------------------------------------
def _mixed_qwen2(seed=0):
    """A tiny Qwen2 with two sliding-window layers (window 1) under two full-attention layers, as the subword world."""
    import transformers as T

    tok = EH.tiny_tokenizer()
    cfg = T.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        use_sliding_window=True, sliding_window=1, max_window_layers=0,
                        layer_types=["sliding_attention"] * 2 + ["full_attention"] * 2, initializer_range=0.2)
    torch.manual_seed(seed)
    return T.Qwen2ForCausalLM(cfg).eval(), tok


def test_blocks_rerun_by_hand_get_their_own_attention_mask():
    """Re-running blocks 1-3 (sliding, full, full) from recorded inputs gives the model's own logits; before the
    per-block masks, the full-attention blocks got the sliding window's mask and the logits were wrong."""
    from alphaedit_lite.model.hooks import run_blocks

    model, tok = _mixed_qwen2()
    assert M.mixed_attention(model, range(1, 4)) and not M.mixed_attention(model, range(2, 4))
    ids, mask = K.right_pad([tok(t).input_ids for t in ("The mother tongue of Danielle Darrieux is",
                                                        "Paris is the capital of")], tok.pad_token_id)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        runner = TG.ResidualRunner(model, ids, mask, start=1)
        rows = torch.tensor([0, 0, 1])
        pos = torch.tensor([int(mask[0].sum()) - 1, 2, int(mask[1].sum()) - 1])
        got = runner.logits_at(runner.hidden, rows, pos)
        torch.testing.assert_close(got, want[rows, pos], rtol=1e-4, atol=1e-4)
        # what the single recorded mask gives instead: the sliding window's, for every block
        wrong = runner.head(runner.norm(run_blocks(runner.blocks, runner.hidden, **runner.kwargs)[rows, pos]))
    assert float((wrong - want[rows, pos]).abs().max()) > 1e-2


def test_targets_at_a_sliding_layer_reach_what_the_model_then_says():
    """compute_targets at layer 0 of the mixed model: δ added to block 0's output by a plain forward pass
    gives the probability the optimisation reported (the route runs blocks 1-3 with their own masks)."""
    model, tok = _mixed_qwen2()
    r = as_request(EXTRA)
    tr = TG.compute_targets(model, tok, [r], 0, ["{}"], v_num_grad_steps=10, v_lr=1.0, clamp_norm_factor=4.0,
                            v_early_stop_loss=0.0, kl_factor=0.0)
    prompt = r.prompt.replace("{}", r.subject)
    a = tok(prompt).input_ids
    new = TG.target_token_ids(tok, r.target_new)
    pos = len(tok(prompt[:prompt.index(r.subject) + len(r.subject)]).input_ids) - 1     # the subject's last token

    def nll_with(delta):
        def add(mod, args, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[0, pos] += delta
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h
        handle = model.model.layers[0].register_forward_hook(add)
        try:
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([a + new[:-1]])).logits[0], -1)
        finally:
            handle.remove()
        return -sum(float(lp[len(a) - 1 + k, t]) for k, t in enumerate(new)) / len(new)

    # the last step's δ is the returned one (no update after the last forward pass)
    assert nll_with(tr.delta[:, 0]) == pytest.approx(tr.stats[0]["nll"], rel=1e-4, abs=1e-4)
    assert nll_with(torch.zeros_like(tr.delta[:, 0])) > tr.stats[0]["nll"] + 0.1            # and δ did something


def test_key_reader_on_a_model_with_sliding_and_full_layers():
    model, tok = _mixed_qwen2(seed=1)
    reqs = EH.TINY_REQUESTS + [EXTRA]
    a_keys, a_h = K.KeyReader(model, tok, reqs, TEMPLATES, 0, batch_size=5).read([1, 3], value_layer=2)
    b_keys, b_h = K.keys_and_values(model, tok, reqs, [1, 3], TEMPLATES, value_layer=2)
    for layer in (1, 3):
        assert torch.allclose(a_keys[layer], b_keys[layer], atol=1e-5)
    assert torch.allclose(a_h, b_h, atol=1e-5)
