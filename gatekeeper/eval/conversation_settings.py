"""Which conversation settings a run with chats decided with, and where they came from.

A chat's turns are routed by the conversation model (``gate.session_margin``,
``followup_max_words``, ``followup_off_topic_max``, ``followup_off_topic_gap``), on the model's
own score scale like the threshold; a report that shows the threshold and not them leaves half
of a chat's decision unexplained. They come from the environment (``GATEKEEPER_GATE__*``), the
settings file (where ``calibrate --conversations ... --write`` leaves its command, what they did
on its chats and what it warned about as the line's comment: :func:`~gatekeeper.eval.
conversations.settings_note`), or the built-in defaults (calibrated for the shipped gate).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper.conversation import GAP_OFF
from gatekeeper.eval.conversations import WARNING_MARK
from gatekeeper.eval.schema import ConversationSettings
from gatekeeper.eval.settings_file import settings_section

if TYPE_CHECKING:
    from gatekeeper.settings import Settings

#: The conversation settings, as ``gate.<key>``; the calibration's comment is on the first.
KEYS = ("session_margin", "followup_max_words", "followup_off_topic_max", "followup_off_topic_gap")


def conversation_settings(settings: Settings) -> ConversationSettings:
    """The conversation settings of ``settings`` and where they came from."""
    gate = settings.gate
    variables = [f"GATEKEEPER_GATE__{key.upper()}" for key in KEYS]
    named = {name.upper() for name in os.environ}
    from_env = [name for name in variables if name in named]
    path = settings.source_file
    filed = settings_section(path, "gate") if path is not None else {}
    in_file = [key for key in KEYS if key in filed]
    sources = []
    if in_file:
        sources.append(f"settings file {path}")
    if from_env:
        sources.append(f"environment ({', '.join(from_env)})")
    if len(in_file) + len(from_env) < len(KEYS):
        sources.append("built-in defaults")
    note = _calibration_comment(path) if in_file else None
    record = gate.conversations_calibrated_for
    return ConversationSettings(
        session_margin=gate.session_margin,
        followup_max_words=gate.followup_max_words,
        followup_off_topic_max=gate.followup_off_topic_max,
        followup_off_topic_gap=gate.followup_off_topic_gap,
        source=" and ".join(sources) if len(sources) < 3 else ", ".join(sources),
        calibrated_for=record.model_dump() if record is not None else None,
        calibration=note.split(WARNING_MARK)[0] if note else None,
        warnings=note.split(WARNING_MARK)[1:] if note else [],
    )


def settings_value(c: ConversationSettings) -> str:
    """The settings in one line, as the report's summary shows them."""
    gap = "off" if c.followup_off_topic_gap >= GAP_OFF else f"{c.followup_off_topic_gap:g}"
    off_max = "off" if c.followup_off_topic_max >= 1.0 else f"{c.followup_off_topic_max:g}"
    return (
        f"session margin {c.session_margin:g}, answers of at most {c.followup_max_words} words, "
        f"off-topic max {off_max}, gap {gap}"
    )


def settings_origin(c: ConversationSettings) -> str:
    """Where they came from, and what their calibration measured (its command apart)."""
    if c.calibration is None:
        return f"from {c.source}"
    chats = re.search(r"--conversations (\S+)", c.calibration)
    measured = c.calibration.split(" → ", 1)[-1]
    on = f" on {chats.group(1)}" if chats else ""
    return f"from {c.source}, calibrated{on}: {measured}"


def _calibration_comment(path: Path | None) -> str | None:
    """The comment ``calibrate --conversations ... --write`` left on a conversation setting's
    line of the settings file (on the first it wrote), or None."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for key in KEYS:
        for line in lines:
            found = re.match(rf"^[ \t]+{key}:[^#]*#\s*(?P<note>.*\S)\s*$", line)
            if found and found.group("note").startswith("gatekeeper calibrate"):
                return found.group("note")
    return None
