"""Fuzzing streamed answers through the official ``openai`` client: ``stream=True`` chat
completions and Responses (continuations of the proxy's own answers and of the upstream's
included), refused, canned and forwarded, against a proxy on loopback in front of a scripted
upstream (:mod:`tests.fuzz.scripted_upstream`) whose answer may be healthy or not: an error
status before the stream, JSON where a stream was asked for, a stream cut mid-event, an error
event mid-stream, no ``[DONE]``, a connection closed mid-body.

Whatever the upstream does, the client parses what it gets: the answer's text, or an
``openai.APIError`` (a 502/504 JSON error, the upstream's own 4xx, an SSE error event) when,
and only when, the upstream failed; never a parse error or a broken connection.

``GATEKEEPER_FUZZ_EXAMPLES=N`` sets the examples per test (default: a CI-sized run).
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.scripted_upstream import HEALTHY, UPSTREAM_TEXT, Script
from tests.fuzz.stream_stack import CLIENT_KEY, FUZZ, LOCAL_REPLIES, OFF_TOPIC_REPLY, Stack

pytestmark = pytest.mark.fuzz


WORDS = ["where is my order", "tell me a joke", "hello", "i want a refund", "write a poem"]
#: Event kinds every client can parse (each ``data:`` is JSON or ``[DONE]``).
CLEAN_KINDS = ["created", "text", "done", "error", "comment"]

statuses = st.sampled_from([200] * 8 + [201, 400, 401, 404, 429, 500, 502, 503])
content_types = st.sampled_from(
    ["text/event-stream"] * 6 + ["text/event-stream; charset=utf-8", "application/json"]
)
separators = st.sampled_from([b"\n\n"] * 3 + [b"\r\n\r\n", b"\r\r"])
framings = st.sampled_from(["chunked"] * 3 + ["close", "length"])
offsets = st.integers(0, 1500)


def scripts(kinds: list[str]) -> st.SearchStrategy[Script]:
    """Upstream answers: healthy (sent in any pieces, any line ends, any framing) or odd."""
    healthy = st.builds(
        Script,
        separator=separators,
        cuts=st.lists(offsets, max_size=4).map(tuple),
        framing=framings,
    )
    odd = st.builds(
        Script,
        status=statuses,
        content_type=content_types,
        events=st.lists(st.sampled_from(kinds), max_size=8).map(tuple) | st.just(HEALTHY),
        separator=separators,
        truncate=st.none() | offsets,
        cuts=st.lists(offsets, max_size=4).map(tuple),
        framing=framings,
        abort=st.booleans(),
    )
    return healthy | odd


texts = st.sampled_from(WORDS) | st.text(min_size=1, max_size=40)
turns = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": texts}
).map(dict)


class Outcome:
    """What a streamed call gave the client: the route header, the text, the error."""

    def __init__(self, route: str | None, text: str, error: Exception | None) -> None:
        self.route, self.text, self.error = route, text, error


def check(outcome: Outcome, script: Script, forwarded: bool) -> None:
    """The client got the answer it should: a local reply (no upstream call), the upstream's
    text from a healthy upstream, an APIError only from a faulty one, never a broken
    connection."""
    error = outcome.error
    assert not isinstance(error, openai.APIConnectionError), error
    if outcome.route in ("off_topic", "canned"):
        assert error is None and outcome.text in LOCAL_REPLIES and not forwarded, vars(outcome)
    elif isinstance(error, openai.APIStatusError) and error.status_code >= 500:
        assert error.status_code in (502, 504) and isinstance(error.body, dict), error
        assert forwarded and not script.healthy, (error, script)
    elif error is not None and not isinstance(error, openai.APIStatusError):
        assert forwarded and not script.healthy, (error, script)  # an SSE error event
    elif outcome.route == "llm" and script.healthy:
        assert error is None and outcome.text == UPSTREAM_TEXT, (vars(outcome), script)


def client_for(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)


def read_chat(client: openai.OpenAI, **kwargs: Any) -> Outcome:
    """A streamed chat completion as the client reads it (the first choice's text)."""
    try:
        raw = client.chat.completions.with_raw_response.create(stream=True, **kwargs)
    except openai.APIStatusError as exc:
        return Outcome(exc.response.headers.get("x-gatekeeper-route"), "", exc)
    parts: list[str] = []
    try:
        for chunk in raw.parse():
            said = [c.delta.content or c.delta.refusal or "" for c in chunk.choices if c.index == 0]
            parts.extend(said)
    except openai.APIError as exc:
        return Outcome(raw.headers.get("x-gatekeeper-route"), "".join(parts), exc)
    return Outcome(raw.headers.get("x-gatekeeper-route"), "".join(parts), None)


@FUZZ
@given(
    messages=st.lists(turns, max_size=3).flatmap(
        lambda history: texts.map(lambda t: [*history, {"role": "user", "content": t}])
    ),
    script=scripts(CLEAN_KINDS),
    structured=st.booleans(),
    usage=st.booleans(),
    n=st.integers(1, 3),
)
def test_streamed_chat_parses_in_the_openai_client(
    stack: Stack,
    messages: list[dict[str, str]],
    script: Script,
    structured: bool,
    usage: bool,
    n: int,
) -> None:
    """Streamed chat, refused or forwarded to any upstream: the client parses the answer."""
    stack.upstream.script = script
    before = stack.upstream.answered
    options: dict[str, Any] = {"stream_options": {"include_usage": usage}, "n": n}
    if structured:
        options["response_format"] = {"type": "json_object"}
    outcome = read_chat(client_for(stack), model="shop-llm", messages=messages, **options)
    check(outcome, script, forwarded=stack.upstream.answered > before)
    stack.assert_alive()


class ResponsesOutcome(Outcome):
    """A streamed Responses call: also the id of its ``response.completed`` response."""

    def __init__(
        self, route: str | None, text: str, error: Exception | None, ident: str | None
    ) -> None:
        super().__init__(route, text, error)
        self.ident = ident


def read_responses(client: openai.OpenAI, **kwargs: Any) -> ResponsesOutcome:
    """A streamed Responses call as the client reads it."""
    try:
        raw = client.responses.with_raw_response.create(stream=True, model="shop-llm", **kwargs)
    except openai.APIStatusError as exc:
        return ResponsesOutcome(exc.response.headers.get("x-gatekeeper-route"), "", exc, None)
    route = raw.headers.get("x-gatekeeper-route")
    parts: list[str] = []
    ident = None
    try:
        for event in raw.parse():
            if event.type in ("response.output_text.delta", "response.refusal.delta"):
                parts.append(event.delta)
            elif event.type == "response.completed":
                ident = event.response.id
    except openai.APIError as exc:
        return ResponsesOutcome(route, "".join(parts), exc, None)
    return ResponsesOutcome(route, "".join(parts), None, ident)


continuations = st.sampled_from(["none", "last", "last", "known", "lost_local", "lost_upstream"])
responses_turn = st.tuples(st.sampled_from(WORDS) | texts, continuations, scripts(CLEAN_KINDS))


def previous_id(choice: str, last: str | None, stack: Stack, pick: int) -> str | None:
    """The ``previous_response_id`` a turn sends: none, the last answer's, any answer the
    proxy gave before, or one it never gave (its own kind or the upstream's)."""
    known = stack.ids[pick % len(stack.ids)] if stack.ids else None
    return {
        "none": None,
        "last": last,
        "known": known,
        "lost_local": "resp_gk_000000000000000000000000",
        "lost_upstream": "resp_up_lost",
    }[choice]


def check_upstream_saw(bodies: list[Any]) -> None:
    """What reached the upstream: JSON, never an id of the proxy's own, never a refusal."""
    for body in bodies:
        assert isinstance(body, dict), body
        previous = body.get("previous_response_id")
        assert not (isinstance(previous, str) and previous.startswith("resp_gk_")), body
        assert OFF_TOPIC_REPLY not in json.dumps(body), body


@FUZZ
@given(
    turns=st.lists(st.tuples(responses_turn, st.integers(0, 99)), min_size=1, max_size=3),
    structured=st.booleans(),
)
def test_streamed_responses_parse_in_the_openai_client(
    stack: Stack, turns: list[tuple[tuple[str, str, Script], int]], structured: bool
) -> None:
    """Streamed Responses turns, continuing answers of the proxy's or the upstream's (known or
    not), refused or forwarded to any upstream: the client parses each answer, and the upstream
    is never shown the proxy's ids or refusals."""
    client, last = client_for(stack), None
    options: dict[str, Any] = {"text": {"format": {"type": "json_object"}}} if structured else {}
    for (text, continuation, script), pick in turns:
        previous = previous_id(continuation, last, stack, pick)
        more = {} if previous is None else {"previous_response_id": previous}
        stack.upstream.script = script
        before = len(stack.upstream.bodies)
        outcome = read_responses(client, input=text, **options, **more)
        check(outcome, script, forwarded=len(stack.upstream.bodies) > before)
        check_upstream_saw(stack.upstream.bodies[before:])
        if outcome.ident is not None:
            last = outcome.ident
            stack.ids.append(outcome.ident)
    stack.assert_alive()
