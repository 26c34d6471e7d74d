"""The catalog: intents with their exemplars, plus off-topic exemplars and the refusal reply.

Given as YAML (``configs/intents/*.yaml``) or as CSV/JSONL rows of ``text,intent`` where the
intent ``off_topic`` marks an off-topic exemplar; optional ``reply``, ``description`` and
``threshold`` columns carry what the YAML form says per intent (and an ``off_topic`` row's
``reply`` is the refusal). Intent names are any non-empty text, kept as written but for
surrounding white space and the Unicode normal form: names and exemplars are taken in NFC
(:func:`~gatekeeper.types.nfc`), so a name or exemplar pasted decomposed (from macOS, a web
form) is the one typed composed.

Every problem of a file is reported at once, in one :class:`CatalogError` that names the file
and, for each problem, the row or intent. What is not worth stopping for (empty rows, rows
repeated verbatim, unknown columns beside a row's text, likely typos found by
:mod:`gatekeeper.catalog_review`) comes back as warnings (:func:`read_catalog`).
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

from gatekeeper._rows import (
    listed,
    load_yaml,
    read_csv,
    read_jsonl,
    read_text,
    shown,
    yaml_problem,
)
from gatekeeper._validation import plain_type_error
from gatekeeper.catalog_review import (
    IntentTexts,
    consistency_problems,
    review_warnings,
)
from gatekeeper.catalog_rows import check_catalog_header, rows_to_raw, use_a_dot
from gatekeeper.errors import CatalogError, ConfigError
from gatekeeper.paths import why_not_a_file
from gatekeeper.types import OFF_TOPIC, blank, nfc

DEFAULT_REFUSAL = (
    "Sorry, I can't help with that here: I can only answer questions about our services."
)
ExemplarKind = Literal["intent", "off_topic"]


class Intent(BaseModel):
    """A named thing customers ask the business, with example messages."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(max_length=200)
    description: str = ""
    exemplars: tuple[str, ...] = Field(min_length=1)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    reply: str | None = Field(None, min_length=1)

    @property
    def canned(self) -> bool:
        """An intent with a fixed reply is answered without the LLM."""
        return self.reply is not None

    @field_validator("name")
    @classmethod
    def _clean_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the intent name is empty")
        return nfc(value.strip())

    @field_validator("exemplars")
    @classmethod
    def _clean_exemplars(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _clean_texts(value)


class OffTopic(BaseModel):
    """What the business does not serve: contrast exemplars and the refusal reply."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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


def check_intent_names(
    names: Iterable[str], catalog: Catalog, setting: str = "gate.intent_thresholds"
) -> None:
    """Raise :class:`ConfigError` when ``setting`` names an intent ``catalog`` lacks."""
    known = [intent.name for intent in catalog.intents]
    problems = []
    for name in names:
        if name in known:
            continue
        hint = difflib.get_close_matches(name, known, n=1)
        problems.append(
            f"{setting} names intent {shown(name)}, which the catalog does not have"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    if problems:
        raise ConfigError(
            "; ".join(problems) + f". The catalog's intents: {', '.join(map(repr, known))}"
        )


def _exemplar(text: str, intent: str, kind: ExemplarKind) -> Exemplar:
    digest = hashlib.sha256(f"{kind}\x1f{intent}\x1f{text}".encode()).hexdigest()[:24]
    return Exemplar(id=digest, text=text, intent=intent, kind=kind)


def _clean_texts(texts: Iterable[str]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for text in texts:
        stripped = nfc(text.strip())
        if blank(stripped):
            raise ValueError("an exemplar is empty (or only invisible characters)")
        if stripped not in cleaned:
            cleaned.append(stripped)
    return tuple(cleaned)


@dataclass(frozen=True)
class LoadedCatalog:
    """A catalog as read from a file, with what was noticed but not worth stopping for."""

    catalog: Catalog
    warnings: tuple[str, ...] = ()


def read_catalog(path: Path | str) -> LoadedCatalog:
    """Load a catalog from YAML, CSV or JSONL, with its warnings (empty rows skipped, repeated
    rows kept once, unknown columns beside a row's text ignored, and what
    :mod:`gatekeeper.catalog_review` finds: likely typos of intent names, near-repeated
    exemplars); raise :class:`CatalogError` listing every problem of the file."""
    path = Path(path)
    if problem := why_not_a_file(path):
        raise CatalogError(f"catalog {path} {problem}")
    suffix = path.suffix.lower()
    problems: list[str] = []
    warnings: list[str] = []
    if suffix in {".yaml", ".yml"}:
        raw = _read_yaml(path)
    elif suffix == ".csv":
        bad: list[str] = []
        delimiters: list[str] = []
        rows = read_csv(
            path,
            CatalogError,
            "catalog",
            check_catalog_header,
            lambda n, p: bad.append(f"row {n} {p}"),
            delimiters.append,
        )
        raw, problems, warnings = rows_to_raw(rows, path, decimal_comma=delimiters != [","])
        problems = bad + problems
    elif suffix in {".jsonl", ".ndjson"}:
        raw, problems, warnings = rows_to_raw(read_jsonl(path, CatalogError, "catalog"), path)
    else:
        raise CatalogError(f"catalog {path}: unknown format {suffix!r} (use .yaml, .csv or .jsonl)")
    catalog = _validated(raw, str(path), problems)
    warnings += review_warnings(_as_written(raw, catalog), catalog.off_topic.exemplars)
    return LoadedCatalog(catalog, tuple(warnings))


def load_catalog(path: Path | str) -> Catalog:
    """Load a catalog from YAML, CSV or JSONL; raise :class:`CatalogError` on any problem.
    Warnings (see :func:`read_catalog`) are logged, each with its readable line as the ``hint``
    (a command a person runs prints that line, as ``gatekeeper index`` does, not a log line)."""
    loaded = read_catalog(path)
    if loaded.warnings:
        from gatekeeper.logging import get_logger

        log = get_logger()
        for warning in loaded.warnings:
            hint = f"catalog {path}: {warning}"
            log.warning("catalog.warning", catalog=str(path), warning=warning, hint=hint)
    return loaded.catalog


def parse_catalog(raw: Any, *, source: str = "<catalog>") -> Catalog:
    """Validate an already-parsed catalog mapping."""
    return _validated(raw, source, [])


def _validated(raw: Any, source: str, problems: list[str]) -> Catalog:
    """``raw`` as a Catalog; every problem (``problems`` found so far, then the model's and the
    cross-intent ones) in one :class:`CatalogError`."""
    if not isinstance(raw, dict):
        raise CatalogError(f"catalog {source}: expected a mapping with 'intents', got {_kind(raw)}")
    catalog: Catalog | None = None
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = problems + [_describe_one(e, raw) for e in _root_causes(exc.errors())]
    problems = problems + _consistency_problems(raw)
    if problems or catalog is None:
        raise CatalogError(f"catalog {source}:\n" + listed(problems))
    return catalog


def _named_intents(raw: dict[str, Any]) -> list[IntentTexts]:
    """Each intent of ``raw`` that has a name, with its exemplars: as validated, or, for an
    intent with a problem of its own (an empty exemplar, a misspelt key), its usable ones. The
    problems between intents (one defined twice) are then found in the same round as the
    intents' own problems, not only once those are fixed."""
    intents = raw.get("intents")
    named: list[IntentTexts] = []
    for item in intents if isinstance(intents, list) else []:
        try:
            intent = Intent.model_validate(item)
        except ValidationError:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name.strip():
                named.append((nfc(name.strip()), _usable_texts(item.get("exemplars"))))
            continue
        named.append((intent.name, intent.exemplars))
    return named


def _usable_texts(texts: Any) -> tuple[str, ...]:
    """The texts of an exemplar list that would validate: non-blank strings, stripped, in NFC."""
    if not isinstance(texts, list | tuple):
        return ()
    usable = (nfc(t.strip()) for t in texts if isinstance(t, str))
    return tuple(dict.fromkeys(t for t in usable if not blank(t)))


def _consistency_problems(raw: dict[str, Any]) -> list[str]:
    """Problems between intents (:func:`gatekeeper.catalog_review.consistency_problems`)."""
    try:
        off_topic = OffTopic.model_validate(raw.get("off_topic") or {}).exemplars
    except ValidationError:
        block = raw.get("off_topic")
        off_topic = _usable_texts(block.get("exemplars") if isinstance(block, dict) else None)
    return consistency_problems(_named_intents(raw), off_topic)


def _as_written(raw: dict[str, Any], catalog: Catalog) -> list[IntentTexts]:
    """The (valid) catalog's intents with their exemplars as written: stripped and in NFC (as
    the catalog holds them), repeats kept."""
    listed = [item.get("exemplars") for item in raw["intents"]]
    return [
        (i.name, [nfc(t.strip()) for t in ts])
        for i, ts in zip(catalog.intents, listed, strict=True)
    ]


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
    if scope == "intent" and loc == ["exemplars"] and err["type"] in {"too_short", "missing"}:
        return f"{where} has no exemplars"
    if scope == "catalog" and where == "intents" and err["type"] == "too_short":
        return "intents: the catalog has no intents (no in-domain exemplars)"
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _ALLOWED[scope], n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        allowed = ", ".join(_ALLOWED[scope])
        return f"{where}: unknown key {shown(loc[-1])}{suggestion}; allowed: {allowed}"
    if scope == "intent" and loc == ["exemplars"] and err.get("input") is None:
        return f"{where} has no exemplars"
    message = plain_type_error(err) or str(err["msg"]).removeprefix("Value error, ")
    if loc == ["threshold"]:
        message += use_a_dot(err.get("input"))
    return f"{where}: {field + ': ' if field else ''}{message}"


def _intent_label(raw: dict[str, Any], index: int) -> str:
    intents = raw.get("intents")
    if isinstance(intents, list) and index < len(intents) and isinstance(intents[index], dict):
        name = intents[index].get("name")
        if isinstance(name, str):
            return f"intent {shown(name)}"
    return f"intent #{index + 1}"


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _read_yaml(path: Path) -> Any:
    text = read_text(path, CatalogError, "catalog")
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path}{yaml_problem(exc)}") from exc
