"""Tests for alphaedit_lite.locate.stats: corpus chunking, one-pass multi-layer statistics, caching, projectors.

Most tests use a tiny random Llama (see editing_helpers); those marked ``model`` use SmolLM2-135M.
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import torch

import editing_helpers as EH
from alphaedit_lite.locate import stats as S
from alphaedit_lite.locate import cache as SC
from alphaedit_lite.locate import corpus as SCO
from alphaedit_lite.locate import share as SSH
from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.model.hooks import Trace
from alphaedit_lite.model.arch import arch_spec
from alphaedit_lite.util.paths import shared_data_dir

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
        cid, ids, mask = SCO.corpus_tokens(tok, corpus_file, n, seq_len=64, progress=False)
        assert ids.shape[1] == 64 and ids.shape == mask.shape
        assert int(mask.sum()) == n                         # exactly n real positions
        assert ids.shape[0] == -(-n // 64)                  # ceil(n / 64) rows, only the last padded
        assert bool(mask[:-1].all())
        assert cid.startswith("corpus.txt-") and cid.endswith("-L64")
    # the rows are consecutive pieces of one token stream
    _, ids, _ = SCO.corpus_tokens(tok, corpus_file, 128, seq_len=64, progress=False)
    stream = tok(corpus_file.read_text()[:20000], add_special_tokens=False).input_ids
    assert ids.reshape(-1).tolist() == stream[:128]


def test_chunk_with_bos_counts_bos_as_a_position():
    ids, mask = SCO._chunk(list(range(100, 200)), n_tokens=10, seq_len=4, bos=1, pad_id=0)
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
    _, ids, mask = SCO.corpus_tokens(tok, corpus_file, 300, seq_len=64, progress=False)
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
    path = SC.stats_cache_path(model, arch_spec(model).rewrite_name(1), st.corpus_id, 200)
    assert path.is_file()
    rel = path.relative_to(cache / "stats")
    assert rel.parts[0] == SC.model_id(model) and rel.parts[1] == "model.layers.1.mlp.down_proj"
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
    assert SC.model_id(model) == SC.model_id(model)
    assert SC.model_id(model) != SC.model_id(other)


def test_model_samples_corpus_is_labelled_and_seeded(tiny, cache, capsys):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0], "model-samples", n_tokens=40, seq_len=16, batch_size=4, progress=False)
    assert st.corpus_id == "model-samples-seed0-L16" and st[0].count == 40
    assert "generated by the model itself" in capsys.readouterr().out
    a = SCO._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
    b = SCO._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
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
        SCO.corpus_tokens(tok, "wikitext-103", 64, 32)


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
# Provenance of cached files: damaged or mismatched caches are rebuilt, never used silently
# ------------------------------------------------------------------------------------------------
def _stats_file(model, st, layer):
    return SC.stats_cache_path(model, arch_spec(model).rewrite_name(layer), st.corpus_id, st.n_tokens)


def test_stats_cache_has_a_manifest(tiny, cache, corpus_file):
    model, tok = tiny
    st = S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    blob = torch.load(_stats_file(model, st, 1), weights_only=True)
    man = blob["manifest"]
    assert man["model_id"] == SC.model_id(model) and man["module"] == "model.layers.1.mlp.down_proj"
    assert (man["corpus_id"], man["n_tokens"], man["count"], man["dim"]) == (st.corpus_id, 200, 200, 96)
    assert man["dtype"] == "float64" and man["model_dtype"] == "float32" and man["kit_version"]
    assert man["sha256"] == SC.second_moment_sha256(st[1])
    assert SecondMoment.load(_stats_file(model, st, 1)).count == 200    # still a plain SecondMoment file


def test_truncated_stats_file_is_rebuilt_with_a_warning_naming_it(tiny, cache, corpus_file):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0, 1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    path = _stats_file(model, st, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])                          # an interrupted copy
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path)) + ".*truncated.*rebuilt"):
        again = S.layer_stats(model, tok, [0, 1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    assert torch.equal(again[1].sum, st[1].sum) and torch.equal(again[0].sum, st[0].sum)
    assert path.read_bytes() != data[: len(data) // 2]                # rewritten ...
    SC.read_stats_file(path, {"n_tokens": 200})                        # ... and valid again
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # now used without a warning
        S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)


@pytest.mark.parametrize("damage", ["legacy file without manifest", "changed content", "other corpus's file"])
def test_unusable_stats_file_is_rebuilt(tiny, cache, corpus_file, tmp_path, damage):
    model, tok = tiny
    st = S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    path = _stats_file(model, st, 1)
    if damage == "legacy file without manifest":                      # what the kit wrote before
        st[1].save(path)
        reason = "no provenance manifest"
    elif damage == "changed content":
        blob = torch.load(path, weights_only=True)
        blob["sum"][0, 0] += 1.0
        torch.save(blob, path)
        reason = "checksum"
    else:                                                             # same count, other statistics
        other = tmp_path / "other.txt"
        other.write_text(EH.corpus_text()[60_000:120_000] or "other words here " * 2000, encoding="utf-8")
        ost = S.layer_stats(model, tok, [1], other, n_tokens=200, seq_len=64, progress=False)
        _stats_file(model, ost, 1).replace(path)
        reason = "corpus_id"
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path)) + f".*{reason}"):
        again = S.layer_stats(model, tok, [1], corpus_file, n_tokens=200, seq_len=64, progress=False)
    assert torch.equal(again[1].sum, st[1].sum)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*n_tokens"):
        SC.read_stats_file(path, {"n_tokens": 201})                    # the public reader names the file too


def test_projector_cache_replaced_by_identity_is_detected_and_rebuilt(tiny, cache, corpus_file):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0], corpus_file, n_tokens=600, seq_len=64, progress=False)
    good = S.projectors(st, threshold=1e-2, mode="relative")[0]
    assert 0 < good.kept_rank < 96
    path = S._projector_path(st, 0, 1e-2, "relative")
    eye = torch.eye(96, dtype=torch.float64)
    identity = {"P": eye, "basis": eye.clone(), "eigenvalues": good.eigenvalues, "kept_rank": 96, "cutoff": 1e9,
                "mode": "relative", "threshold": 1e-2}
    # 1) the old layout, which was checked by sample count only: a valid P = I with the right count
    torch.save({"count": 600, "projector": identity}, path)
    S.clear_projector_memo()
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path))):
        pj = S.projectors(st, threshold=1e-2, mode="relative")[0]
    assert torch.equal(pj.P, good.P) and pj.kept_rank == good.kept_rank
    # 2) the new layout with its manifest kept but P swapped for I: the checksum no longer matches
    blob = torch.load(path, weights_only=True)
    blob["projector"] = identity
    torch.save(blob, path)
    S.clear_projector_memo()
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path)) + ".*checksum"):
        pj = S.projectors(st, threshold=1e-2, mode="relative")[0]
    assert torch.equal(pj.P, good.P)
    S.clear_projector_memo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # rebuilt file: used quietly
        assert torch.equal(S.projectors(st, threshold=1e-2, mode="relative")[0].P, good.P)


def test_projector_from_other_statistics_with_the_same_count_is_rebuilt(tiny, cache, corpus_file, tmp_path):
    from alphaedit_lite.core.nullspace import null_space_projector

    model, tok = tiny
    st = S.layer_stats(model, tok, [0], corpus_file, n_tokens=600, seq_len=64, progress=False)
    pa = S.projectors(st, threshold=1e-2, mode="relative")[0]         # cached on disk and in memory
    path = S._projector_path(st, 0, 1e-2, "relative")
    # other statistics with the same model, module, corpus id and count (e.g. recomputed after the
    # corpus file changed): the P built from the first ones must not be taken for them
    other = tmp_path / "other.txt"
    other.write_text(EH.corpus_text()[60_000:160_000] or "other words here " * 4000, encoding="utf-8")
    ost = S.layer_stats(model, tok, [0], other, n_tokens=600, seq_len=64, progress=False, cache=False)
    assert ost[0].count == st[0].count and not torch.equal(ost[0].sum, st[0].sum)
    relabelled = S.LayerStats({0: ost[0]}, model_id=st.model_id, corpus_id=st.corpus_id, n_tokens=st.n_tokens,
                              module_names=st.module_names)
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path)) + ".*stats_sha256"):
        pb = S.projectors(relabelled, threshold=1e-2, mode="relative")[0]   # memo holds pa: not used either
    ref = null_space_projector(ost[0].cov, threshold=1e-2, mode="relative")
    assert torch.equal(pb.P, ref.P) and not torch.equal(pb.P, pa.P)
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path))):   # and back: the file now names ost
        S.clear_projector_memo()
        assert torch.equal(S.projectors(st, threshold=1e-2, mode="relative")[0].P, pa.P)


def test_truncated_model_samples_cache_is_resampled(tiny, cache):
    model, tok = tiny
    a = SCO._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
    path = next((cache / "corpora").rglob("seed3_*.pt"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path))):
        b = SCO._model_sample_rows(model, tok, 40, 16, seed=3, batch_size=4, progress=False)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Statistics and P as files to share
# ------------------------------------------------------------------------------------------------
def test_export_then_import_into_a_fresh_cache(tiny, cache, corpus_file, tmp_path, monkeypatch):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0, 2], corpus_file, n_tokens=600, seq_len=64, progress=False)
    pjs = S.projectors(st, threshold=1e-2, mode="relative")
    f = SSH.export_stats(tmp_path / "shared" / "stats.pt", st, threshold=1e-2, mode="relative")
    man = torch.load(f, weights_only=True)["manifest"]
    assert man["layers"] == [0, 2] and man["modules"]["2"] == "model.layers.2.mlp.down_proj"
    assert (man["corpus_id"], man["n_tokens"], man["dim"], man["dtype"]) == (st.corpus_id, 600, 96, "float64")
    assert man["fingerprint"] == SC.model_id(model).rsplit("-", 1)[1] and man["kit_version"]
    assert man["projector"] == {"threshold": 1e-2, "mode": "relative"} and len(man["checksum"]) == 64

    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "elsewhere"))   # another machine
    S.clear_projector_memo()

    def boom(*a, **k):
        raise AssertionError("computed although imported")
    monkeypatch.setattr(S, "collect_second_moments", boom)
    monkeypatch.setattr(S, "null_space_projector", boom)
    imp = SSH.import_stats(f, model)
    assert sorted(imp) == [0, 2] and imp.corpus_id == st.corpus_id and imp.n_tokens == 600
    for layer in (0, 2):
        assert torch.equal(imp[layer].sum, st[layer].sum) and imp[layer].count == 600
        assert imp[layer].product_dtype == st[layer].product_dtype == torch.float32   # a float32 model's keys
        assert _stats_file(model, imp, layer).is_file()
    got = S.projectors(imp, threshold=1e-2, mode="relative")           # from the imported P files
    assert torch.equal(got[2].P, pjs[2].P)
    # the corpus id now names cached statistics: layer_stats loads them (no corpus needed)
    again = S.layer_stats(model, tok, [2], st.corpus_id, n_tokens=600, progress=False)
    assert torch.equal(again[2].sum, st[2].sum)
    with pytest.raises(ValueError, match=r"layers \[1\] have none"):
        S.layer_stats(model, tok, [1, 2], st.corpus_id, n_tokens=600, progress=False)
    only = SSH.import_stats(f, model, layers=[2], corpus_id="shared-corpus")
    assert sorted(only) == [2] and only.corpus_id == "shared-corpus"
    # a damaged imported file cannot be rebuilt from a corpus id: warned about, then a clear error
    path = _stats_file(model, only, 2)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.warns(SC.CacheWarning, match=re.escape(str(path)) + ".*import the statistics again"), \
            pytest.raises(ValueError, match=r"layers \[2\] .* unusable .* import them again"):
        S.layer_stats(model, tok, [2], "shared-corpus", n_tokens=600, progress=False)
    with pytest.raises(ValueError, match="cannot be recomputed"):
        S.layer_stats(model, tok, [2], st.corpus_id, n_tokens=600, progress=False, force_recompute=True)


def test_bf16_forward_statistics_travel_with_their_forward_dtype(tiny, cache, corpus_file, tmp_path, monkeypatch):
    """Statistics from a bf16 forward pass: exported with forward_dtype, imported under their own file
    name, found again by corpus id and by the corpus with forward_dtype="bfloat16"."""
    model, tok = tiny
    st = S.layer_stats(model, tok, [1], corpus_file, n_tokens=600, seq_len=64, progress=False, forward_dtype="bfloat16")
    f = SSH.export_stats(tmp_path / "bf16.pt", st)
    assert torch.load(f, weights_only=True)["manifest"]["forward_dtype"] == "bfloat16"
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "elsewhere"))
    imp = SSH.import_stats(f, model)
    assert imp.forward_dtype == "bfloat16" and torch.equal(imp[1].sum, st[1].sum)
    assert SC.stats_cache_path(model, imp.module_names[1], imp.corpus_id, 600, "bfloat16").is_file()
    assert not SC.stats_cache_path(model, imp.module_names[1], imp.corpus_id, 600).is_file()
    monkeypatch.setattr(S, "collect_second_moments", lambda *a, **k: (_ for _ in ()).throw(AssertionError("computed")))
    by_id = S.layer_stats(model, tok, [1], st.corpus_id, n_tokens=600, progress=False)   # float32 asked: falls back
    assert by_id.forward_dtype == "bfloat16" and torch.equal(by_id[1].sum, st[1].sum)
    again = S.layer_stats(model, tok, [1], corpus_file, n_tokens=600, seq_len=64, progress=False,
                          forward_dtype="bfloat16")
    assert torch.equal(again[1].sum, st[1].sum)


def test_import_refuses_other_models_layers_and_damage(tiny, cache, corpus_file, tmp_path):
    model, tok = tiny
    st = S.layer_stats(model, tok, [0, 1], corpus_file, n_tokens=300, seq_len=64, progress=False)
    f = SSH.export_stats(tmp_path / "stats.pt", st)
    other, _ = EH.tiny_llama(seed=1)
    with pytest.raises(ValueError, match=re.escape(str(f)) + ".*fingerprints differ"):
        SSH.import_stats(f, other)
    with pytest.raises(ValueError, match=r"holds the statistics of layers \[0, 1\], not of \[3\]"):
        SSH.import_stats(f, model, layers=[1, 3])
    blob = torch.load(f, weights_only=True)
    blob["stats"]["1"]["sum"][3, 3] *= 2
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + " is damaged"):
        SSH.import_stats(bad, model)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(f.read_bytes()[:500])
    with pytest.raises(ValueError, match=re.escape(str(cut)) + ".*cannot be read"):
        SSH.import_stats(cut, model)
    with pytest.raises(ValueError, match="not a statistics export"):
        SSH.import_stats(_stats_file(model, st, 0), model)             # a cache file is not an export
    with pytest.raises(ValueError, match="does not exist"):
        SSH.import_stats(tmp_path / "nope.pt", model)


def test_import_rome_npz_gives_K_Kt_over_n(tiny, cache, tmp_path):
    """ROME/MEMIT layout: mom2.mom2 = Σ k kᵀ (the running sum), mom2.count = n; C0 = sum / n."""
    model, _ = tiny
    n, d = 500, 96
    K = torch.randn(d, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))   # keys as columns
    folder = tmp_path / "wikipedia_stats"
    folder.mkdir()
    path = folder / "model.layers.2.mlp.down_proj_float64_mom2_500.npz"
    np.savez(path, **{"mom2.mom2": (K @ K.T).numpy(), "mom2.count": np.array(n),
                      "mom2.constructor": np.array("util.runningstats.SecondMoment()")})
    st = SSH.import_stats(path, model)
    assert sorted(st) == [2] and st.n_tokens == n and st.corpus_id == "rome-wikipedia"
    torch.testing.assert_close(st.cov(2), K @ K.T / n, rtol=1e-12, atol=0)
    assert st[2].count == n
    back = S.layer_stats(model, None, [2], "rome-wikipedia", n_tokens=n, progress=False)   # now in the cache
    torch.testing.assert_close(back.cov(2), K @ K.T / n, rtol=1e-12, atol=0)
    # float32, as ROME usually saves it; a name without the module: the layer is given
    plain = tmp_path / "stats.npz"
    np.savez(plain, **{"mom2.mom2": (K @ K.T).numpy().astype(np.float32), "mom2.count": np.array(n)})
    with pytest.raises(ValueError, match="cannot tell which layer"):
        SSH.import_stats(plain, model)
    st32 = SSH.import_stats(plain, model, layers=[1], corpus_id="my-corpus")
    assert st32.corpus_id == "my-corpus" and sorted(st32) == [1]
    torch.testing.assert_close(st32.cov(1), K @ K.T / n, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="names layer 2, but layer 3"):
        SSH.import_stats(path, model, layers=[3])


def test_import_rome_npz_refusals(tiny, cache, tmp_path):
    model, _ = tiny
    small = tmp_path / "layer-1.npz"
    np.savez(small, **{"mom2.mom2": np.eye(8), "mom2.count": np.array(10)})
    with pytest.raises(ValueError, match=re.escape(str(small)) + ".*8×8.*d_ff = 96.*another model"):
        SSH.import_stats(small, model)
    only_mean = tmp_path / "layer-1-mean.npz"
    np.savez(only_mean, **{"mean.mean": np.zeros(96), "mean.count": np.array(10)})
    with pytest.raises(ValueError, match="no 'mom2.mom2' and 'mom2.count'"):
        SSH.import_stats(only_mean, model)
    asym = tmp_path / "layer-1-asym.npz"
    A = np.arange(96 * 96, dtype=np.float64).reshape(96, 96)
    np.savez(asym, **{"mom2.mom2": A, "mom2.count": np.array(10)})
    with pytest.raises(ValueError, match="not a finite, symmetric"):
        SSH.import_stats(asym, model)
    junk = tmp_path / "layer-1-junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=re.escape(str(junk)) + ".*cannot be read"):
        SSH.import_stats(junk, model)


# ------------------------------------------------------------------------------------------------
# SmolLM2
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    from alphaedit_lite.model.loading import load_model
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
    assert os.path.isfile(SC.stats_cache_path(model, "model.layers.5.mlp.down_proj", st.corpus_id, 2000))


def test_growing_second_moments_are_the_prefixes_and_held_out_is_disjoint(tiny, corpus_file):
    model, tok = tiny
    by_size, held = S.growing_second_moments(model, tok, [1], [192, 64, 320], corpus_file, seq_len=64,
                                             held_out_tokens=128, batch_size=2)
    assert sorted(by_size) == [64, 192, 320]
    _, ids, mask = SCO.corpus_tokens(tok, corpus_file, 320 + 128, seq_len=64, progress=False)
    for n in (64, 192, 320):
        ref = _brute_force(model, ids[:n // 64], mask[:n // 64], 1)
        assert by_size[n][1].count == n == ref.count
        assert float((by_size[n][1].sum - ref.sum).abs().max()) / float(ref.sum.abs().max()) < 1e-5
    ref_held = _brute_force(model, ids[320 // 64:], mask[320 // 64:], 1)
    assert held[1].count == 128
    assert float((held[1].sum - ref_held.sum).abs().max()) / float(ref_held.sum.abs().max()) < 1e-5
    # snapshots are copies: the smallest prefix was not changed by the later parts of the pass
    assert by_size[64][1].sum is not by_size[320][1].sum
    with pytest.raises(ValueError, match="multiples of seq_len"):
        S.growing_second_moments(model, tok, [1], [100], corpus_file, seq_len=64)
