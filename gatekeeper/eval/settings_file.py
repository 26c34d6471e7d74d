"""Writing a calibrated threshold (or a tuned adapter) into a YAML settings file, keeping its
comments."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigError, InputError
from gatekeeper.paths import why_unwritable

if TYPE_CHECKING:
    from gatekeeper.gate_settings import CalibrationRecord


def _block_start(block: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(block)}:\s*(#.*)?$")


def store_threshold(
    path: Path, threshold: float, note: str, calibrated_for: CalibrationRecord | None = None
) -> bool:
    """Set ``gate.threshold`` (and ``gate.calibrated_for``) in the YAML settings file ``path``
    (created if absent), keeping its other keys and comments; ``note`` becomes the threshold
    line's comment. A threshold calibrated for another rule than the file's (``--rule``,
    ``GATEKEEPER_GATE__RULE``) sets ``gate.rule`` too: the file then serves what it records.
    Whether it did."""
    rule_set = False

    def edit(text: str) -> str:
        nonlocal rule_set
        text = _with_gate_key(text, "threshold", f"{threshold:.4f}", note)
        if calibrated_for is None:
            return text
        rule_set = _file_rule(text) != calibrated_for.rule
        if rule_set:
            text = _with_gate_key(text, "rule", calibrated_for.rule, None)
        record = json.dumps(calibrated_for.model_dump(), ensure_ascii=False)
        return _with_gate_key(text, "calibrated_for", record, None)

    def check(data: dict[str, Any]) -> str | None:
        stored = (data.get("gate") or {}).get("threshold")
        if stored is not None and abs(float(stored) - threshold) <= 5e-5:
            return None
        return f"gate.threshold reads back as {stored!r}"

    _edit_settings(path, "the threshold", edit, check)
    return rule_set


def _file_rule(text: str) -> str:
    """The rule a settings file's text names (the default when it names none)."""
    import yaml

    from gatekeeper.rules import DEFAULT_RULE

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return DEFAULT_RULE
    gate = data.get("gate") if isinstance(data, dict) else None
    rule = gate.get("rule") if isinstance(gate, dict) else None
    return str(rule or DEFAULT_RULE)


def check_write_catalog(catalog: Path | None, served: Path, target: Path, what: str) -> None:
    """A ``--write`` stores what was made for ``catalog`` (``--catalog`` or
    ``GATEKEEPER_CATALOG``; None: the file's own) only into a settings file that serves it
    (``served``, its catalog): :class:`InputError` otherwise, naming the catalog's own settings
    file. ``what`` says what was made: "a threshold tuned for", "an adapter trained on"."""
    from gatekeeper.settings import catalog_settings_file

    if catalog is None or catalog.resolve() == served.resolve():
        return
    own = catalog_settings_file(catalog)
    into_own = (
        f"write it into a settings file of its own (--config {own}, created serving it), or "
        if own.resolve() != target.resolve()
        else ""
    )
    raise InputError(
        f"--write would store {what} {catalog} in {target}, which serves the catalog "
        f"{served}: {into_own}set 'catalog: {catalog.resolve()}' in {target} as well (paths "
        "there are relative to the file)"
    )


def start_settings_file(path: Path, catalog: Path) -> None:
    """Create the settings file ``path`` serving ``catalog`` (its absolute path)."""
    wanted = Path(catalog).resolve()

    def check(data: dict[str, Any]) -> str | None:
        stored = data.get("catalog")
        return (
            None if stored and Path(str(stored)) == wanted else f"catalog reads back as {stored!r}"
        )

    _edit_settings(
        path,
        "the catalog",
        lambda text: f"catalog: {json.dumps(str(wanted), ensure_ascii=False)}\n{text}",
        check,
    )


#: What a calibration on one catalog wrote: not carried over to a copy serving another one.
_CATALOG_KEYS = ("threshold", "calibrated_for")


