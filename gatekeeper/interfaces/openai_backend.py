"""The OpenAI-compatible chat backend (the answers it builds locally for refused messages are in
:mod:`gatekeeper.interfaces.local_answers`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigError
from gatekeeper.interfaces.chat_streams import (
    LocalAsyncStream,
    LocalStream,
    MappedAsyncStream,
    MappedStream,
    upstream_errors,
)
from gatekeeper.interfaces.local_answers import local_chunks, local_completion, structured
from gatekeeper.logging import get_logger
from gatekeeper.settings import Settings, UpstreamSettings, load_settings

if TYPE_CHECKING:
    import openai

    from gatekeeper.types import Message


def as_chat_messages(message: Message) -> list[dict[str, Any]]:
    """``message`` in OpenAI chat format: a text becomes one user message."""
    if isinstance(message, str):
        return [{"role": "user", "content": message}]
    if isinstance(message, Mapping):
        return [dict(message)]
    return [dict(m) for m in message]


# -- the OpenAI-compatible chat backend ----------------------------------------------------------


class OpenAIChatBackend:
    """Any OpenAI-compatible chat endpoint, through the ``openai`` client.

    ``backend(message, **kwargs)`` sends ``message`` (a text or chat messages) to
    ``chat.completions.create`` with ``model`` from settings unless given, and returns what the
    client returns (a ``ChatCompletion``, or a stream of chunks with ``stream=True``).
    ``await backend.acall(...)`` does the same on the async client. openai's errors become
    gatekeeper's: :class:`UpstreamTimeoutError`, :class:`UpstreamUnavailableError`,
    :class:`BackendError` (with ``status_code``).
    """

    def __init__(
        self,
        settings: UpstreamSettings | Settings | None = None,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        **defaults: Any,
    ) -> None:
        if isinstance(settings, Settings):
            settings = settings.upstream
        # none given: the upstream the settings file and GATEKEEPER_UPSTREAM__* name, as
        # everywhere else (an empty UpstreamSettings() meant api.openai.com and OPENAI_API_KEY)
        self.settings = settings or load_settings().upstream
        self.defaults = defaults
        self._client = client
        self._async_client = async_client
        self._own_async = False  # a client passed in is the caller's to manage
        self._async_loop: asyncio.AbstractEventLoop | None = None
        if not self.model:
            # Said now, not at the first admitted message (which may come hours later, when a
            # gate in front has refused everything before it): every call must pass model=.
            get_logger("gatekeeper.backend").warning(
                "backend.no_model",
                message="no chat model: set upstream.model (GATEKEEPER_UPSTREAM__MODEL) or pass "
                "model= to the backend or to every call",
            )

    @property
    def model(self) -> str | None:
        """The chat model used when a call names none."""
        model = self.defaults.get("model", self.settings.model)
        return str(model) if model else None

    # -- clients, created on first use ----------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return {
            "base_url": self.settings.base_url,
            # a keyless local endpoint still needs some key for the client to start
            "api_key": key or os.environ.get("OPENAI_API_KEY") or "no-key",
            "timeout": self.settings.timeout,
            "max_retries": self.settings.max_retries,
        }

    @property
    def client(self) -> openai.OpenAI:
        """The sync ``openai`` client (created on first use)."""
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._client_options())
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The async ``openai`` client (created on first use)."""
        loop = _running_loop()
        if self._async_client is None or (self._own_async and self._async_loop is not loop):
            # one per event loop: a client's connections belong to the loop that opened them
            # (reused after asyncio.run() closed that loop: "Event loop is closed")
            import openai

            self._async_client = openai.AsyncOpenAI(**self._client_options())
            self._own_async, self._async_loop = True, loop
        return self._async_client

    # -- calls ------------------------------------------------------------------------------

    def _request(self, message: Message, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        request = {**self.defaults, **kwargs}
        request["messages"] = as_chat_messages(message)
        if not request.get("model"):
            if not self.settings.model:
                raise ConfigError(
                    "no chat model: set upstream.model (GATEKEEPER_UPSTREAM__MODEL) or pass model="
                )
            request["model"] = self.settings.model
        return request

    def __call__(self, message: Message, **kwargs: Any) -> Any:
        """``chat.completions.create`` with ``message``; returns the client's answer (a
        stream's errors while it is read are mapped too)."""
        request = self._request(message, kwargs)
        where = self.settings.base_url
        with upstream_errors(where):
            answer = self.client.chat.completions.create(**request)
        return MappedStream(answer, where) if request.get("stream") else answer

    async def acall(self, message: Message, **kwargs: Any) -> Any:
        """:meth:`__call__` on the async client."""
        request = self._request(message, kwargs)
        where = self.settings.base_url
        with upstream_errors(where):
            answer = await self.async_client.chat.completions.create(**request)
        return MappedAsyncStream(answer, where) if request.get("stream") else answer

    def local_reply(self, text: str, **kwargs: Any) -> Any:
        """What this backend would return for ``text``, built locally: a ``ChatCompletion``,
        or an iterator of ``ChatCompletionChunk`` s when ``stream=True``; under a structured
        ``response_format``, ``text`` comes as the message's ``refusal``."""
        model = kwargs.get("model") or self.model
        n = int(kwargs.get("n") or 1)
        refusal = structured(kwargs.get("response_format"))
        if kwargs.get("stream"):
            usage = bool((kwargs.get("stream_options") or {}).get("include_usage"))
            chunks = local_chunks(text, model=model, n=n, include_usage=usage, refusal=refusal)
            return LocalStream(chunks)
        return local_completion(text, model=model, n=n, refusal=refusal)

    async def alocal_reply(self, text: str, **kwargs: Any) -> Any:
        """:meth:`local_reply` for async callers: streams are async streams."""
        reply = self.local_reply(text, **kwargs)
        if kwargs.get("stream"):
            return LocalAsyncStream(reply)
        return reply

    def close(self) -> None:
        """Close the sync client, if one was created."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close both clients, if created."""
        self.close()
        if self._async_client is not None:
            await self._async_client.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
