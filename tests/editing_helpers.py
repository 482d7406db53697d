"""Shared helpers of the editing-engine tests (stats, keys, targets, methods).

A tiny random Llama (4 layers, d_model 48, d_ff 96) with a byte-level BPE tokenizer trained in a
fraction of a second on a built-in text: it behaves like a real model for tokenisation (subjects
change tokens after a space) and shapes, and it builds with no download.
"""
from __future__ import annotations

import functools

import torch

from alphaedit_lite.util.paths import shared_data_dir

_TEXT = """The Eiffel Tower is located in the city of Paris. The Colosseum is located in Rome.
Danielle Darrieux was a French actress. Her mother tongue is French. Toko Yasuda plays the guitar.
Apple was founded by Steve Jobs. Microsoft was founded by Bill Gates. The capital of Italy is Rome.
Autonomous University of Madrid is located in Spain. Lyon is a city in France. He speaks English.
""" * 20

# Requests for the tiny random model: the subject ends the prompt and the targets are single tokens,
# so that a vector added at the subject's last token can steer the (untrained) model's next token.
TINY_REQUESTS = [
    {"prompt": "The landmark in the city of Paris is {}", "subject": "The Eiffel Tower",
     "target_new": {"str": "Rome"}, "target_true": {"str": "Paris"}, "case_id": 100},
    {"prompt": "The mother tongue of {}", "subject": "Danielle Darrieux", "target_new": {"str": "English"},
     "target_true": {"str": "French"}, "case_id": 101},
    {"prompt": "The home town of {}", "subject": "Toko Yasuda", "target_new": {"str": "Paris"},
     "target_true": {"str": "Rome"}, "case_id": 102},
]

# Real-world requests (CounterFact style) for SmolLM2.
REQUESTS = [
    {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower", "target_new": {"str": "Rome"},
     "target_true": {"str": "Paris"}, "case_id": 0},
    {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux", "target_new": {"str": "English"},
     "target_true": {"str": "French"}, "case_id": 1},
    {"prompt": "{} was founded by", "subject": "Apple", "target_new": {"str": "Bill Gates"},
     "target_true": {"str": "Steve Jobs"}, "case_id": 2},
]


def corpus_text() -> str:
    shared = shared_data_dir()
    if shared is not None and (shared / "wikitext-2-raw" / "wiki.test.raw").is_file():
        return (shared / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")[:200_000]
    return _TEXT * 10


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([_TEXT, corpus_text()[:50_000]], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.padding_side = "right"
    return tok


def tiny_llama(seed: int = 0, n_layers: int = 4, dtype=torch.float32):
    import transformers as T

    tok = tiny_tokenizer()
    cfg = T.LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=n_layers, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
                        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        tie_word_embeddings=True, initializer_range=0.1)
    torch.manual_seed(seed)
    model = T.LlamaForCausalLM(cfg).to(dtype).eval()
    return model, tok


def log_prob(model, tok, prompt: str, target: str) -> float:
    """log p(" " + target | prompt), summed over the target's tokens (teacher forcing)."""
    from alphaedit_lite.locate.targets import target_token_ids

    a = tok(prompt).input_ids
    b = target_token_ids(tok, target)
    device = next(model.parameters()).device
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([a + b], device=device)).logits[0].float(), -1)
    return sum(float(lp[len(a) - 1 + k, t]) for k, t in enumerate(b))


def new_vs_old(model, tok, requests) -> list[tuple[float, float]]:
    """[(log p(target_new), log p(target_true))] on each request's own prompt."""
    out = []
    for r in requests:
        prompt = r["prompt"].replace("{}", r["subject"])
        out.append((log_prob(model, tok, prompt, r["target_new"]["str"]),
                    log_prob(model, tok, prompt, r["target_true"]["str"])))
    return out


def all_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same_params(model, snapshot) -> bool:
    return all(torch.equal(p.detach(), snapshot[n]) for n, p in model.named_parameters())
