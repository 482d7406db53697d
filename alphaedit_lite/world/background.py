"""Background text for the subword world: ordinary sentences that are not about the edited facts.

No paper equation is implemented here. AlphaEdit (Fang et al., ICLR 2025, Eq. 5-10) protects the
keys K0 of "knowledge to preserve", estimated in the paper from 100,000 Wikipedia triples: text
that is mostly NOT about the facts being edited. The tiny world has no such text (its K0 is its own
fact sentences), so its null space has no room for edits. The subword world is trained on a mix of
fact sentences and this background language, and its K0 statistics come from held-out background
sentences only, never from the edit requests.

The language is a small seeded grammar: noun phrases ("the old harbour"), transitive and
intransitive clauses, prepositional phrases, adverbs, and people who are NOT subjects of the world
(invented names from the same syllables, so name tokens occur in K0 as names occur in Wikipedia).
Now and then a sentence mentions one of the world's objects ("... in Velford"), as Wikipedia
mentions cities without stating who was born there.

    from alphaedit_lite.world.background import background_sentences
    background_sentences(world, "k0", 12_000)      # the K0 corpus of the subword world

Splits use separate random streams ("train", "k0", "heldout"), so the K0 sentences and the
held-out perplexity sentences are never training rows (they may repeat a short sentence by chance).
"""
from __future__ import annotations

import random

from alphaedit_lite.world.generate import World, _name

__all__ = ["SPLITS", "background_sentences", "other_names"]

SPLITS = ("train", "k0", "heldout")

_NOUNS = ("dog cat horse bird river road house garden window door table chair book letter song storm "
          "cloud rain snow tree forest hill valley lake bridge tower market street village harbour ship "
          "boat wagon lamp candle bread cheese apple coin key stone wall field farm mill").split()
_ADJS = ("old young small large quiet loud red green blue dark bright cold warm wet dry heavy light "
         "long short slow quick narrow wide empty busy").split()
_VERBS = "saw found carried painted crossed opened closed watched followed visited built cleaned sold bought moved lifted".split()
_IVERBS = "slept waited rested sang laughed walked ran stayed fell arrived".split()
_PREPS = "near behind under beside above across through toward".split()
_ADVS = "slowly quickly quietly often never always yesterday today again".split()


def other_names(world: World, n: int = 3000) -> list[str]:
    """``n`` invented names that are neither a subject's first or last name nor an object."""
    rng = random.Random(f"alphaedit-lite-world/background-names/{world.seed}")
    taken = set(world.first_names) | set(world.last_names) | {o for r in world.relations for o in r.objects}
    out: list[str] = []
    while len(out) < n:
        w = _name(rng, rng.choice((2, 2, 3)), rng.random() < 0.6)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _noun_phrase(rng: random.Random) -> str:
    adj = [rng.choice(_ADJS)] if rng.random() < 0.5 else []
    return " ".join(["the", *adj, rng.choice(_NOUNS)])


def _sentence(rng: random.Random, names: list[str], objects: list[str]) -> str:
    if rng.random() < 0.6:
        who = _noun_phrase(rng)
    else:
        who = rng.choice(names) + (" " + rng.choice(names) if rng.random() < 0.5 else "")
    k = rng.random()
    if k < 0.35:
        s = f"{who} {rng.choice(_VERBS)} {_noun_phrase(rng)}"
    elif k < 0.6:
        s = f"{who} {rng.choice(_IVERBS)} {rng.choice(_PREPS)} {_noun_phrase(rng)}"
    elif k < 0.8:
        s = f"{rng.choice(_ADVS)} , {who} {rng.choice(_IVERBS)}"
    else:
        s = f"{who} {rng.choice(_VERBS)} {_noun_phrase(rng)} {rng.choice(_PREPS)} {_noun_phrase(rng)}"
    if rng.random() < 0.15:
        s += f" in {rng.choice(objects)}"
    return s[0].upper() + s[1:] + " ."


def background_sentences(world: World, split: str, n: int) -> list[str]:
    """``n`` background sentences of one split ("train", "k0" or "heldout"), a pure function of the seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    names = other_names(world)
    objects = sorted({o for r in world.relations for o in r.objects})
    rng = random.Random(f"alphaedit-lite-world/background/{world.seed}/{split}")
    return [_sentence(rng, names, objects) for _ in range(n)]
