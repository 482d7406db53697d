"""Editing the organisms: K0 statistics, probe prompts, accuracy on unedited facts, background perplexity.

The subword world's K0 comes from held-out background sentences (:func:`subword_stats`) and its
edits are also judged by the perplexity of other background sentences (:func:`perplexity_ratio`);
the rest of this docstring is about the tiny world.

AlphaEdit's preserved keys K0 (Eq. 5-10 of the paper) are, for the tiny world, the rewrite-module
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

from alphaedit_lite.core.covariance import SecondMoment
from alphaedit_lite.locate.cache import model_id
from alphaedit_lite.locate.stats import LayerStats, collect_second_moments, load_cached_stats, save_cached_stats
from alphaedit_lite.world.generate import World
from alphaedit_lite.world.model import predict_next, probe_accuracy, target_token_id

__all__ = ["world_stats", "subword_stats", "known_subjects", "known_accuracy", "sentence_stats", "perplexity_ratio", "edited_facts", "world_probe_prompts", "subject_probes", "unedited_probes_sample", "unedited_accuracy",
           "untouched_accuracy", "edited_subjects_probes", "edited_subjects_accuracy", "fact_accuracies", "sentence_keys", "subword_key_room"]


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
    Returns a :class:`~alphaedit_lite.locate.stats.LayerStats` usable as ``stats=`` of every editing method.
    Cached like :func:`alphaedit_lite.locate.stats.layer_stats` (by model fingerprint, so an edited model reuses it).
    """
    done = edited_facts(exclude or [])
    return sentence_stats(model, tok, k0_sentences(world, exclude), _corpus_id(world, done), layers,
                          cache=cache, batch_size=batch_size, progress=progress, desc="tiny-world key statistics")


#: background sentences of the subword world's K0 (about 94,000 tokens)
SUBWORD_K0_SENTENCES = 12_000


def known_subjects(world: World, known: int) -> list[int]:
    """Indices of the ``known`` subjects the preserved text is about: the world's last ``known``."""
    if isinstance(known, bool) or not isinstance(known, int) or not 0 <= known < world.n_subjects:
        raise ValueError(f"known must be an int in 0..{world.n_subjects - 1}, got {known!r}")
    return list(range(world.n_subjects - known, world.n_subjects))


def subword_stats(model, tok, world: World, layers, *, n_sentences: int = SUBWORD_K0_SENTENCES, known: int = 0,
                  cache: bool = True, batch_size: int = 512, progress: bool = False) -> LayerStats:
    """C0 of the subword world: keys of ``n_sentences`` background sentences (split "k0"), plus, with
    ``known`` > 0, the training sentences of the world's last ``known`` subjects (text about people no
    edit touches, as an LLM's Wikipedia sample is about many people it is never asked to edit)."""
    from alphaedit_lite.world.background import background_sentences

    sentences = background_sentences(world, "k0", n_sentences)
    cid = f"subword-world-{world.n_subjects}s-seed{world.seed}-background-k0-{n_sentences}"
    if known:
        idx = set(known_subjects(world, known))
        sentences = sentences + [world.sentence(f, p) for f in world.facts if f.subject_index in idx
                                 for p in world.trained_phrasings(f)]
        cid += f"-known{known}"
    return sentence_stats(model, tok, sentences, cid, layers,
                          cache=cache, batch_size=batch_size, progress=progress,
                          desc="subword-world key statistics")


def sentence_stats(model, tok, sentences: list[str], corpus_id: str, layers, *, cache: bool = True,
                   batch_size: int = 512, progress: bool = False, desc: str = "key statistics") -> LayerStats:
    """C0 of each layer from ``sentences`` (one row each, no special tokens), cached by model and corpus id."""
    from alphaedit_lite.locate.keys import right_pad
    from alphaedit_lite.model.arch import arch_spec

    layers = sorted({int(x) for x in layers})
    spec = arch_spec(model)
    mid = model_id(model)
    names = {l: spec.rewrite_name(l) for l in layers}
    ids = [tok(s, add_special_tokens=False).input_ids for s in sentences]
    n_tokens = sum(len(x) for x in ids)
    out: dict[int, SecondMoment] = {}
    missing = []
    for l in layers:
        sm = load_cached_stats(model, names[l], corpus_id, n_tokens) if cache else None
        if sm is None:
            missing.append(l)
        else:
            out[l] = sm
    if missing:
        X, M = right_pad(ids, tok.pad_token_id)                        # (n_sentences, longest)
        got = collect_second_moments(model, X, M, missing, batch_size=batch_size, progress=progress, desc=desc)
        for l, sm in got.items():
            out[l] = sm
            if cache:
                save_cached_stats(model, names[l], corpus_id, n_tokens, sm)
    return LayerStats(out, model_id=mid, corpus_id=corpus_id, n_tokens=n_tokens, module_names=names)


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


