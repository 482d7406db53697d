"""A seeded fictional world: made-up people, their facts, training sentences and CounterFact records.

No paper equation is implemented here. The world supplies the two kinds of keys that AlphaEdit
(Fang et al., ICLR 2025, Eq. 5-10) and MEMIT (Meng et al., 2023, Eq. 14) work with:

* K0, the preserved knowledge: the keys the model computes on its own training text,
  `World.training_sentences()` (the "Wikipedia" of this world);
* K1, the edits: `World.records`, one CounterFact-format request per subject.

Design (why the held-out accuracy is both meaningful and achievable)
--------------------------------------------------------------------
Every subject ("Varo Quillen") has one fact per relation (birthplace, native language, ...); each
relation has `P = 5` phrasings, prompts that end right before the object ("{} was born in",
"As a child, {} lived in", "The birthplace of {} lies in", ...). For each fact (subject i,
relation r) exactly one phrasing, h(i, r) = (i + r) mod P, is held out: the training text says the
fact in the other P - 1 phrasings only. Every phrasing is therefore trained (on the (P-1)/P of
subjects for which it is not held out) and every fact is trained (in P - 1 phrasings), but the
pair (fact, held-out phrasing) never occurs. Answering it needs the model to have stored the fact
with the subject and to read it out through a phrasing it learned on other people: the same
generalisation that CounterFact's paraphrase prompts test, and the one an edit must carry over.
A model that memorised sentences as strings scores chance on held-out prompts.

What makes it learnable by a 4-layer model in minutes (found by trying; see the training module):
* each relation's phrasings end in ONE cue word of their own ("in", "speaks", "a", "for", "the")
  and differ before it (adverbial openings, relation-first or subject-first word order); with
  cue words shared between relations ("is", "of") or one relation's cue spread over many words,
  a relation's look-up circuit forms many epochs later or not at all;
* at least one word stands between the subject and the cue ("{} natively speaks", never
  "{} speaks"): with the cue right after the subject, the language relation was never learnt.

Subjects have a first name from a small pool and a unique last name, so the subject's LAST token
identifies it, as the edited key position of ROME/MEMIT/AlphaEdit expects. Objects are single
words (one token each for the word-level tokenizer); each relation's objects are balanced over
subjects, so chance accuracy is 1 / (number of objects of the relation).

Everything is a pure function of the seed (Python's `random.Random` seeded with strings, which is
stable across runs and platforms); nothing depends on dict or set iteration order.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

# How the tokenizer's `Whitespace` pre-tokenizer splits text into words: \w+ or punctuation runs.
_WORD_RE = re.compile(r"\w+|[^\w\s]+")

# ----------------------------------------------------------------------------------------------
# The fixed schema: relations, their phrasings and their object vocabularies.
# Fictional objects (cities, languages, companies) are generated from syllables; professions and
# instruments are ordinary English words. Every object is one word.

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "th", "sh", "st", "qu", "h", "j", "w")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "ai", "ei", "ou")  # few diphthongs
_SIMPLE_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("n", "r", "l", "s", "th", "m", "x", "nd", "rn", "ll", "sk", "ck", "t")
_STEM_CODAS = ("l", "r", "n", "m", "s", "v", "d", "nd", "rd")
_CITY_ENDS = ("ford", "mar", "dale", "ria", "holm", "ven", "gard", "polis", "stad", "wick")
_LANG_ENDS = ("ish", "ic", "ese", "ian")
_FIRM_ENDS = ("tek", "corp", "lux", "vex", "nova", "dyne", "mark", "soft")

_PROFESSIONS = ("baker", "sculptor", "pilot", "nurse", "farmer", "lawyer", "painter", "chemist",
                "carpenter", "librarian", "surgeon", "tailor", "architect", "fisherman",
                "journalist", "astronomer")
_INSTRUMENTS = ("violin", "cello", "flute", "harp", "drums", "piano", "trumpet", "guitar",
                "oboe", "banjo", "lute", "clarinet")


@dataclass(frozen=True)
class Relation:
    """A relation: its CounterFact-style id, a name, its phrasings (each with one "{}") and objects."""

    relation_id: str
    name: str
    phrasings: tuple[str, ...]
    objects: tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    """One true fact of the world: subject number `subject_index`, relation number `relation_index`."""

    subject: str
    subject_index: int
    relation_id: str
    relation_index: int
    object: str


@dataclass(frozen=True)
class Probe:
    """A prompt that ends right before `target` (one word), made from `fact` in phrasing `phrasing`."""

    prompt: str
    target: str
    fact: Fact
    phrasing: int
    heldout: bool


def _phrasings() -> dict[str, tuple[str, ...]]:
    return {
        "P19": ("{} was born in", "{} grew up in", "{} was raised in", "As a child, {} lived in",
                "The birthplace of {} lies in"),
        "P103": ("{} natively speaks", "{} fluently speaks", "At home, {} mostly speaks",
                 "Since childhood, {} always speaks", "With family, {} usually speaks"),
        "P106": ("{} works as a", "{} was trained as a", "{} earns money as a", "By trade, {} works as a",
                 "After school, {} trained as a"),
        "P108": ("{} works for", "{} currently works for", "For years, {} has worked for",
                 "Every morning, {} goes to work for", "As an employee, {} works for"),
        "P1303": ("{} plays the", "{} performs on the", "Every evening, {} practises the",
                  "{} takes lessons on the", "On stage, {} plays the"),
    }


_RELATION_NAMES = {"P19": "birthplace", "P103": "native language", "P106": "profession",
                   "P108": "employer", "P1303": "instrument"}
RELATION_IDS = tuple(_RELATION_NAMES)


def _name(rng: random.Random, n_syllables: int, coda: bool) -> str:
    """A pronounceable name: consonant-vowel syllables, optionally closed by a consonant cluster."""
    w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n_syllables))
    if coda:
        w += rng.choice(_CODAS)
    return w.capitalize()


def _stem(rng: random.Random) -> str:
    """A short closed syllable ("Vel", "Tor", "Kand") that an ending turns into a place, tongue, firm."""
    return (rng.choice(_ONSETS) + rng.choice(_SIMPLE_VOWELS) + rng.choice(_STEM_CODAS)).capitalize()


def _unique_words(rng: random.Random, n: int, make, taken: set[str], what: str) -> list[str]:
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"could not generate {n} distinct {what}; ask for fewer")
        w = make()
        if w in taken or not w.isalpha() or len(w) < 3:
            continue
        taken.add(w)
        out.append(w)
    return out


# ----------------------------------------------------------------------------------------------


@dataclass
class World:
    """The fictional world: subjects, relations, facts and the editing records built from them.

    `facts[i * R + r]` is the fact of subject i for relation r (R = number of relations).
    """

    seed: int
    first_names: list[str]
    last_names: list[str]
    relations: list[Relation]
    objects_of: dict[str, list[int]]  # relation_id -> object index per subject
    records: list[dict] = field(default_factory=list, repr=False)

    # -- basic views --------------------------------------------------------------------------
    @property
    def n_subjects(self) -> int:
        return len(self.last_names)

    @property
    def subjects(self) -> list[str]:
        """Full names, "First Last"; the last word is unique to the subject."""
        return [f"{f} {l}" for f, l in zip(self.first_names, self.last_names)]

    @property
    def facts(self) -> list[Fact]:
        """All facts, subject-major: `facts[i * R + r]` (built once, then cached)."""
        cached = self.__dict__.get("_facts")
        if cached is None:
            cached = []
            for i, s in enumerate(self.subjects):
                for r, rel in enumerate(self.relations):
                    cached.append(Fact(s, i, rel.relation_id, r, rel.objects[self.objects_of[rel.relation_id][i]]))
            self.__dict__["_facts"] = cached
        return list(cached)

    def relation(self, relation_id: str) -> Relation:
        for rel in self.relations:
            if rel.relation_id == relation_id:
                return rel
        raise ValueError(f"unknown relation_id {relation_id!r}; this world has "
                         f"{[r.relation_id for r in self.relations]}")

    def fact(self, subject: str | int, relation_id: str) -> Fact:
        """The true fact of a subject (its full name or index) for a relation."""
        i = self._subject_index(subject)
        r = self.relations.index(self.relation(relation_id))
        return self.facts[i * len(self.relations) + r]

    def _subject_index(self, subject: str | int) -> int:
        if isinstance(subject, bool) or not isinstance(subject, (int, str)):
            raise TypeError(f"subject must be a full name or an index, got {type(subject).__name__}")
        if isinstance(subject, int):
            if not 0 <= subject < self.n_subjects:
                raise ValueError(f"subject index {subject} out of range 0..{self.n_subjects - 1}")
            return subject
        idx = self.__dict__.get("_index")
        if idx is None:
            idx = {s: i for i, s in enumerate(self.subjects)}
            self.__dict__["_index"] = idx
        if subject not in idx:
            raise ValueError(f"{subject!r} is not a subject of this world (names look like "
                             f"{self.subjects[0]!r})")
        return idx[subject]

    @property
    def n_phrasings(self) -> int:
        return min(len(r.phrasings) for r in self.relations)

    def heldout_phrasing(self, fact: Fact) -> int:
        """The phrasing index never used for this fact in training: (subject + relation) mod P."""
        return (fact.subject_index + fact.relation_index) % len(self.relations[fact.relation_index].phrasings)

    def trained_phrasings(self, fact: Fact) -> list[int]:
        h = self.heldout_phrasing(fact)
        return [p for p in range(len(self.relations[fact.relation_index].phrasings)) if p != h]

    # -- text -----------------------------------------------------------------------------------
    def prompt(self, fact: Fact, phrasing: int) -> str:
        """The prompt of `fact` in phrasing number `phrasing` (ends right before the object)."""
        ph = self.relations[fact.relation_index].phrasings
        if not 0 <= phrasing < len(ph):
            raise ValueError(f"phrasing {phrasing} out of range 0..{len(ph) - 1}")
        return ph[phrasing].format(fact.subject)

    def sentence(self, fact: Fact, phrasing: int) -> str:
        return f"{self.prompt(fact, phrasing)} {fact.object}."

    def training_sentences(self) -> list[str]:
        """Every sentence of the training text, in a fixed order (fact by fact, phrasing by phrasing).

        This is also the K0 corpus of the world: the keys of the preserved knowledge are the
        rewrite module's inputs on these sentences.
        """
        return [self.sentence(f, p) for f in self.facts for p in self.trained_phrasings(f)]

    def training_text(self) -> str:
        """The training sentences joined by newlines."""
        return "\n".join(self.training_sentences())

    def probes(self, split: str = "train", exclude=None, relation_id: str | None = None) -> list[Probe]:
        """Probe prompts of the world's facts.

        split: "train" (phrasings seen in training for that fact), "heldout" (the one held-out
        phrasing of each fact) or "all". exclude: subjects whose facts to leave out (full names,
        indices, or CounterFact records, e.g. the edited ones, to probe the UNEDITED facts).
        """
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
        skip = self._subjects_to_skip(exclude)
        if relation_id is not None:
            self.relation(relation_id)
        out = []
        for f in self.facts:
            if f.subject_index in skip or (relation_id is not None and f.relation_id != relation_id):
                continue
            h = self.heldout_phrasing(f)
            for p in range(len(self.relations[f.relation_index].phrasings)):
                held = p == h
                if split == "all" or (split == "heldout") == held:
                    out.append(Probe(self.prompt(f, p), f.object, f, p, held))
        return out

    def swap_pairs(self, n: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
        """``n`` (prompt_a, subject_a, prompt_b, subject_b): two subjects asked in the same trained
        phrasing of the same relation, with different true objects (for interchange patching,
        :func:`alphaedit_lite.locate.tracing.patch_subject_state`). Same seed, same pairs."""
        if n < 1:
            raise ValueError(f"n must be >= 1 (how many pairs), got {n}")
        rng = random.Random(seed)
        probes = self.probes("train")
        by_key: dict = {}
        for p in probes:
            by_key.setdefault((p.fact.relation_id, p.phrasing), []).append(p)
        out = []
        while len(out) < n:
            a = rng.choice(probes)
            b = rng.choice(by_key[(a.fact.relation_id, a.phrasing)])
            if b.target != a.target:
                out.append((a.prompt, a.fact.subject, b.prompt, b.fact.subject))
        return out

    def unedited_probes(self, edited_records, split: str = "train") -> list[Probe]:
        """Probes of the facts of every subject NOT touched by `edited_records`."""
        return self.probes(split, exclude=edited_records)

    def _subjects_to_skip(self, exclude) -> set[int]:
        if exclude is None:
            return set()
        if isinstance(exclude, (str, int, dict)):
            exclude = [exclude]
        out = set()
        for e in exclude:
            if isinstance(e, dict):
                try:
                    e = e["requested_rewrite"]["subject"]
                except (KeyError, TypeError) as exc:
                    raise ValueError("exclude records must be CounterFact records with "
                                     "requested_rewrite.subject") from exc
            out.add(self._subject_index(e))
        return out

    def words(self) -> list[str]:
        """Every word that the world's texts and records can contain (for the tokenizer)."""
        ws = set(self.first_names) | set(self.last_names) | {"."}
        for rel in self.relations:
            ws.update(rel.objects)
            for ph in rel.phrasings:
                ws.update(_WORD_RE.findall(ph.replace("{}", " ")))
        return sorted(ws)

    # -- records --------------------------------------------------------------------------------
    def make_records(self, facts: list[Fact] | None = None, seed: int | None = None) -> list[dict]:
        """CounterFact-format records (ROME's format) for `facts` (default: one per subject).

        prompt: a trained phrasing of the fact; target_new: another object of the same relation;
        paraphrase_prompts: [held-out phrasing, another trained phrasing], each after a one-
        sentence prefix about someone else (as CounterFact prefixes paraphrases with unrelated
        text); neighborhood_prompts: 10 other subjects with the same relation and true object;
        attribute_prompts: 10 subjects whose true object is target_new (fewer in a world too small
        to have 10); generation_prompts: 10 prompts about the subject across relations.
        """
        if facts is None:
            facts = self.default_record_facts()
        rng = random.Random(f"alphaedit-lite-world/records/{self.seed if seed is None else seed}")
        holders: dict[tuple[int, int], list[int]] = {}
        for rel_i, rel in enumerate(self.relations):
            for i, o in enumerate(self.objects_of[rel.relation_id]):
                holders.setdefault((rel_i, o), []).append(i)
        all_facts = self.facts
        R = len(self.relations)
        records = []
        for case_id, f in enumerate(facts):
            rel = self.relations[f.relation_index]
            true_o = rel.objects.index(f.object)
            new_o = rng.choice([o for o in range(len(rel.objects)) if o != true_o])
            trained = self.trained_phrasings(f)
            p_rw = rng.choice(trained)
            p_para = rng.choice([p for p in trained if p != p_rw])

            def prefix() -> str:
                j = rng.randrange(self.n_subjects - 1)
                j = j + 1 if j >= f.subject_index else j
                other = all_facts[j * R + rng.randrange(R)]
                return self.sentence(other, rng.choice(self.trained_phrasings(other))) + " "

            def others(obj: int, k: int = 10) -> list[str]:
                pool = [i for i in holders.get((f.relation_index, obj), []) if i != f.subject_index]
                pick = rng.sample(pool, min(k, len(pool)))
                out = []
                for i in pick:
                    g = all_facts[i * R + f.relation_index]
                    out.append(self.prompt(g, rng.choice(self.trained_phrasings(g))))
                return out

            gen = []
            for _ in range(10):
                g = all_facts[f.subject_index * R + rng.randrange(R)]
                gen.append(self.prompt(g, rng.randrange(len(self.relations[g.relation_index].phrasings))))
            records.append({
                "case_id": case_id,
                "requested_rewrite": {
                    "prompt": rel.phrasings[p_rw],
                    "relation_id": rel.relation_id,
                    "target_new": {"str": rel.objects[new_o], "id": f"{rel.relation_id}:{new_o}"},
                    "target_true": {"str": f.object, "id": f"{rel.relation_id}:{true_o}"},
                    "subject": f.subject,
                },
                "paraphrase_prompts": [prefix() + self.prompt(f, self.heldout_phrasing(f)),
                                       prefix() + self.prompt(f, p_para)],
                "neighborhood_prompts": others(true_o),
                "attribute_prompts": others(new_o),
                "generation_prompts": gen,
            })
        return records

    def default_record_facts(self) -> list[Fact]:
        """One fact per subject, the relation going round-robin: subject i gets relation i mod R.

        One record per subject keeps every edit's key (the subject's last token) distinct, so a
        run of up to n_subjects sequential edits never edits the same key twice.
        """
        R = len(self.relations)
        fs = self.facts
        return [fs[i * R + (i % R)] for i in range(self.n_subjects)]

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self, include_records: bool = False) -> dict:
        d = {
            "format": "alphaedit-lite-world/1",
            "seed": self.seed,
            "first_names": self.first_names,
            "last_names": self.last_names,
            "relations": [{"relation_id": r.relation_id, "name": r.name, "phrasings": list(r.phrasings),
                           "objects": list(r.objects)} for r in self.relations],
            "objects_of": self.objects_of,
        }
        if include_records:
            d["records"] = self.records
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "World":
        if not isinstance(d, dict) or d.get("format") != "alphaedit-lite-world/1":
            raise ValueError("not an alphaedit-lite world: expected a dict with format "
                             "'alphaedit-lite-world/1' (write one with World.save)")
        rels = [Relation(r["relation_id"], r["name"], tuple(r["phrasings"]), tuple(r["objects"]))
                for r in d["relations"]]
        w = cls(int(d["seed"]), list(d["first_names"]), list(d["last_names"]), rels,
                {k: list(v) for k, v in d["objects_of"].items()})
        w.validate()
        w.records = d["records"] if "records" in d else w.make_records()
        return w

    def save(self, path: str | Path, include_records: bool = False) -> None:
        """Write the world as JSON (records too if asked; otherwise `load` regenerates them)."""
        Path(path).write_text(json.dumps(self.to_dict(include_records=include_records), indent=None,
                                         separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> "World":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no world file at {p}; create one with "
                                    "`python -m alphaedit_lite.world train --out DIR`")
        return cls.from_dict(json.loads(p.read_text()))

    def validate(self) -> None:
        """Check internal consistency; raise ValueError saying what is wrong."""
        n = len(self.last_names)
        if len(self.first_names) != n:
            raise ValueError(f"{len(self.first_names)} first names but {n} last names")
        if len(set(self.last_names)) != n:
            raise ValueError("last names must be unique: the last token identifies the subject")
        for rel in self.relations:
            if len(rel.phrasings) < 2:
                raise ValueError(f"relation {rel.relation_id} needs at least 2 phrasings")
            for ph in rel.phrasings:
                if ph.count("{}") != 1:
                    raise ValueError(f"phrasing {ph!r} must contain exactly one '{{}}'")
            objs = self.objects_of.get(rel.relation_id)
            if objs is None or len(objs) != n:
                raise ValueError(f"objects_of[{rel.relation_id!r}] must list one object per subject")
            if any(not 0 <= o < len(rel.objects) for o in objs):
                raise ValueError(f"objects_of[{rel.relation_id!r}] has an index outside its objects")
            if any(len(o.split()) != 1 for o in rel.objects):
                raise ValueError(f"objects of {rel.relation_id} must be single words")


def generate_world(n_subjects: int = 2000, seed: int = 0, n_relations: int = 5,
                   n_phrasings: int = 5, names: str = "unique", family_size: int = 10) -> World:
    """Generate the fictional world deterministically from `seed`.

    names: "unique" (the tiny world: a first name from a small pool and a unique last name) or
    "families" (the subword world: families of ``family_size`` people share a first name and a
    family stem and differ only in the name's last part, "Varo Quil-dor", "Varo Quil-len"; every
    last part is shared across families, so who someone is becomes known only at the name's LAST
    token, as ROME/MEMIT/AlphaEdit assume).

    n_subjects: people (>= 2; the shipped world has 2000). n_relations: 1..5 relations, taken in
    the order birthplace (P19), native language (P103), profession (P106), employer (P108),
    instrument (P1303). n_phrasings: 2..5 phrasings per relation (one is held out per fact).
    """
    for name, v in (("n_subjects", n_subjects), ("seed", seed), ("n_relations", n_relations),
                    ("n_phrasings", n_phrasings)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n_subjects < 2:
        raise ValueError(f"n_subjects must be at least 2 (neighbours need other people), got {n_subjects}")
    if not 1 <= n_relations <= len(RELATION_IDS):
        raise ValueError(f"n_relations must be in 1..{len(RELATION_IDS)}, got {n_relations}")
    if not 2 <= n_phrasings <= 5:
        raise ValueError(f"n_phrasings must be in 2..5 (one is held out per fact), got {n_phrasings}")

    # Object vocabularies depend on the seed only, not on n_subjects (separate random streams).
    orng = random.Random(f"alphaedit-lite-world/objects/{seed}")
    phr = _phrasings()
    taken: set[str] = set()
    for ph in (p for ps in phr.values() for p in ps):
        taken.update(w.capitalize() for w in _WORD_RE.findall(ph))
    cities = _unique_words(orng, 20, lambda: _stem(orng) + orng.choice(_CITY_ENDS), taken, "cities")
    langs = _unique_words(orng, 12, lambda: _stem(orng) + orng.choice(_LANG_ENDS), taken, "languages")
    firms = _unique_words(orng, 16, lambda: _stem(orng) + orng.choice(_FIRM_ENDS), taken, "employers")
    taken.update(w.capitalize() for w in _PROFESSIONS + _INSTRUMENTS)
    objects = {"P19": cities, "P103": langs, "P106": list(_PROFESSIONS), "P108": firms,
               "P1303": list(_INSTRUMENTS)}

    nrng = random.Random(f"alphaedit-lite-world/names/{seed}")
    if names == "unique":
        n_first = max(8, min(300, n_subjects // 8))
        firsts = _unique_words(nrng, n_first, lambda: _name(nrng, 2, nrng.random() < 0.4), taken, "first names")
        lasts = _unique_words(nrng, n_subjects, lambda: _name(nrng, nrng.choice((2, 2, 2, 3)), nrng.random() < 0.7),
                              taken, "last names")
        first_of = [nrng.choice(firsts) for _ in range(n_subjects)]
    elif names == "families":
        if isinstance(family_size, bool) or not isinstance(family_size, int) or family_size < 2:
            raise ValueError(f"family_size must be an int ≥ 2, got {family_size!r}")
        n_fam = -(-n_subjects // family_size)
        ends = _unique_words(nrng, family_size, lambda: (nrng.choice(_ONSETS) + nrng.choice(_SIMPLE_VOWELS)
                                                         + nrng.choice(_STEM_CODAS)), taken, "name endings")
        stems = _unique_words(nrng, n_fam, lambda: _name(nrng, nrng.choice((1, 2)), nrng.random() < 0.5),
                              taken, "family stems")
        firsts = _unique_words(nrng, max(8, min(300, n_fam // 2)), lambda: _name(nrng, 2, nrng.random() < 0.4),
                               taken, "first names")
        fam_first = [nrng.choice(firsts) for _ in range(n_fam)]
        people = [(fam_first[f], f"{stems[f]}-{ends[j]}") for f in range(n_fam) for j in range(family_size)]
        people = people[:n_subjects]
        nrng.shuffle(people)          # families are not edited one after the other
        first_of, lasts = [p[0] for p in people], [p[1] for p in people]
    else:
        raise ValueError(f"names must be 'unique' or 'families', got {names!r}")

    frng = random.Random(f"alphaedit-lite-world/facts/{seed}")
    relations, objects_of = [], {}
    for rid in RELATION_IDS[:n_relations]:
        rel = Relation(rid, _RELATION_NAMES[rid], phr[rid][:n_phrasings], tuple(objects[rid]))
        relations.append(rel)
        k = len(rel.objects)
        balanced = [o % k for o in range(n_subjects)]  # each object held by n/k subjects
        frng.shuffle(balanced)
        objects_of[rid] = balanced
    world = World(seed, first_of, lasts, relations, objects_of)
    world.validate()
    world.records = world.make_records()
    return world
