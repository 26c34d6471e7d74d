"""A refused request that asked for structured output (``response_format`` / ``text.format``)
gets the refusal in OpenAI's refusal shape, which the official client's ``parse`` helpers read:
through the proxy (chat completions and Responses, streamed or not) and the wrapped backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.interfaces.wrapper import GatedBackend
from gatekeeper.settings import UpstreamSettings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OFF_TOPIC_REPLY, sdk, serving


class Answer(BaseModel):
    """The structured answer a chatbot asks its LLM for."""

    reply: str
    order_id: str | None


JOKE = [{"role": "user", "content": "tell me a joke"}]
JSON_MODE = {"type": "json_object"}


@pytest.fixture
async def client(gate: Gatekeeper, upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client of the proxy (in-process) in front of ``upstream``."""
    async with serving(gate, upstream) as proxied:
        yield sdk(proxied)


async def test_parse_gets_the_refusal_not_a_validation_error(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """chat.completions.parse(response_format=Model) on an off-topic message: parsed is None,
    the refusal carries the catalog's reply, content is null; no upstream call."""
    completion = await client.chat.completions.parse(
        model="m", messages=JOKE, response_format=Answer
    )
    message = completion.choices[0].message
    assert message.parsed is None and message.content is None
    assert message.refusal == OFF_TOPIC_REPLY
    assert upstream.requests == []


async def test_json_mode_refusal_is_no_content(client: openai.AsyncOpenAI) -> None:
    """response_format json_object: the refusal is in message.refusal, not in content a client
    would json.loads."""
    completion = await client.chat.completions.create(
        model="m",
        messages=JOKE,  # type: ignore[arg-type]
        response_format=JSON_MODE,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.refusal == OFF_TOPIC_REPLY
    assert completion.choices[0].message.content is None


async def test_plain_requests_keep_the_text_answer(client: openai.AsyncOpenAI) -> None:
    """Without a structured format (or with type text) the refusal is the message content."""
    completion = await client.chat.completions.create(
        model="m",
        messages=JOKE,  # type: ignore[arg-type]
        response_format={"type": "text"},
    )
    assert completion.choices[0].message.content == OFF_TOPIC_REPLY
    assert completion.choices[0].message.refusal is None


async def test_a_streamed_structured_refusal_comes_as_refusal_deltas(
    client: openai.AsyncOpenAI,
) -> None:
    """The stream helper with response_format=Model accumulates the refusal deltas."""
    async with client.chat.completions.stream(
        model="m",
        messages=JOKE,  # type: ignore[arg-type]
        response_format=Answer,
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.refusal == OFF_TOPIC_REPLY and message.parsed is None


async def test_responses_parse_gets_a_refusal_part(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """responses.parse(text_format=Model): the output message holds one refusal part."""
    response = await client.responses.parse(model="m", input="tell me a joke", text_format=Answer)
    [item] = response.output
    assert item.type == "message"
    [part] = item.content
    assert part.type == "refusal" and part.refusal == OFF_TOPIC_REPLY
    assert response.output_parsed is None
    assert upstream.requests == []


async def test_a_streamed_responses_refusal_is_refusal_events(
    client: openai.AsyncOpenAI,
) -> None:
    """Streamed with a structured text.format: refusal delta/done events, in sequence."""
    stream = await client.responses.create(
        model="m",
        input="tell me a joke",
        text={"format": {"type": "json_object"}},
        stream=True,
    )
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    assert "response.output_text.delta" not in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = [e for e in events if e.type == "response.refusal.done"]
    assert done[0].refusal == OFF_TOPIC_REPLY


def test_the_wrapped_backend_answers_a_structured_request_with_a_refusal(
    gate: Gatekeeper,
) -> None:
    """GatedBackend over OpenAIChatBackend: an off-topic call with response_format gets a
    ChatCompletion whose refusal is the reply, streamed or not; the backend is not called."""
    backend = OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1", model="m"))
    gated = GatedBackend(gate, backend)
    answer = gated("tell me a joke", response_format=JSON_MODE)
    assert answer.choices[0].message.refusal == OFF_TOPIC_REPLY
    assert answer.choices[0].message.content is None
    with gated("tell me a joke", response_format=JSON_MODE, stream=True) as stream:
        refusal = "".join(c.choices[0].delta.refusal or "" for c in stream if c.choices)
    assert refusal == OFF_TOPIC_REPLY
    assert gated("tell me a joke").choices[0].message.content == OFF_TOPIC_REPLY


def test_structured_formats() -> None:
    """json_schema and json_object are structured; text, missing or malformed are not."""
    from gatekeeper.interfaces.local_answers import structured

    assert structured({"type": "json_schema", "json_schema": {}})
    assert structured({"type": "json_object"})
    assert not structured({"type": "text"})
    assert not structured(None)
    assert not structured("json_object")
    assert not structured({"type": []}) and not structured({"type": {"a": 1}})


WRONG_FORMATS = [{"type": []}, {"type": {"a": 1}}, "json_object", [1]]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("response_format", WRONG_FORMATS)
async def test_a_format_of_the_wrong_type_is_a_422_before_any_decision(
    gate: Gatekeeper, upstream: FakeUpstream, response_format: Any, stream: bool
) -> None:
    """A response_format (or Responses text.format) that is no object or has a type that is no
    string is a 422 in OpenAI's shape, nothing decided or counted, no upstream call."""
    chat = {"model": "m", "messages": JOKE, "response_format": response_format, "stream": stream}
    responses = {"model": "m", "input": "tell me a joke", "text": {"format": response_format}}
    async with serving(gate, upstream) as proxied:
        answers = [
            await proxied.post("/v1/chat/completions", json=chat),
            await proxied.post("/v1/responses", json={**responses, "stream": stream}),
        ]
        metrics = (await proxied.get("/metrics")).text
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_type"
        assert "format" in answer.json()["error"]["message"]
    assert "gatekeeper_llm_calls_saved_total 0.0" in metrics
    assert "gatekeeper_decisions_total{" not in metrics
    assert upstream.requests == []


async def test_a_responses_text_option_that_is_no_object_is_a_422(
    gate: Gatekeeper, upstream: FakeUpstream
) -> None:
    """A Responses request whose text option is not an object is a 422, not a 500."""
    async with serving(gate, upstream) as proxied:
        answer = await proxied.post(
            "/v1/responses", json={"model": "m", "input": "tell me a joke", "text": [1]}
        )
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_type"


def test_the_wrapped_backend_reads_a_malformed_format_as_no_structured_one(
    gate: Gatekeeper,
) -> None:
    """GatedBackend over OpenAIChatBackend: an off-topic call whose response_format type is no
    string gets the reply as content (no TypeError), streamed or not."""
    backend = OpenAIChatBackend(UpstreamSettings(base_url="http://127.0.0.1:9/v1", model="m"))
    gated = GatedBackend(gate, backend)
    answer = gated("tell me a joke", response_format={"type": []})
    assert answer.choices[0].message.content == OFF_TOPIC_REPLY
    with gated("tell me a joke", response_format={"type": {"a": 1}}, stream=True) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == OFF_TOPIC_REPLY