def subject_probes(world: World, tok, edited, k: int = 300, seed: int = 0) -> tuple[list[str], list[int]]:
    """Drift probes read where an organism stores its facts: prompts of ``k`` facts of subjects NO edit in
    ``edited`` touched (a seeded sample; unedited facts of edited subjects when every subject was edited),
    and the index of each prompt's subject's last token.

    In the subword world the fact is computed at the subject's last token, and with a one-token window
    the layers there see nothing else; the prompt's last token never sees the subject at those layers.
    """
    from alphaedit_lite.locate.keys import locate_subject

    probes = world.probes("train", exclude=edited) or unedited_probes_sample(world, edited, None, seed)
    if len(probes) > k:
        probes = random.Random(seed).sample(probes, k)
    return [p.prompt for p in probes], [locate_subject(tok, p.prompt, p.fact.subject).subject_last for p in probes]


def _sample(probes: list, k: int | None, seed: int) -> list:
    return random.Random(seed).sample(probes, k) if k is not None and len(probes) > k else probes


def edited_subjects_probes(world: World, edited) -> list:
    """Probes (training phrasings) of the OTHER facts of edited subjects: after an edit of someone's
    birthplace, their language, profession, employer and instrument. They share the edited key."""
    done = edited_facts(edited)
    subjects = {s for s, _ in done}
    return [p for p in world.probes("train") if p.fact.subject in subjects
            and (p.fact.subject, p.fact.relation_id) not in done]


def _untouched_sample(world: World, edited, k, seed) -> list:
    return _sample(world.probes("train", exclude=edited), k, seed)


def _known_sample(world: World, known: int, k, seed) -> list:
    first_known = known_subjects(world, known)[0] if known else world.n_subjects
    return _untouched_sample(world, list(range(first_known)), k, seed)


def _accuracy(model, tok, probes) -> float | None:
    if not probes:
        return None
    with torch.no_grad():
        return 100.0 * probe_accuracy(model, tok, probes)


def untouched_accuracy(model, tok, world: World, edited, k: int | None = 1000, seed: int = 1) -> float | None:
    """Top-1 accuracy (in %) on ``k`` facts of subjects that NO edit touched (None if there are none)."""
    return _accuracy(model, tok, _untouched_sample(world, edited, k, seed))


def known_accuracy(model, tok, world: World, known: int, k: int | None = 1000, seed: int = 1) -> float:
    """Top-1 accuracy (in %) on ``k`` facts of the ``known`` subjects (those whose text is in K0): the
    untouched accuracy with every other subject left out."""
    return _accuracy(model, tok, _known_sample(world, known, k, seed))


def unedited_accuracy(model, tok, world: World, edited, k: int | None = 1000, seed: int = 1) -> float:
    """Top-1 accuracy (in %) on ``k`` unedited facts in training phrasings (all of them if k is None)."""
    return _accuracy(model, tok, unedited_probes_sample(world, edited, k, seed))


def edited_subjects_accuracy(model, tok, world: World, edited, k: int | None = 1000, seed: int = 1) -> float | None:
    """Top-1 accuracy (in %) on ``k`` other facts of edited subjects (None if there are none)."""
    return _accuracy(model, tok, _sample(edited_subjects_probes(world, edited), k, seed))


def fact_accuracies(model, tok, world: World, edited, known: int = 0, k: int | None = 1000, seed: int = 1) -> dict:
    """The figures of :func:`unedited_accuracy`, :func:`untouched_accuracy`, :func:`known_accuracy` (with
    ``known`` > 0) and :func:`edited_subjects_accuracy`, on the same samples, from ONE forward pass
    over the prompts they hold between them (the samples overlap: after every subject outside K0 has
    been edited, the untouched subjects are exactly the known ones).

    Keys: ``unedited_acc``, ``untouched_acc``, ``known_acc``, ``edited_subjects_acc``; a figure whose
    set is empty is left out.
    """
    sets = {"unedited_acc": unedited_probes_sample(world, edited, k, seed),
            "untouched_acc": _untouched_sample(world, edited, k, seed),
            "edited_subjects_acc": _sample(edited_subjects_probes(world, edited), k, seed)}
    if known:
        sets["known_acc"] = _known_sample(world, known, k, seed)
    prompts = sorted({p.prompt for probes in sets.values() for p in probes})
    pred = dict(zip(prompts, predict_next(model, tok, prompts).tolist())) if prompts else {}
    gold = {t: target_token_id(tok, t) for t in {p.target for probes in sets.values() for p in probes}}
    return {name: 100.0 * sum(pred[p.prompt] == gold[p.target] for p in probes) / len(probes)
            for name, probes in sets.items() if probes}


