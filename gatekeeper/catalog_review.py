"""Catalog review: mistakes in intent names and exemplars that a catalog would otherwise serve.

A catalog's intents are whatever names its rows carry, so a typo is a new intent: ``repiar_status``
with one exemplar beside ``repair_status``, ``Rental_Prices`` beside ``rental_prices``. Such an
intent still forwards its messages to the LLM, but it splits an intent's exemplars, a threshold
or reply set for one spelling misses the other, and reports count two intents. This module finds
them, on plain data (names and exemplars as written), for :mod:`gatekeeper.catalog`:

Errors (:func:`consistency_problems`), where no reading of the file is right:

* the reserved ``off_topic`` name, or a misspelt one (``off-topic``, ``OOS``), used as an intent;
* an intent defined twice;
* two intent names that differ only in case, spaces, underscores or hyphens (``Rental_Prices``
  and ``rental prices``): merging them would have to guess which spelling the owner shows in
  logs and reports, so the owner writes one;
* one exemplar (case aside) in two intents, or in an intent and the off-topic block.

Warnings (:func:`review_warnings`), where the file may be right:

* intent names within a small edit distance of another (``difflib`` ratio at least
  :data:`NEAR_NAME_RATIO`, lengths within :data:`NEAR_NAME_LENGTH`): ``repiar_status`` and
  ``repair_status`` (0.92). The bar sits above what real catalogs have (the shop's
  ``change_order``/``cancel_order``, 0.83; banking77's closest pair, 0.81), or two
  neighbouring letters swapped (``refund``/``refnud``, which difflib rates 0.67);
* an intent with a single exemplar: a typo'd name, or too few to serve (15-30 is a good start);
* an exemplar that differs from one of another intent only in punctuation and spacing
  (``How much is a DAY rental?`` and ``how much is a day rental``): only a warning, because
  a real catalog has such pairs on purpose (banking77: "has my top up gone through?" in
  ``pending_top_up``, "has my top-up gone through?" in ``top_up_reverted``);
* an exemplar listed twice in one intent (kept once).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from gatekeeper._rows import shown
from gatekeeper.types import OFF_TOPIC, nfc

#: An intent's name and its exemplars, as written (stripped, before repeats are dropped).
IntentTexts = tuple[str, Sequence[str]]
#: Two names at least this similar (``difflib.SequenceMatcher.ratio``) may be one typo'd.
NEAR_NAME_RATIO = 0.85
#: ... when their lengths differ by at most this much.
NEAR_NAME_LENGTH = 2
#: How many items one warning lists.
LISTED = 10
#: Spellings of the off-topic marker that are mistakes, not intents (compared on letters only).
_OFF_TOPIC_LOOKALIKES = frozenset({"offtopic", "oos", "outofscope"})


def looks_like_off_topic(name: str) -> bool:
    """True for a misspelt off-topic marker (``off-topic``, ``Off_Topic``, ``OOS``...)."""
    return name != OFF_TOPIC and re.sub(r"[^a-z]", "", name.casefold()) in _OFF_TOPIC_LOOKALIKES


def lookalike(name: str, fix: str) -> str:
    """The problem of an intent named like the off-topic marker, with ``fix``."""
    return (
        f"intent {shown(name)} looks like the off-topic marker: did you mean 'off_topic'? "
        f"(as written it would be served as an in-domain intent; {fix})"
    )


def name_key(name: str) -> str:
    """How intent names are compared: case, spaces, underscores, hyphens and the Unicode normal
    form do not count."""
    return re.sub(r"[\s_\-]+", "", nfc(name).casefold())


def text_key(text: str) -> str:
    """How near-repeats of an exemplar are recognised: only letters and digits count (the
    text itself, case aside, when it has none, e.g. an emoji), in NFC."""
    folded = nfc(text).casefold()
    return "".join(ch for ch in folded if ch.isalnum()) or folded


def exemplar_key(text: str) -> str:
    """How texts are compared for one exemplar in two intents (or one message labelled both
    ways): case, surrounding white space and the Unicode normal form (NFC or NFD) do not count."""
    return nfc(text.strip()).casefold()


def consistency_problems(intents: Sequence[IntentTexts], off_topic: Sequence[str]) -> list[str]:
    """Errors between intents (see the module docstring), one line each."""
    problems: list[str] = []
    names: set[str] = set()
    spelt: dict[str, str] = {}  # name key -> the name first written so
    owner: dict[str, str] = {}  # exemplar, case aside -> its intent
    for name, exemplars in intents:
        if name == OFF_TOPIC:
            problems.append(
                "intent 'off_topic' is reserved; put off-topic exemplars in the 'off_topic' block"
            )
            continue
        if looks_like_off_topic(name):
            problems.append(lookalike(name, "put off-topic exemplars in the 'off_topic' block"))
            continue
        if name in names:
            problems.append(f"intent {shown(name)} is defined twice")
            continue
        names.add(name)
        first = spelt.setdefault(name_key(name), name)
        if first != name:
            problems.append(
                f"intents {shown(first)} and {shown(name)} differ only in case, spaces or "
                "underscores: "
                "write one name (as written they are two intents, each with part of the "
                "exemplars)"
            )
            continue
        for text in exemplars:
            _claim(owner, text, name, problems)
    for text in off_topic:
        _claim(owner, text, OFF_TOPIC, problems)
    return problems


def _claim(owner: dict[str, str], text: str, intent: str, problems: list[str]) -> None:
    key = exemplar_key(text)
    if key in owner and owner[key] != intent:
        problems.append(
            f"exemplar {shown(text)} belongs to both {shown(owner[key])} and {shown(intent)}"
        )
        return
    owner[key] = intent


def review_warnings(intents: Sequence[IntentTexts], off_topic: Sequence[str] = ()) -> list[str]:
    """Warnings about a catalog that loads (see the module docstring), one line each."""
    warnings: list[str] = []
    sizes = {name: len(dict.fromkeys(exemplars)) for name, exemplars in intents}
    near = near_names(list(sizes))
    if near:
        pairs = [f"{shown(a)} ({_n(sizes[a])}) ~ {shown(b)} ({_n(sizes[b])})" for a, b in near]
        warnings.append(
            "intent names this close may be one intent typo'd (as written they are served as "
            f"separate intents): {_listed(pairs)}"
        )
    single = [name for name, size in sizes.items() if size == 1]
    if single:
        warnings.append(
            f"{_count(single, 'intent has', 'intents have')} a single exemplar "
            f"({_listed([repr(n) for n in single])}): a typo'd intent name, or too few to "
            "serve (15-30 per intent is a good start)"
        )
    close = _near_repeats([*intents, (OFF_TOPIC, off_topic)])
    if close:
        warnings.append(
            f"{_count(close, 'exemplar repeats', 'exemplars repeat')} one of another intent "
            "but for case, punctuation or spacing (which intent is meant?): "
            f"{_listed(close)}"
        )
    twice = [
        f"{shown(text)} in {shown(name)}"
        for name, exemplars in intents
        for text in dict.fromkeys(exemplars)
        if exemplars.count(text) > 1
    ]
    if twice:
        warnings.append(
            f"{_count(twice, 'exemplar is', 'exemplars are')} listed twice in one intent "
            f"(kept once): {_listed(twice)}"
        )
    return warnings


def near_names(names: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of distinct intent names close enough to be one typo'd (see the module
    docstring), the smaller intent's name not necessarily first."""
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if abs(len(a) - len(b)) > NEAR_NAME_LENGTH or name_key(a) == name_key(b):
                continue
            ratio = difflib.SequenceMatcher(None, a.casefold(), b.casefold()).ratio()
            if ratio >= NEAR_NAME_RATIO or _swapped(a.casefold(), b.casefold()):
                pairs.append((a, b))
    return pairs


def _swapped(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with two neighbouring characters swapped (``refund``/``refnud``:
    difflib counts a swap as two edits, so a short name's ratio stays low)."""
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    return (
        len(a) == len(b)
        and len(diff) == 2
        and diff[1] == diff[0] + 1
        and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])
    )


def _near_repeats(intents: Sequence[IntentTexts]) -> list[str]:
    """Exemplars of two intents that are equal on :func:`text_key` but not case aside (those
    are errors, see :func:`consistency_problems`)."""
    first: dict[str, tuple[str, str]] = {}
    found = []
    for name, exemplars in intents:
        for text in exemplars:
            key = text_key(text)
            other = first.setdefault(key, (name, text))
            if other[0] != name and other[1].casefold() != text.casefold():
                found.append(f"{shown(text)} ({name}) ~ {shown(other[1])} ({other[0]})")
    return found


def _n(size: int) -> str:
    return "1 exemplar" if size == 1 else f"{size} exemplars"


def _count(items: Sequence[object], one: str, many: str) -> str:
    return f"1 {one}" if len(items) == 1 else f"{len(items)} {many}"


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return "; ".join(items[:LISTED]) + more
