"""Which language a catalog's exemplars are in, as far as ``gatekeeper init`` needs to know.

``init`` supports two languages for what it adds (canned replies, the refusal, the generic
off-topic set): ``en`` and ``zh``. Chinese is told by its script (:func:`detect_language`).
Anything else written in Latin script would silently get the English scaffolding, and the
default model, all-MiniLM-L6-v2, is English-only: it reads German or Spanish word pieces
without failing, so the model-agnostic twin check of :mod:`gatekeeper.legibility` does not
notice. :func:`not_english_warning` says so instead (the model advice only when the run's model
is English-only), and :func:`catalog_language_warning` says it again at ``index`` and ``serve``.

The heuristic is simple and needs no model or dependency. Exemplars that are not Chinese look
English when at least :data:`ENGLISH_SHARE` of them hold one of :data:`ENGLISH_WORDS` (common
English function words that are not also common words of German, Dutch, the Romance or the
Scandinavian languages: no ``in``, ``an``, ``is``, ``a``, ``me``, ``no``, ``do``, ``to``, ``for``,
``was``, ``will``) and at most :data:`NON_ASCII_SHARE` of their letters are non-ASCII. Measured:
the English shop catalog 0.82 of exemplars with such a word, banking77 0.97, the bundled English
off-topic set 0.82, a bike shop's 35 examples 0.89 (all with < 0.3% non-ASCII letters); 15
German, 7 Spanish and 7 French bike-shop questions 0.0, 5 Dutch 0.0. A language-detection
package was not worth a dependency for one warning: this needs none, and no model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gatekeeper.catalog import Catalog

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
#: Share of CJK characters among letters from which examples are taken to be Chinese.
CJK_SHARE = 0.3
#: Below this share of exemplars with a common English word, examples do not look English.
ENGLISH_SHARE = 0.5
#: Above this share of non-ASCII letters, examples do not look English.
NON_ASCII_SHARE = 0.1
#: Common English function words that other Latin-script languages rarely use as words.
ENGLISH_WORDS = frozenset(
    (
        "the",
        "my",
        "you",
        "your",
        "are",
        "can",
        "could",
        "would",
        "should",
        "how",
        "what",
        "when",
        "where",
        "why",
        "which",
        "who",
        "does",
        "did",
        "i'm",
        "i've",
        "it",
        "it's",
        "its",
        "of",
        "and",
        "with",
        "this",
        "that",
        "there",
        "have",
        "has",
        "from",
        "please",
        "not",
        "be",
        "we",
        "our",
        "any",
        "get",
        "need",
        "want",
        "much",
        "many",
        "if",
        "yet",
    )
)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def detect_language(texts: Sequence[str]) -> Language:
    """``zh`` when at least :data:`CJK_SHARE` of the letters in ``texts`` are CJK, else ``en``."""
    letters = sum(len(_LETTER.findall(t)) for t in texts)
    cjk = sum(len(_CJK.findall(t)) for t in texts)
    return "zh" if letters and cjk / letters >= CJK_SHARE else "en"


def english_share(texts: Sequence[str]) -> float:
    """The share of ``texts`` that hold at least one of :data:`ENGLISH_WORDS`. Empty texts
    (a chat turn of attachments only: a photo) are no text in any language and are left out."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        return 1.0
    hits = sum(
        any(w.casefold().replace("’", "'") in ENGLISH_WORDS for w in _WORD.findall(t))
        for t in texts
    )
    return hits / len(texts)


def non_ascii_share(texts: Sequence[str]) -> float:
    """The share of non-ASCII letters among the letters of ``texts``."""
    letters = [ch for t in texts for ch in _LETTER.findall(t)]
    return sum(not ch.isascii() for ch in letters) / len(letters) if letters else 0.0


def not_english_warning(texts: Sequence[str], model: str, added: Sequence[str]) -> str | None:
    """A warning when ``texts`` (the owner's exemplars) are neither Chinese nor look English
    (see the module docstring), saying what to do; None otherwise, or when there is nothing to
    say. ``added``: what ``init`` added in English ("English canned replies (greeting)", ...),
    to translate or delete. ``model``: the embedder identity the run used; the advice to switch
    to a multilingual model is given only when it reads English only (:func:`english_only`)."""
    if not texts or detect_language(texts) == "zh":
        return None
    share, accents = english_share(texts), non_ascii_share(texts)
    if share >= ENGLISH_SHARE and accents <= NON_ASCII_SHARE:
        return None
    advice = []
    if added:
        advice.append(
            f"`gatekeeper init` supports {' and '.join(LANGUAGES)} only, and the catalog got "
            f"{_listed(added)} (translate or delete them)."
        )
    if english_only(model):
        advice.append(
            f"This run's model, {model}, is English-only (the default, all-MiniLM-L6-v2): serve "
            "such a catalog with a multilingual model, e.g. multilingual-e5 or bge-m3 behind an "
            "OpenAI-compatible embeddings endpoint (README: '中文 / Chinese shop, end to end', "
            "steps 1-4, and 'Examples in another language'), then run `gatekeeper init` again "
            "with it."
        )
    if not advice:
        return None
    return (
        f"your examples do not look English (only {share:.0%} of them hold a common English "
        f"word; {accents:.0%} of their letters are not ASCII): " + " ".join(advice)
    )


def _listed(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


#: Models (by a part of their identity) that read English only: the packaged default.
ENGLISH_ONLY_MODELS = ("all-minilm-l6-v2",)


def english_only(model: str) -> bool:
    """Whether the embedder identity ``model`` names an English-only model."""
    name = model.casefold()
    return "multilingual" not in name and any(m in name for m in ENGLISH_ONLY_MODELS)


def model_language_warning(texts: Sequence[str], model: str, what: str) -> str | None:
    """A warning when ``texts`` (``what``: "the calibration messages", ...) are Chinese or do
    not look English while ``model`` reads English only: its scores on them are noise, and a
    threshold chosen on them means nothing; None otherwise."""
    if not texts or not english_only(model):
        return None
    if detect_language(texts) == "zh":
        seen = "are Chinese"
    elif english_share(texts) < ENGLISH_SHARE or non_ascii_share(texts) > NON_ASCII_SHARE:
        seen = "do not look English"
    else:
        return None
    return (
        f"{what} {seen}, but the model {model} reads English only: its similarities on them "
        "are close to noise. Use a multilingual model (README: '中文 / Chinese shop, end to "
        "end', and 'Examples in another language') and index and calibrate with it"
    )


def catalog_language_warning(catalog: Catalog, model: str) -> str | None:
    """:func:`model_language_warning` on the in-domain exemplars of ``catalog`` (its off-topic
    block is left out: ``init`` fills it with the bundled English or Chinese set, whatever the
    owner's language), for ``index`` and ``serve``: a Spanish and German catalog under the
    English-only default model blocked 8.7% of off-topic messages, and neither said a word."""
    texts = [text for intent in catalog.intents for text in intent.exemplars]
    return model_language_warning(texts, model, "the catalog's exemplars")
