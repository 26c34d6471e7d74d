"""Scaffold an editable catalog from a business's own examples (``gatekeeper init``).

The owner brings rows of ``text,intent`` (CSV or JSONL, as :func:`~gatekeeper.catalog.read_catalog`
reads them). The scaffold adds what every customer-service gate needs and owners rarely write:

* canned ``greeting`` / ``thanks`` / ``goodbye`` intents with replies and a refusal reply, in
  the catalog's language; no canned intent the owner has by name, and none at all when the owner
  has any intent with a reply (``saludo``, ``Danke``): their small talk is in their words and
  language, and a second greeting would compete with it (a rule on similarity would need a
  model that reads their language: with the default English one, ``thanks`` is nearer
  ``saludo`` than ``Danke``); a missing canned intent only sends such messages to the LLM;
* the bundled generic off-topic set for that language (``gatekeeper/_data/off_topic.<lang>.txt``)
  as the contrast class, **minus the lines too close to the owner's intents**: a generic line is
  left out when it repeats an in-domain exemplar, or when its cosine similarity to the nearest
  in-domain exemplar reaches the cut. A generic line about, say, "the weather tomorrow" would
  otherwise push a weather service's own customers towards the refusal.

The cut is on the embedder's own scale, which differs a lot between models (MiniLM puts
unrelated sentences near 0.1, e5 near 0.75). By default it is therefore read off the owner's
exemplars: :data:`AUTO_CUT_QUANTILE` of the similarities between each in-domain exemplar and its
nearest neighbour *in its own intent* — a generic line as close to an intent as a typical
exemplar of that intent is to its siblings would be served as in-domain. The cut never goes
below :data:`MIN_CUT` (MiniLM-scale models give about 0.6 here). ``cut=`` fixes it instead.

With a sample of real traffic, the scaffold also reports which lines look off-topic: nearer to a
generic off-topic line than to any in-domain exemplar (a comparison, so no scale is involved).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from gatekeeper._rows import read_jsonl, read_text
from gatekeeper.catalog import Catalog, Intent, OffTopic
from gatekeeper.embedding.base import Embedder, Vectors
from gatekeeper.errors import InputError
from gatekeeper.language import (
    CJK_SHARE,
    LANGUAGES,
    Language,
    detect_language,
    not_english_warning,
)
from gatekeeper.legibility import illegible_warning, unreadable_warning
from gatekeeper.types import OFF_TOPIC

#: Quantile of the owner's within-intent nearest-neighbour similarities used as the auto cut.
AUTO_CUT_QUANTILE = 0.25
#: The auto cut never goes below this (a floor for models whose unrelated sentences score low).
MIN_CUT = 0.6
#: How many kept generic lines, the nearest to the owner's exemplars, ``init`` asks to review.
REVIEW_KEPT = 10

#: The canned intents and the refusal, per language: (exemplars, reply).
CANNED: dict[Language, dict[str, tuple[tuple[str, ...], str]]] = {
    "en": {
        "greeting": (
            ("hi", "hello", "hey there", "good morning", "hi, anyone there?", "hello!"),
            "Hello! How can I help you today?",
        ),
        "thanks": (
            ("thanks", "thank you", "thanks a lot", "thank you so much", "cheers, thanks!"),
            "You're welcome! Anything else I can help with?",
        ),
        "goodbye": (
            ("bye", "goodbye", "see you", "that's all, bye", "have a nice day"),
            "Thanks for getting in touch. Goodbye!",
        ),
    },
    "zh": {
        "greeting": (
            ("你好", "您好", "在吗", "哈喽", "有人吗", "早上好"),
            "您好！请问有什么可以帮您？",
        ),
        "thanks": (
            ("谢谢", "谢谢你", "多谢", "非常感谢", "好的谢谢"),
            "不客气！还有其他问题随时找我。",
        ),
        "goodbye": (
            ("再见", "拜拜", "没别的问题了", "好的，再见", "回头见"),
            "感谢您的咨询，再见！",
        ),
    },
}
REFUSAL: dict[Language, str] = {
    "en": "Sorry, I can only help with questions about our business.",
    "zh": "抱歉，我只能回答与本店业务相关的问题。",
}
DOMAIN_PLACEHOLDER: dict[Language, str] = {
    "en": "EDIT ME: one sentence on what your customer service covers",
    "zh": "请修改：用一句话说明您的客服负责哪些问题",
}


@dataclass(frozen=True)
class DroppedLine:
    """A generic off-topic line left out, and why: the in-domain exemplar nearest to it."""

    text: str
    nearest: str
    intent: str
    similarity: float
    reason: Literal["repeats", "too_close"]


@dataclass(frozen=True)
class KeptLine:
    """A generic off-topic line kept, with the owner's exemplar nearest to it."""

    text: str
    nearest: str
    intent: str
    similarity: float


