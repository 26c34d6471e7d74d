"""The catalog: intents with their exemplars, plus off-topic exemplars and the refusal reply.

Given as YAML (``configs/intents/*.yaml``) or as CSV/JSONL rows of ``text,intent`` where the
intent ``off_topic`` marks an off-topic exemplar. Every problem is a :class:`CatalogError` that
names the file, the intent and the problem.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gatekeeper._rows import Row, read_csv, read_jsonl
from gatekeeper.errors import CatalogError
from gatekeeper.types import OFF_TOPIC

DEFAULT_REFUSAL = "Sorry, I can only help with questions about our products, orders and services."
ExemplarKind = Literal["intent", "off_topic"]


class Intent(BaseModel):
    """A named thing customers ask the business, with example messages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=200)
    description: str = ""
    exemplars: tuple[str, ...] = Field(min_length=1)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    reply: str | None = Field(None, min_length=1)

    @property
    def canned(self) -> bool:
        """An intent with a fixed reply is answered without the LLM."""
        return self.reply is not None

    @field_validator("exemplars")
    @classmethod
    def _clean_exemplars(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _clean_texts(value)


class OffTopic(BaseModel):
    """What the business does not serve: contrast exemplars and the refusal reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reply: str = Field(DEFAULT_REFUSAL, min_length=1)
    exemplars: tuple[str, ...] = ()

    @field_validator("exemplars")
    @classmethod
    def _clean_exemplars(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _clean_texts(value)


@dataclass(frozen=True, slots=True)
class Exemplar:
    """One exemplar as stored in the index; ``id`` is a hash of its content."""

    id: str
    text: str
    intent: str
    kind: ExemplarKind


class Catalog(BaseModel):
    """The set of intents with their exemplars, plus off-topic exemplars and replies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = ""
    intents: tuple[Intent, ...] = Field(min_length=1)
    off_topic: OffTopic = Field(default_factory=OffTopic)

    def intent(self, name: str) -> Intent:
        """The intent called ``name``; KeyError if there is none."""
        for intent in self.intents:
            if intent.name == name:
                return intent
        raise KeyError(name)

    def exemplars(self) -> list[Exemplar]:
        """Every exemplar of the catalog, in-domain and off-topic, with content-hash ids."""
        rows = [
            _exemplar(text, intent.name, "intent")
            for intent in self.intents
            for text in intent.exemplars
        ]
        rows += [_exemplar(text, OFF_TOPIC, "off_topic") for text in self.off_topic.exemplars]
        return rows

    def content_hash(self) -> str:
        """A hash of everything in the catalog that the index or the decision depends on."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _exemplar(text: str, intent: str, kind: ExemplarKind) -> Exemplar:
    digest = hashlib.sha256(f"{kind}\x1f{intent}\x1f{text}".encode()).hexdigest()[:24]
    return Exemplar(id=digest, text=text, intent=intent, kind=kind)


def _clean_texts(texts: Iterable[str]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for text in texts:
        stripped = text.strip()
        if not stripped:
            raise ValueError("an exemplar is empty")
        if stripped not in cleaned:
            cleaned.append(stripped)
    return tuple(cleaned)


def load_catalog(path: Path | str) -> Catalog:
    """Load a catalog from YAML, CSV or JSONL; raise :class:`CatalogError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        raw = _read_yaml(path)
    elif suffix == ".csv":
        raw = _rows_to_raw(read_csv(path, CatalogError, "catalog", _check_catalog_header), path)
    elif suffix in {".jsonl", ".ndjson"}:
        raw = _rows_to_raw(read_jsonl(path, CatalogError, "catalog"), path)
    else:
        raise CatalogError(f"catalog {path}: unknown format {suffix!r} (use .yaml, .csv or .jsonl)")
    return parse_catalog(raw, source=str(path))


def parse_catalog(raw: Any, *, source: str = "<catalog>") -> Catalog:
    """Validate an already-parsed catalog mapping."""
    if not isinstance(raw, dict):
        raise CatalogError(f"catalog {source}: expected a mapping with 'intents', got {_kind(raw)}")
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_describe(exc, raw, source)) from exc
    _check_consistency(catalog, source)
    return catalog


def _check_consistency(catalog: Catalog, source: str) -> None:
    seen_intents: set[str] = set()
    owner: dict[str, str] = {}
    for intent in catalog.intents:
        if intent.name == OFF_TOPIC:
            raise CatalogError(
                f"catalog {source}: intent 'off_topic' is reserved; put off-topic exemplars "
                "in the 'off_topic' block"
            )
        if intent.name in seen_intents:
            raise CatalogError(f"catalog {source}: intent {intent.name!r} is defined twice")
        seen_intents.add(intent.name)
        for text in intent.exemplars:
            _claim(owner, text, intent.name, source)
    for text in catalog.off_topic.exemplars:
        _claim(owner, text, OFF_TOPIC, source)


def _claim(owner: dict[str, str], text: str, intent: str, source: str) -> None:
    key = text.casefold()
    if key in owner and owner[key] != intent:
        raise CatalogError(
            f"catalog {source}: exemplar {text!r} belongs to both {owner[key]!r} and {intent!r}"
        )
    owner[key] = intent


def _describe(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    problems = [_describe_one(err, raw) for err in _root_causes(exc.errors())]
    return f"catalog {source}:\n" + "\n".join(f"  {p}" for p in problems)


def _root_causes(errors: list[Any]) -> list[Any]:
    """``errors`` without the ones a typo'd key causes: the required field the key was meant
    to be ("exemplars: Field required" beside unknown key 'exemplrs'), and the empty
    ``intents`` that follows when no intent validated."""
    meant: set[tuple[Any, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            *parent, key = err["loc"]
            scope = _scope(tuple(parent))
            for hint in difflib.get_close_matches(str(key), _ALLOWED[scope], n=1):
                meant.add((*parent, hint))
    intent_failed = any(
        len(err["loc"]) > 1 and err["loc"][0] == "intents" and isinstance(err["loc"][1], int)
        for err in errors
    )
    return [
        err
        for err in errors
        if not (err["type"] == "missing" and tuple(err["loc"]) in meant)
        and not (err["type"] == "too_short" and tuple(err["loc"]) == ("intents",) and intent_failed)
    ]


def _scope(parent: tuple[Any, ...]) -> str:
    """Which model a location's keys belong to: catalog, intent or off_topic."""
    if len(parent) == 2 and parent[0] == "intents" and isinstance(parent[1], int):
        return "intent"
    if parent == ("off_topic",):
        return "off_topic"
    return "catalog"


_ALLOWED = {
    "catalog": sorted(Catalog.model_fields),
    "intent": sorted(Intent.model_fields),
    "off_topic": sorted(OffTopic.model_fields),
}


def _describe_one(err: Any, raw: dict[str, Any]) -> str:
    loc = list(err["loc"])
    where, scope = "top level", "catalog"
    if loc[:1] == ["intents"] and len(loc) > 1 and isinstance(loc[1], int):
        where, scope = _intent_label(raw, loc[1]), "intent"
        loc = loc[2:]
    elif loc[:1] == ["intents"]:
        loc = loc[1:]
        where = "intents"
    elif loc[:1] == ["off_topic"]:
        where, scope = "off_topic block", "off_topic"
        loc = loc[1:]
    field = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _ALLOWED[scope], n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        allowed = ", ".join(_ALLOWED[scope])
        return f"{where}: unknown key {loc[-1]!r}{suggestion}; allowed: {allowed}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {field + ': ' if field else ''}{message}"


def _intent_label(raw: dict[str, Any], index: int) -> str:
    intents = raw.get("intents")
    if isinstance(intents, list) and index < len(intents) and isinstance(intents[index], dict):
        name = intents[index].get("name")
        if isinstance(name, str):
            return f"intent {name!r}"
    return f"intent #{index + 1}"


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog {path}: cannot read: {exc}") from exc


def _check_catalog_header(header: list[str]) -> str | None:
    missing = {"text", "intent"} - set(header)
    return (
        f"the CSV header needs 'text' and 'intent' columns; missing {sorted(missing)}"
        if missing
        else None
    )


def _rows_to_raw(rows: list[Row], path: Path) -> dict[str, Any]:
    intents: dict[str, list[str]] = {}
    off_topic: list[str] = []
    for number, row in rows:
        text, intent = row.get("text"), row.get("intent")
        if not isinstance(text, str) or not text.strip():
            raise CatalogError(f"catalog {path}, row {number}: 'text' is missing or empty")
        if not isinstance(intent, str) or not intent.strip():
            raise CatalogError(f"catalog {path}, row {number}: 'intent' is missing or empty")
        if intent.strip() == OFF_TOPIC:
            off_topic.append(text)
        else:
            intents.setdefault(intent.strip(), []).append(text)
    if not intents:
        raise CatalogError(f"catalog {path}: no in-domain rows (every intent is off_topic)")
    return {
        "domain": f"intents from {path.name}",
        "intents": [{"name": name, "exemplars": texts} for name, texts in intents.items()],
        "off_topic": {"exemplars": off_topic},
    }
