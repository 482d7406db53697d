"""The tiny fictional world: a "model organism" for thousands of sequential edits on a laptop CPU.

No paper equation is implemented in this package; it provides what the equations act on. A
seeded generator invents ≥1000 people with pronounceable multi-word names and one fact per
relation (birthplace, native language, profession, employer, instrument), says each fact in
several phrasings, and trains a 4-layer `LlamaForCausalLM` (the same architecture and rewrite
module `model.layers.{l}.mlp.down_proj` as SmolLM2) on the resulting text until it knows every
fact. Its training sentences are the K0 corpus (preserved knowledge, AlphaEdit Eq. 5-10) and its
CounterFact-format records are the edits K1.

    from alphaedit_lite.world import load_tiny_world, k0_corpus
    model, tok, world = load_tiny_world()           # shipped: data/tiny_world/, offline
    world.records[0]["requested_rewrite"]["prompt"]  # CounterFact format, "{}" = subject
    world.unedited_probes(edited_records)            # prompts of the facts an edit run left alone
    k0_corpus(world)                                 # the training sentences

Command line: `python -m alphaedit_lite.world train|eval|show` (see `__main__`). How the
held-out phrasings are chosen is explained in `alphaedit_lite.world.generate`.
"""
from alphaedit_lite.world.generate import RELATION_IDS, Fact, Probe, Relation, World, generate_world
from alphaedit_lite.world.model import (build_tokenizer, default_world_dir, evaluate_world_model, k0_corpus, load_subword_world,
                    load_tiny_world, load_world_model, make_config, make_model, predict_next, probe_accuracy,
                    save_tiny_world, target_token_id)
from alphaedit_lite.world.train import DEFAULTS, train_and_save, train_world_model

__all__ = [
    "RELATION_IDS", "Fact", "Probe", "Relation", "World", "generate_world",
    "build_tokenizer", "default_world_dir", "evaluate_world_model", "k0_corpus", "load_tiny_world",
    "load_subword_world", "load_world_model",
    "make_config", "make_model", "predict_next", "probe_accuracy", "save_tiny_world", "target_token_id",
    "DEFAULTS", "train_and_save", "train_world_model",
]