@dataclass(frozen=True)
class TrafficReport:
    """How a sample of real traffic sits against the scaffolded catalog."""

    n_lines: int
    looks_off_topic: tuple[tuple[str, str], ...]  # (traffic line, nearest generic line)


@dataclass(frozen=True)
class Scaffold:
    """What :func:`scaffold_catalog` made: the catalog, and the report of what it left out."""

    catalog: Catalog
    language: Language
    cut: float
    cut_source: str
    owner_intents: tuple[str, ...]
    canned_added: tuple[str, ...]
    generic_total: int
    generic_kept: tuple[str, ...]  # nearest to the owner's exemplars first
    dropped: tuple[DroppedLine, ...]
    owner_off_topic: tuple[str, ...]
    traffic: TrafficReport | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    kept_nearest: tuple[KeptLine, ...] = ()  # generic_kept with their nearest exemplars
    owner_canned: tuple[str, ...] = ()  # the owner's intents with a reply (then none is added)

    def review_kept(self, n: int = REVIEW_KEPT) -> tuple[KeptLine, ...]:
        """The ``n`` kept generic lines nearest to the owner's exemplars: the ones to read
        (a line the business serves, just under the cut, would push its customers towards
        the refusal)."""
        return self.kept_nearest[:n]


def generic_off_topic(language: Language) -> list[str]:
    """The bundled generic off-topic lines for ``language`` (one message per line)."""
    if language not in LANGUAGES:
        raise InputError(f"unknown language {language!r}; use one of: {', '.join(LANGUAGES)}")
    source = resources.files("gatekeeper") / "_data" / f"off_topic.{language}.txt"
    lines = source.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def read_traffic(path: Path) -> list[str]:
    """A traffic sample: JSONL rows with ``text`` (``.jsonl``/``.ndjson``), else one message
    per line; blank lines are skipped."""
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        texts = []
        for number, row in read_jsonl(path, InputError, "traffic sample"):
            text = row.get("text")
            if not isinstance(text, str):
                raise InputError(f"traffic sample {path}, line {number}: no 'text'")
            texts.append(text)
    else:
        texts = read_text(path, InputError, "traffic sample").splitlines()
    return [t.strip() for t in texts if t.strip()]


def _key(text: str) -> str:
    """How repeats are recognised: case, spacing and punctuation do not count."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def auto_cut(vectors: Vectors, owners: list[str]) -> float:
    """The :data:`AUTO_CUT_QUANTILE` of each in-domain exemplar's similarity to its nearest
    sibling in the same intent, floored at :data:`MIN_CUT`."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    labels = np.asarray(owners)
    nearest = [
        float(sims[i, labels == labels[i]].max())
        for i in range(len(owners))
        if (labels == labels[i]).sum() > 1
    ]
    if not nearest:
        return MIN_CUT
    return max(MIN_CUT, float(np.quantile(nearest, AUTO_CUT_QUANTILE)))


