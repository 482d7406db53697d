"""Editing the tiny world: its K0 statistics, probe prompts and the accuracy on unedited facts.

AlphaEdit's preserved keys K0 (Eq. 2-8 of the paper) are, for the tiny world, the rewrite-module
inputs at every token of its own training text: everything the model was taught. The statistics
C0 = K0 K0ᵀ / n are computed in one forward pass over all training sentences (each sentence is
one row, as in training) and cached beside the other statistics of the kit.

    from alphaedit_lite.world import load_tiny_world
    from alphaedit_lite.world.editing import world_stats, unedited_accuracy
    model, tok, world = load_tiny_world()
    stats = world_stats(model, tok, world, layers=[1, 2])      # {layer: SecondMoment}
    unedited_accuracy(model, tok, world, edited=world.records[:100])
"""
from __future__ import annotations

import random

import torch

from ..covariance import SecondMoment
from ..stats import LayerStats, collect_second_moments, model_id, stats_cache_path
from .generate import World
from .model import probe_accuracy

__all__ = ["world_stats", "edited_facts", "world_probe_prompts", "unedited_probes_sample", "unedited_accuracy",
           "untouched_accuracy"]


def _corpus_id(world: World, excluded: set) -> str:
    base = f"tiny-world-{world.n_subjects}s-seed{world.seed}-train"
    if not excluded:
        return base
    import hashlib
    h = hashlib.sha1(repr(sorted(excluded)).encode()).hexdigest()[:10]
    return f"{base}-minus{len(excluded)}-{h}"


def k0_sentences(world: World, exclude=None) -> list[str]:
    """The world's training sentences, leaving out those that state a fact edited by ``exclude``."""
    done = edited_facts(exclude or [])
    return [world.sentence(f, p) for f in world.facts if (f.subject, f.relation_id) not in done
            for p in world.trained_phrasings(f)]


def world_stats(model, tok, world: World, layers, *, exclude=None, cache: bool = True, batch_size: int = 512,
                progress: bool = False) -> LayerStats:
    """C0 of each layer in ``layers`` from the world's training sentences (all of them, once).

    ``exclude``: edit requests/records whose facts' sentences are left out of K0 (the knowledge to
    preserve is then everything EXCEPT what will be edited). Default: all training sentences.
    Returns a :class:`~alphaedit_lite.stats.LayerStats` usable as ``stats=`` of every editing method.
    Cached like :func:`alphaedit_lite.stats.layer_stats` (by model fingerprint, so an edited model reuses it).
    """
    from ..keys import right_pad
    from ..models import arch_spec

    layers = sorted({int(x) for x in layers})
    spec = arch_spec(model)
    done = edited_facts(exclude or [])
    mid, cid = model_id(model), _corpus_id(world, done)
    names = {l: spec.rewrite_name(l) for l in layers}
    ids = [tok(s, add_special_tokens=False).input_ids for s in k0_sentences(world, exclude)]
    n_tokens = sum(len(x) for x in ids)
    out: dict[int, SecondMoment] = {}
    missing = []
    for l in layers:
        p = stats_cache_path(mid, names[l], cid, n_tokens)
        if cache and p.is_file():
            out[l] = SecondMoment.load(p)
        else:
            missing.append(l)
    if missing:
        X, M = right_pad(ids, tok.pad_token_id)                        # (n_sentences, longest)
        got = collect_second_moments(model, X, M, missing, batch_size=batch_size, progress=progress,
                                     desc="tiny-world key statistics")
        for l, sm in got.items():
            out[l] = sm
            if cache:
                sm.save(stats_cache_path(mid, names[l], cid, n_tokens))
    return LayerStats(out, model_id=mid, corpus_id=cid, n_tokens=n_tokens, module_names=names)


def edited_facts(edited) -> set[tuple[str, str]]:
    """(subject, relation_id) of each edit (CounterFact records or EditRequests with a relation_id)."""
    out = set()
    for r in edited:
        if isinstance(r, dict):
            rw = r["requested_rewrite"]
            out.add((rw["subject"], rw.get("relation_id", "")))
        else:
            out.add((r.subject, getattr(r, "relation_id", "") or ""))
    return out


def unedited_probes_sample(world: World, edited, k: int | None, seed: int = 0, split: str = "train"):
    """At most ``k`` probes (a seeded random sample) of the facts NO edit in ``edited`` touched.

    A fact is a (subject, relation) pair: after an edit of someone's birthplace, their language,
    profession, employer and instrument are still unedited facts.
    """
    done = edited_facts(edited)
    probes = [p for p in world.probes(split) if (p.fact.subject, p.fact.relation_id) not in done]
    if not probes:
        raise ValueError("every fact of the world was edited: no unedited facts are left to probe")
    if k is not None and len(probes) > k:
        probes = random.Random(seed).sample(probes, k)
    return probes


def world_probe_prompts(world: World, edited, k: int = 300, seed: int = 0) -> list[str]:
    """Prompts of ``k`` unedited facts: the fixed probe set for hidden-state drift."""
    return [p.prompt for p in unedited_probes_sample(world, edited, k, seed)]


def untouched_accuracy(model, tok, world: World, edited, k: int | None = 1000, seed: int = 1) -> float | None:
    """Top-1 accuracy (in %) on ``k`` facts of subjects that NO edit touched (None if there are none)."""
    probes = world.probes("train", exclude=edited)
    if not probes:
        return None
    if k is not None and len(probes) > k:
        probes = random.Random(seed).sample(probes, k)
    with torch.no_grad():
        return 100.0 * probe_accuracy(model, tok, probes)


def unedited_accuracy(model, tok, world: World, edited, k: int | None = 1000, seed: int = 1) -> float:
    """Top-1 accuracy (in %) on ``k`` unedited facts in training phrasings (all of them if k is None)."""
    probes = unedited_probes_sample(world, edited, k, seed)
    with torch.no_grad():
        return 100.0 * probe_accuracy(model, tok, probes)
