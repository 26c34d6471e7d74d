"""Any OpenAI-compatible ``/v1/embeddings`` endpoint through the ``openai`` client."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper._validation import shown_url
from gatekeeper.embedding.base import Embedder, checked_vectors
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
        self._owns_client = client is None  # a client passed in is its owner's to close
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

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            client.close()

    @property
    def runtime(self) -> str:
        return "openai"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            probe = checked_vectors(self._encode(["dimension probe"]), 1, None, self.identity)
            self._dimension = int(probe.shape[1])
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
        base = self._settings.base_url
        where = shown_url(base) if base else "the OpenAI API"
        try:
            response = self._get_client().embeddings.create(**kwargs)
            ordered = sorted(response.data, key=lambda item: item.index)
            vectors = np.asarray([item.embedding for item in ordered], dtype=np.float32)
        except openai.APIError as exc:
            raise EmbeddingError(f"embeddings request to {where} failed: {_why(exc)}") from exc
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # a proxy's HTML error page, {"object": "list"} without data, ...
            raise EmbeddingError(
                f"embeddings endpoint {where} sent no list of embeddings ({type(exc).__name__})"
            ) from exc
        if len(ordered) != len(texts):
            raise EmbeddingError(
                f"embeddings endpoint returned {len(ordered)} vectors for {len(texts)} texts"
            )
        return vectors


def _why(exc: Exception) -> str:
    """What went wrong, without the endpoint's message: servers echo the input there
    (customer text), and the error reaches logs and decisions."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "no answer in time"
    if isinstance(exc, openai.APIConnectionError):
        return "cannot connect"
    if isinstance(exc, openai.APIStatusError):
        code = getattr(exc, "code", None)
        return f"HTTP {exc.status_code}" + (f" ({code})" if isinstance(code, str) else "")
    return type(exc).__name__
