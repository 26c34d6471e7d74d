"""Any OpenAI-compatible ``/v1/embeddings`` endpoint through the ``openai`` client."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.embedding.base import Embedder
from gatekeeper.errors import EmbeddingError
from gatekeeper.settings import EmbeddingSettings


class OpenAIEmbedder(Embedder):
    """An OpenAI-compatible ``/v1/embeddings`` endpoint through the ``openai`` client."""

    def __init__(self, settings: EmbeddingSettings, client: Any = None) -> None:
        self._settings = settings
        self.batch_size = settings.batch_size
        dims = f":{settings.dimensions}" if settings.dimensions else ""
        instruction = f":{settings.query_instruction}" if settings.query_instruction else ""
        self.identity = f"openai:{settings.model}{dims}{instruction}"
        self._client = client
        self._dimension: int | None = settings.dimensions

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            key = self._settings.api_key.get_secret_value() if self._settings.api_key else None
            self._client = openai.OpenAI(
                base_url=self._settings.base_url,
                api_key=key or os.environ.get("OPENAI_API_KEY") or "unused",
                timeout=self._settings.timeout,
                max_retries=self._settings.max_retries,
            )
        return self._client

    @property
    def runtime(self) -> str:
        return "openai"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self._encode(["dimension probe"]).shape[1])
        return self._dimension

    def load(self) -> None:
        _ = self.dimension

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        import openai

        prefix = self._settings.query_instruction or ""
        kwargs: dict[str, Any] = {
            "model": self._settings.model,
            "input": [prefix + t for t in texts],
        }
        if self._settings.dimensions:
            kwargs["dimensions"] = self._settings.dimensions
        try:
            response = self._get_client().embeddings.create(**kwargs)
        except openai.APIError as exc:
            where = self._settings.base_url or "the OpenAI API"
            raise EmbeddingError(f"embeddings request to {where} failed: {exc}") from exc
        ordered = sorted(response.data, key=lambda item: item.index)
        if len(ordered) != len(texts):
            raise EmbeddingError(
                f"embeddings endpoint returned {len(ordered)} vectors for {len(texts)} texts"
            )
        return np.asarray([item.embedding for item in ordered], dtype=np.float32)
