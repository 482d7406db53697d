"""The `edit` and `stats` sub-commands (alphaedit_lite.cli.edit).

Fast tests: the parsers build, method names are case-insensitive, and bad input (a prompt without
'{}', a subject that is not in the prompt, an unknown method, ...) gives a clear error and exit
status 2 BEFORE any model is loaded. Tests marked `model` run a real edit and a real `stats` call on
SmolLM2-135M with a tiny corpus, with the statistics cache redirected to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import re
import time

import pytest

from alphaedit_lite.cli import edit as E
from alphaedit_lite.cli import main as cli_main

EIFFEL = ["--subject", "The Eiffel Tower", "--prompt", "{} is located in the city of", "--target", "Rome"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alphaedit-lite")
    sub = p.add_subparsers(dest="command", required=True)
    assert E.add_edit_parser(sub) is not None
    assert E.add_stats_parser(sub) is not None
    return p


# ------------------------------------------------------------------------------------------ parsers
def test_parsers_build_and_parse_the_documented_commands():
    p = _parser()
    a = p.parse_args(["edit", "--model", "smollm2-135m", "--method", "alphaedit", *EIFFEL, "--target-true", "Paris",
                      "--layers", "4", "5", "--corpus", "model-samples", "--tokens", "2048"])
    assert a.func is E.cmd_edit
    assert (a.method, a.subject, a.prompt, a.target, a.target_true) == (
        "AlphaEdit", "The Eiffel Tower", "{} is located in the city of", "Rome", "Paris")
    assert a.layers == [4, 5] and a.corpus == "model-samples" and a.tokens == 2048
    d = p.parse_args(["edit", *EIFFEL])
    assert d.target_true is None and d.layers is None and d.tokens is None and d.method == "AlphaEdit"

    s = p.parse_args(["stats", "--model", "smollm2-135m", "--layers", "4", "5", "6", "--corpus", "wikitext-2",
                      "--tokens", "5000", "--threshold", "1e-2", "--mode", "relative"])
    assert s.func is E.cmd_stats
    assert s.layers == [4, 5, 6] and s.tokens == 5000 and s.threshold == 1e-2 and s.mode == "relative"
    s2 = p.parse_args(["stats"])
    assert s2.threshold == 2e-2 and s2.mode == "absolute" and s2.corpus == "wikitext-2"


@pytest.mark.parametrize("given,canon", [("alphaedit", "AlphaEdit"), ("ALPHAEDIT", "AlphaEdit"), ("memit", "MEMIT"),
                                         ("Rome", "ROME"), ("ft", "FT"), ("prune", "PRUNE"), ("Rect", "RECT")])
def test_methods_are_case_insensitive(given, canon):
    assert _parser().parse_args(["edit", "--method", given, *EIFFEL]).method == canon
    assert E.method_name(given) == canon


def test_unknown_method_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["edit", "--method", "SERAC", *EIFFEL])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'SERAC'" in err and "AlphaEdit" in err and "MEMIT" in err
    with pytest.raises(ValueError, match="unknown method"):
        E.method_name("KN")


def test_bad_stats_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["stats", "--mode", "sideways"])
    assert exc.value.code == 2
    assert "sideways" in capsys.readouterr().err


# -------------------------------------------------------------------------------- bad input, no model
def _fail_fast(monkeypatch, argv, capsys) -> str:
    """Run main(argv); loading a model would be a bug (input is checked first)."""
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(E, "_load", no_load)
    t0 = time.perf_counter()
    rc = cli_main(argv)
    assert rc == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert err.startswith("alphaedit-lite: error: ")
    return err


def test_prompt_without_slot_is_rejected_with_a_rewrite_hint(monkeypatch, capsys):
    err = _fail_fast(monkeypatch, ["edit", "--subject", "The Eiffel Tower", "--prompt",
                                   "The Eiffel Tower is located in the city of", "--target", "Rome"], capsys)
    assert "has no '{}'" in err and "'{} is located in the city of'" in err


def test_subject_not_in_prompt_is_rejected(monkeypatch, capsys):
    err = _fail_fast(monkeypatch, ["edit", "--subject", "The Eiffel Tower", "--prompt",
                                   "The Louvre is located in the city of", "--target", "Rome"], capsys)
    assert "is not in the prompt" in err and "'{}'" in err


@pytest.mark.parametrize("argv,needle", [
    (["--subject", "X", "--prompt", "{} and {} are in", "--target", "Rome"], "2 times"),
    (["--subject", "   ", "--prompt", "{} is in", "--target", "Rome"], "--subject is empty"),
    (["--subject", "X", "--prompt", "{} is in", "--target", ""], "--target is empty"),
    (["--subject", "X{}", "--prompt", "{} is in", "--target", "Rome"], "belongs in --prompt"),
    (["--subject", "X", "--prompt", "{}", "--target", "Rome"], "only the subject"),
    (["--subject", "X", "--prompt", "{} is in", "--target", "Rome", "--target-true", "rome"], "must change"),
    ([*EIFFEL, "--tokens", "0"], "--tokens must be a positive"),
])
def test_other_bad_edit_input(monkeypatch, capsys, argv, needle):
    assert needle in _fail_fast(monkeypatch, ["edit", *argv], capsys)


def test_bad_stats_tokens(monkeypatch, capsys):
    assert "--tokens must be a positive" in _fail_fast(monkeypatch, ["stats", "--layers", "4", "--tokens", "-5"], capsys)


def test_save_and_share_options_parse():
    p = _parser()
    a = p.parse_args(["edit", *EIFFEL, "--save", "out/edited", "--overwrite"])
    assert a.save == "out/edited" and a.overwrite is True
    assert p.parse_args(["edit", *EIFFEL]).save is None
    s = p.parse_args(["stats", "--layers", "4", "--tokens", "9", "--export", "s.pt", "--with-projector"])
    assert s.export == "s.pt" and s.with_projector and s.import_files is None
    i = p.parse_args(["stats", "--import", "a.npz", "b.npz", "--layers", "4", "5", "--corpus-id", "wiki"])
    assert i.import_files == ["a.npz", "b.npz"] and i.layers == [4, 5] and i.corpus_id == "wiki"


def test_save_into_a_non_empty_folder_fails_before_loading(monkeypatch, capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    err = _fail_fast(monkeypatch, ["edit", *EIFFEL, "--save", str(tmp_path)], capsys)
    assert "not empty" in err and "--overwrite" in err and str(tmp_path) in err
    err = _fail_fast(monkeypatch, ["edit", *EIFFEL, "--save", str(tmp_path / "keep.txt")], capsys)
    assert "is a file" in err
    assert "--overwrite only goes with --save" in _fail_fast(monkeypatch, ["edit", *EIFFEL, "--overwrite"], capsys)


@pytest.mark.parametrize("argv,needle", [
    (["--import", "no/such/file.pt"], "no such file"),
    (["--layers", "4", "--tokens", "9", "--with-projector"], "--with-projector only goes with --export"),
    (["--layers", "4", "--tokens", "9", "--corpus-id", "x"], "--corpus-id only goes with --import"),
    (["--import", "{f}", "--export", "x.pt"], "separately"),
    (["--import", "{f}", "--layers", "1", "2"], "2 layer(s) for 1 file(s)"),
    (["--layers", "4", "--tokens", "9", "--export", "{d}"], "is a folder"),
])
def test_bad_stats_sharing_input(monkeypatch, capsys, tmp_path, argv, needle):
    f = tmp_path / "layer-1.npz"
    f.write_bytes(b"x")
    argv = [a.replace("{f}", str(f)).replace("{d}", str(tmp_path)) for a in argv]
    assert needle in _fail_fast(monkeypatch, ["stats", *argv], capsys)


def test_check_edit_inputs_returns_the_template():
    assert E.check_edit_inputs("Paris", "{} is the capital of   ", "Italy") == "{} is the capital of"


def test_registered_in_the_main_cli_when_wired():
    from alphaedit_lite.cli import app as cli

    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "edit" not in sub.choices:
        pytest.skip("alphaedit_lite/cli.py does not register the edit/stats sub-commands yet")
    assert sub.choices["edit"].get_default("func") is E.cmd_edit
    assert sub.choices["stats"].get_default("func") is E.cmd_stats
    assert cli.main(["edit", "--subject", "A", "--prompt", "B is in", "--target", "C"]) == 2


# ------------------------------------------------------------------------------ stats sharing, tiny model
@pytest.fixture
def tiny_folders(tmp_path, monkeypatch):
    """Two tiny random Llamas saved as model folders (what --model accepts), a corpus, a private cache."""
    import editing_helpers as EH
    import torch

    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    folders = []
    for seed in (0, 1):
        model, tok = EH.tiny_llama(seed=seed)
        folders.append(tmp_path / f"tiny-{seed}")
        model.save_pretrained(folders[-1])
        tok.save_pretrained(folders[-1])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:60_000], encoding="utf-8")
    threads = torch.get_num_threads()
    yield folders, corpus
    torch.set_num_threads(threads)


def test_stats_export_and_import_on_the_command_line(tiny_folders, tmp_path, monkeypatch, capsys):
    (a, b), corpus = tiny_folders
    common = ["--device", "cpu", "--threads", "1", "--quiet"]
    f = tmp_path / "shared.pt"
    assert cli_main(["stats", "--model", str(a), "--layers", "0", "2", "--corpus", str(corpus), "--tokens", "256",
                   "--seq-len", "64", "--threshold", "1e-2", "--mode", "relative", "--export", str(f),
                   "--with-projector", *common]) == 0
    out = capsys.readouterr().out
    assert f"to {f}" in out and "and P (relative threshold 0.01)" in out and f.is_file()

    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "other-machine"))
    assert cli_main(["stats", "--model", str(a), "--import", str(f), "--threshold", "1e-2", "--mode", "relative",
                   *common]) == 0
    out = capsys.readouterr().out
    m = re.search(r"--corpus (\S+) --tokens 256", out)
    assert m and "imported into the cache" in out and "--layers 0 2" in out, out
    assert str(tmp_path / "other-machine") in out                           # the table lists the new cache files
    # the printed corpus id works as --corpus, with no corpus file at hand
    assert cli_main(["stats", "--model", str(a), "--layers", "2", "--corpus", m.group(1), "--tokens", "256",
                   *common]) == 0
    capsys.readouterr()
    # --forward-dtype bfloat16: computed again (bf16 statistics have their own cache file), listed as such
    assert cli_main(["stats", "--model", str(a), "--layers", "2", "--corpus", str(corpus), "--tokens", "256",
                     "--seq-len", "64", "--forward-dtype", "bfloat16", *common]) == 0
    assert "_bf16-forward.pt" in capsys.readouterr().out
    # another model: refused with exit status 2 and a message naming the file
    assert cli_main(["stats", "--model", str(b), "--import", str(f), *common]) == 2
    err = capsys.readouterr().err
    assert "fingerprints differ" in err and str(f) in err


def test_stats_import_of_rome_npz_files_on_the_command_line(tiny_folders, tmp_path, capsys):
    import numpy as np

    (a, _), _ = tiny_folders
    rng = np.random.default_rng(0)
    K = rng.standard_normal((96, 40)) @ rng.standard_normal((40, 300))      # rank 40: 56 free directions
    files = []
    for layer in (1, 3):
        files.append(tmp_path / f"keys_{layer}.npz")
        np.savez(files[-1], **{"mom2.mom2": (layer * K) @ (layer * K).T, "mom2.count": np.array(300)})
    rc = cli_main(["stats", "--model", str(a), "--import", *map(str, files), "--layers", "1", "3",
                 "--corpus-id", "rome-wiki", "--device", "cpu", "--threads", "1", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "--layers 1 3 --corpus rome-wiki --tokens 300" in out
    assert re.search(r"^\s+1\s+56/96", out, re.M) and re.search(r"^\s+3\s+56/96", out, re.M), out


# ----------------------------------------------------------------------------------------- real model
@pytest.mark.model
def test_real_edit_raises_the_new_target_above_the_old(private_cache, tiny_corpus, capsys):
    pytest.importorskip("gguf")
    t0 = time.perf_counter()
    rc = cli_main(["edit", "--model", "smollm2-135m", "--method", "alphaedit", *EIFFEL, "--layers", "7", "8",
                 "--corpus", str(tiny_corpus), "--tokens", "1024", "--prefixes", "2", "--steps", "15",
                 "--max-new-tokens", "8", "--quiet"])
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    new = re.search(r"^'Rome'\s+([\d.e+-]+)\s+([\d.e+-]+)\s+p\(new\)", out, re.M)
    old = re.search(r"^'(\w+)'\s+([\d.e+-]+)\s+([\d.e+-]+)\s+p\(old\)", out, re.M)
    assert new and old, out
    p_new0, p_new1 = float(new.group(1)), float(new.group(2))
    p_old0, p_old1 = float(old.group(2)), float(old.group(3))
    assert old.group(1) == "Paris"                       # the model's own greedy answer
    assert p_old0 > p_new0                               # before: the model believes Paris
    assert p_new1 > p_old1 and p_new1 > p_new0           # after: Rome
    assert "(the model's own greedy answer)" in out and "restored bit for bit" in out
    assert re.search(r"greedy after:.*Rome", out)
    assert wall < 90, f"the edit took {wall:.0f} s"


@pytest.mark.model
def test_real_stats_prints_rank_range_and_cache_paths(private_cache, tiny_corpus, capsys):
    pytest.importorskip("gguf")
    rc = cli_main(["stats", "--model", "smollm2-135m", "--layers", "3", "8", "--corpus", str(tiny_corpus),
                 "--tokens", "768", "--threshold", "2e-2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for layer in (3, 8):
        m = re.search(rf"^\s+{layer}\s+(\d+)/1536\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
        assert m, out
        kept, lo, hi = int(m.group(1)), float(m.group(2)), float(m.group(3))
        assert 768 <= kept < 1536 and lo < 2e-2 < hi   # 768 keys span ≤ 768 dims: ≥ 768 directions are free
        paths = re.findall(rf"layer {layer}: (?:statistics|projector)\s+(\S+)", out)
        assert len(paths) == 2 and all(os.path.isfile(p) and p.startswith(str(private_cache)) for p in paths)
