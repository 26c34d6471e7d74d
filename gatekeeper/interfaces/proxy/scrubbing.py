"""Taking the proxy's keys out of what an upstream says back (its error bodies, every header).

An upstream may echo the key it was sent, not always as sent: JSON-escaped (``/`` as ``\\/``, or
``\\u002f``), percent-encoded (``%2F``, ``%2f``), as an HTML character reference (``&#x2F;``),
each character or some. :class:`Scrubber` compiles, once, a pattern matching every such
spelling of every key; the literal keys are replaced first (the usual case, and all a body
without ``%``, ``\\`` or ``&`` needs).

A successful answer's body (a completion, an SSE stream, a passed-through download) is relayed as
sent, never scrubbed: it is the model's or the stored object's content, read whole or streamed
chunk by chunk (a key split across chunks would slip by anyway), and an upstream echoes a key in
its errors, not in its answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Shorter keys are not scrubbed (they would match ordinary text).
MIN_SCRUBBED = 8
#: A byte without which no encoded spelling can occur.
_ENCODED_MARK = re.compile(rb"[%\\&]")
_REPLACEMENT = b"***"


class Scrubber:
    """Replaces every spelling of ``secrets`` (those of :data:`MIN_SCRUBBED` bytes or more)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._literals = [s.encode() for s in secrets if len(s.encode()) >= MIN_SCRUBBED]
        alternatives = b"|".join(_spellings(secret) for secret in self._literals)
        self._encoded = re.compile(alternatives) if self._literals else None

    def __call__(self, data: bytes) -> bytes:
        for literal in self._literals:
            data = data.replace(literal, _REPLACEMENT)
        if self._encoded is not None and _ENCODED_MARK.search(data):
            data = self._encoded.sub(_REPLACEMENT, data)
        return data


def _spellings(secret: bytes) -> bytes:
    """A pattern matching ``secret`` with any of its characters escaped or encoded."""
    return b"(?:" + b"".join(_character(byte) for byte in secret) + b")"


def _character(byte: int) -> bytes:
    """The spellings of one character: itself, ``%HH``, ``\\u00HH``, ``\\xHH``, ``&#xHH;``,
    ``&#DD;`` (hex digits in either case, leading zeros allowed), ``\\c`` for punctuation."""
    hexa = b"".join(_either_case(digit) for digit in b"%02x" % byte)
    options = [
        re.escape(bytes([byte])),
        b"%" + hexa,
        b"\\\\u00" + hexa,
        b"\\\\x" + hexa,
        b"&#[xX]0*" + hexa + b";",
        b"&#0*" + str(byte).encode() + b";",
    ]
    if not bytes([byte]).isalnum():
        options.append(b"\\\\" + re.escape(bytes([byte])))
    return b"(?:" + b"|".join(options) + b")"


def _either_case(digit: int) -> bytes:
    char = bytes([digit])
    return char if char.isdigit() else b"[" + char.lower() + char.upper() + b"]"


__all__ = ["MIN_SCRUBBED", "Scrubber"]