def copy_settings(source: Path, target: Path, catalog: Path) -> None:
    """Create the settings file ``target``: ``source``'s settings (its model, data dir, rule)
    serving ``catalog``, without the threshold and its record, which were calibrated on
    ``source``'s catalog (``calibrate --write`` sets them). Its paths are made absolute and its
    comments are not kept. :class:`ConfigError` when it would not read as ``source`` does."""
    import yaml

    from gatekeeper._rows import load_yaml
    from gatekeeper.settings import load_settings

    try:
        data = dict(load_yaml(source.read_text(encoding="utf-8")) or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"cannot copy settings file {source}: {exc}") from exc
    base = source.resolve().parent
    data.pop("catalog", None)
    _absolute(data, ("data_dir",), base)
    if isinstance(data.get("embedding"), dict):
        data["embedding"] = dict(data["embedding"])
        _absolute(data["embedding"], ("adapter", "cache_dir"), base)
    if isinstance(data.get("gate"), dict):
        data["gate"] = {k: v for k, v in data["gate"].items() if k not in _CATALOG_KEYS}
        if not data["gate"]:
            del data["gate"]
    wanted = catalog.resolve()
    text = (
        f"# The settings of {source} serving {catalog.name}, written by `gatekeeper init`; "
        "calibrate gate.threshold for it (`gatekeeper calibrate --config "
        f"{target} ... --write`).\n"
        + yaml.safe_dump({"catalog": str(wanted), **data}, allow_unicode=True, sort_keys=False)
    )

    def check(written: dict[str, Any]) -> str | None:
        return None if Path(str(written.get("catalog"))) == wanted else "catalog differs"

    _edit_settings(target, "the settings", lambda _: text, check)
    if _apart_from_catalog(load_settings(target)) != _apart_from_catalog(load_settings(source)):
        target.unlink()
        raise ConfigError(f"a copy of {source} serving {catalog} does not read as {source} does")


def _absolute(section: dict[str, Any], keys: tuple[str, ...], base: Path) -> None:
    """The relative paths under ``keys`` of a settings file's ``section``, made absolute."""
    for key in keys:
        if isinstance(value := section.get(key), str) and value:
            path = Path(value).expanduser()
            section[key] = str(path if path.is_absolute() else base / path)


def _apart_from_catalog(settings: Any) -> dict[str, Any]:
    """``settings`` without what belongs to their catalog (the catalog, its threshold)."""
    dumped: dict[str, Any] = settings.model_dump(mode="json", exclude={"catalog"})
    dumped["gate"] = {k: v for k, v in dumped["gate"].items() if k not in _CATALOG_KEYS}
    return dumped


def store_gate_settings(path: Path, values: dict[str, str], note: str) -> None:
    """Set several ``gate.<key>`` lines (YAML values) in the settings file ``path``, keeping its
    other keys and comments; ``note`` goes on the first line."""

    def edit(text: str) -> str:
        for index, (key, value) in enumerate(values.items()):
            text = _with_gate_key(text, key, value, note if index == 0 else None)
        return text

    _edit_settings(path, "the gate settings", edit, lambda data: None)


def store_adapter(path: Path, adapter: Path, note: str | None = None) -> None:
    """Set ``embedding.adapter`` in the YAML settings file ``path`` (created if absent) to the
    absolute path of ``adapter``, keeping its other keys and comments."""
    _store_embedding_path(path, "adapter", adapter, note)


def store_model(path: Path, model: Path, note: str | None = None) -> bool:
    """Set ``embedding.model`` in the YAML settings file ``path`` (created if absent) to the
    absolute path of the model directory ``model``, keeping its other keys and comments, and
    remove ``embedding.adapter``: an adapter is trained on one model's vectors, so the file's
    would be refused for the new model (``index --rebuild`` exited 2). Whether it removed one."""
    had = "adapter" in settings_section(path, "embedding")
    _store_embedding_path(path, "model", model, note, drop="adapter")
    return had


