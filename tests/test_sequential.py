"""The sequential command line, the tiny world's editing helpers and the `fact_token="last"` key."""
from __future__ import annotations

import json

import pytest
import torch

from alphaedit_lite.cli import main
from alphaedit_lite.methods.hparams import load_hparams
from alphaedit_lite.locate.keys import build_sentences, keys_and_values
from alphaedit_lite.experiments.sequential import hparams_for
from alphaedit_lite.methods.registry import method_variant
from alphaedit_lite.world import load_tiny_world
from alphaedit_lite.world.editing import (edited_facts, unedited_accuracy, unedited_probes_sample,
                                          untouched_accuracy, world_stats)


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_world(device="cpu")


def test_method_variants():
    assert method_variant("alphaedit") == ("AlphaEdit", False)
    assert method_variant("MEMIT+P") == ("MEMIT", True)
    assert method_variant("prune+p") == ("PRUNE", True)
    with pytest.raises(ValueError, match="plug-in"):
        method_variant("AlphaEdit+P")
    with pytest.raises(ValueError):
        method_variant("SGD")
    assert hparams_for("MEMIT+P", "tiny-world").project is True
    assert hparams_for("MEMIT", "tiny-world").project is False
    assert hparams_for("AlphaEdit", "tiny-world", {"L2": 3.0}).L2 == 3.0


def test_fact_token_last_reads_the_prompts_last_token(tiny):
    model, tok, world = tiny
    recs = world.records[:3]
    subj = build_sentences(tok, recs, ["{}"])
    last = build_sentences(tok, recs, ["{}"], fact_token="last")
    for a, b in zip(subj, last):
        assert a[0].key_pos == a[0].subject_last < len(a[0].ids) - 1   # the subject is not at the end
        assert b[0].key_pos == len(b[0].ids) - 1
    k_s, _ = keys_and_values(model, tok, recs, [1], ["{}"])
    k_l, _ = keys_and_values(model, tok, recs, [1], ["{}"], fact_token="last")
    assert not torch.allclose(k_s[1], k_l[1])
    with pytest.raises(ValueError, match="fact_token"):
        build_sentences(tok, recs, ["{}"], fact_token="first")
    with pytest.raises(ValueError, match="fact_token"):
        load_hparams("MEMIT", "tiny-world").replace(fact_token="middle")


def test_world_stats_cover_every_training_token(tiny):
    # the user cache is shared with the other tests of this session: computed once (~30-80 s on CPU)
    from alphaedit_lite.locate.cache import stats_cache_path

    model, tok, world = tiny
    layers = load_hparams("AlphaEdit", "tiny-world").layers
    st = world_stats(model, tok, world, layers)
    n = sum(len(tok(s, add_special_tokens=False).input_ids) for s in world.training_sentences())
    assert all(st[l].count == n == st.n_tokens for l in layers)
    path = stats_cache_path(st.model_id, st.module_names[layers[-1]], st.corpus_id, n)
    assert path.is_file()
    again = world_stats(model, tok, world, layers)                # from the cache
    assert torch.equal(again[layers[-1]].cov, st[layers[-1]].cov)
    fresh = world_stats(model, tok, world, [0], cache=False)      # layer 0 alone, computed now
    C = fresh[0].cov
    assert torch.allclose(C, C.T) and torch.linalg.eigvalsh(C)[0] > -1e-6


def test_unedited_facts_are_fact_level(tiny):
    model, tok, world = tiny
    edited = world.records[:50]
    done = edited_facts(edited)
    assert len(done) == 50
    probes = unedited_probes_sample(world, edited, None)
    assert probes and all((p.fact.subject, p.fact.relation_id) not in done for p in probes)
    # the other relations of an edited person are still unedited facts
    edited_people = {s for s, _ in done}
    assert any(p.fact.subject in edited_people for p in probes)
    acc = unedited_accuracy(model, tok, world, edited, k=300)
    assert acc >= 98.0
    assert untouched_accuracy(model, tok, world, edited, k=300) >= 98.0
    assert untouched_accuracy(model, tok, world, world.records, k=300) is None


