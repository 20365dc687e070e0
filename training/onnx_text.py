"""Text rows → a Transformer's inputs: tokenized with a Hugging Face `tokenizer.json` (the `tokenizers` library reads
JSON, it runs no code), truncated to the model's maximum length, bucketed by length and padded per bucket.

Padding a whole batch to its longest text makes one long text cost every short one a full-length pass; rows are
instead grouped by the power of two at or above their length (8, 16, 32, …), and each group is padded only to its
own longest row, with an attention mask of 1 for tokens and 0 for padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

MIN_BUCKET = 8
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")


def pad_id_of(tokenizer: Tokenizer) -> int:
    """The padding token's id: the tokenizer's own padding setting, else a conventional pad token, else 0."""
    padding = tokenizer.padding
    if padding and isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    for token in PAD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The tokenizer of `path`, set to truncate at `max_length` tokens (special tokens included) and not to pad:
    padding is done per bucket here."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Token ids per text, and whether each was truncated (the tokenizer keeps what it cut as `overflowing`)."""
    encodings = tokenizer.encode_batch(texts)
    return [list(e.ids) for e in encodings], [bool(e.overflowing) for e in encodings]


def buckets(lengths: list[int]) -> list[list[int]]:
    """Row indexes grouped by the power of two at or above their length; shortest group first."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        size = MIN_BUCKET
        while size < n:
            size *= 2
        groups.setdefault(size, []).append(i)
    return [groups[size] for size in sorted(groups)]


def feed(rows: list[list[int]], pad_id: int, inputs: dict[str, str]) -> dict[str, Any]:
    """The named input arrays for `rows` of token ids, padded to the longest row; `inputs` maps each graph input
    (input_ids, attention_mask, token_type_ids) to its numpy dtype name."""
    width = max(1, max((len(r) for r in rows), default=1))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if not row:  # an empty text with no special tokens: one pad token it may attend to, never an empty row
            row = [pad_id]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: arrays[name].astype(dtype) for name, dtype in inputs.items()}