def settings_section(path: Path, name: str) -> dict[str, Any]:
    """The ``name`` mapping (``gate``, ``embedding``, ...) of the settings file ``path`` as the
    file has it (empty when absent or unreadable: an edit then reports the problem)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    section = data.get(name) if isinstance(data, dict) else None
    return section if isinstance(section, dict) else {}


def _store_embedding_path(
    path: Path, key: str, target: Path, note: str | None, drop: str | None = None
) -> None:
    wanted = Path(target).resolve()
    value = json.dumps(str(wanted), ensure_ascii=False)

    def check(data: dict[str, Any]) -> str | None:
        section = data.get("embedding") or {}
        stored = section.get(key)
        if drop is not None and drop in section:
            return f"embedding.{drop} is still there"
        if stored is not None and Path(str(stored)) == wanted:
            return None
        return f"embedding.{key} reads back as {stored!r}"

    def edit(text: str) -> str:
        text = _with_block_key(text, "embedding", key, value, note)
        return _without_block_key(text, "embedding", drop) if drop is not None else text

    _edit_settings(path, f"embedding.{key}", edit, check)


def _edit_settings(
    path: Path,
    what: str,
    edit: Callable[[str], str],
    check: Callable[[dict[str, Any]], str | None],
) -> None:
    """Apply ``edit`` to the settings file's text (an absent file is empty) and write it; then
    read it back (YAML, ``check`` on the parsed mapping, and the settings loader). On any
    problem the file is restored (or removed, if it was new) and :class:`ConfigError` raised.

    A settings file that is a symbolic link to a file is edited where it points (the file the
    gate reads through the link, as an editor would); a link to nothing is refused."""
    import yaml

    from gatekeeper.settings import load_settings

    check_settings_target(path)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else None
        updated = edit(original or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(updated, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot write {what} to {path}: {exc}") from exc
    try:
        data = yaml.safe_load(updated) or {}
        problem = check(data) if isinstance(data, dict) else "the file is not a mapping"
        if problem is None:
            load_settings(path)
    except (yaml.YAMLError, ConfigError, AttributeError, TypeError, ValueError) as exc:
        problem = str(exc)
    if problem is not None:
        if original is None:
            path.unlink()
        else:
            path.write_text(original, encoding="utf-8")
        raise ConfigError(f"could not store {what} in {path}: {problem}")


def check_settings_target(path: Path) -> None:
    """Refuse, with :class:`ConfigError`, a settings file that cannot be written: call before
    a long calibration so the problem shows before the work, not after."""
    problem = why_unwritable(path, want_dir=False)
    if path.is_symlink() and not path.exists():  # writing would create the file it names
        problem = "it is a symbolic link to nothing (link it to a file, or remove the link)"
    if problem:
        raise ConfigError(f"cannot write the threshold to settings file {path}: {problem}")


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


def _without_block_key(text: str, block: str, key: str) -> str:
    """``text`` (a YAML settings file) without ``<block>.<key>``, edited line by line; a block
    in flow style is reloaded and dumped (comments are lost)."""
    lines = text.splitlines()
    start = next((i for i, row in enumerate(lines) if _block_start(block).match(row)), None)
    if start is None:
        if not re.search(rf"^{re.escape(block)}:", text, flags=re.MULTILINE):
            return text
        import yaml

        data = yaml.safe_load(text) or {}
        data.get(block, {}).pop(key, None)
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    key_line = re.compile(rf"^[ \t]+{re.escape(key)}:")
    at = start + 1
    while at < len(lines) and (not lines[at].strip() or lines[at][:1] in " \t#"):
        if key_line.match(lines[at]):
            end = at + 1
            while (
                end < len(lines)
                and lines[end][:1] in " \t"
                and lines[end].strip()
                and (
                    len(lines[end]) - len(lines[end].lstrip())
                    > len(lines[at]) - len(lines[at].lstrip())
                )
            ):
                end += 1  # the key's own continuation lines
            del lines[at:end]
            break
        at += 1
    return "\n".join(lines) + "\n"


def _with_key_dumped(text: str, block: str, key: str, value: str) -> str:
    """Fallback for a block in flow style: reload and dump (comments are lost)."""
    import yaml

    data = yaml.safe_load(text) or {}
    data.setdefault(block, {})[key] = yaml.safe_load(value)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