def scaffold_catalog(
    examples: Catalog,
    embedder: Embedder,
    *,
    language: Language | None = None,
    domain: str | None = None,
    cut: float | None = None,
    traffic: Sequence[str] = (),
) -> Scaffold:
    """A catalog from the owner's ``examples``: their intents (with any replies, descriptions,
    thresholds and off-topic rows they gave), canned greeting/thanks/goodbye intents (none when
    the owner has an intent with a reply) and a refusal in ``language`` (detected from the
    exemplars when None), and the generic off-topic set minus the lines too close to the
    in-domain exemplars (see the module docstring)."""
    owner_texts = [text for intent in examples.intents for text in intent.exemplars]
    lang: Language = language or detect_language(owner_texts)
    if lang not in LANGUAGES:
        raise InputError(f"unknown language {lang!r}; use one of: {', '.join(LANGUAGES)}")
    taken = {_key(t) for t in owner_texts} | {_key(t) for t in examples.off_topic.exemplars}
    have = {intent.name.casefold() for intent in examples.intents}
    owner_canned = tuple(intent.name for intent in examples.intents if intent.canned)
    intents = list(examples.intents)
    added: list[str] = []
    for name, (exemplars, reply) in CANNED[lang].items():
        if name in have or owner_canned:
            continue
        fresh = tuple(t for t in exemplars if _key(t) not in taken)
        if fresh:
            intents.append(Intent(name=name, exemplars=fresh, reply=reply))
            taken |= {_key(t) for t in fresh}
            added.append(name)
    in_domain = [(t, intent.name) for intent in intents for t in intent.exemplars]
    texts = [t for t, _ in in_domain]
    owner_intents = [n for _, n in in_domain]
    generic = generic_off_topic(lang)
    vectors = embedder.embed(texts)
    own_vectors = vectors[: len(owner_texts)]
    chosen_cut = (
        cut if cut is not None else auto_cut(own_vectors, owner_intents[: len(owner_texts)])
    )
    cut_source = "given" if cut is not None else "auto"
    generic_vectors = embedder.embed(generic)
    sims = generic_vectors @ vectors.T
    best = sims.argmax(axis=1)
    by_key = {_key(t): (t, n) for t, n in in_domain}
    own_off_topic = {_key(t) for t in examples.off_topic.exemplars}
    kept: list[KeptLine] = []
    dropped: list[DroppedLine] = []
    own = sims[:, : len(owner_texts)]  # the owner's exemplars come first
    own_best = own.argmax(axis=1)
    for i, line in enumerate(generic):
        key = _key(line)
        if key in own_off_topic:
            continue  # the owner has it already
        j = int(best[i])
        similarity = float(sims[i, j])
        if key in by_key:
            text, name = by_key[key]
            dropped.append(DroppedLine(line, text, name, similarity, "repeats"))
        elif similarity >= chosen_cut:
            dropped.append(DroppedLine(line, texts[j], owner_intents[j], similarity, "too_close"))
        else:
            j = int(own_best[i])
            kept.append(KeptLine(line, texts[j], owner_intents[j], float(own[i, j])))
    dropped.sort(key=lambda d: (d.reason != "repeats", -d.similarity))
    kept.sort(key=lambda k: -k.similarity)  # stable: equal ones stay in the bundled order
    own_refusal = _owner_refusal(examples)
    off_topic = OffTopic(
        reply=own_refusal or REFUSAL[lang],
        exemplars=(*examples.off_topic.exemplars, *(k.text for k in kept)),
    )
    catalog = Catalog(
        domain=domain or _owner_domain(examples) or DOMAIN_PLACEHOLDER[lang],
        intents=tuple(intents),
        off_topic=off_topic,
    )
    report = None
    if traffic:
        report = _traffic_report(embedder, traffic, vectors, generic, generic_vectors)
    notes = [
        not_english_warning(
            owner_texts, embedder.identity, _additions(lang, added, own_refusal is None, kept)
        ),
        unreadable_warning(texts, vectors),
        illegible_warning(owner_texts, embedder.legible(owner_texts)),
    ]
    return Scaffold(
        catalog=catalog,
        language=lang,
        cut=chosen_cut,
        cut_source=cut_source,
        owner_intents=tuple(i.name for i in examples.intents),
        canned_added=tuple(added),
        generic_total=len(generic),
        generic_kept=tuple(k.text for k in kept),
        dropped=tuple(dropped),
        owner_off_topic=examples.off_topic.exemplars,
        traffic=report,
        notes=tuple(note for note in notes if note),
        kept_nearest=tuple(kept),
        owner_canned=owner_canned,
    )


def _additions(
    lang: Language, canned: Sequence[str], refusal: bool, kept: Sequence[KeptLine]
) -> list[str]:
    """What ``init`` added in ``lang`` (canned intents, the refusal, generic lines), as said."""
    name = {"en": "English", "zh": "Chinese"}[lang]
    return [
        *([f"{name} canned replies ({', '.join(canned)})"] if canned else []),
        *([f"{'an' if lang == 'en' else 'a'} {name} refusal"] if refusal else []),
        *([f"{len(kept)} lines of the {name} generic off-topic set"] if kept else []),
    ]


def _owner_refusal(examples: Catalog) -> str | None:
    """The refusal the owner gave (an ``off_topic`` row's reply), if any."""
    reply = examples.off_topic.reply
    return None if reply == OffTopic().reply else reply