def test_tiny_world_is_editable(tiny):
    """The shipped organism can be edited with its shipped hyper-parameters (one MEMIT batch)."""
    from alphaedit_lite.experiments.evaluate import evaluate_requests
    from alphaedit_lite.methods import apply_method

    model, tok, world = tiny
    recs = world.records[:20]
    hp = load_hparams("MEMIT", "tiny-world")
    stats = world_stats(model, tok, world, hp.layers)
    before = evaluate_requests(model, tok, recs)["summary"]
    res = apply_method("MEMIT", model, tok, recs, hp, stats=stats, progress=False)
    try:
        after = evaluate_requests(model, tok, recs)["summary"]
    finally:
        res.restore(model)
    assert before["efficacy"] <= 5.0
    assert after["efficacy"] >= 80.0, after
    assert evaluate_requests(model, tok, recs)["summary"]["efficacy"] == before["efficacy"]


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sequential_cli_runs_reports_and_resumes(tmp_path, capsys):
    common = ["sequential", "--model", "tiny-world", "--method", "MEMIT,AlphaEdit", "--edits", "6", "--batch", "2",
              "--probes", "20", "--quiet", "--threads", "1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(common + ["--out", str(whole)]) == 0
    out = capsys.readouterr().out
    assert "| MEMIT | 6 |" in out and "| AlphaEdit | 6 |" in out
    for f in ("curves.png", "curves.html", "hidden_pca.png", "summary.md", "summary.json"):
        assert (whole / "report" / f).is_file()
    summary = json.loads((whole / "report" / "summary.json").read_text())["methods"]
    assert list(summary) == ["unedited", "MEMIT", "AlphaEdit"]
    from alphaedit_lite.experiments.records import SUMMARY_KEYS
    for name, row in summary.items():
        assert set(SUMMARY_KEYS) <= set(row), (name, row)
        assert row["efficacy"] is not None and row["unedited_acc"] is not None
    assert summary["unedited"]["drift_final"] == 0.0 and summary["MEMIT"]["drift_final"] > 0
    assert summary["MEMIT"]["efficacy"] == _metrics(whole / "MEMIT")[-1]["efficacy"]
    # interrupted after one batch, then resumed: the same final figures
    assert main(common + ["--out", str(parts), "--stop-after", "1"]) == 0
    assert len(_metrics(parts / "MEMIT")) == 1
    assert main(common + ["--out", str(parts)]) == 2          # not empty: needs --resume
    assert "resume" in capsys.readouterr().err
    assert main(common + ["--out", str(parts), "--resume"]) == 0
    for m in ("MEMIT", "AlphaEdit"):
        a, b = _metrics(whole / m)[-1], _metrics(parts / m)[-1]
        for k in ("efficacy", "specificity", "unedited_acc", "drift/final"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (m, k)
    assert main(["sequential", "--method", "Nope", "--out", str(tmp_path / "x")]) == 2


def test_sequential_saves_the_final_edited_models(tmp_path, capsys):
    """--save-final writes each method's edited model; transformers loads it with the run's final weights."""
    from transformers import AutoModelForCausalLM

    from alphaedit_lite.model.arch import get_rewrite_weight, rewrite_module_name

    out, saved = tmp_path / "run", tmp_path / "models"
    assert main(["sequential", "--model", "tiny-world", "--method", "MEMIT", "--edits", "2", "--batch", "1",
                 "--probes", "5", "--quiet", "--threads", "1", "--fluency-limit", "0", "--out", str(out),
                 "--save-final", str(saved)]) == 0
    assert "edited model saved to" in capsys.readouterr().out
    reloaded = AutoModelForCausalLM.from_pretrained(saved / "MEMIT").float()
    ck = torch.load(out / "MEMIT" / "checkpoint.pt", weights_only=False)
    original, _, _ = load_tiny_world(device="cpu")
    for layer in load_hparams("MEMIT", "tiny-world").layers:
        name = rewrite_module_name(reloaded, layer)
        assert torch.equal(get_rewrite_weight(reloaded, layer), ck["weights"][name].float())
        assert not torch.equal(get_rewrite_weight(reloaded, layer), get_rewrite_weight(original, layer))
    assert json.loads((saved / "MEMIT" / "alphaedit_edit.json").read_text())["edits"] == 2


@pytest.mark.parametrize("flag", ["--edits", "--batch"])
def test_bad_counts_are_refused_before_the_model_loads(flag, monkeypatch, capsys):
    import alphaedit_lite.cli.sequential as S

    def trap(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(S, "prepare", trap)
    assert main(["sequential", "--model", "tiny-world", flag, "0", "--out", "unused"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_records_copy_is_a_loadable_light_run(tmp_path, capsys):
    from alphaedit_lite.experiments.records import load_hidden, load_run

    out, rec = tmp_path / "run", tmp_path / "records"
    assert main(["sequential", "--model", "tiny-world", "--method", "MEMIT,AlphaEdit", "--edits", "4", "--batch", "2",
                 "--probes", "10", "--quiet", "--threads", "1", "--out", str(out), "--records", str(rec)]) == 0
    prov = json.loads((rec / "provenance.json").read_text())
    assert prov["command"].startswith("alphaedit-lite ") and "seconds_this_command" in prov
    for m in ("MEMIT", "AlphaEdit"):
        assert (out / m / "checkpoint.pt").is_file() and not (rec / m / "checkpoint.pt").exists()
        assert load_run(rec / m)["metrics"] == load_run(out / m)["metrics"]
        assert [p.name for p in (rec / m / "hidden").iterdir()] == ["step_00002.pt"]     # the last step only
        base, after = load_hidden(rec / m)
        assert torch.equal(after["final"], load_hidden(out / m)[1]["final"])
    for f in ("summary.md", "summary.json", "curves.png"):
        assert (rec / "report" / f).is_file()


def test_demo_writes_every_part_and_one_summary(tmp_path, capsys, monkeypatch):
    import alphaedit_lite.plots.report as SQ

    out = tmp_path / "demo"
    assert main(["demo", "--edits", "4", "--batch", "2", "--live-edits", "0", "--quiet", "--threads", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    for name in ("tiny-world", "subword-world"):
        assert name.replace("-", "_") in summary["parts"] and (out / name / "MEMIT" / "metrics.jsonl").is_file()
    # the organism where the null space has room is the headline; the counterexample comes after it
    assert summary["methods_from"] == "subword_world" and set(summary["methods"]) == {"unedited", "MEMIT", "AlphaEdit"}
    assert text.index("where the null space has room") < text.index("the counterexample")
    # the headline organism is checked against the targets, printed and written
    rows = summary["targets"]
    assert "against the targets" in text and "measured targets met" in text
    assert rows[0]["target"].startswith("AlphaEdit efficacy") and all(set(r) == {"target", "measured", "met"} for r in rows)
    room = next(r for r in rows if "null space" in r["target"])
    assert room["met"] is not None and room["measured"].endswith("%")       # measured on the subword world
    if SQ.shipped_run_dir().is_dir():        # the shipped SmolLM2 run is rendered first when it is there
        assert "paper, Table 1" in text and "measured here" in text
        assert "smollm2_shipped" in summary["parts"]
        for f in ("curves.png", "curves.html", "hidden_pca.png", "summary.json"):
            assert (out / "smollm2-shipped" / f).is_file()
        assert summary["parts"]["smollm2_shipped"]["methods"]["AlphaEdit"]["edits"] == 1000
    # without the shipped records the demo still runs, and the counterexample can be the headline
    monkeypatch.setattr(SQ, "shipped_run_dir", lambda: tmp_path / "nowhere")
    monkeypatch.setattr(SQ, "shipped_runs", lambda: {})
    assert main(["demo", "--edits", "4", "--batch", "2", "--live-edits", "0", "--quiet", "--threads", "1",
                 "--model", "tiny-world", "--counterexample", "none", "--out", str(tmp_path / "demo2")]) == 0
    s2 = json.loads((tmp_path / "demo2" / "report" / "summary.json").read_text())
    assert s2["methods_from"] == "tiny_world" and set(s2["methods"]) == {"unedited", "MEMIT", "AlphaEdit"}
    assert next(r for r in s2["targets"] if "null space" in r["target"])["met"] is None   # no room measure there
    assert set(s2["parts"]) == {"tiny_world"}
    capsys.readouterr()
    assert main(["demo", "--model", "tiny-world", "--counterexample", "tiny-world", "--out", str(tmp_path / "demo3")]) == 2
    assert "--counterexample tiny-world is the --model organism already" in capsys.readouterr().err
