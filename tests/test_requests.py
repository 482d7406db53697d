"""Tests of alphaedit_lite.locate.requests: loaders on the shared data, validation errors, dict
normalisation, round trips, and the shipped request set (its structure; and, with the model
marker, that SmolLM2 knows every shipped fact)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alphaedit_lite.locate import requests as R

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_requests import (MIN_NEIGHBOURS, RELATIONS, candidate_requests, model_knows,  # noqa: E402
                            select_requests, without_edited_neighbours)  # scripts/build_requests.py
from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.locate.requests import (
    EditRequest,
    as_request,
    as_requests,
    edited_neighbours,
    load_counterfact,
    load_knowns,
    load_requests,
    load_zsre,
    save_requests,
)

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "counterfact" / "counterfact_1031.json").is_file(),
    reason="shared evaluation data (../shared/data) not present")
SHIPPED = R.SHIPPED_REQUESTS_DIR / "smollm2_known_facts.json"


def _good(**kw) -> dict:
    d = dict(prompt="{} is located in the city of", subject="Eiffel Tower", target_new="Rome",
             target_true="Paris", paraphrase_prompts=["You can see Eiffel Tower in"],
             neighborhood_prompts=["The Louvre is located in the city of"], case_id=42)
    d.update(kw)
    return d


# ----------------------------------------------------------------------------------------------
# Loaders on the shared data
# ----------------------------------------------------------------------------------------------
@needs_data
def test_load_counterfact_all_1031_validate():
    raw = json.loads((DATA / "counterfact" / "counterfact_1031.json").read_text())
    reqs = load_counterfact()
    assert len(reqs) == 1031 and reqs.skipped == []
    for r, rec in zip(reqs, raw):
        rw = rec["requested_rewrite"]
        assert r.case_id == rec["case_id"] and r.relation_id == rw["relation_id"]
        assert r.filled_prompt == rw["prompt"].format(rw["subject"])
        assert r.target_new == rw["target_new"]["str"] and r.target_true == rw["target_true"]["str"]
        assert len(r.paraphrase_prompts) == 2 and len(r.neighborhood_prompts) == 10
        assert len(r.generation_prompts) == 10 and r.neighborhood_targets is None
    first = load_counterfact(limit=5)
    assert [r.case_id for r in first] == [r.case_id for r in reqs[:5]]
    assert load_counterfact(DATA / "counterfact" / "counterfact_1031.json", limit=0) == []


@needs_data
def test_load_zsre_counts_and_reports_skips():
    raw = json.loads((DATA / "zsre" / "zsre_eval_1037.json").read_text())
    with pytest.warns(UserWarning, match="skipped"):
        reqs = load_zsre()
    assert len(raw) == 1037
    assert len(reqs) + len(reqs.skipped) == 1037 and len(reqs.skipped) < 40
    for s in reqs.skipped:  # exactly the records whose alternative answer is the true answer
        rec = raw[s.index]
        assert rec["alt"].strip().casefold() == rec["answers"][0].strip().casefold()
        assert "target_new equals target_true" in s.reason and f"case_id={s.index}" in s.reason
    skipped = {s.index for s in reqs.skipped}
    kept = [rec for i, rec in enumerate(raw) if i not in skipped]
    for r, rec in zip(reqs, kept):
        assert r.filled_prompt == rec["src"].rstrip() and r.prompt.count("{}") == 1
        assert r.target_new == rec["alt"].strip() and r.target_true == rec["answers"][0].strip()
        assert r.paraphrase_prompts == [rec["rephrase"].rstrip()]
        assert r.neighborhood_prompts[0].startswith(rec["loc"]) and r.neighborhood_prompts[0].endswith("?")
        assert r.neighborhood_targets == [rec["loc_ans"].strip()]
    memit = load_zsre(new_target="answer")  # MEMIT's convention: edit towards answers[0]
    assert len(memit) == 1037 and not memit.skipped and all(r.target_true is None for r in memit)
    with pytest.raises(ValueError, match="new_target"):
        load_zsre(new_target="pred")


@needs_data
def test_load_zsre_can_raise_on_first_bad_record():
    with pytest.raises(ValueError, match="target_new equals target_true"):
        load_zsre(on_error="raise")


@needs_data
def test_load_knowns():
    k = load_knowns()
    assert len(k) == 1209
    assert all(f.subject in f.prompt and f.attribute for f in k)
    assert k[0].subject == "Vinson Massif" and k[0].attribute == "Antarctica"


def test_missing_files_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_counterfact(tmp_path / "nope.json")
    # No shared data, empty cache, offline: the error says where to put the file.
    monkeypatch.setenv("ALPHAEDIT_DATA", str(tmp_path))
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ALPHAEDIT_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="put the file at .*counterfact.json"):
        load_counterfact()
    with pytest.raises(FileNotFoundError, match="zsre_mend_eval.json"):
        load_zsre()
    # A file placed in the cache is then found.
    (tmp_path / "cache").mkdir(exist_ok=True)
    rec = {"case_id": 1, "requested_rewrite": {"prompt": "{} plays", "subject": "Messi",
                                               "target_new": {"str": "tennis"}, "target_true": {"str": "football"}}}
    (tmp_path / "cache" / "counterfact.json").write_text(json.dumps([rec]))
    assert load_counterfact()[0].subject == "Messi"


def test_loader_skips_bad_records_with_reasons(tmp_path):
    good = {"case_id": 1, "requested_rewrite": {"prompt": "{} plays", "subject": "Messi",
                                                "target_new": {"str": "tennis"}, "target_true": {"str": "football"}}}
    no_slot = json.loads(json.dumps(good))
    no_slot["case_id"] = 2
    no_slot["requested_rewrite"]["prompt"] = "Ronaldo plays"
    same = json.loads(json.dumps(good))
    same["case_id"] = 3
    same["requested_rewrite"]["target_new"]["str"] = "football"
    p = tmp_path / "cf.json"
    p.write_text(json.dumps([good, no_slot, same, "junk"]))
    with pytest.warns(UserWarning, match="skipped 3"):
        reqs = load_counterfact(p)
    assert len(reqs) == 1
    reasons = {s.index: s.reason for s in reqs.skipped}
    assert "not found in its prompt" in reasons[1] and "case_id=2" in reasons[1]
    assert "target_new equals target_true" in reasons[2] and "case_id=3" in reasons[2]
    assert "not a CounterFact record" in reasons[3]
    with pytest.raises(ValueError, match="limit"):
        load_counterfact(p, limit=-1)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def test_valid_request_and_filled_prompt():
    r = EditRequest(**_good(target_new="  Rome "))
    assert r.filled_prompt == "Eiffel Tower is located in the city of"
    assert r.target_new == "Rome"  # stored stripped; the leading space is added at tokenization
    assert EditRequest(**_good(target_true=None)).target_true is None  # zsRE-style


@pytest.mark.parametrize("kw, exc, pattern", [
    (dict(prompt="Eiffel Tower is located in"), ValueError, r"'\{\}' 0 times; write the subject's place"),
    (dict(prompt="{} and {} are in"), ValueError, r"'\{\}' 2 times"),
    (dict(prompt="The tower is located in"), ValueError, r"'\{\}' 0 times"),
    (dict(prompt="{} is located in "), ValueError, "ends with whitespace"),
    (dict(subject=""), ValueError, "subject is empty"),
    (dict(subject="{}"), ValueError, "contains"),
    (dict(target_new=" "), ValueError, "target_new is empty"),
    (dict(target_true=""), ValueError, "target_true is empty"),
    (dict(target_new="paris"), ValueError, "target_new equals target_true"),
    (dict(target_new=3), TypeError, "target_new must be a string"),
    (dict(prompt=None), TypeError, "prompt must be a string"),
    (dict(paraphrase_prompts="You can see it in"), TypeError, "list of strings"),
    (dict(paraphrase_prompts=["{} is in"]), ValueError, "written out in full"),
    (dict(neighborhood_prompts=["ok prompt", ""]), ValueError, r"neighborhood_prompts\[1\] is empty"),
    (dict(neighborhood_prompts=["a", "b"], neighborhood_targets=["x"]), ValueError, "one answer per prompt"),
    (dict(relation_id=17), TypeError, "relation_id"),
])
def test_validation_errors_name_the_record(kw, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        EditRequest(**_good(**kw))
    assert "case_id=42" in str(info.value)


def test_as_request_forms():
    flat = {"prompt": "{} was the founder of", "subject": "Steve Jobs", "target_new": {"str": "Microsoft"}}
    r = as_request(flat)
    assert r.target_new == "Microsoft" and r.target_true is None and r.prompt == "{} was the founder of"
    r = as_request({"prompt": "Steve Jobs was the founder of", "subject": "Steve Jobs",
                    "target_new": "Microsoft", "target_true": {"str": "Apple"}})
    assert r.prompt == "{} was the founder of" and r.target_true == "Apple"  # templated at the subject
    cf = {"case_id": 9, "requested_rewrite": {**flat, "relation_id": "P112"}, "paraphrase_prompts": ["x y"]}
    r = as_request(cf)
    assert r.case_id == 9 and r.relation_id == "P112" and r.paraphrase_prompts == ["x y"]
    e = EditRequest(**_good())
    assert as_request(e) is e
    assert as_requests(flat)[0].subject == "Steve Jobs"
    with pytest.raises(ValueError, match="not found in its prompt"):
        as_request({"prompt": "Bill Gates was the founder of", "subject": "Steve Jobs", "target_new": "X"})
    with pytest.raises(ValueError, match="occurs 2 times"):
        as_request({"prompt": "Jobs met Jobs in", "subject": "Jobs", "target_new": "X"})
    with pytest.raises(ValueError, match="lacks"):
        as_request({"prompt": "{} was", "subject": "A"})
    with pytest.raises(ValueError, match="'str' key"):
        as_request({"prompt": "{} was", "subject": "A", "target_new": {"id": "Q1"}})
    with pytest.raises(TypeError, match="EditRequest or a ROME-style dict"):
        as_request("Steve Jobs founded Microsoft")
    with pytest.raises(ValueError, match="request #1"):
        as_requests([flat, {"prompt": "{} {}", "subject": "A", "target_new": "B"}])


def test_save_and_load_round_trip(tmp_path):
    reqs = [EditRequest(**_good()),
            EditRequest(**_good(case_id=43, target_true=None, neighborhood_targets=["Paris"], relation_id="P131"))]
    p = save_requests(reqs, tmp_path / "mine.json")
    back = load_requests(p)
    assert list(back) == reqs
    with pytest.raises(FileNotFoundError, match="shipped sets"):
        load_requests(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------
# The shipped request set
# ----------------------------------------------------------------------------------------------
def test_candidates_are_wellformed():
    cands = candidate_requests()
    assert len(cands) >= 250 and len({r.case_id for r in cands}) == len(cands)
    for r in cands:
        group = RELATIONS[r.relation_id]["groups"]
        assert r.subject in group[r.target_true] and r.target_new in group and r.target_new != r.target_true


def test_shipped_requests_structure():
    reqs = load_requests("smollm2_known_facts")
    assert reqs.source.endswith("smollm2_known_facts.json") and len(reqs) >= 100
    assert len({r.case_id for r in reqs}) == len(reqs)
    for r in reqs:
        assert r.target_true and r.target_new != r.target_true
        assert len(r.paraphrase_prompts) >= 2 and len(r.neighborhood_prompts) >= MIN_NEIGHBOURS and r.generation_prompts
        assert all(r.subject in p for p in r.paraphrase_prompts + r.generation_prompts)
        # target_new is an object of the same relation; the neighbours share target_true.
        groups = RELATIONS[r.relation_id]["groups"]
        assert r.target_new in groups and r.subject in groups[r.target_true]
        others = [s for s in groups[r.target_true] if s != r.subject]
        for p in r.neighborhood_prompts:
            assert any(s in p for s in others) and r.subject not in p
    assert len({r.relation_id for r in reqs}) >= 8  # many kinds of facts, not one
    # No neighbour is itself edited in the set (a sequential run would change its answer on purpose),
    # however many requests a run takes from the front of the file.
    for n in (50, 100, len(reqs)):
        assert edited_neighbours(reqs[:n]) == []


def test_edited_neighbours_finds_overlaps():
    cands = [r for r in candidate_requests() if r.relation_id == "P30"][:3]   # three subjects of one group
    hits = edited_neighbours(cands)
    subject_of = {r.label: r.subject for r in cands}
    assert hits and all(s in p and s != subject_of[lab] for lab, p, s in hits)
    assert {s for _, _, s in hits} == {r.subject for r in cands}
    assert edited_neighbours(without_edited_neighbours(cands)) == []
    assert edited_neighbours(cands[:1]) == []


def test_selection_leaves_every_group_its_neighbours():
    cands = candidate_requests()
    everyone_known = [{"known": True} for _ in cands]
    kept, per_rel = select_requests(cands, everyone_known, cap=100)
    per_group = {}
    for r in kept:
        per_group[(r.relation_id, r.target_true)] = per_group.get((r.relation_id, r.target_true), 0) + 1
    for (rel, obj), k in per_group.items():
        assert k == len(RELATIONS[rel]["groups"][obj]) - MIN_NEIGHBOURS
    final = without_edited_neighbours(kept)
    assert all(len(r.neighborhood_prompts) == MIN_NEIGHBOURS for r in final)
    assert edited_neighbours(final) == []
    with pytest.raises(ValueError, match="unedited neighbour"):
        without_edited_neighbours(cands)       # every subject edited: nobody left to be a neighbour


@pytest.mark.model
@pytest.mark.slow
def test_smollm2_knows_every_shipped_fact():
    from alphaedit_lite.model.loading import load_model

    model, tok = load_model("smollm2-135m", device="cpu")
    reqs = load_requests("smollm2_known_facts")
    verdicts = model_knows(model, tok, reqs)
    unknown = [(r.case_id, r.subject, r.target_true, v) for r, v in zip(reqs, verdicts) if not v["known"]]
    assert not unknown, f"SmolLM2 does not get these shipped facts right: {unknown[:5]}"
