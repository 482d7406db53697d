"""Tests for alphaedit_lite.stats: corpus chunking, one-pass multi-layer statistics, caching, projectors.

Most tests use a tiny random Llama (see editing_helpers); those marked ``model`` use SmolLM2-135M.
"""
from __future__ import annotations

import os

import pytest
import torch

import editing_helpers as EH
from alphaedit_lite import stats as S
from alphaedit_lite.covariance import SecondMoment
from alphaedit_lite.hooks import Trace
from alphaedit_lite.models import arch_spec
from alphaedit_lite.paths import shared_data_dir

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny():
    return EH.tiny_llama()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    S.clear_projector_memo()
    return tmp_path / "cache"


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(EH.corpus_text()[:60_000], encoding="utf-8")
    return p


def test_corpus_tokens_counts_exactly(tiny, corpus_file):
    _, tok = tiny
    for n in (256, 300, 1):
        cid, ids, mask = S.corpus_tokens(tok, corpus_file, n, seq_len=64, progress=False)
        assert ids.shape[1] == 64 and ids.shape == mask.shape
        assert int(mask.sum()) == n                         # exactly n real positions
        assert ids.shape[0] == -(-n // 64)                  # ceil(n / 64) rows, only the last padded
        assert bool(mask[:-1].all())
        assert cid.startswith("corpus.txt-") and cid.endswith("-L64")
    # the rows are consecutive pieces of one token stream
    _, ids, _ = S.corpus_tokens(tok, corpus_file, 128, seq_len=64, progress=False)
    stream = tok(corpus_file.read_text()[:20000], add_special_tokens=False).input_ids
    assert ids.reshape(-1).tolist() == stream[:128]


def test_chunk_with_bos_counts_bos_as_a_position():
    ids, mask = S._chunk(list(range(100, 200)), n_tokens=10, seq_len=4, bos=1, pad_id=0)
    assert int(mask.sum()) == 10
    assert ids.tolist() == [[1, 100, 101, 102], [1, 103, 104, 105], [1, 106, 0, 0]]   # BOS opens every row
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]


def _brute_force(model, ids, mask, layer):
    """C0 of one layer the slow way: a full forward per row, keys of real positions only."""
    name = arch_spec(model).rewrite_name(layer)
    acc = SecondMoment()
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        with torch.no_grad(), Trace(model, name, retain_input=True, retain_output=False) as tr:
            model(input_ids=ids[r:r + 1, :n])
        acc.update(tr.input[0].double())
    return acc


def test_layer_stats_matches_brute_force_and_counts(tiny, cache, corpus_file):
    model, tok = tiny
    st = S.layer_stats(model, tok, [2, 0], corpus_file, n_tokens=300, seq_len=64, batch_size=2, progress=False)
    assert sorted(st) == [0, 2] and st.n_tokens == 300
    _, ids, mask = S.corpus_tokens(tok, corpus_file, 300, seq_len=64, progress=False)
    for layer in (0, 2):
        assert st[layer].count == 300
        ref = _brute_force(model, ids, mask, layer)
        assert ref.count == 300
        err = float((st[layer].cov - ref.cov).abs().max()) / float(ref.cov.abs().max())
        assert err < 1e-5, err              # float32 keys: batched vs one row at a time


def test_forward_stops_after_last_requested_layer(tiny, cache, corpus_file):
    model, tok = tiny
    calls = {"last": 0, "head": 0}
    h1 = model.model.layers[3].register_forward_hook(lambda *a: calls.__setitem__("last", calls["last"] + 1))
    h2 = model.lm_head.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    try:
        S.layer_stats(model, tok, [0, 1], corpus_file, n_tokens=256, seq_len=64, batch_size=2, progress=False)
    finally:
        h1.remove()
        h2.remove()
    assert calls == {"last": 0, "head": 0}


