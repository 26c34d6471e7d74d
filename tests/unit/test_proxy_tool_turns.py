"""Tool calling through the proxy: the app's own turns that hand the LLM back what its tools
returned (chat ``tool`` messages, Responses tool-output items), and the gate's local answers to
a request that offers tools (in-process proxy, fake upstream)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.support.fake_upstream import FakeUpstream, sse_answer
from tests.support.proxy import sdk

ORDER = {"role": "user", "content": "where is my order"}
SYSTEM = {"role": "system", "content": "You are the shop's assistant."}
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]
TOOLS = [
    {
        "type": "function",
        "name": "lookup_order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
]
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup_order", "arguments": '{"order_id": "NW-12345"}'},
        }
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "shipped"}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "shipped"}


def _upstream_response(ident: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "m",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": TOOLS,
    }


def _calling(ident: str) -> dict[str, Any]:
    """An upstream Responses answer whose output is one function call."""
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "lookup_order",
        "arguments": '{"order_id": "NW-12345"}',
        "status": "completed",
    }
    return _upstream_response(ident, [call])


def _saying(ident: str, text: str) -> dict[str, Any]:
    """An upstream Responses answer of one assistant message."""
    message = {
        "type": "message",
        "id": "msg_up_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return _upstream_response(ident, [message])


def _answers(*bodies: dict[str, Any]) -> Any:
    """An upstream handler answering its Responses requests with ``bodies`` in turn (the last
    one from then on)."""
    queue = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(200, json=body)

    return handler


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/v1/{path}", json=body)


def _sent(upstream: FakeUpstream) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(upstream.requests[-1].content)
    return body


# -- 1. tool results with no customer message ---------------------------------------------------


async def test_a_tool_result_continuing_a_held_response_is_judged_on_its_conversation(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A Responses request of only a function_call_output, naming the admitted answer that
    called the tool, is judged on that conversation's customer turn (the same decision as the
    request that caused the call) and forwarded as sent; it was a 400 empty_message."""
    upstream.handler = _answers(_calling("resp_up_1"), _saying("resp_up_2", "It ships today."))
    first = await _post(client, "responses", {"model": "m", "input": [ORDER], "tools": TOOLS})
    assert first.headers["x-gatekeeper-route"] == "llm"
    body = {"model": "m", "previous_response_id": "resp_up_1", "input": [OUTPUT], "tools": TOOLS}
    answer = await _post(client, "responses", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "resp_up_2"
    for header in ("route", "intent", "score", "threshold"):
        name = f"x-gatekeeper-{header}"
        assert answer.headers[name] == first.headers[name]
    assert _sent(upstream) == body


async def test_a_streamed_tool_result_through_the_sdk_is_forwarded(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """The openai client's streamed tool-loop turn (function_call_output and
    previous_response_id) is forwarded and its stream relayed."""
    upstream.handler = _answers(_calling("resp_up_1"))
    await sdk(client).responses.create(model="m", input=[ORDER], tools=TOOLS)  # type: ignore[arg-type, list-item]
    completed = {"type": "response.completed", "response": _saying("resp_up_2", "Shipped.")}
    upstream.handler = sse_answer(
        f"event: response.completed\ndata: {json.dumps(completed)}\n\n".encode()
    )
    stream = await sdk(client).responses.create(
        model="m",
        previous_response_id="resp_up_1",
        input=[OUTPUT],  # type: ignore[list-item]
        tools=TOOLS,  # type: ignore[list-item]
        stream=True,
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["response.completed"]
    assert _sent(upstream)["input"] == [OUTPUT]


@pytest.mark.parametrize(
    "item",
    [
        OUTPUT,
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "shipped"},
        {"type": "computer_call_output", "call_id": "call_1", "output": {"type": "x"}},
        {"type": "local_shell_call_output", "id": "ls_1", "output": "ok"},
        {"type": "shell_call_output", "call_id": "call_1", "output": []},
        {"type": "apply_patch_call_output", "call_id": "call_1", "status": "completed"},
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
        {"type": "tool_search_output", "call_id": "call_1", "tools": []},
    ],
    ids=lambda item: item["type"],
)
async def test_a_tool_result_the_proxy_does_not_hold_is_forwarded_as_a_continuation(
    client: httpx.AsyncClient, upstream: FakeUpstream, item: dict[str, Any]
) -> None:
    """A tool result naming an answer this process does not hold (another process, a restart)
    is forwarded as sent, its decision a follow-up: route llm, no intent, a reason saying why,
    in the headers and the access log."""
    upstream.handler = _answers(_saying("resp_up_2", "It ships today."))
    body = {"model": "m", "previous_response_id": "resp_elsewhere", "input": [item]}
    with capture_logs() as logs:
        answer = await _post(client, "responses", body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert answer.headers["x-gatekeeper-intent"] == "none"
    assert answer.headers["x-gatekeeper-followup"] == "true"
    assert _sent(upstream) == body
    [line] = [e for e in logs if e["event"] == "http.request"]
    assert line["route"] == "llm" and line["status"] == 200


async def test_a_chat_of_tool_results_without_a_user_turn_is_forwarded_as_a_continuation(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A chat whose only turns are the assistant's tool call and its results (a client that
    trimmed the history) is forwarded byte for byte as a follow-up, like the Responses tool
    result; it was a 400 empty_message."""
    body = {"model": "m", "messages": [SYSTEM, CALL, RESULT], "tools": CHAT_TOOLS}
    answer = await _post(client, "chat/completions", body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gatekeeper-route"] == "llm"
    assert answer.headers["x-gatekeeper-followup"] == "true"
    assert _sent(upstream) == body


async def test_a_chat_ending_in_tool_results_is_judged_on_its_last_customer_turn(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A chat ending in a tool (or legacy function) result after a user turn gets that turn's
    decision: the same headers as the request that caused the call."""
    asked = await _post(client, "chat/completions", {"model": "m", "messages": [ORDER]})
    legacy = {"role": "function", "name": "lookup_order", "content": "shipped"}
    for result in (RESULT, legacy):
        body = {"model": "m", "messages": [SYSTEM, ORDER, CALL, result], "tools": CHAT_TOOLS}
        answer = await _post(client, "chat/completions", body)
        for header in ("route", "intent", "score", "threshold"):
            name = f"x-gatekeeper-{header}"
            assert answer.headers[name] == asked.headers[name]
        assert "x-gatekeeper-followup" not in answer.headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("responses", {"input": [{"role": "assistant", "content": "Anything else?"}]}),
        ("responses", {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
        ("responses", {"input": [], "instructions": "Be brief."}),
        ("chat/completions", {"messages": [SYSTEM, CALL]}),
        ("chat/completions", {"messages": [{"role": "assistant", "content": "Hello?"}]}),
    ],
)
async def test_a_request_with_neither_customer_message_nor_tool_result_is_an_empty_message(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    """No customer message and no tool result: still a 400 empty_message, nothing forwarded."""
    answer = await _post(client, path, {"model": "m", **body})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "empty_message"
    assert upstream.requests == []


async def test_a_tool_result_after_the_proxys_own_refusal_is_refused_again(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A tool result naming a refusal the proxy holds (no tool was ever called there: the
    gate's answers call none) is judged on that conversation, so refused again."""
    refused = await _post(client, "responses", {"model": "m", "input": "tell me a joke"})
    assert refused.headers["x-gatekeeper-route"] == "off_topic"
    body = {"model": "m", "previous_response_id": refused.json()["id"], "input": [OUTPUT]}
    answer = await _post(client, "responses", body)
    assert answer.headers["x-gatekeeper-route"] == "off_topic"
    assert upstream.requests == []


# -- 3. local answers to a request that offers tools ------------------------------------------


async def test_a_local_responses_answer_echoes_the_requests_tool_fields(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """A refused Responses request's local answer echoes its tools, tool_choice and
    parallel_tool_calls, streamed or not, as the API echoes request fields (it said tools [],
    tool_choice auto, parallel_tool_calls true); the openai client parses it."""
    fields = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    body = {"model": "m", "input": "tell me a joke", **fields}
    answer = await _post(client, "responses", body)
    assert answer.headers["x-gatekeeper-route"] == "off_topic"
    assert {key: answer.json()[key] for key in fields} == fields
    streamed = await _post(client, "responses", {**body, "stream": True})
    objects = [
        json.loads(line.removeprefix("data: "))["response"]
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and '"response":' in line
    ]
    assert len(objects) == 3  # created, in_progress, completed
    for obj in objects:
        assert {key: obj[key] for key in fields} == fields
    parsed = await sdk(client).responses.create(**body)  # type: ignore[call-overload]
    assert parsed.tool_choice == "required" and parsed.parallel_tool_calls is False
    assert [tool.name for tool in parsed.tools] == ["lookup_order"]
    plain = (await _post(client, "responses", {"model": "m", "input": "tell me a joke"})).json()
    assert (plain["tools"], plain["tool_choice"], plain["parallel_tool_calls"]) == (
        [],
        "auto",
        True,
    )
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["chat/completions", "responses"])
@pytest.mark.parametrize("model", [5, ["m"], {"name": "m"}, True])
async def test_a_model_that_is_no_string_is_a_422(
    client: httpx.AsyncClient, upstream: FakeUpstream, path: str, model: Any
) -> None:
    """A non-string model is the client's type error: a 422 invalid_type naming 'model' (it
    was answered 200, or forwarded), before the gate decides."""
    chat = {"messages": [{"role": "user", "content": "tell me a joke"}]}
    body = {"model": model, **(chat if path == "chat/completions" else {"input": "hello"})}
    answer = await _post(client, path, body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_type" and "'model'" in error["message"]
    assert upstream.requests == []


async def test_a_long_tool_loop_keeps_the_customers_turn_in_the_held_thread(
    client: httpx.AsyncClient, upstream: FakeUpstream
) -> None:
    """Twenty rounds of tool calls (assistant turns without text) do not push the customer's
    turn out of the held thread: the last tool result is still judged on it, not forwarded
    blind as a continuation."""
    rounds = 20
    answers = [_calling(f"resp_up_{i}") for i in range(1, rounds + 1)]
    upstream.handler = _answers(*answers, _saying(f"resp_up_{rounds + 1}", "It ships today."))
    first = await _post(client, "responses", {"model": "m", "input": [ORDER], "tools": TOOLS})
    assert first.headers["x-gatekeeper-route"] == "llm"
    for i in range(1, rounds + 1):
        body = {"model": "m", "previous_response_id": f"resp_up_{i}", "input": [OUTPUT]}
        answer = await _post(client, "responses", {**body, "tools": TOOLS})
        assert answer.status_code == 200, answer.text
    assert answer.headers["x-gatekeeper-intent"] == first.headers["x-gatekeeper-intent"]
    assert answer.headers["x-gatekeeper-score"] == first.headers["x-gatekeeper-score"]


def test_a_held_thread_keeps_one_silent_turn_for_a_run_of_tool_calls() -> None:
    """Tool-call turns in a row are held as one empty assistant turn: the assistant's question
    before them no longer reads as the turn just before the customer's next one, as in the
    whole chat sent again."""
    from gatekeeper.interfaces.proxy.threads import answered

    asked = {"role": "assistant", "content": "Shall I look it up?"}
    chat = [ORDER, asked, {"role": "assistant", "content": ""}]
    held = answered(chat, "")
    assert held == (ORDER, asked, {"role": "assistant", "content": ""})
