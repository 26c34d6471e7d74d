"""A BERT model directory, read without torch: whether the gate can run it itself, and its
tokenizer.

Both runtimes of a BERT encoder (:mod:`gatekeeper.embedding.bert`, plain torch, and
:mod:`gatekeeper.embedding.ort`, ONNX Runtime) read the same files: ``config.json``,
``tokenizer.json`` and ``model.safetensors``. :func:`legible_forms` tells, with any tokenizer,
which texts the model reads nothing of.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: ``hidden_act`` values the gate's BERT encoder computes (BERT's exact-erf GELU).
ACTIVATIONS = ("gelu",)


def supports(path: Path) -> bool:
    """Whether the model in ``path`` is a plain BERT encoder the gate runs itself."""
    try:
        settings = config(path)
    except (OSError, ValueError):
        return False
    return (
        settings.get("model_type") == "bert"
        and settings.get("hidden_act", "gelu") in ACTIVATIONS
        and settings.get("position_embedding_type", "absolute") == "absolute"
        and (path / "model.safetensors").is_file()
        and (path / "tokenizer.json").is_file()
    )


def config(path: Path) -> dict[str, Any]:
    """The model's ``config.json``."""
    loaded = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path / 'config.json'} is not a JSON object")
    return loaded


def load_tokenizer(path: Path, max_length: int) -> Any:
    """``tokenizer.json`` with transformers' call-time behaviour: truncate to ``max_length``
    (at most the model's length), pad to the longest text of the batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    limit = min(max_length, _model_max_length(path))
    tokenizer.enable_truncation(max_length=limit)
    pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0
    pad_token = tokenizer.padding["pad_token"] if tokenizer.padding else "[PAD]"
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def _model_max_length(path: Path) -> int:
    """The tokenizer's ``model_max_length`` (transformers' cap on ``max_length``)."""
    try:
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        return int(tokenizer_config.get("model_max_length", 512))
    except (OSError, ValueError, TypeError):
        return 512


def legible_forms(tokenizer: Any, texts: Sequence[str]) -> list[str | None]:
    """For each text, the form ``tokenizer`` reads (see
    :meth:`~gatekeeper.embedding.Embedder.legible`): the text; its NFKC form when that has
    fewer unknown tokens; None when every token of the better form is unknown (or it has
    none)."""
    counts = unknown_counts(tokenizer, texts)
    nfkc = [unicodedata.normalize("NFKC", text) for text in texts]
    retry = [i for i, (unknown, _) in enumerate(counts) if unknown and nfkc[i] != texts[i]]
    forms: list[str] = list(texts)
    for i, (unknown, tokens) in zip(
        retry, unknown_counts(tokenizer, [nfkc[i] for i in retry]), strict=True
    ):
        if unknown < counts[i][0]:
            forms[i], counts[i] = nfkc[i], (unknown, tokens)
    return [
        None if unknown == tokens else form
        for form, (unknown, tokens) in zip(forms, counts, strict=True)
    ]


def unknown_counts(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, int]]:
    """For each text, how many of its tokens ``tokenizer`` (a ``tokenizers.Tokenizer`` or a
    transformers tokenizer) does not know, and how many tokens it has (special ones aside)."""
    if not texts:
        return []
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        unknown = getattr(tokenizer.model, "unk_token", None)
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [_count(unknown, _real_tokens(e)) for e in encodings]
    unknown = getattr(tokenizer, "unk_token", None)
    return [_count(unknown, tokenizer.tokenize(text)) for text in texts]


def _real_tokens(encoding: Any) -> list[str]:
    """An encoding's tokens without the batch's padding."""
    return [t for t, real in zip(encoding.tokens, encoding.attention_mask, strict=True) if real]


def _count(unknown: str | None, tokens: Sequence[str]) -> tuple[int, int]:
    return sum(1 for token in tokens if token == unknown), len(tokens)
