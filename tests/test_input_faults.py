"""Bad input gets a clear error (issue 16): each fault a reliability probe found, as
input -> the expected message (naming what was wrong and how to fix it) or the correct result.

1. request files: EasyEdit records, unknown keys, broken JSON (``alphaedit_lite.locate.requests``);
2. hyper-parameter values: ``--set`` and ``replace`` checked against the declared field types;
3. the null-space core: an indefinite or empty covariance;
4. the solvers: a P that is not a projector, a half-precision working dtype;
5. the README's top-level imports.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing

import pytest
import torch

from alphaedit_lite.methods import hparams as H
from alphaedit_lite.cli import sequential as S
from alphaedit_lite.core.nullspace import null_space_projector, projector_from_keys, psd_tolerance
from alphaedit_lite.locate.requests import (
    EditRequest,
    UnknownKeysError,
    as_request,
    as_requests,
    load_counterfact,
    load_requests,
    load_zsre,
)
from alphaedit_lite.core.solvers import alphaedit_delta, memit_delta

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def _write(tmp_path, records, name="reqs.json"):
    p = tmp_path / name
    p.write_text(json.dumps(records))
    return p


# ================================================================================================
# 1. Requests
# ================================================================================================
EASYEDIT_CF = {  # one record of EasyEdit's counterfact-edit.json
    "case_id": 0,
    "prompt": "The mother tongue of Danielle Darrieux is",
    "subject": "Danielle Darrieux",
    "target_new": "English",
    "ground_truth": "French",
    "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
    "locality_prompt": "Michel Rocard is a native speaker of",
    "locality_ground_truth": "French",
}
CF_RECORD = {"case_id": 7, "requested_rewrite": {"prompt": "{} plays", "subject": "Messi",
                                                 "target_new": {"str": "tennis"}, "target_true": {"str": "football"}}}


def test_easyedit_counterfact_record_maps_every_field(tmp_path):
    (r,) = load_requests(_write(tmp_path, [EASYEDIT_CF]))
    assert r.prompt == "The mother tongue of {} is" and r.subject == "Danielle Darrieux"
    assert r.target_new == "English" and r.target_true == "French"
    assert r.paraphrase_prompts == ["Where Danielle Darrieux is from, people speak the language of"]
    assert r.neighborhood_prompts == ["Michel Rocard is a native speaker of"]
    # the neighbour's answer is ground_truth: CounterFact semantics, no separate answers
    assert r.neighborhood_targets is None and r.case_id == 0
    # load_counterfact reads EasyEdit's CounterFact file too
    assert list(load_counterfact(_write(tmp_path, [EASYEDIT_CF], "cf.json"))) == [r]


def test_easyedit_lists_and_own_locality_answers_become_zsre_style():
    rec = dict(EASYEDIT_CF, rephrase_prompt=["Danielle Darrieux speaks", "Danielle Darrieux was raised speaking"],
               locality_prompt=["Who wrote Hamlet?", "The capital of Peru is"],
               locality_ground_truth=["Shakespeare", "Lima"], ground_truth=["French", "français"])
    r = as_request(rec)
    assert r.target_true == "French"                          # a list of answers: the first
    assert len(r.paraphrase_prompts) == 2
    assert r.neighborhood_prompts == ["Who wrote Hamlet?", "The capital of Peru is"]
    assert r.neighborhood_targets == ["Shakespeare", "Lima"]  # unrelated questions keep their answers


def test_easyedit_prompt_templated_at_first_subject_occurrence():
    r = as_request(dict(EASYEDIT_CF, prompt="Danielle Darrieux, as Danielle Darrieux, spoke",
                        rephrase_prompt="x y", locality_prompt=[], locality_ground_truth=[]))
    assert r.prompt == "{}, as Danielle Darrieux, spoke" and r.neighborhood_prompts == []
    assert r.neighborhood_targets is None


@pytest.mark.parametrize("change, pattern", [
    (dict(prompt="The mother tongue of Léon Blum is"), r"subject 'Danielle Darrieux' is not found in the prompt"),
    (dict(locality_ground_truth=None), r"has locality_prompt but no locality_ground_truth"),
    (dict(locality_prompt=["a b", "c d"]), r"1 locality_ground_truth answer\(s\) for 2 locality_prompt\(s\)"),
    (dict(rephrase_prompt=["ok", 3]), r"rephrase_prompt must be a string or a list of strings"),
    (dict(rephrase_prompt=["ok", " "]), r"rephrase_prompt\[1\] is empty"),
    (dict(target_new=None), r"EasyEdit record lacks \['target_new'\]"),
])
def test_easyedit_faults_name_the_field(change, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern) as info:
        as_request(dict(EASYEDIT_CF, **change))
    assert "case_id=0" in str(info.value)


def test_misspelt_key_in_counterfact_record_names_key_record_and_file(tmp_path):
    bad = json.loads(json.dumps(CF_RECORD))
    bad["requested_rewrite"]["target_ture"] = bad["requested_rewrite"].pop("target_true")
    p = _write(tmp_path, [CF_RECORD, bad])
    with pytest.raises(UnknownKeysError, match=r"record #1 \(case_id=7\) in .*reqs\.json: unknown key\(s\) "
                                               r"\['target_ture'\].*'target_ture' -> 'target_true'"):
        load_requests(p)
    # ... also from the dataset loader, whose on_error="skip" would otherwise drop every such record
    with pytest.raises(UnknownKeysError, match="unknown_keys='ignore'"):
        load_counterfact(p)
    # the documented switch drops it on purpose
    reqs = load_requests(p, unknown_keys="ignore")
    assert len(reqs) == 2 and reqs[1].target_true is None


@pytest.mark.parametrize("record, key", [
    (dict(CF_RECORD, pararel_idx=3, attribute_prompts=["x"], portability={}, extra_note="hi"), "extra_note"),
    ({"prompt": "{} plays", "subject": "Messi", "target_new": "tennis", "target_ture": "football"}, "target_ture"),
    (dict(EASYEDIT_CF, target_true="French"), "target_true"),
    ({**CF_RECORD, "requested_rewrite": {**CF_RECORD["requested_rewrite"],
                                         "target_new": {"str": "tennis", "sr": "x"}}}, "sr"),
])
def test_unknown_keys_in_any_record_format(tmp_path, record, key):
    with pytest.raises(UnknownKeysError, match=rf"\['{key}'\]"):
        load_requests(_write(tmp_path, [record]))
    with pytest.raises(UnknownKeysError, match=r"request #0 \(case_id="):
        as_requests([record])
    assert as_request(record, unknown_keys="ignore").subject


def test_known_extra_keys_of_public_datasets_are_accepted(tmp_path):
    cf = dict(CF_RECORD, pararel_idx=2, attribute_prompts=["Federer plays"], portability={"New Question": "?"})
    cf["requested_rewrite"] = {**cf["requested_rewrite"], "relation_id": "P641",
                               "target_new": {"str": "tennis", "id": "Q847"}}
    assert load_counterfact(_write(tmp_path, [cf]))[0].relation_id == "P641"
    zs = {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?",
          "pred": "Trinity College", "rephrase": "What university did Watts Humphrey go to?",
          "alt": "University of Michigan", "answers": ["Illinois Institute of Technology"],
          "loc": "nq question: who played desmond doss father in hacksaw ridge", "loc_ans": "Hugo Weaving",
          "cond": "Trinity College >> University of Michigan || What university did Watts Humphrey attend?",
          "portability": {}}
    (r,) = load_zsre(_write(tmp_path, [zs], "zsre.json"))
    assert r.target_new == "University of Michigan" and r.neighborhood_targets == ["Hugo Weaving"]
    with pytest.raises(UnknownKeysError, match=r"\['answer'\].*a zsRE record.*'answer' -> 'answers'"):
        load_zsre(_write(tmp_path, [dict(zs, answer="x")], "zsre2.json"))


def test_unknown_keys_switch_is_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown_keys must be 'error' .* or 'ignore', got 'skip'"):
        load_requests(_write(tmp_path, [CF_RECORD]), unknown_keys="skip")
    with pytest.raises(ValueError, match="unknown_keys must be"):
        as_request(CF_RECORD, unknown_keys=False)


def test_zsre_record_given_to_load_requests_points_to_load_zsre():
    with pytest.raises(ValueError, match=r"looks like a zsRE record .* load_zsre\(path\)"):
        as_request({"subject": "A", "src": "Who is A?", "alt": "B", "answers": ["C"]})


@pytest.mark.parametrize("loader", [load_requests, load_counterfact, load_zsre])
def test_truncated_json_names_the_file(tmp_path, loader):
    p = tmp_path / "broken.json"
    p.write_text(json.dumps([CF_RECORD, CF_RECORD])[:-20])
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON \(.* at line 1, column \d+\); "
                                         r"the file may be truncated"):
        loader(p)


# ================================================================================================
# 2. Hyper-parameter values (--set, replace, JSON files)
# ================================================================================================
@pytest.mark.parametrize("item, pattern", [
    ("L2=true", r"L2=True \(a bool\) is not valid: L2 must be a number \(float\), e.g. L2=10.0"),
    ("v_lr=abc", r"v_lr='abc' \(a string\) is not valid: v_lr must be a number \(float\)"),
    ("v_num_grad_steps=2.5", r"v_num_grad_steps=2.5 \(a float\) is not valid: .* a whole number \(int\)"),
    ("v_num_grad_steps=true", r"v_num_grad_steps=True \(a bool\) .* a whole number"),
    ("nullspace_threshold=abc", r"nullspace_threshold='abc' \(a string\) .* a number \(float\)"),
    ("nullspace_threshold=NaN", r"must be a finite number"),
    ("layers=4", r"layers=4 \(an int\) .* a list of whole numbers .* --set layers=\[3,4\]"),
    ("layers=[3,true]", r"a list of whole numbers"),
    ("kl_relation_prompts=[1]", r"kl_relation_prompts=\[1\] \(a list\) .* a JSON object of relation ids and templates"),
    ('kl_relation_prompts={"P19":"born in"}', r"templates with one \{\} each"),
    ("nullspace_mode=svd", r"nullspace_mode must be one of \['absolute', 'relative', 'energy', 'rank'\]"),
    ("fact_token=1", r"fact_token must be a string"),
    ("project=1", r"project must be true or false"),
    ("l2=3", r"'l2' is not a hyper-parameter of any method \(did you mean 'L2'\?\)"),
    ("L2", r"--set takes KEY=VALUE"),
    ("=3", r"--set takes KEY=VALUE"),
])
def test_set_values_are_checked_against_field_types(item, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        S._parse_set([item])
    assert str(info.value).startswith("--set")


def test_set_values_that_fit_are_normalised():
    out = S._parse_set(["v_num_grad_steps=3.0", "layers=[1,2]", "nullspace_mode=relative", "L2=5",
                        "mom2_dataset=wikitext-2", "project=true"])
    assert out == {"v_num_grad_steps": 3, "layers": [1, 2], "nullspace_mode": "relative", "L2": 5,
                   "mom2_dataset": "wikitext-2", "project": True}
    assert isinstance(out["v_num_grad_steps"], int)
    assert S._parse_set(['kl_relation_prompts={"P19":"{} was born in"}']) == {"kl_relation_prompts": {"P19": "{} was born in"}}
    with pytest.raises(ValueError, match="--set L2 is given twice"):
        S._parse_set(["L2=1", "L2=2"])


def test_replace_and_load_hparams_check_values():
    hp = H.load_hparams("AlphaEdit", "tiny-world")
    with pytest.raises(ValueError, match=r"override: L2=True \(a bool\) is not valid"):
        hp.replace(L2=True)
    with pytest.raises(ValueError, match=r"v_num_grad_steps=2.5 .* whole number"):
        H.load_hparams("AlphaEdit", "tiny-world", v_num_grad_steps=2.5)
    assert hp.replace(v_num_grad_steps=4.0, L2=3).v_num_grad_steps == 4
    assert hp.replace(layers=(hp.layers[0],)).layers == [hp.layers[0]]


def test_json_file_values_are_checked(tmp_path):
    data = json.loads(H.hparams_path("AlphaEdit", "tiny-world").read_text())
    data["v_lr"] = "0.5"
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"mine\.json: v_lr='0.5' \(a string\) is not valid"):
        H.load_hparams("AlphaEdit", p)


def test_every_shipped_hparams_file_passes_the_type_checks():
    for method, models in H.available_hparams().items():
        for model in models:
            H.load_hparams(method, model)


def test_a_field_name_has_one_type_in_every_method():
    """check_overrides checks --set against the first method that has the field: types must agree."""
    seen: dict[str, object] = {}
    for cls in H.METHODS.values():
        for name, kind in typing.get_type_hints(cls).items():
            assert seen.setdefault(name, kind) == kind, f"{name}: {kind} vs {seen[name]}"
    assert {f.name for c in H.METHODS.values() for f in dataclasses.fields(c)} == set(seen)


def test_sequential_command_refuses_a_bad_set_before_loading_anything(monkeypatch, capsys):
    from alphaedit_lite.cli import app as cli

    def must_not_run(*a, **k):
        raise AssertionError("the model was loaded before the --set values were checked")

    monkeypatch.setattr(S, "prepare", must_not_run)
    monkeypatch.setattr(S, "hparams_for", must_not_run)       # the bad value is caught even earlier
    rc = cli.main(["sequential", "--model", "tiny-world", "--method", "AlphaEdit", "--threads", "1",
                   "--set", "L2=true"])
    assert rc == 2
    assert "L2=True (a bool) is not valid: L2 must be a number" in capsys.readouterr().err


def test_hparams_for_raises_before_the_model_loads():
    # cmd_sequential calls hparams_for(labels[0], model, overrides) before prepare(): it checks too
    with pytest.raises(ValueError, match=r"override: L2=True \(a bool\) is not valid"):
        S.hparams_for("AlphaEdit", "tiny-world", {"L2": True})
    with pytest.raises(ValueError, match=r"v_lr='abc' \(a string\)"):
        S.hparams_for("MEMIT+P", "tiny-world", {"v_lr": "abc"})


# ================================================================================================
# 3. Null-space core
# ================================================================================================
def test_indefinite_covariance_is_refused():
    C = torch.diag(torch.tensor([-5.0, 1.0, 2.0], dtype=F64))       # symmetric, one eigenvalue −5
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64))
    for cov in (C, Q @ C @ Q.T):
        for route in ("full", "subset"):
            with pytest.raises(ValueError, match=r"not positive semi-definite, so it is not a covariance.*"
                                                 r"smallest eigenvalue is -5.*subtraction.*float16"):
                null_space_projector(cov, 0.5, route=route)


def test_rounding_level_negative_eigenvalues_are_accepted(make_keys):
    K0 = make_keys(24, 10, 60)                                         # rank 10 of 24: 14 zero eigenvalues
    C = K0 @ K0.T / 60
    lam = torch.linalg.eigvalsh(C)
    assert abs(float(lam[0])) < 1e-12 * float(lam[-1])                 # zero up to rounding, either sign
    assert null_space_projector(C, 1e-6, mode="relative").kept_rank == 14
    # float32 storage or a float32 eigh: the tolerance follows the lower precision
    assert null_space_projector(C.float(), 1e-5, mode="relative").kept_rank == 14
    assert null_space_projector(C, 1e-5, mode="relative", dtype=torch.float32).kept_rank == 14
    assert psd_tolerance(24, F64) == 1e-8 and psd_tolerance(24, F64, torch.float32) > 1e-7
    # just beyond the tolerance is refused
    lam_max = float(lam[-1])
    bad = C - 2e-8 * lam_max * torch.eye(24, dtype=F64)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        null_space_projector(bad, 1e-6, mode="relative")


def test_empty_covariance_and_keys_give_clear_errors():
    with pytest.raises(ValueError, match=r"covariance is empty \(shape \(0, 0\)\): the key dimension d is 0"):
        null_space_projector(torch.zeros(0, 0, dtype=F64))
    with pytest.raises(ValueError, match=r"K0 has no keys \(shape \(4, 0\)\)"):
        projector_from_keys(torch.zeros(4, 0, dtype=F64))
    with pytest.raises(ValueError, match="covariance is empty"):
        projector_from_keys(torch.zeros(0, 5, dtype=F64))
    with pytest.raises(ValueError, match="dtype must be torch.float64 .* or torch.float32"):
        null_space_projector(torch.eye(3, dtype=F64), 0.5, dtype=torch.float16)


# ================================================================================================
# 4. Solvers
# ================================================================================================
def _edit(gen, d=6, d_out=4, u=3):
    R = torch.randn(d_out, u, generator=gen, dtype=F64)
    K1 = torch.randn(d, u, generator=gen, dtype=F64)
    K0 = torch.randn(d, 2, generator=gen, dtype=F64) @ torch.randn(2, 30, generator=gen, dtype=F64)
    return R, K1, K0


def test_matrix_that_is_not_a_projector_is_refused(gen):
    R, K1, K0 = _edit(gen)
    C0 = K0 @ K0.T / 30
    P = projector_from_keys(K0, threshold=1e-8).P
    skewed = P.clone()
    skewed[0, 1] += 0.5                                # Pᵀ ≠ P (and P P ≠ P)
    A = torch.randn(6, 2, generator=gen, dtype=F64)
    not_orthonormal = A @ A.T                          # Û Ûᵀ with Û not orthonormal
    for bad in (C0, 2 * P, not_orthonormal, skewed, P + 1e-3 * torch.randn(6, 6, generator=gen, dtype=F64)):
        with pytest.raises(ValueError, match=r"P is not an orthogonal projector \(Pᵀ = P and P P = P\).*"
                                             r"null_space_projector\(C0\)\.P"):
            alphaedit_delta(R, K1, bad)
    # an idempotent but non-symmetric (oblique) projector fails the symmetry probe
    Bo = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=F64)  # B B = B, Bᵀ ≠ B
    with pytest.raises(ValueError, match="not an orthogonal projector"):
        alphaedit_delta(R[:, :2], torch.randn(2, 2, generator=gen, dtype=F64), Bo)


def test_true_projectors_pass_in_every_precision(gen):
    R, K1, K0 = _edit(gen)
    P = projector_from_keys(K0, threshold=1e-8).P
    ref = alphaedit_delta(R, K1, P)
    for given in (P.float(), P.half(), P.bfloat16(), torch.eye(6, dtype=F64), torch.zeros(6, 6, dtype=F64)):
        out = alphaedit_delta(R, K1, given, dtype=torch.float32)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(alphaedit_delta(R, K1, P.float()).double(), ref, atol=1e-5)
    P32 = null_space_projector(K0 @ K0.T / 30, 1e-8, dtype=torch.float32).P.double()  # float32 P cast up
    alphaedit_delta(R, K1, P32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, "float32"])
def test_half_precision_working_dtype_is_refused(gen, dtype):
    R, K1, K0 = _edit(gen)
    P = projector_from_keys(K0, threshold=1e-8).P
    with pytest.raises(ValueError, match="dtype must be torch.float64 .* or torch.float32, got"):
        alphaedit_delta(R, K1, P, dtype=dtype)
    with pytest.raises(ValueError, match="dtype must be torch.float64"):
        memit_delta(R, K1, torch.eye(6, dtype=F64), 1.0, dtype=dtype)


# ================================================================================================
# 5. Top-level imports
# ================================================================================================
def test_readme_names_import_from_the_package():
    import alphaedit_lite
    from alphaedit_lite import apply_method, load_hparams, load_model
    from alphaedit_lite.methods.hparams import load_hparams as lh
    from alphaedit_lite.methods import apply_method as am
    from alphaedit_lite.model.loading import load_model as lm

    assert (load_model, load_hparams, apply_method) == (lm, lh, am)
    assert {"load_model", "load_hparams", "apply_method"} <= set(alphaedit_lite.__all__)
    assert {"load_model", "load_hparams", "apply_method"} <= set(dir(alphaedit_lite))
    with pytest.raises(AttributeError, match="has no attribute 'load_modle'"):
        alphaedit_lite.load_modle  # noqa: B018


def test_package_import_stays_light_and_star_import_works():
    code = ("import sys, alphaedit_lite\n"
            "assert 'alphaedit_lite.model.arch' not in sys.modules and 'alphaedit_lite.methods' not in sys.modules\n"
            "assert 'transformers' not in sys.modules\n"
            "from alphaedit_lite import *\n"
            "print(load_model.__module__, load_hparams.__module__, apply_method.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["alphaedit_lite.model.loading", "alphaedit_lite.methods.hparams", "alphaedit_lite.methods"]


def test_edit_request_is_unchanged_by_the_loaders(tmp_path):
    """Round trip through the kit's own format still works with the stricter key checks."""
    from alphaedit_lite.locate.requests import save_requests

    reqs = [as_request(EASYEDIT_CF), EditRequest(prompt="{} plays", subject="Messi", target_new="tennis",
                                                 target_true="football", neighborhood_prompts=["Who is X?"],
                                                 neighborhood_targets=["Y"], case_id=1)]
    assert list(load_requests(save_requests(reqs, tmp_path / "rt.json"))) == reqs
