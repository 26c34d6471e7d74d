"""A model or embeddings endpoint that answers nonsense fails like a model failure (an
EmbeddingError under gate.on_error), never as an unrelated traceback, and its error messages
carry no customer text."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import openai
import pytest

from gatekeeper.embedding.base import checked_vectors
from gatekeeper.embedding.openai import OpenAIEmbedder
from gatekeeper.errors import EmbeddingError
from gatekeeper.gate import Gatekeeper
from gatekeeper.settings import EmbeddingSettings, Settings
from gatekeeper.testing import HashingEmbedder, tiny_catalog

SECRET = "my card number is 4111 1111 1111 1111, where is my order"


class _Broken(HashingEmbedder):
    """Right at first (the index), then answers with ``bad(texts)``."""

    def __init__(self, bad: Any) -> None:
        super().__init__()
        self.bad = bad
        self.broken = False

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        return self.bad(texts) if self.broken else super()._encode(texts)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (lambda texts: np.full((len(texts), 256), np.nan), "NaN"),
        (lambda texts: np.ones((len(texts), 17)), "17-dimensional"),
        (lambda texts: np.ones((len(texts) + 1, 256)), "no 1 vectors"),
        (lambda texts: [[1.0, 2.0], [3.0]], "no 1 vectors"),
    ],
)
def test_nonsense_vectors_follow_on_error(tmp_path: Path, bad: Any, problem: str) -> None:
    """NaN, another dimension or the wrong count of vectors: a fail_open decision with the
    error named (it crashed in a matrix product, or decided on NaN scores), or the error
    itself with on_error='raise'."""
    embedder = _Broken(bad)
    settings = Settings(data_dir=tmp_path, gate={"threshold": 0.35, "allow_uncalibrated": True})
    gate = Gatekeeper.from_settings(settings, catalog=tiny_catalog(), embedder=embedder)
    gate.index()
    embedder.broken = True
    decision = gate.check("where is my parcel")
    assert decision.gate_error == "EmbeddingError" and problem in decision.reason
    assert decision.forwarded
    with pytest.raises(EmbeddingError, match=problem):
        gate.check("where is my parcel", on_error="raise")


def test_checked_vectors_accepts_what_it_should() -> None:
    """Right-shaped finite vectors pass through as float32."""
    out = checked_vectors([[1, 2, 3]], 1, 3, "m")
    assert out.dtype == np.float32 and out.shape == (1, 3)


class _Embeddings:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def create(self, **kwargs: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _embedder(answer: Any) -> OpenAIEmbedder:
    settings = EmbeddingSettings(provider="openai", model="e5", base_url="http://127.0.0.1:9/v1")
    return OpenAIEmbedder(settings, client=SimpleNamespace(embeddings=_Embeddings(answer)))


def test_an_endpoint_error_echoing_the_input_keeps_it_out_of_the_message() -> None:
    """A 400 whose message echoes the input (as some servers' validation errors do) becomes an
    EmbeddingError naming the status only: the message reaches logs and decisions."""
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/embeddings")
    echoed = openai.BadRequestError(
        f"input rejected: [{SECRET!r}]", response=httpx.Response(400, request=request), body=None
    )
    with pytest.raises(EmbeddingError) as caught:
        _embedder(echoed).embed([SECRET])
    assert "HTTP 400" in str(caught.value) and "4111" not in str(caught.value)


@pytest.mark.parametrize("answer", ["<html>502 Bad Gateway</html>", SimpleNamespace(data=None)])
def test_an_answer_that_is_no_embeddings_list_is_an_embedding_error(answer: Any) -> None:
    """A proxy's HTML page or a list without data: EmbeddingError, not AttributeError."""
    with pytest.raises(EmbeddingError, match="sent no list of embeddings"):
        _embedder(answer).embed(["hello"])


QUERY_KEY = "sk-QUERY-SECRET"
KEYED_URL = f"http://127.0.0.1:9/v1?api-key={QUERY_KEY}&x"


def test_a_key_in_the_endpoint_query_never_reaches_an_error_message() -> None:
    """An embeddings or chat endpoint URL with a key in its query string is named in errors
    with every query value as *** (embeddings failures, an unreachable chat upstream)."""
    from gatekeeper.errors import UpstreamUnavailableError
    from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
    from gatekeeper.settings import UpstreamSettings

    settings = EmbeddingSettings(provider="openai", model="e5", base_url=KEYED_URL)
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/embeddings")
    failing = openai.BadRequestError("no", response=httpx.Response(400, request=request), body=None)
    embedder = OpenAIEmbedder(settings, client=SimpleNamespace(embeddings=_Embeddings(failing)))
    with pytest.raises(EmbeddingError) as embedding:
        embedder.embed(["hello"])
    backend = OpenAIChatBackend(UpstreamSettings(base_url=KEYED_URL, model="m", max_retries=0))
    with pytest.raises(UpstreamUnavailableError) as chat:
        backend("hello")
    for caught in (embedding, chat):
        assert "http://127.0.0.1:9/v1?api-key=***&***" in str(caught.value)
        assert QUERY_KEY not in str(caught.value)


def test_shown_urls_hide_passwords_query_values_and_fragments() -> None:
    """shown_url masks a password and each query value, drops a fragment, keeps the rest."""
    from gatekeeper._validation import shown_url

    assert shown_url("https://api.example/v1") == "https://api.example/v1"
    assert shown_url("http://u:pw@h:8/v1?a=1&b=&c#frag") == "http://u:***@h:8/v1?a=***&b=***&***"


async def test_the_ready_log_names_the_upstream_without_its_query_values(
    gate: Gatekeeper,
) -> None:
    """`server.started` names the upstream URL with its query values (a key) as ***."""
    from structlog.testing import capture_logs

    from gatekeeper.interfaces.proxy.app import create_app
    from tests.support.proxy import proxy_settings

    settings = proxy_settings(gate)
    upstream = settings.upstream.model_copy(update={"base_url": KEYED_URL})
    app = create_app(settings.model_copy(update={"upstream": upstream}), gate=gate)
    with capture_logs() as logs:
        async with app.router.lifespan_context(app):
            pass
    [ready] = [entry for entry in logs if entry["event"] == "server.started"]
    assert ready["upstream"] == "http://127.0.0.1:9/v1?api-key=***&***"
    assert QUERY_KEY not in repr(logs)
