"""Real servers on loopback for tests: :class:`LoopbackServer` and :class:`RecordingUpstream`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gatekeeper.conversation import last_user_text


def _last_input_text(items: Any) -> str:
    """The text of the last user message of a Responses API ``input``."""
    if isinstance(items, str):
        return items
    messages = [
        {"role": item.get("role"), "content": _part_texts(item.get("content"))}
        for item in items or []
        if isinstance(item, dict) and "role" in item
    ]
    return last_user_text(messages)


def _part_texts(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)


class LoopbackServer:
    """An ASGI app served by uvicorn on 127.0.0.1, on a free port, in a background thread,
    with the options ``gatekeeper serve`` gives uvicorn (keep-alive timeout and all).

    ::

        with LoopbackServer(app) as server:
            httpx.get(server.url + "/healthz")

    Startup runs the app's lifespan; leaving the block shuts down gracefully (in-flight requests
    finish, up to ``graceful_shutdown_seconds``).
    """

    def __init__(self, app: Any, *, graceful_shutdown_seconds: int = 5) -> None:
        self.app = app
        self.graceful_shutdown_seconds = graceful_shutdown_seconds
        self.port = 0
        self._server: Any = None
        self._thread: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LoopbackServer:
        """Start serving; raise RuntimeError if the app does not come up within ``timeout``."""
        import socket
        import threading
        import time

        import uvicorn

        from gatekeeper.interfaces.proxy.drain import DrainingServer
        from gatekeeper.interfaces.proxy.runner import uvicorn_options

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        options = uvicorn_options(self.graceful_shutdown_seconds)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, **options)
        self._server = DrainingServer(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="loopback-server"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down gracefully and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordingUpstream:
    """A small real OpenAI-compatible chat server that records what it receives.

    ``POST /v1/chat/completions`` answers ``"echo: <last user message>"``, as one
    ``chat.completion`` or, with ``stream: true``, as SSE chunks (one per word) ending in
    ``data: [DONE]``; ``POST /v1/responses`` answers the same echo of the last user input as a
    Responses API ``response`` or, streamed, as its events (``event: <type>``, one
    ``response.output_text.delta`` per word) ending in ``response.completed``;
    ``GET /v1/models`` lists :attr:`model`. Answers are deterministic (the id
    derives from the request body, ``created`` is fixed), so two identical requests get
    byte-identical answers. Switches: :meth:`fail_with` (answer an error status),
    :meth:`delay` (wait before answering), :meth:`reset`.

    ::

        with RecordingUpstream() as upstream:
            client = openai.OpenAI(base_url=upstream.base_url, api_key="x")
            client.chat.completions.create(model="m", messages=[...])
            upstream.calls  # the JSON bodies received
    """

    CREATED = 1_700_000_000

    def __init__(self, *, model: str = "echo-model", api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key
        self.calls: list[dict[str, Any]] = []
        self.raw_bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._fail_status: int | None = None
        self._delay = 0.0
        self._server = LoopbackServer(self._app())

    # -- switches -----------------------------------------------------------------------

    def fail_with(self, status: int | None) -> None:
        """Answer every request with ``status`` and an OpenAI-style error (``None``: stop)."""
        self._fail_status = status

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (``0``: answer at once)."""
        self._delay = seconds

    def reset(self) -> None:
        """Forget the recorded calls and turn failures and delays off."""
        self.calls.clear()
        self.raw_bodies.clear()
        self.headers.clear()
        self._fail_status = None
        self._delay = 0.0

    # -- serving ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending with ``/v1``."""
        return f"{self._server.url}/v1"

    def start(self) -> RecordingUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> RecordingUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def gatekeeping(request: Request) -> Response | None:
            import asyncio

            if self._delay:
                await asyncio.sleep(self._delay)
            if self.api_key is not None and request.headers.get("authorization") != (
                f"Bearer {self.api_key}"
            ):
                return _error(401, "invalid upstream key", "invalid_api_key")
            if self._fail_status is not None:
                return _error(self._fail_status, "simulated failure", "simulated")
            return None

        def _error(status: int, message: str, code: str) -> JSONResponse:
            body = {"error": {"message": message, "type": "upstream_test_error", "code": code}}
            return JSONResponse(body, status_code=status)

        async def record(request: Request) -> tuple[bytes, dict[str, Any]]:
            """Keep the request's raw body, headers and JSON."""
            raw = await request.body()
            self.raw_bodies.append(raw)
            self.headers.append(dict(request.headers))
            body = json.loads(raw)
            self.calls.append(body)
            return raw, body

        async def chat(request: Request) -> Response:
            raw, body = await record(request)
            refused = await gatekeeping(request)
            if refused is not None:
                return refused
            ident = "chatcmpl-echo-" + hashlib.sha256(raw).hexdigest()[:16]
            text = "echo: " + last_user_text(body.get("messages"))
            model = str(body.get("model") or self.model)
            if body.get("stream"):
                return StreamingResponse(_sse(ident, model, text), media_type="text/event-stream")
            return Response(_completion(ident, model, text), media_type="application/json")

        def _completion(ident: str, model: str, text: str) -> bytes:
            answer = {
                "id": ident,
                "object": "chat.completion",
                "created": self.CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": len(text.split()),
                    "total_tokens": 7 + len(text.split()),
                },
                "system_fingerprint": "fp_recording",
                "x_upstream_extra": {"note": "unknown fields pass through ✓"},
            }
            return json.dumps(answer, ensure_ascii=False, indent=1).encode()

        async def _sse(ident: str, model: str, text: str) -> Any:
            def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
                chunk = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": self.CREATED,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

            yield event({"role": "assistant", "content": ""})
            words = text.split(" ")
            for i, word in enumerate(words):
                yield event({"content": word if i == 0 else " " + word})
            yield event({}, "stop")
            yield b"data: [DONE]\n\n"

        async def responses(request: Request) -> Response:
            raw, body = await record(request)
            refused = await gatekeeping(request)
            if refused is not None:
                return refused
            ident = "resp_echo_" + hashlib.sha256(raw).hexdigest()[:16]
            text = "echo: " + _last_input_text(body.get("input"))
            model = str(body.get("model") or self.model)
            if body.get("stream"):
                events = _response_events(ident, model, text)
                return StreamingResponse(_aiter(events), media_type="text/event-stream")
            answer = _response(ident, model, text, "completed")
            return Response(json.dumps(answer, ensure_ascii=False), media_type="application/json")

        def _response(ident: str, model: str, text: str | None, status: str) -> dict[str, Any]:
            output = [] if text is None else [_message(ident, text, "completed")]
            words = len(text.split()) if text else 0
            return {
                "id": ident,
                "object": "response",
                "created_at": self.CREATED,
                "status": status,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "error": None,
                "incomplete_details": None,
                "usage": {
                    "input_tokens": 7,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": words,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 7 + words,
                },
            }

        def _message(ident: str, text: str | None, status: str) -> dict[str, Any]:
            content = [] if text is None else [_text_part(text)]
            msg_id = "msg_" + ident.removeprefix("resp_")
            return {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": content,
            }

        def _text_part(text: str) -> dict[str, Any]:
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

        def _response_events(ident: str, model: str, text: str) -> list[bytes]:
            where = {"item_id": "msg_" + ident.removeprefix("resp_"), "output_index": 0}
            part = {**where, "content_index": 0}
            opened = _response(ident, model, None, "in_progress")
            events: list[dict[str, Any]] = [
                {"type": "response.created", "response": opened},
                {"type": "response.in_progress", "response": opened},
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": _message(ident, None, "in_progress"),
                },
                {"type": "response.content_part.added", **part, "part": _text_part("")},
            ]
            for i, word in enumerate(text.split(" ")):
                delta = word if i == 0 else " " + word
                events.append(
                    {"type": "response.output_text.delta", **part, "delta": delta, "logprobs": []}
                )
            events += [
                {"type": "response.output_text.done", **part, "text": text, "logprobs": []},
                {"type": "response.content_part.done", **part, "part": _text_part(text)},
                {
                    "type": "response.output_item.done",
                    "output_index": 0,
                    "item": _message(ident, text, "completed"),
                },
                {
                    "type": "response.completed",
                    "response": _response(ident, model, text, "completed"),
                },
            ]
            return [
                f"event: {e['type']}\ndata: "
                f"{json.dumps({**e, 'sequence_number': n}, ensure_ascii=False)}\n\n".encode()
                for n, e in enumerate(events)
            ]

        async def _aiter(items: list[bytes]) -> Any:
            for item in items:
                yield item

        async def models(request: Request) -> Response:
            self.headers.append(dict(request.headers))
            refused = await gatekeeping(request)
            if refused is not None:
                return refused
            data = [
                {
                    "id": self.model,
                    "object": "model",
                    "created": self.CREATED,
                    "owned_by": "recording-upstream",
                }
            ]
            return JSONResponse({"object": "list", "data": data})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/responses", responses, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
            ]
        )
