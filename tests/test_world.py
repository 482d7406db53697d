"""Tests of the tiny fictional world: generator, records, tokenizer, shipped model, training entry point."""
from __future__ import annotations

import json
import random
import re
import time

import pytest
import torch

from alphaedit_lite.util.paths import shared_data_dir
from alphaedit_lite.world import (
    DEFAULTS, World, build_tokenizer, default_world_dir, evaluate_world_model, generate_world, k0_corpus,
    load_tiny_world, make_config, predict_next, probe_accuracy, target_token_id, train_world_model,
)
from alphaedit_lite.world.__main__ import main as world_main
from alphaedit_lite.world.model import RECORDS_FILE

SHIPPED = default_world_dir()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(),
                                   reason="data/tiny_world/ has not been trained yet")


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(n_subjects=1000, seed=7)


@pytest.fixture(scope="module")
def shipped():
    return load_tiny_world(device="cpu")


# ----------------------------------------------------------------------------- generator


def test_generator_sizes(world):
    assert world.n_subjects >= 1000
    assert len(world.relations) >= 4
    assert all(len(r.phrasings) >= 4 for r in world.relations)
    assert len(world.facts) == world.n_subjects * len(world.relations)
    # multi-word, pronounceable (letters only) names whose last word identifies the subject
    assert all(len(s.split()) == 2 and s.replace(" ", "").isalpha() for s in world.subjects)
    assert len(set(world.last_names)) == world.n_subjects
    assert len(set(world.subjects)) == world.n_subjects
    for rel in world.relations:
        assert all(len(o.split()) == 1 for o in rel.objects)
        assert 4 <= len(rel.objects) <= 40
        assert all(ph.count("{}") == 1 for ph in rel.phrasings)
    # objects, names and phrasing words never collide
    objs = {o for r in world.relations for o in r.objects}
    assert not objs & set(world.last_names) and not objs & set(world.first_names)


def test_generator_is_deterministic(world):
    again = generate_world(n_subjects=1000, seed=7)
    assert again.to_dict() == world.to_dict()
    assert again.records == world.records
    assert again.training_sentences() == world.training_sentences()
    other = generate_world(n_subjects=1000, seed=8)
    assert other.last_names != world.last_names
    # the object vocabularies depend on the seed only, not on how many subjects there are
    small = generate_world(n_subjects=50, seed=7)
    assert [r.objects for r in small.relations] == [r.objects for r in world.relations]


def test_objects_are_balanced(world):
    for rel in world.relations:
        counts = [0] * len(rel.objects)
        for o in world.objects_of[rel.relation_id]:
            counts[o] += 1
        assert max(counts) - min(counts) <= 1


def test_heldout_design(world):
    sentences = set(world.training_sentences())
    P = world.n_phrasings
    trained_use = {(r, p): 0 for r in range(len(world.relations)) for p in range(P)}
    for f in world.facts[:2000]:
        h = world.heldout_phrasing(f)
        assert world.trained_phrasings(f) == [p for p in range(P) if p != h]
        assert world.sentence(f, h) not in sentences  # never said in training
        for p in world.trained_phrasings(f):
            assert world.sentence(f, p) in sentences
            trained_use[(f.relation_index, p)] += 1
    # every phrasing is trained on other subjects: the held-out pairs are learnable
    assert min(trained_use.values()) > 0
    n_train, n_held = len(world.probes("train")), len(world.probes("heldout"))
    assert n_held == len(world.facts) and n_train == len(world.facts) * (P - 1)
    assert all(p.heldout for p in world.probes("heldout")[:100])


def test_probes_and_k0(world):
    probes = world.probes("train")
    f0 = probes[0]
    assert f0.prompt.endswith(world.prompt(f0.fact, f0.phrasing)) and f0.target == f0.fact.object
    assert f0.fact.subject in f0.prompt
    k0 = k0_corpus(world)
    assert isinstance(k0, list) and all(isinstance(s, str) for s in k0)
    assert k0 == world.training_sentences() and len(k0) == len(probes)
    assert world.training_text().split("\n") == k0
    assert all(s.startswith(p.prompt + " ") and s.endswith(p.target + ".") for s, p in zip(k0[:50], probes[:50]))
    edited = world.records[:10]
    left = world.unedited_probes(edited)
    gone = {r["requested_rewrite"]["subject"] for r in edited}
    assert len(left) == len(probes) - 10 * len(world.relations) * (world.n_phrasings - 1)
    assert not any(p.fact.subject in gone for p in left)
    assert len(world.probes("all", relation_id="P19")) == world.n_subjects * world.n_phrasings


def test_world_roundtrip(tmp_path, world):
    world.save(tmp_path / "w.json")
    back = World.load(tmp_path / "w.json")
    assert back.to_dict() == world.to_dict() and back.records == world.records
    assert back.facts == world.facts


