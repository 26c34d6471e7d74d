"""Fuzzing streamed answers at the byte level: hostile ``"stream": true`` requests (chat and
Responses, continuations by any ``previous_response_id``) in front of a healthy upstream, and
simple requests in front of an upstream whose stream is anything (non-JSON ``data:`` lines,
comments, bare ``data:``, a ``response.completed`` whose response is any JSON, cut anywhere,
any framing and status). The proxy on loopback, the upstream a real scripted server
(:mod:`tests.fuzz.scripted_upstream`).

Never a 5xx the client caused; a 5xx is an upstream fault's 502/504 with a JSON error; an event
stream ends as its kind must (``[DONE]``, a terminal Responses event) or with an error event,
and with a healthy upstream never with an error; the server never fails.

``GATEKEEPER_FUZZ_EXAMPLES=N`` sets the examples per test (default: a CI-sized run).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.scripted_upstream import Script
from tests.fuzz.stream_stack import FUZZ, Stack, check_answer, ended_well, json_object, sse_events
from tests.fuzz.test_proxy_fuzz import any_json, chat, texts
from tests.fuzz.test_stream_client_fuzz import WORDS, scripts

pytestmark = pytest.mark.fuzz


#: Every event kind, those no client can parse included.
ODD_KINDS = ["created", "text", "done", "error", "comment", "garbage", "empty_data"]
ODD_RESPONSES_KINDS = [*ODD_KINDS, "bad_completed", "bad_completed"]


def _body(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _remember_ids(stack: Stack, answer: bytes) -> None:
    """Keep the id of a streamed Responses answer, for later requests to continue."""
    for event in sse_events(answer):
        data = json_object(event.data) or {}
        response = data.get("response")
        ident = response.get("id") if isinstance(response, dict) else None
        if data.get("type") == "response.completed" and isinstance(ident, str):
            stack.ids.append(ident)


# -- odd upstream streams --------------------------------------------------------------------------


def _bad_completed() -> st.SearchStrategy[Any]:
    """The ``response`` of an upstream's ``response.completed``: any JSON, or nearly a response
    with odd ``output`` items."""
    text_part = st.fixed_dictionaries(
        {"type": st.just("output_text") | any_json}, optional={"text": texts | any_json}
    )
    item = st.fixed_dictionaries(
        {
            "type": st.just("message") | any_json,
            "content": st.lists(text_part | any_json, max_size=3)
            | st.integers()
            | st.booleans()
            | any_json,
        },
        optional={"role": any_json},
    )
    nearly = st.fixed_dictionaries(
        {
            "id": st.sampled_from(["resp_up_x", "resp_gk_x"]) | any_json,
            "output": st.lists(item | any_json, max_size=3) | any_json,
        }
    )
    return nearly | nearly | nearly | any_json


@st.composite
def odd_upstreams(draw: st.DrawFn, path: str) -> Script:
    """Any upstream answer; for Responses, often a whole stream ending in an odd
    ``response.completed`` (which the proxy reads, to remember the conversation)."""
    kinds = ODD_RESPONSES_KINDS if path == "responses" else ODD_KINDS
    fields = {**vars(draw(scripts(kinds))), "completed": draw(_bad_completed())}
    if path == "responses" and draw(st.booleans()):
        events = ("created", "text", "bad_completed")
        fields.update(status=200, events=events, truncate=None, abort=False)
    return Script(**fields)


@FUZZ
@given(
    path=st.sampled_from(["chat/completions", "responses"]),
    text=st.sampled_from(WORDS),
    data=st.data(),
)
def test_odd_upstream_streams_end_well_formed(
    stack: Stack, path: str, text: str, data: st.DataObject
) -> None:
    """Whatever the upstream streams, the client gets a 502/504 JSON error, the upstream's
    4xx, or an event stream that ends well or with an error event."""
    script = data.draw(odd_upstreams(path))
    before = stack.upstream.answered
    if path == "responses":
        body = {"model": "m", "input": text, "stream": True}
    else:
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
    answer = stack.post(path, _body(body), script)
    check_answer(path, answer)
    if answer.status_code >= 500:
        assert stack.upstream.answered > before and not script.healthy, script
    if path == "responses":
        _remember_ids(stack, answer.content)
    stack.assert_alive()


# -- hostile streamed requests ---------------------------------------------------------------------

roles = st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | any_json
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal"]) | any_json},
    optional={"text": texts | any_json, "image_url": any_json, "refusal": texts},
)
item = st.fixed_dictionaries(
    {"role": roles, "content": texts | st.lists(part, max_size=3) | any_json},
    optional={
        "type": st.sampled_from(["message", "function_call_output", "reasoning"]) | any_json,
        "call_id": any_json,
        "output": any_json,
    },
)
#: Stand-ins for ids the proxy answered with earlier (resolved at run time).
KNOWN = ["@known"] * 4
previous_ids = (
    st.sampled_from([*KNOWN, "resp_gk_", "resp_gk_000000000000000000000000", "resp_up_lost"])
    | st.text(max_size=12).map(lambda t: "resp_gk_" + t)
    | any_json
)
responses_request = st.fixed_dictionaries(
    {"input": texts | st.lists(item, max_size=4) | any_json, "stream": st.just(True)},
    optional={
        "model": st.text(max_size=12) | any_json,
        "previous_response_id": previous_ids,
        "instructions": texts | any_json,
        "text": st.fixed_dictionaries(
            {"format": st.fixed_dictionaries({"type": st.sampled_from(["json_object", "text"])})}
        )
        | any_json,
        "stream_options": any_json,
        "store": any_json,
        "tools": any_json,
    },
)
chat_request = chat.map(lambda payload: {**payload, "stream": True})


def _resolved(stack: Stack, payload: Any, pick: int) -> Any:
    """``payload`` with an ``@known`` previous id replaced by one the proxy gave."""
    if isinstance(payload, dict) and payload.get("previous_response_id") == "@known":
        known = stack.ids[pick % len(stack.ids)] if stack.ids else "resp_up_none"
        return {**payload, "previous_response_id": known}
    return payload


@FUZZ
@given(
    request=st.tuples(st.just("responses"), responses_request)
    | st.tuples(st.just("chat/completions"), chat_request),
    pick=st.integers(0, 999),
)
def test_hostile_streamed_requests_are_never_a_5xx(
    stack: Stack, request: tuple[str, Any], pick: int
) -> None:
    """Streamed chat and Responses requests with odd values (continuations of any id): < 500
    before a healthy upstream, and an event stream ends as it must (never with an error)."""
    path, payload = request
    payload = _resolved(stack, payload, pick)
    answer = stack.post(path, _body(payload), Script())
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    events = check_answer(path, answer)
    if events:
        assert ended_well(path, events), answer.content[-500:]
    if path == "responses":
        _remember_ids(stack, answer.content)
    stack.assert_alive()