def _owner_domain(examples: Catalog) -> str | None:
    """The owner's domain line; the CSV/JSONL readers' ``intents from FILE`` does not count."""
    return None if examples.domain.startswith("intents from ") else examples.domain or None


def _traffic_report(
    embedder: Embedder,
    traffic: Sequence[str],
    in_domain: Vectors,
    generic: list[str],
    generic_vectors: Vectors,
) -> TrafficReport:
    """Traffic lines nearer to a generic off-topic line than to every in-domain exemplar."""
    vectors = embedder.embed(list(traffic))
    near_in = (vectors @ in_domain.T).max(axis=1)
    to_generic = vectors @ generic_vectors.T
    near_off, which = to_generic.max(axis=1), to_generic.argmax(axis=1)
    order = np.argsort(near_in - near_off)
    hits = tuple((traffic[i], generic[int(which[i])]) for i in order if near_off[i] > near_in[i])
    return TrafficReport(n_lines=len(traffic), looks_off_topic=hits)


# -- the YAML the owner edits ---------------------------------------------------------------


def _q(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


_HEADER: dict[Language, str] = {
    "en": """\
# Catalog scaffolded by `gatekeeper init` from {source}.
# Edit it, then index and calibrate it (commands at the end of `gatekeeper init`'s output).
#
# * domain: one sentence on what your customer service covers (for people; not used to decide).
# * intents: your intents with their exemplars. Add more real customer wording (15-30 per
#   intent is a good start); a message near any exemplar is forwarded to the LLM.
{canned}# * off_topic: the refusal, and example messages your business does not serve (a contrast
#   class). The generic lines were chosen by `gatekeeper init`, the nearest to your exemplars
#   first; delete any your business does serve. The ones left out as too close to your
#   intents are listed in {dropped}.
""",
    "zh": """\
# 由 `gatekeeper init` 根据 {source} 生成的目录（catalog）。
# 请先修改，再建索引并校准阈值（命令见 `gatekeeper init` 的输出末尾）。
#
# * domain：用一句话说明您的客服负责哪些问题（给人看的，不参与判断）。
# * intents：您的意图（intent）和示例（exemplars）。请多补充顾客的真实说法（每个意图 15-30 条
#   为宜）；与任一示例相近的消息会转给大模型（LLM）。
{canned}# * off_topic：拒答语（reply）和本店不处理的示例消息（对照类）。通用示例由 `gatekeeper init`
#   挑选，与您的示例最接近的排在前面；如有本店其实处理的，请删掉。因与您的意图太接近而被去掉的，
#   列在 {dropped}。
""",
}
#: The header's line on canned intents: init's, or (when the owner has some) the owner's.
_CANNED_NOTE: dict[Language, dict[str, str]] = {
    "en": {
        "added": """\
# * greeting / thanks / goodbye have a `reply`: such messages are answered with it, without
#   the LLM. Edit the replies, or delete an intent to send those messages to the LLM instead.
""",
        "owner": """\
# * Your intents with a `reply` ({names}) are answered with it, without the LLM. As you have
#   your own, `gatekeeper init` added no greeting / thanks / goodbye; add any you miss as an
#   intent with a `reply`, or leave such messages to the LLM.
""",
    },
    "zh": {
        "added": """\
# * greeting / thanks / goodbye 带有 `reply`：这类消息直接用它回复，不调用大模型。
#   可以修改回复；删掉某个意图，这类消息就会转给大模型。
""",
        "owner": """\
# * 您带有 `reply` 的意图（{names}）直接用它回复，不调用大模型。因为您已有自己的固定回复，
#   `gatekeeper init` 没有添加 greeting / thanks / goodbye；如需要，请自行添加带 `reply` 的意图，
#   否则这类消息会转给大模型。
""",
    },
}
_COMMENTS: dict[Language, dict[str, str]] = {
    "en": {
        "domain": "# EDIT: what your customer service covers",
        "owner": "# Your intents (from {source}).",
        "canned": "# Canned intents: answered with `reply`, without the LLM. Edit the replies.",
        "refusal": "# The refusal: what an off-topic message gets. Edit it.",
        "own_off": "# Your own off-topic examples (from {source}).",
        "generic": "# Generic off-topic messages ({kept} of {total} bundled ones; {dropped} "
        "left out as too close to your intents),\n# ordered by similarity to your exemplars, "
        "nearest first: read the first ones and delete any your\n# business serves (each "
        "would push such customers towards the refusal).",
    },
    "zh": {
        "domain": "# 请修改：您的客服范围",
        "owner": "# 您的意图（来自 {source}）。",
        "canned": "# 固定回复的意图：直接用 `reply` 回答，不调用大模型。请按需修改回复。",
        "refusal": "# 拒答语：无关消息收到的回复。请按需修改。",
        "own_off": "# 您自己的无关示例（来自 {source}）。",
        "generic": "# 通用无关消息（内置 {total} 条中保留 {kept} 条；{dropped} 条因与您的意图"
        "太接近而去掉），\n# 按与您的示例的相似度从高到低排列：请细看前面几条，如有本店处理的，"
        "请删掉（否则这类顾客会被拒答）。",
    },
}


def render_yaml(scaffold: Scaffold, *, source: str, dropped_file: str) -> str:
    """The scaffolded catalog as commented YAML for the owner to edit."""
    lang = scaffold.language
    say = _COMMENTS[lang]
    catalog = scaffold.catalog
    owner = ", ".join(scaffold.owner_canned)
    note = _CANNED_NOTE[lang]["owner" if owner else "added"].format(names=owner)
    out = [_HEADER[lang].format(source=source, dropped=dropped_file, canned=note)]
    out.append(say["domain"])
    out.append(f"domain: {_q(catalog.domain)}")
    out.append("intents:")
    canned = set(scaffold.canned_added)
    out.append("  " + say["owner"].format(source=source))
    shown_canned = False
    for intent in catalog.intents:
        if intent.name in canned and not shown_canned:
            out.append("  " + say["canned"])
            shown_canned = True
        out.append(f"  - name: {_q(intent.name)}")
        if intent.description:
            out.append(f"    description: {_q(intent.description)}")
        if intent.threshold is not None:
            out.append(f"    threshold: {intent.threshold}")
        if intent.reply is not None:
            out.append(f"    reply: {_q(intent.reply)}")
        out.append("    exemplars:")
        out += [f"      - {_q(text)}" for text in intent.exemplars]
    out.append("off_topic:")
    out.append("  " + say["refusal"])
    out.append(f"  reply: {_q(catalog.off_topic.reply)}")
    out.append("  exemplars:")
    if scaffold.owner_off_topic:
        out.append("    " + say["own_off"].format(source=source))
        out += [f"    - {_q(text)}" for text in scaffold.owner_off_topic]
    generic = say["generic"].format(
        kept=len(scaffold.generic_kept),
        total=scaffold.generic_total,
        dropped=sum(d.reason == "too_close" for d in scaffold.dropped),
    )
    out += ["    " + line for line in generic.splitlines()]
    review = {k.text: k for k in scaffold.review_kept()}
    for text in scaffold.generic_kept:
        near = review.get(text)
        note = f"  # {near.similarity:.3f} ~ {near.intent}: {_q(near.nearest)}" if near else ""
        out.append(f"    - {_q(text)}{note}")
    return "\n".join(out) + "\n"


def render_dropped(scaffold: Scaffold) -> str:
    """The report of the generic lines left out, one per line, with the nearest exemplar."""
    lines = [
        f"# Generic off-topic lines left out of the catalog by `gatekeeper init` "
        f"({len(scaffold.dropped)} of {scaffold.generic_total}; cut {scaffold.cut:.3f}, "
        f"{scaffold.cut_source}).",
        "# A line is left out when it repeats an in-domain exemplar, or when its cosine "
        "similarity to the nearest one reaches the cut.",
        "# similarity<TAB>reason<TAB>generic line<TAB>nearest intent<TAB>nearest exemplar",
    ]
    lines += [
        f"{d.similarity:.3f}\t{d.reason}\t{d.text}\t{d.intent}\t{d.nearest}"
        for d in scaffold.dropped
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "AUTO_CUT_QUANTILE",
    "CANNED",
    "CJK_SHARE",
    "LANGUAGES",
    "MIN_CUT",
    "OFF_TOPIC",
    "REFUSAL",
    "REVIEW_KEPT",
    "DroppedLine",
    "KeptLine",
    "Language",
    "Scaffold",
    "TrafficReport",
    "auto_cut",
    "detect_language",
    "generic_off_topic",
    "read_traffic",
    "render_dropped",
    "render_yaml",
    "scaffold_catalog",
]
