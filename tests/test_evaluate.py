"""Tests of alphaedit_lite.experiments.evaluate: the log-probability primitive on tiny random models (GPT-2 and
Llama, with a byte-level BPE tokenizer without BOS and a word-level tokenizer with BOS), the
CounterFact/zsRE metrics on a hand-built bigram model whose answers are known, and the fluency
entropy on hand-made strings."""
from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_outputs import CausalLMOutput

from alphaedit_lite.experiments.evaluate import (
    counterfact_metrics,
    encode_pair,
    evaluate_requests,
    fluency,
    generate_texts,
    ngram_entropy,
    summarize,
    target_logprobs,
    zsre_metrics,
)
from alphaedit_lite.locate.requests import EditRequest

pytestmark = pytest.mark.usefixtures("single_thread")

CORPUS = [
    "The capital of France is Paris and the capital of Italy is Rome .",
    "The Eiffel Tower is located in the city of Paris in France .",
    "Tourists visiting the Colosseum are in the city of Rome in Italy .",
    "Lionel Messi plays football and Roger Federer plays tennis .",
    "New York is a large city and San Francisco is a city too .",
    "Where is the Louvre ? It is in Paris . What is 2006 ?",
]


# ----------------------------------------------------------------------------------------------
# Tiny tokenizers and models
# ----------------------------------------------------------------------------------------------
def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2 style: byte-level BPE, a space is part of the next token, no BOS."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def _word_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-world style: one token per word, BOS prepended to every encoding."""
    words = sorted({w for line in CORPUS for w in line.split()})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _gpt2(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.4,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def _llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.4, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def bpe_gpt2():
    tok = _bpe_tokenizer()
    return _gpt2(len(tok)), tok


@pytest.fixture(scope="module")
def word_llama():
    tok = _word_tokenizer()
    return _llama(len(tok)), tok


@pytest.fixture(scope="module", params=["bpe_gpt2", "word_llama", "bpe_llama"])
def lm(request):
    if request.param == "bpe_gpt2":
        return request.getfixturevalue("bpe_gpt2")
    if request.param == "word_llama":
        return request.getfixturevalue("word_llama")
    tok = _bpe_tokenizer()
    return _llama(len(tok)), tok


PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Tourists visiting the Colosseum are in the city of",
    "Lionel Messi plays",
    "The capital of France is",
    "Where is the Louvre ?",
    "The capital of France is",
]
TARGETS = ["Paris", "New York", "Rome", "football", "San Francisco", "Paris", "Rome"]