def test_bad_input_raises(world):
    with pytest.raises(ValueError):
        generate_world(n_subjects=1)
    with pytest.raises(ValueError):
        generate_world(n_subjects=10, n_relations=9)
    with pytest.raises(ValueError):
        generate_world(n_subjects=10, n_phrasings=1)
    with pytest.raises(TypeError):
        generate_world(n_subjects="many")
    with pytest.raises(ValueError):
        world.probes("validation")
    with pytest.raises(ValueError):
        world.fact("Nobody Atall", "P19")
    with pytest.raises(ValueError):
        world.relation("P999")
    with pytest.raises(ValueError):
        World.from_dict({"format": "something else"})
    with pytest.raises(FileNotFoundError):
        load_tiny_world("/nonexistent/tiny_world")
    with pytest.raises(ValueError):
        make_config(100, d_model=130, n_heads=4)


# ----------------------------------------------------------------------------- records


def _check_record(world: World, rec: dict) -> None:
    rw = rec["requested_rewrite"]
    rel = world.relation(rw["relation_id"])
    assert "{}" in rw["prompt"] and rw["prompt"] in rel.phrasings
    subject = rw["subject"]
    assert subject and subject in world.subjects
    assert rw["target_new"]["str"] != rw["target_true"]["str"]
    assert rw["target_new"]["str"] in rel.objects
    assert world.fact(subject, rel.relation_id).object == rw["target_true"]["str"]
    assert len(rec["paraphrase_prompts"]) == 2
    assert len(rec["neighborhood_prompts"]) == 10 and len(rec["attribute_prompts"]) == 10
    assert len(rec["generation_prompts"]) == 10
    for q in rec["paraphrase_prompts"] + rec["generation_prompts"]:
        assert q.endswith(tuple(ph.format(subject) for r in world.relations for ph in r.phrasings))
    by_name = {s: i for i, s in enumerate(world.subjects)}
    for field, target in (("neighborhood_prompts", rw["target_true"]["str"]),
                          ("attribute_prompts", rw["target_new"]["str"])):
        others = set()
        for q in rec[field]:
            assert subject not in q
            # which subject is this prompt about? it holds that subject's full name
            names = [s for s in re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", q) if s in by_name]
            assert len(names) == 1, q
            others.add(names[0])
            assert world.fact(names[0], rel.relation_id).object == target
            assert any(q == ph.format(names[0]) for ph in rel.phrasings)
        assert len(others) == 10  # ten different people


def test_records_are_valid_counterfact(world):
    recs = world.records
    assert len(recs) == world.n_subjects
    assert [r["case_id"] for r in recs] == list(range(len(recs)))
    assert len({r["requested_rewrite"]["subject"] for r in recs}) == len(recs)  # one edit per key
    rels = {r["requested_rewrite"]["relation_id"] for r in recs}
    assert rels == {r.relation_id for r in world.relations}
    for rec in random.Random(0).sample(recs, 150):
        _check_record(world, rec)
    json.dumps(recs[:5])  # plain JSON


def test_records_match_rome_format(world):
    data = shared_data_dir()
    path = None if data is None else data / "counterfact" / "counterfact_1031.json"
    if path is None or not path.is_file():
        pytest.skip("shared CounterFact data not found")
    real = json.loads(path.read_text())[0]
    ours = world.records[0]
    assert set(ours) == set(real) - {"pararel_idx", "portability"}
    assert set(ours["requested_rewrite"]) == set(real["requested_rewrite"])
    for k in ("target_new", "target_true"):
        assert set(ours["requested_rewrite"][k]) == set(real["requested_rewrite"][k])
    for k in ours:
        assert type(ours[k]) is type(real[k])
        if isinstance(ours[k], list):
            assert all(isinstance(q, str) for q in ours[k])


def test_more_records_for_chosen_facts(world):
    facts = [world.fact(i, "P1303") for i in range(20)]
    recs = world.make_records(facts)
    assert [r["requested_rewrite"]["subject"] for r in recs] == [f.subject for f in facts]
    assert world.make_records(facts) == recs
    for rec in recs:
        _check_record(world, rec)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer(world):
    tok = build_tokenizer(world)
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    for rel in world.relations:
        for o in rel.objects:
            i = target_token_id(tok, o)
            assert tok(" " + o)["input_ids"] == tok(o)["input_ids"] == [i]
    rec = world.records[0]
    prompt = rec["requested_rewrite"]["prompt"].format(rec["requested_rewrite"]["subject"])
    ids = tok(prompt)["input_ids"]
    assert tok.unk_token_id not in ids and tok.bos_token_id not in ids  # no specials added
    full = tok(prompt + " " + rec["requested_rewrite"]["target_new"]["str"])["input_ids"]
    assert full[:-1] == ids and len(full) == len(ids) + 1
    last = rec["requested_rewrite"]["subject"].split()[-1]
    assert tok.convert_ids_to_tokens(tok(rec["requested_rewrite"]["subject"])["input_ids"])[-1] == last
    sent = world.training_sentences()[0]
    assert tok.decode(tok(sent)["input_ids"]) == sent
    assert tok("Zzyzx")["input_ids"] == [tok.unk_token_id]
    with pytest.raises(ValueError):
        target_token_id(tok, "two words")
    batch = tok(["a b", world.training_sentences()[1]], padding=True)
    assert batch["input_ids"][0][-1] == tok.pad_token_id  # right padding


# ----------------------------------------------------------------------------- shipped model


@needs_shipped
def test_shipped_model_loads_offline(shipped, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok, world = shipped
    from transformers import LlamaForCausalLM

    assert isinstance(model, LlamaForCausalLM)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    L = model.config.num_hidden_layers
    mods = dict(model.named_modules())
    for layer in range(L):
        W = mods[f"model.layers.{layer}.mlp.down_proj"].weight  # (d_model, d_mlp)
        assert tuple(W.shape) == (model.config.hidden_size, model.config.intermediate_size)
    assert len(tok) == model.config.vocab_size
    assert world.n_subjects >= 1000 and len(world.relations) >= 4 and world.n_phrasings >= 4
    total = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert total < 25e6
    # the shipped records file is exactly what the world generates
    assert json.loads((SHIPPED / RECORDS_FILE).read_text()) == world.records


@needs_shipped
def test_shipped_model_knows_its_facts(shipped):
    model, tok, world = shipped
    rng = random.Random(1)
    train = rng.sample(world.probes("train"), 1500)
    held = rng.sample(world.probes("heldout"), 800)
    acc_train = probe_accuracy(model, tok, train)
    acc_held = probe_accuracy(model, tok, held)
    assert acc_train >= 0.99, acc_train
    assert acc_held >= 0.90, acc_held
    recs = rng.sample(world.records, 100)
    from alphaedit_lite.world import Probe

    neigh = [Probe(q, r["requested_rewrite"]["target_true"]["str"], None, -1, False)
             for r in recs for q in r["neighborhood_prompts"][:3]]
    assert probe_accuracy(model, tok, neigh) >= 0.97
    rw = [Probe(r["requested_rewrite"]["prompt"].format(r["requested_rewrite"]["subject"]),
                r["requested_rewrite"]["target_true"]["str"], None, -1, False) for r in recs]
    assert probe_accuracy(model, tok, rw) >= 0.97
    # no record asks for what the model already answers
    pred = predict_next(model, tok, [p.prompt for p in rw])
    news = torch.tensor([target_token_id(tok, r["requested_rewrite"]["target_new"]["str"]) for r in recs])
    assert float((pred == news).float().mean()) < 0.03


@needs_shipped
def test_eval_command(capsys):
    assert world_main(["eval", "--max-probes", "300", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "training phrasings: top-1 accuracy" in out and "held-out phrasings" in out
    acc = [float(x) for x in re.findall(r"top-1 accuracy ([0-9.]+)", out)]
    assert acc[0] >= 0.98 and acc[1] >= 0.88


# ----------------------------------------------------------------------------- training


def test_micro_world_training_learns(tmp_path):
    """The training entry point works: a 30-person world goes from chance to well above it fast."""
    t0 = time.perf_counter()
    micro = generate_world(n_subjects=30, seed=3)
    logs: list[str] = []
    model, tok, w, metrics = train_world_model(micro, steps=180, batch_size=32, lr=6e-3, warmup=20,
                                               threads=1, log=logs.append)
    assert metrics["chance"] < 0.1
    assert metrics["train_acc"] > 5 * metrics["chance"], metrics
    assert metrics["heldout_acc"] > 3 * metrics["chance"], metrics
    assert any("top-1 accuracy" in line for line in logs)
    # same seed, same run: training is reproducible
    _, _, _, again = train_world_model(micro, steps=20, batch_size=16, lr=6e-3, warmup=5, threads=1, log=None)
    _, _, _, again2 = train_world_model(micro, steps=20, batch_size=16, lr=6e-3, warmup=5, threads=1, log=None)
    assert again["train_acc"] == again2["train_acc"] and again["final_loss"] == again2["final_loss"]
    assert time.perf_counter() - t0 < 120


def test_cli_train_writes_a_loadable_world(tmp_path, capsys):
    out = tmp_path / "micro"
    rc = world_main(["train", "--out", str(out), "--subjects", "12", "--steps", "15", "--batch-size", "8",
                     "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "training phrasings: top-1 accuracy" in text and "held-out phrasings: top-1 accuracy" in text
    model, tok, world = load_tiny_world(out, device="cpu")
    assert world.n_subjects == 12 and len(world.records) == 12
    for f in ("model.safetensors", "config.json", "tokenizer.json", "world.json", RECORDS_FILE, "metrics.json"):
        assert (out / f).is_file()
    m = evaluate_world_model(model, tok, world)
    saved = json.loads((out / "metrics.json").read_text())
    assert abs(m["train_acc"] - saved["saved_train_acc"]) < 1e-9
    assert DEFAULTS["n_subjects"] >= 1000