#: held-out background sentences on which the subword world's perplexity is compared
HELDOUT_SENTENCES = 1000


def perplexity_ratio(model, tok, world: World, base_nll: float, n_sentences: int = HELDOUT_SENTENCES) -> float:
    """Perplexity of held-out background text now, divided by the unedited model's (exp(nll − base_nll)).

    This is what AlphaEdit's projection protects most directly: background text is where K0 came from.
    ``base_nll``: :func:`alphaedit_lite.world.subword.background_nll` of the unedited model on the same
    sentences (``background_sentences(world, "heldout", n_sentences)``).
    """
    import math

    from alphaedit_lite.world.background import background_sentences
    from alphaedit_lite.world.subword import background_nll

    return math.exp(background_nll(model, tok, background_sentences(world, "heldout", n_sentences)) - base_nll)


@torch.no_grad()
def sentence_keys(model, tok, sentences: list[str], layer: int) -> torch.Tensor:
    """Keys (d_in, n), float64, of ``layer``'s rewrite module at every real token of ``sentences``."""
    from alphaedit_lite.locate.keys import right_pad
    from alphaedit_lite.model.arch import arch_spec
    from alphaedit_lite.model.hooks import TraceDict

    if not sentences:
        raise ValueError("sentence_keys got no sentences")
    X, M = right_pad([tok(s, add_special_tokens=False).input_ids for s in sentences], tok.pad_token_id)
    device = next(model.parameters()).device
    X, M = X.to(device), M.to(device)
    name = arch_spec(model).rewrite_name(layer)
    with TraceDict(model, [name], retain_input=True, retain_output=False, stop=True) as tr:
        model(input_ids=X, attention_mask=M)
    return tr[name].input[M.bool()].double().T.cpu()


def subword_key_room(model, tok, world: World, hp, known: int = 0, n_keys: int = 100, n_background: int = 300) -> dict:
    """Where the subword world's keys lie with respect to AlphaEdit's P, at each of ``hp.layers``.

    P is built as the edits build it (:func:`subword_stats` with ``known`` subjects in K0, ``hp``'s
    threshold and mode). Returns {layer: {"kept", "dim", "edit", "other", "known", "background"}}: the
    directions P keeps, and the mean share ‖Pk‖²/‖k‖² of the keys of ``n_keys`` edit requests (the
    first records), of as many subjects no edit of a run of that size touches (from the middle of the
    records), of the subjects K0 knows (None when ``known`` is 0) and of the tokens of ``n_background``
    held-out background sentences. An edit is written only through its key's share; an unedited fact
    is exposed only through its own.
    """
    from alphaedit_lite.core.nullspace import null_space_projector
    from alphaedit_lite.core.verify import null_space_share
    from alphaedit_lite.locate.keys import compute_keys
    from alphaedit_lite.locate.requests import as_request
    from alphaedit_lite.world.background import background_sentences

    editable = len(world.records) - known
    half = editable // 2                        # edits from the first half, "other subjects" from the second
    if n_keys < 1 or n_keys > half:
        raise ValueError(f"n_keys must be in 1..{half} (half of the {editable} records edits may use), got {n_keys}")
    stats = subword_stats(model, tok, world, hp.layers, known=known, progress=False)
    groups = {"edit": world.records[:n_keys], "other": world.records[half: half + n_keys],
              "known": world.records[editable:][:n_keys] if known else []}
    keys = {g: compute_keys(model, tok, [as_request(r) for r in recs], hp.layers) for g, recs in groups.items() if recs}
    held = background_sentences(world, "heldout", n_background)
    out = {}
    for layer in hp.layers:
        pj = null_space_projector(stats[layer], threshold=hp.nullspace_threshold, mode=hp.nullspace_mode)
        row = {"kept": pj.kept_rank, "dim": pj.P.shape[0]}
        for g in ("edit", "other", "known"):
            row[g] = float(null_space_share(keys[g][layer].cpu(), pj.P.cpu()).mean()) if g in keys else None
        row["background"] = float(null_space_share(sentence_keys(model, tok, held, layer), pj.P.cpu()).mean())
        out[layer] = row
    return out
