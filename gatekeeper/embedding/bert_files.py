"""A BERT model directory, read without torch: whether the gate can run it itself, and its
tokenizer.

Both runtimes of a BERT encoder (:mod:`gatekeeper.embedding.bert`, plain torch, and
:mod:`gatekeeper.embedding.ort`, ONNX Runtime) read the same files: ``config.json``,
``tokenizer.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import json
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
