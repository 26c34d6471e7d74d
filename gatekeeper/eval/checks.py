"""An eval's data checked against the gate it measures, before any number is computed.

Each check catches a way a run would print confident numbers that mean something else:

* **intents the catalog lacks** (:func:`mark_unsupported`): a test row's intent that is not one
  of the catalog's is an on-topic question the gate has no exemplars for. It is counted as
  *unsupported* (as if written ``unsupported:<name>``), not as a supported question the gate
  failed, and a warning names them (with the catalog's nearest name, for a typo);
* **leakage** (:func:`leakage_warnings`): test rows that are catalog exemplars, or that the
  threshold was calibrated on, measure the gate on what it was fitted to;
* **a language the model does not read** (:func:`language_warnings`): Chinese or other
  non-English messages under the English-only default model score close to noise;
* **a threshold from another catalog** (:func:`check_threshold_fits`): ``eval --catalog X`` with
  the settings file's threshold, calibrated on its own catalog, would report numbers at a
  threshold nobody chose for X.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gatekeeper.calibration import check_catalog_fits
from gatekeeper.catalog_review import text_key
from gatekeeper.eval.dataset_rows import UNSUPPORTED_PREFIX
from gatekeeper.eval.datasets import Dataset, Example
from gatekeeper.eval.formatting import pct
from gatekeeper.language import model_language_warning

if TYPE_CHECKING:
    from gatekeeper.catalog import Catalog
    from gatekeeper.gate_settings import GateSettings

#: Names a warning lists before counting the rest.
LISTED = 8


def mark_unsupported(dataset: Dataset, catalog: Catalog) -> Dataset:
    """``dataset`` with each in-domain row whose intent the catalog lacks marked unsupported,
    and a warning naming those intents (a did-you-mean for a near name)."""
    known = {intent.name for intent in catalog.intents}
    lacking: dict[str, int] = {}
    examples: list[Example] = []
    for example in dataset.examples:
        intent = example.intent
        if example.in_domain and intent and not example.unsupported and intent not in known:
            lacking[intent] = lacking.get(intent, 0) + 1
            example = replace(example, intent=UNSUPPORTED_PREFIX + intent)
        examples.append(example)
    if not lacking:
        return dataset
    return replace(
        dataset,
        examples=tuple(examples),
        warnings=(*dataset.warnings, _lacking_warning(lacking, known)),
    )


def _lacking_warning(lacking: dict[str, int], known: set[str]) -> str:
    names = []
    for name in sorted(lacking)[:LISTED]:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        meant = f", did you mean {close[0]!r}?" if close else ""
        names.append(f"{name!r} ({lacking[name]}{meant})")
    more = len(lacking) - LISTED
    tail = f" and {more} more" if more > 0 else ""
    rows = sum(lacking.values())
    return (
        f"{rows} in-domain rows carry intents the catalog does not have: {', '.join(names)}"
        f"{tail}; they are counted as unsupported on-topic questions (write "
        f"'{UNSUPPORTED_PREFIX}<name>' to say so, or fix the name if it is a typo)"
    )


def leakage_warnings(
    dataset: Dataset, catalog: Catalog, calibration_set: Dataset | None = None
) -> list[str]:
    """A warning when test rows are catalog exemplars or calibration rows: the gate is then
    measured on what it was fitted to. Texts are compared as the catalog review compares
    near-repeats of an exemplar (:func:`~gatekeeper.catalog_review.text_key`: case,
    punctuation, spacing and the Unicode normal form aside), so a lower-cased copy without
    its question mark still counts."""
    tested = _texts(dataset.examples)
    warnings = []
    shared = tested.keys() & {text_key(e.text) for e in catalog.exemplars()}
    if shared:
        warnings.append(
            f"{len(shared)} distinct test messages are exemplars of the catalog (e.g. "
            f"{_example(shared, tested)}): the gate matches them to themselves, so the report "
            "overstates how it does on new messages; test on messages the catalog lacks"
        )
    if calibration_set is not None:
        overlap = _overlap(tested, calibration_set)
        if overlap:
            share = pct(len(overlap) / len(tested), 0)  # never "(0%)" for a real overlap
            warnings.append(
                f"{len(overlap)} distinct test messages ({share}) are also in the "
                f"calibration file (e.g. {_example(overlap, tested)}): the threshold was chosen "
                "on them, so the pass rate is measured on the data that set it; calibrate on a "
                "separate split"
            )
    return warnings


def calibration_overlap(dataset: Dataset, calibration_set: Dataset | None) -> int:
    """How many distinct test messages are also in the calibration file (compared as
    :func:`leakage_warnings` compares them); 0 without one."""
    if calibration_set is None:
        return 0
    return len(_overlap(_texts(dataset.examples), calibration_set))


def _overlap(tested: Mapping[str, str], calibration_set: Dataset) -> set[str]:
    return set(tested.keys() & _texts(calibration_set.examples).keys())


def _texts(examples: tuple[Example, ...]) -> dict[str, str]:
    """The single messages by their :func:`text_key` (the first text written so)."""
    texts: dict[str, str] = {}
    for e in examples:
        if not e.multi_turn:
            texts.setdefault(text_key(e.text), e.text)
    return texts


def _example(keys: set[str], texts: Mapping[str, str]) -> str:
    return repr(texts[sorted(keys)[0]][:60])


#: What ``eval`` can do instead of using another catalog's threshold.
EVAL_ADVICE = (
    "Add --calibrate-on LABELLED.jsonl --target-pass-rate 0.98 (labelled messages other than "
    "the test set), or --threshold T to measure a threshold of your choice"
)


def check_threshold_fits(
    gate: GateSettings,
    *,
    catalog_hash: str,
    catalog: str,
    own_catalog: Path | None,
    advice: str = EVAL_ADVICE,
) -> None:
    """Refuse (:class:`UncalibratedError`) to judge ``catalog``, another catalog file than the
    settings file's own (``own_catalog``; None: not another), at a threshold calibrated on that
    own catalog (:func:`gatekeeper.calibration.check_catalog_fits`, as ``check`` and ``serve``
    refuse it); ``advice`` says what to do instead (the command's own options)."""
    check_catalog_fits(
        gate, catalog_hash=catalog_hash, catalog=catalog, own_catalog=own_catalog, advice=advice
    )


def language_warnings(model: str, datasets: Mapping[str, Dataset | None]) -> list[str]:
    """A warning per dataset (keyed by how to call it) in a language ``model`` does not read."""
    found = [
        model_language_warning([e.text for e in data.examples], model, what)
        for what, data in datasets.items()
        if data is not None
    ]
    return [w for w in found if w]