def _by_hand(model, tok, prompt, target):
    """Sum of per-token log-softmax of the target, from one unpadded forward pass."""
    p_ids, t_ids = encode_pair(tok, prompt, target)
    ids = torch.tensor([p_ids + t_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # (L, V)
    lp = torch.log_softmax(logits.double(), dim=-1)
    P = len(p_ids)
    per_tok = [lp[P - 1 + j, t].item() for j, t in enumerate(t_ids)]
    argmax_ok = [int(logits[P - 1 + j].argmax()) == t for j, t in enumerate(t_ids)]
    return sum(per_tok), per_tok, argmax_ok


# ----------------------------------------------------------------------------------------------
# The primitive
# ----------------------------------------------------------------------------------------------
def test_tokenizers_cover_both_bos_conventions(bpe_gpt2, word_llama):
    _, bpe = bpe_gpt2
    _, word = word_llama
    assert bpe.bos_token_id is None and bpe("The capital")["input_ids"] == bpe("The capital", add_special_tokens=False)["input_ids"]
    assert word("The capital")["input_ids"][0] == word.bos_token_id
    p, t = encode_pair(word, "The capital of France is", "New York")
    assert p[0] == word.bos_token_id and len(t) == 2  # BOS once, two-word target
    p, t = encode_pair(bpe, "The capital of France is", "San Francisco")
    assert bpe.decode(t).startswith(" San")  # the leading space belongs to the target


def test_logprob_equals_hand_computed_sum(lm):
    model, tok = lm
    scores = target_logprobs(model, tok, PROMPTS, TARGETS, batch_size=4)
    for i, (p, t) in enumerate(zip(PROMPTS, TARGETS)):
        total, per_tok, ok = _by_hand(model, tok, p, t)
        assert scores.sum[i].item() == pytest.approx(total, abs=1e-4)
        assert scores.token_logprobs[i].tolist() == pytest.approx(per_tok, abs=1e-4)
        assert scores.token_correct[i].tolist() == ok
        assert scores.n_tokens[i].item() == len(per_tok)
        assert scores.mean[i].item() == pytest.approx(total / len(per_tok), abs=1e-4)
    assert (scores.n_tokens > 1).any(), "the test needs multi-token targets"


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_by_one(lm, side):
    model, tok = lm
    one = target_logprobs(model, tok, PROMPTS, TARGETS, batch_size=1, padding_side=side)
    many = target_logprobs(model, tok, PROMPTS, TARGETS, batch_size=16, padding_side=side)
    assert torch.allclose(one.sum, many.sum, atol=1e-4)
    assert torch.allclose(one.mean, many.mean, atol=1e-4)
    # Both padding sides agree with each other too.
    other = target_logprobs(model, tok, PROMPTS, TARGETS, batch_size=3,
                            padding_side="right" if side == "left" else "left")
    assert torch.allclose(one.sum, other.sum, atol=1e-4)


def test_broadcast_and_empty(word_llama):
    model, tok = word_llama
    s = target_logprobs(model, tok, "The capital of France is", ["Paris", "Rome"])
    assert len(s) == 2 and s.sum[0] != s.sum[1]
    assert len(target_logprobs(model, tok, [], [])) == 0


def test_dropout_model_is_scored_in_eval_mode_and_mode_restored(bpe_gpt2):
    model, tok = bpe_gpt2
    ref = target_logprobs(model, tok, PROMPTS, TARGETS)
    model.train()  # GPT-2 has dropout 0.1: scores would be random in train mode
    try:
        again = target_logprobs(model, tok, PROMPTS, TARGETS)
        assert model.training, "the training flag must be restored"
    finally:
        model.eval()
    assert torch.allclose(ref.sum, again.sum, atol=1e-5)


def test_bad_inputs_raise(bpe_gpt2, word_llama):
    model, tok = bpe_gpt2
    with pytest.raises(ValueError, match="one target per prompt"):
        target_logprobs(model, tok, ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="padding_side"):
        target_logprobs(model, tok, ["a"], ["x"], padding_side="middle")
    with pytest.raises(ValueError, match="batch_size"):
        target_logprobs(model, tok, ["a"], ["x"], batch_size=0)
    with pytest.raises(ValueError, match="empty target"):
        target_logprobs(model, tok, ["The capital"], ["  "])
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        target_logprobs(model, tok, [""], ["Paris"])  # no BOS: nothing predicts the first token
    wmodel, wtok = word_llama
    s = target_logprobs(wmodel, wtok, [""], ["Paris"])  # BOS alone predicts it
    assert s.n_tokens.item() == 1 and s.sum.item() < 0


# ----------------------------------------------------------------------------------------------
# Metrics on a bigram model with known answers
# ----------------------------------------------------------------------------------------------
class Bigram(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: the next token depends on the current one only."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.zeros(vocab, vocab))

    def set(self, prev: int, nxt: int, value: float = 8.0):
        with torch.no_grad():
            self.table[prev, nxt] = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = self.table[input_ids]  # (B, L, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return CausalLMOutput(logits=logits)


@pytest.fixture()
def bigram(word_llama):
    _, tok = word_llama
    return Bigram(len(tok)), tok


def _id(tok, w):
    return tok.convert_tokens_to_ids(w)


def _cf_request():
    return EditRequest(
        prompt="The capital of {} is", subject="France", target_new="Rome", target_true="Paris",
        paraphrase_prompts=["Where is the Louvre ? It is in", "The Eiffel Tower is located in the city of"],
        neighborhood_prompts=["The capital of Italy is", "Tourists visiting the Colosseum are in the city of"],
        case_id=7)


def test_counterfact_metrics_follow_the_model(bigram):
    model, tok = bigram
    # Unedited: "is" -> Paris, "of" -> Paris, "in" -> Paris.
    for w in ("is", "of", "in"):
        model.set(_id(tok, w), _id(tok, "Paris"))
    row = evaluate_requests(model, tok, [_cf_request()])["rows"][0]
    assert row["efficacy"] == 0.0 and row["generalization"] == 0.0 and row["specificity"] == 1.0
    assert row["efficacy_magnitude"] < -0.9 and row["specificity_magnitude"] > 0.9
    # "Edit": "is" now -> Rome (rewrite prompt and the first neighbour end in "is"), "in" -> Rome.
    model.set(_id(tok, "is"), _id(tok, "Paris"), 0.0)
    model.set(_id(tok, "is"), _id(tok, "Rome"))
    model.set(_id(tok, "in"), _id(tok, "Paris"), 0.0)
    model.set(_id(tok, "in"), _id(tok, "Rome"))
    out = evaluate_requests(model, tok, [_cf_request()])
    row = out["rows"][0]
    assert row["efficacy"] == 1.0
    assert row["generalization"] == 0.5  # "... in" follows the edit, "... city of" does not
    assert row["specificity"] == 0.5  # "capital of Italy is" now says Rome, "city of" still Paris
    assert out["summary"]["efficacy"] == 100.0 and out["summary"]["specificity"] == 50.0
    assert out["summary"]["score"] == pytest.approx(3 / (1 / 100 + 1 / 50 + 1 / 50))


def test_mean_and_sum_comparisons_differ_on_length(bigram):
    """target_new with two likely tokens vs a one-token true target: the sum penalises length."""
    model, tok = bigram
    is_, new, york = _id(tok, "is"), _id(tok, "New"), _id(tok, "York")
    model.set(is_, new, 3.0)
    model.set(new, york, 3.0)
    model.set(is_, _id(tok, "Paris"), 2.4)
    req = EditRequest(prompt="The capital of {} is", subject="France", target_new="New York", target_true="Paris")
    s = target_logprobs(model, tok, ["The capital of France is"] * 2, ["New York", "Paris"])
    mean_says_new = bool(s.mean[0] > s.mean[1])
    sum_says_new = bool(s.sum[0] > s.sum[1])
    assert mean_says_new != sum_says_new  # the example is built so the two rules disagree
    assert evaluate_requests(model, tok, [req], compare="mean")["rows"][0]["efficacy"] == float(mean_says_new)
    assert evaluate_requests(model, tok, [req], compare="sum")["rows"][0]["efficacy"] == float(sum_says_new)


def test_zsre_token_accuracy(bigram):
    model, tok = bigram
    # Teacher forcing: after "is" the argmax is "New"; after "New" it is "Paris", not "York".
    model.set(_id(tok, "is"), _id(tok, "New"))
    model.set(_id(tok, "New"), _id(tok, "Paris"))
    model.set(_id(tok, "?"), _id(tok, "It"))
    req = EditRequest(prompt="Where is {} ?", subject="the Louvre", target_new="New York", target_true="Paris",
                      paraphrase_prompts=["The capital of France is"],
                      neighborhood_prompts=["What is 2006 ?"], neighborhood_targets=["It is"], case_id=0)
    row = evaluate_requests(model, tok, [req])["rows"][0]
    assert row["style"] == "zsre"
    assert row["efficacy"] == 0.0  # "?" -> "It", not "New"
    assert row["generalization"] == 0.5  # "New" right, "York" wrong
    assert row["specificity"] == 0.5  # "It" right, "is" wrong (the table row of "It" is flat)
    assert zsre_metrics([torch.tensor([True, False])], ["rewrite"])["efficacy"] == 0.5


def test_counterfact_metrics_function_and_summary():
    m = counterfact_metrics(new=[-1.0, -1.0, -3.0, -2.0, -0.5], true=[-2.0, -2.0, -1.0, -1.0, -1.0],
                            kinds=["rewrite", "paraphrase", "paraphrase", "neighborhood", "neighborhood"])
    assert m["efficacy"] == 1.0 and m["generalization"] == 0.5 and m["specificity"] == 0.5
    assert m["efficacy_magnitude"] == pytest.approx(math.exp(-1) - math.exp(-2))
    rows = [{"style": "counterfact", "efficacy": 1.0, "generalization": float("nan"), "specificity": 0.5},
            {"style": "counterfact", "efficacy": 0.0, "generalization": 1.0, "specificity": 1.0}]
    s = summarize(rows)
    assert s["n"] == 2 and s["efficacy"] == 50.0 and s["generalization"] == 100.0 and s["specificity"] == 75.0
    with pytest.raises(ValueError, match="separately"):
        summarize(rows + [{"style": "zsre", "efficacy": 1.0}])
    with pytest.raises(ValueError):
        summarize([])


def test_evaluate_requests_accepts_dicts_and_checks_arguments(word_llama):
    model, tok = word_llama
    d = {"prompt": "The capital of {} is", "subject": "France", "target_new": {"str": "Rome"},
         "target_true": {"str": "Paris"}, "case_id": 3}
    out = evaluate_requests(model, tok, [d])
    direct = target_logprobs(model, tok, ["The capital of France is"] * 2, ["Rome", "Paris"])
    assert out["rows"][0]["efficacy"] == float(direct.mean[0] > direct.mean[1])
    assert out["rows"][0]["case_id"] == 3
    with pytest.raises(ValueError, match="compare"):
        evaluate_requests(model, tok, [d], compare="max")
    with pytest.raises(ValueError, match="no requests"):
        evaluate_requests(model, tok, [])


# ----------------------------------------------------------------------------------------------
# Fluency
# ----------------------------------------------------------------------------------------------
def test_ngram_entropy_by_hand():
    # words a b a b: bigrams ab, ba, ab -> H2 = H(2/3, 1/3); trigrams aba, bab -> H3 = 1 bit.
    h2 = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("a b a b", ns=[2], weights=[1.0]) == pytest.approx(h2)
    assert ngram_entropy("") == 0.0 and ngram_entropy("word") == 0.0
    with pytest.raises(ValueError, match="one weight per order"):
        ngram_entropy("a b", ns=[2, 3], weights=[1.0])


def test_repetitive_text_has_lower_entropy():
    varied = ("The Eiffel Tower was built for the 1889 World's Fair in Paris, and it quickly became "
              "a symbol of French engineering, art and ambition across Europe.")
    loop = "Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris"
    half = "the city of Paris is the city of Paris is the city of Paris is the city of Paris"
    assert ngram_entropy(loop) == 0.0
    assert ngram_entropy(loop) < ngram_entropy(half) < ngram_entropy(varied)
    assert fluency([varied, loop]) == pytest.approx((ngram_entropy(varied) + 0.0) / 2)


def test_generation_is_greedy_and_batch_independent(word_llama):
    model, tok = word_llama
    prompts = ["The capital of France is", "Lionel Messi plays football and", "Where"]
    one = [generate_texts(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    many = generate_texts(model, tok, prompts, max_new_tokens=6, batch_size=3)
    assert one == many
    assert all(t.startswith(p) for t, p in zip(many, prompts))
    cont = generate_texts(model, tok, prompts[:1], max_new_tokens=6, include_prompt=False)[0]
    assert many[0].endswith(cont.strip())


def test_evaluate_with_fluency(word_llama):
    model, tok = word_llama
    req = _cf_request()
    req.generation_prompts = ["The capital of France is", "Where is the Louvre ?"]
    out = evaluate_requests(model, tok, [req], fluency=True, max_new_tokens=8, keep_texts=True)
    row = out["rows"][0]
    assert len(row["texts"]) == 2 and row["fluency"] == pytest.approx(fluency(row["texts"]))
    assert out["summary"]["fluency"] == pytest.approx(100 * row["fluency"])
