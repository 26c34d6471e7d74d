"""Writing a calibrated threshold (or a tuned adapter) into a YAML settings file, keeping its
comments."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper.errors import ConfigError

if TYPE_CHECKING:
    from gatekeeper.settings import CalibrationRecord


def _block_start(block: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(block)}:\s*(#.*)?$")


def store_threshold(
    path: Path, threshold: float, note: str, calibrated_for: CalibrationRecord | None = None
) -> None:
    """Set ``gate.threshold`` (and ``gate.calibrated_for``) in the YAML settings file ``path``
    (created if absent), keeping its other keys and comments; ``note`` becomes the threshold
    line's comment."""
    import yaml

    from gatekeeper.settings import load_settings

    check_settings_target(path)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else None
        updated = _with_gate_key(original or "", "threshold", f"{threshold:.4f}", note)
        if calibrated_for is not None:
            record = json.dumps(calibrated_for.model_dump(), ensure_ascii=False)
            updated = _with_gate_key(updated, "calibrated_for", record, None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(updated, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot write the threshold to {path}: {exc}") from exc
    try:
        stored = (yaml.safe_load(updated) or {}).get("gate", {}).get("threshold")
        load_settings(path)
    except (yaml.YAMLError, ConfigError, AttributeError) as exc:
        stored, problem = None, str(exc)
    else:
        problem = f"gate.threshold reads back as {stored!r}"
    if stored is None or abs(float(stored) - threshold) > 5e-5:
        if original is None:
            path.unlink()
        else:
            path.write_text(original, encoding="utf-8")
        raise ConfigError(f"could not store the threshold in {path}: {problem}")


def store_gate_settings(path: Path, values: dict[str, str], note: str) -> None:
    """Set several ``gate.<key>`` lines (YAML values) in the settings file ``path``, keeping its
    other keys and comments; ``note`` goes on the first line."""
    from gatekeeper.settings import load_settings

    check_settings_target(path)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else ""
        updated = original
        for index, (key, value) in enumerate(values.items()):
            updated = _with_gate_key(updated, key, value, note if index == 0 else None)
        path.write_text(updated, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot write to settings file {path}: {exc}") from exc
    try:
        load_settings(path)
    except ConfigError:
        path.write_text(original, encoding="utf-8")
        raise


def store_adapter(path: Path, adapter: Path, note: str | None = None) -> None:
    """Set ``embedding.adapter`` in the YAML settings file ``path`` (created if absent) to the
    absolute path of ``adapter``, keeping its other keys and comments."""
    import yaml

    from gatekeeper.settings import load_settings

    check_settings_target(path)
    value = json.dumps(str(Path(adapter).resolve()), ensure_ascii=False)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else None
        updated = _with_block_key(original or "", "embedding", "adapter", value, note)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(updated, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot write the adapter to {path}: {exc}") from exc
    try:
        stored = (yaml.safe_load(updated) or {}).get("embedding", {}).get("adapter")
        load_settings(path)
    except (yaml.YAMLError, ConfigError, AttributeError) as exc:
        stored, problem = None, str(exc)
    else:
        problem = f"embedding.adapter reads back as {stored!r}"
    if stored is None or Path(str(stored)) != Path(adapter).resolve():
        if original is None:
            path.unlink()
        else:
            path.write_text(original, encoding="utf-8")
        raise ConfigError(f"could not store the adapter in {path}: {problem}")


def check_settings_target(path: Path) -> None:
    """Refuse, with :class:`ConfigError`, a settings file that cannot be written: call before
    a long calibration so the problem shows before the work, not after."""
    problem = why_unwritable(path, want_dir=False)
    if problem:
        raise ConfigError(f"cannot write the threshold to settings file {path}: {problem}")


def why_unwritable(path: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` (a directory if ``want_dir``, else a file) cannot be written, or None."""

    if path.exists():
        if want_dir and not path.is_dir():
            return "it exists and is not a directory"
        if not want_dir and path.is_dir():
            return "it is a directory"
        return None if os.access(path, os.W_OK) else "permission denied"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def _with_gate_key(text: str, key: str, value: str, note: str | None) -> str:
    """``text`` (a YAML settings file) with ``gate.<key>`` set to the YAML ``value``, edited
    line by line."""
    return _with_block_key(text, "gate", key, value, note)


def _with_block_key(text: str, block: str, key: str, value: str, note: str | None) -> str:
    """``text`` (a YAML settings file) with ``<block>.<key>`` set to the YAML ``value``,
    edited line by line."""
    line = f"{key}: {value}" + (f"  # {note}" if note else "")
    key_line = re.compile(rf"^(?P<indent>[ \t]+){re.escape(key)}:")
    lines = text.splitlines()
    start = next((i for i, row in enumerate(lines) if _block_start(block).match(row)), None)
    if start is None:
        if re.search(rf"^{re.escape(block)}:", text, flags=re.MULTILINE):
            return _with_key_dumped(text, block, key, value)
        prefix = text.rstrip("\n") + "\n\n" if text.strip() else ""
        return f"{prefix}{block}:\n  {line}\n"
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t#"):
        end += 1
    rows = lines[start + 1 : end]
    indents = [
        len(r) - len(r.lstrip()) for r in rows if r.strip() and not r.lstrip().startswith("#")
    ]
    indent = " " * (min(indents) if indents else 2)
    for offset, row in enumerate(rows):
        match = key_line.match(row)
        if match and match.group("indent") == indent:
            lines[start + 1 + offset] = indent + line
            break
    else:
        at = start + 1
        while at < end and lines[at].lstrip().startswith("#"):
            at += 1  # after the block's leading comments
        lines.insert(at, indent + line)
    return "\n".join(lines) + "\n"


def _with_key_dumped(text: str, block: str, key: str, value: str) -> str:
    """Fallback for a block in flow style: reload and dump (comments are lost)."""
    import yaml

    data = yaml.safe_load(text) or {}
    data.setdefault(block, {})[key] = yaml.safe_load(value)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
