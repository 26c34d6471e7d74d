"""Streams of chat completion chunks, as the wrapper returns them, and the mapping of the
``openai`` client's errors to gatekeeper's.

A refused message's stream is built locally (:class:`LocalStream`, :class:`LocalAsyncStream`);
an admitted one comes from the upstream, wrapped (:class:`MappedStream`,
:class:`MappedAsyncStream`) so that an error in the middle of it (a cut connection, a malformed
event) is a gatekeeper error like one before it. All four have the call shape of ``openai``'s
``Stream`` / ``AsyncStream``: iteration, ``with`` / ``async with`` and ``close()``, so code
written for the ``openai`` client runs unchanged on refused and admitted messages alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gatekeeper._validation import shown_url
from gatekeeper.errors import BackendError, UpstreamTimeoutError, UpstreamUnavailableError

#: What an upstream's error text may repeat of a key: a bearer token, an ``sk-`` key.
_KEYS = re.compile(r"(?i)(bearer\s+)\S+|\bsk-[A-Za-z0-9_\-*.]{6,}")


def scrub(text: str) -> str:
    """``text`` (an upstream's error message) without the keys it may repeat: an endpoint
    that echoes the ``Authorization`` it got would otherwise put the key in the exception,
    and from there in the application's logs."""
    return _KEYS.sub(lambda m: f"{m.group(1)}***" if m.group(1) else "sk-***", text)


def _cause(exc: Exception, text: str, scrubbed: str) -> Exception | None:
    """``exc`` as the cause of the error it becomes, unless its ``text`` held a key (it differs
    from the ``scrubbed`` one): a logged traceback prints the cause's text too."""
    return exc if scrubbed == text else None


@contextmanager
def upstream_errors(where: str | None) -> Iterator[None]:
    """Turn the ``openai`` client's errors into gatekeeper's backend errors."""
    import openai

    where = shown_url(where) if where else "the OpenAI API"
    try:
        yield
    except openai.APITimeoutError as exc:  # before APIConnectionError: it is a subclass
        raise UpstreamTimeoutError(f"{where} did not answer in time") from exc
    except openai.APIConnectionError as exc:
        said = scrub(str(exc))
        raise UpstreamUnavailableError(f"cannot reach {where}: {said}") from _cause(
            exc, str(exc), said
        )
    except openai.APIStatusError as exc:
        said = scrub(exc.message)
        raise BackendError(
            f"{where} answered HTTP {exc.status_code}: {said}", status_code=exc.status_code
        ) from _cause(exc, exc.message, said)
    except json.JSONDecodeError as exc:  # a stream event that is not JSON
        raise BackendError(f"{where} sent a malformed event stream") from exc


class LocalStream:
    """The chunks of a reply built locally, shaped like ``openai.Stream``."""

    response = None  # no HTTP response behind it

    def __init__(self, chunks: Iterable[Any]) -> None:
        self._chunks = iter(list(chunks))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def __enter__(self) -> LocalStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; what is left is dropped."""
        self._chunks = iter(())


class LocalAsyncStream:
    """The chunks of a reply built locally, shaped like ``openai.AsyncStream``."""

    response = None

    def __init__(self, chunks: Iterable[Any]) -> None:
        self._chunks = iter(list(chunks))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> LocalAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; what is left is dropped."""
        self._chunks = iter(())


class MappedStream:
    """An upstream ``openai.Stream`` whose errors, while it is read, are gatekeeper's."""

    def __init__(self, stream: Any, where: str | None) -> None:
        self._stream = stream
        self._where = where

    def __iter__(self) -> Iterator[Any]:
        with upstream_errors(self._where):
            yield from self._stream

    def __enter__(self) -> MappedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the upstream response."""
        self._stream.close()

    def __getattr__(self, name: str) -> Any:  # response, ... of the wrapped stream
        return getattr(self._stream, name)


class MappedAsyncStream:
    """An upstream ``openai.AsyncStream`` whose errors, while it is read, are gatekeeper's."""

    def __init__(self, stream: Any, where: str | None) -> None:
        self._stream = stream
        self._where = where

    async def __aiter__(self) -> AsyncIterator[Any]:
        with upstream_errors(self._where):
            async for chunk in self._stream:
                yield chunk

    async def __aenter__(self) -> MappedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the upstream response."""
        await self._stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
