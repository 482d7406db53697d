"""Tokenizer helpers every layer shares."""
from __future__ import annotations

__all__ = ["pad_id"]


def pad_id(tok) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-text token, else its unknown token, else 0.

    Padding is always masked out (attention mask 0, or positions that are never read), so any id
    works; these are just the least surprising ones. Llama-family tokenizers have no pad token.
    """
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tok, name, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return 0
