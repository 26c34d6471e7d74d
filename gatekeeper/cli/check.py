"""``gatekeeper check``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gatekeeper._rows import loads_json
from gatekeeper.calibration import refuse_foreign_threshold, without_conversation_settings
from gatekeeper.cli._app import (
    CatalogOption,
    ConfigOption,
    app,
    friendly_errors,
    load_gate,
    setup,
)
from gatekeeper.conversation import chat_messages
from gatekeeper.errors import (
    InputError,
)
from gatekeeper.paths import read_capped


@app.command()
def check(
    text: Annotated[
        str | None,
        typer.Argument(
            help="The customer message ('-' reads stdin). With --conversation, it is judged as "
            "the customer's next turn after the file's messages. A message starting with '-' "
            "goes after `--`: `gatekeeper check -- '-50 euro off?'`."
        ),
    ] = None,
    config: ConfigOption = None,
    catalog: CatalogOption = None,
    conversation: Annotated[
        Path | None,
        typer.Option(
            "--conversation",
            help="A JSON file of chat messages; the last user turn is judged (or TEXT, when "
            "given, as the turn after them).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decide one message and print the decision."""
    with friendly_errors():
        settings = setup(config, quiet=True, **({"catalog": catalog} if catalog else {}))
        message = _message_argument(text, conversation, settings.server.max_body_bytes)
        # No turn cache: the second, timed decision must embed its message as a new one would
        # (from the cache it took 0.3 ms instead of the forward pass's 5-14 ms).
        # One message alone is judged without the conversation settings: no hint about them.
        gate_settings = settings.gate
        if conversation is None:
            gate_settings = without_conversation_settings(gate_settings)
        no_cache = gate_settings.model_copy(update={"turn_cache": 0})
        gate = load_gate(settings.model_copy(update={"gate": no_cache}))
        refuse_foreign_threshold(settings, "check", gate.catalog.content_hash())
        started = time.perf_counter()
        gate.ready()  # model load and index check: once per process, not part of a decision
        startup_ms = (time.perf_counter() - started) * 1000
        # The first pass pays one-time costs (first forward pass, first Chroma query); the
        # same message decided again is the latency every later message sees. The warm-up is
        # judged, not decided: one message gets one gate.decided line.
        started = time.perf_counter()
        gate.judge_many([message])
        first_ms = (time.perf_counter() - started) * 1000
        decision = gate.check(message, on_error="raise")
        if as_json:
            out = decision.model_dump(mode="json")
            out["first_latency_ms"] = first_ms
            out["startup_ms"] = startup_ms
            typer.echo(json.dumps(out, ensure_ascii=False))
            return
        table = Table(show_header=False, box=None)
        for key in ("route", "intent", "score", "threshold", "reason", "latency_ms"):
            value = getattr(decision, key)
            digits = 3 if key == "latency_ms" else 4  # a score as precise as its threshold
            table.add_row(
                f"[bold]{key}[/]",
                escape(f"{value:.{digits}f}" if isinstance(value, float) else str(value)),
            )
        table.add_row(
            "[dim]first decision[/]",
            escape(
                f"{first_ms:.3f} ms (one-time warm-up: first forward pass and Chroma "
                f"query); model load and index check {startup_ms:,.0f} ms before it"
            ),
        )
        if decision.reply:
            table.add_row("[bold]reply[/]", escape(decision.reply))
        table.add_row("[dim]catalog[/]", escape(f"{settings.catalog} ({gate.store.name})"))
        for n in decision.neighbours[:3]:
            table.add_row("[dim]nearest[/]", escape(f"{n.similarity:.3f}  {n.intent}: {n.text}"))
        Console().print(table)


def _message_argument(text: str | None, conversation: Path | None, limit: int) -> Any:
    """The message or chat to judge: TEXT, stdin, or the --conversation file, each of at most
    ``limit`` bytes (``server.max_body_bytes``, what the proxy takes in one request)."""
    if conversation is not None:
        raw = read_capped(conversation, limit, "conversation", setting="server.max_body_bytes")
        try:
            messages = loads_json(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InputError(f"cannot read conversation {conversation}: {exc}") from exc
        if isinstance(messages, dict):
            messages = messages.get("messages")
        try:
            messages = chat_messages(messages)
        except InputError as exc:
            raise InputError(f"{conversation}: {exc}") from None
        if text is not None:  # the customer's next turn after the conversation so far
            return [*messages, {"role": "user", "content": _given_text(text, limit)}]
        return messages
    if text is None:
        raise InputError("give the message to check, or --conversation FILE")
    return _given_text(text, limit)


def _given_text(text: str, limit: int) -> str:
    """The message given on the command line, or read from stdin for '-' (at most ``limit``
    bytes): UTF-8 text, or an :class:`InputError` naming the first byte that is not (it said
    "a lone surrogate")."""
    where = "stdin" if text == "-" else "the message"
    raw = sys.stdin.buffer.read(limit + 1) if text == "-" else os.fsencode(text)
    if len(raw) > limit:
        raise InputError(f"{where} holds more than {limit:,} bytes (server.max_body_bytes)")
    try:
        return raw.decode("utf-8-sig" if text == "-" else "utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not UTF-8 text (byte {exc.start}: {raw[exc.start]:#04x}); "
            "save or send it as UTF-8"
        ) from None