def test_cache_roundtrip_and_key(tiny, cache, corpus_file, monkeypatch):
    model, tok = tiny
    st = S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    path = S.stats_cache_path(model, arch_spec(model).rewrite_name(1), st.corpus_id, 200)
    assert path.is_file()
    rel = path.relative_to(cache / "stats")
    assert rel.parts[0] == S.model_id(model) and rel.parts[1] == "model.layers.1.mlp.down_proj"
    assert rel.name == f"{st.corpus_id}_200.pt"

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")
    monkeypatch.setattr(S, "collect_second_moments", boom)
    again = S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    assert torch.equal(again[1].sum, st[1].sum) and again[1].count == 200
    with pytest.raises(AssertionError, match="recomputed"):   # another token count is another key
        S.layer_stats(model, tok, [1], corpus_file, n_tokens=201, seq_len=64, progress=False)


def test_model_id_tells_models_apart(tiny):
    model, _ = tiny
    other, _ = EH.tiny_llama(seed=1)
    assert S.model_id(model) == S.model_id(model)
    assert S.model_id(model) != S.model_id(other)


def test_model_samples_corpus_is_labelled_and_seeded(tiny, cache, capsys):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0], "model-samples", n_tokens=40, seq_len=16, batch_size=4, progress=False)
    assert st.corpus_id == "model-samples-seed0-L16" and st[0].count == 40
    assert "generated by the model itself" in capsys.readouterr().out
    a = S._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
    b = S._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
    assert torch.equal(a, b) and a.shape == (3, 16)


def test_bad_inputs(tiny, cache, corpus_file):
    model, tok = tiny
    with pytest.raises(ValueError, match="out of range"):
        S.layer_stats(model, tok, [7], corpus_file, n_tokens=64, seq_len=32, progress=False)
    with pytest.raises(ValueError, match="only"):
        S.layer_stats(model, tok, [0], corpus_file, n_tokens=10_000_000, seq_len=32, progress=False)
    with pytest.raises(ValueError, match="unknown corpus"):
        S.layer_stats(model, tok, [0], "no-such-corpus", n_tokens=64, seq_len=32, progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        S.layer_stats(model, tok, [0], "/no/such/file.txt", n_tokens=64, seq_len=32, progress=False)


def test_hf_corpus_offline_gives_a_clear_error(tiny, cache, monkeypatch):
    _, tok = tiny
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ImportError("no datasets here")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ValueError, match="datasets.*corpus='model-samples'|model-samples"):
        S.corpus_tokens(tok, "wikitext-103", 64, 32)


def test_projectors_are_cached(tiny, cache, corpus_file):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0, 1], corpus_file, n_tokens=600, seq_len=64, progress=False)
    pj = S.projectors(st, threshold=1e-2, mode="relative")
    assert set(pj) == {0, 1}
    for layer, p in pj.items():
        assert p.P.shape == (96, 96) and 0 < p.kept_rank < 96
        path = S._projector_path(st, layer, 1e-2, "relative")
        assert path.is_file()
    S.clear_projector_memo()
    again = S.projectors(st, threshold=1e-2, mode="relative")      # from disk
    assert torch.equal(again[0].P, pj[0].P) and again[1].kept_rank == pj[1].kept_rank


# ------------------------------------------------------------------------------------------------
# SmolLM2
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    from alphaedit_lite.models import load_model
    return load_model("smollm2-135m", device="cpu")


@pytest.mark.model
@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared WikiText-2 file")
def test_smollm2_wikitext_stats(smol, cache):
    model, tok = smol
    st = S.layer_stats(model, tok, [3, 5], "wikitext-2", n_tokens=2000, seq_len=128, batch_size=8, progress=False)
    assert st.corpus_id == "wikitext-2-raw-test-L128"
    for layer in (3, 5):
        assert st[layer].count == 2000 and st[layer].dim == 1536
        lam = torch.linalg.eigvalsh(st[layer].cov)
        assert float(lam.min()) > -1e-9                              # PSD
        assert float(lam.max()) > 0
    assert os.path.isfile(S.stats_cache_path(model, "model.layers.5.mlp.down_proj", st.corpus_id, 2000))
