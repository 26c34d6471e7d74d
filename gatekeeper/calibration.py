"""Thresholds belong to what they were calibrated for.

A threshold is a point on one model's score scale under one rule: MiniLM's 0.26 means nothing
to another embedder (tried: a gate that kept it blocked no off-topic message at all).
``gatekeeper calibrate --write`` therefore records, beside ``gate.threshold``, the embedder
identity, the rule and the catalog hash it was measured on (``gate.calibrated_for``). A gate
whose model or rule differs refuses to decide (:class:`~gatekeeper.errors.UncalibratedError`,
with the exact command to run) unless ``gate.allow_uncalibrated`` is set; a changed catalog is
only a warning (exemplars are edited often, and the scale does not move much), but a threshold
calibrated on the settings file's own catalog is refused on another catalog file
(:func:`refuse_foreign_threshold`).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from gatekeeper.errors import CatalogError, UncalibratedError
from gatekeeper.gate_settings import CalibrationRecord, GateSettings
from gatekeeper.paths import option
from gatekeeper.settings import Settings, settings_file_serving

CALIBRATE_HINT = (
    "gatekeeper calibrate --dataset YOUR_LABELLED_MESSAGES.jsonl --target-pass-rate 0.98 --write"
)


#: Environment variables that choose the model or the rule: a calibration must see them too.
#: The embedding settings among them make up the embedder's identity (provider, model, pooling,
#: model class, instruction, max length, int8 and its runtime, dimensions, ensemble, adapter) or
#: say which server embeds (base_url); not where graphs are cached, threads, batches, timeouts or
#: the key.
_SCALE_VARIABLES = (
    "GATEKEEPER_EMBEDDING__PROVIDER",
    "GATEKEEPER_EMBEDDING__MODEL",
    "GATEKEEPER_EMBEDDING__POOLING",
    "GATEKEEPER_EMBEDDING__MODEL_CLASS",
    "GATEKEEPER_EMBEDDING__QUERY_INSTRUCTION",
    "GATEKEEPER_EMBEDDING__MAX_LENGTH",
    "GATEKEEPER_EMBEDDING__QUANTIZE",
    "GATEKEEPER_EMBEDDING__RUNTIME",
    "GATEKEEPER_EMBEDDING__DIMENSIONS",
    "GATEKEEPER_EMBEDDING__ADAPTER",
    "GATEKEEPER_EMBEDDING__ENSEMBLE",
    "GATEKEEPER_EMBEDDING__ENSEMBLE_WEIGHT",
    "GATEKEEPER_EMBEDDING__BASE_URL",
    "GATEKEEPER_GATE__RULE",
    "GATEKEEPER_GATE__DENSITY_K",
)


def calibrate_hint(config_flag: str = "", catalog: str = "") -> str:
    """The ``gatekeeper calibrate`` command to advise, reading (and writing) the same settings
    file (``config_flag``, see :meth:`Settings.write_flag`: a ``--config`` even when only the
    package's own settings are in play, which ``--write`` refuses) and catalog as the gate,
    with the environment variables that chose its model or rule (never a key's value), each
    value quoted for the shell (an e5 instruction is 'query: ')."""
    command = CALIBRATE_HINT.replace("calibrate", "calibrate" + config_flag, 1)
    return " ".join([*scale_environment(), command]) + (
        option("catalog", catalog) if catalog else ""
    )


def scale_environment(**values: str | None) -> list[str]:
    """The ``NAME=value`` words (values quoted for the shell) that put an advised command on
    the same model and rule as this process: the environment variables that chose them
    (:data:`_SCALE_VARIABLES`), with ``values`` (``GATEKEEPER_EMBEDDING__ADAPTER="..."``)
    replacing or, when None, removing one."""
    chosen = {n: v for n, v in os.environ.items() if n.upper() in _SCALE_VARIABLES}
    for name, value in values.items():
        chosen.pop(name, None)
        if value is not None:
            chosen[name] = value
    return sorted(f"{name}={shlex.quote(value)}" for name, value in chosen.items())


def tune_hint(settings: Settings) -> str:
    """The ``gatekeeper tune ... --write`` command that trains an adapter for the gate of
    ``settings``: its model, and its catalog, into the settings file that serves that catalog
    (:meth:`Settings.write_flag`), with the environment variables that chose the model but
    not the adapter's (the new one is to be read from the file)."""
    env = scale_environment(GATEKEEPER_EMBEDDING__ADAPTER=None)
    apart = option("catalog", settings.catalog) if settings.catalog_apart() else ""
    return " ".join([*env, f"gatekeeper tune{settings.write_flag()}{apart} --write"])


def refuse_foreign_threshold(
    settings: Settings, command: str = "serve", catalog_hash: str | None = None
) -> None:
    """Refuse (:class:`UncalibratedError`) to decide on a catalog chosen apart from the
    settings file (``--catalog``, ``GATEKEEPER_CATALOG``, ``.env``:
    :meth:`Settings.catalog_apart`) at a threshold calibrated on that file's own catalog;
    ``command`` (``check``, ``serve``) is what the advice says to run after calibrating;
    ``catalog_hash``: the chosen catalog's content hash (None: read the catalog for it)."""
    if not settings.catalog_apart():
        return
    catalog_hash = catalog_hash or _content_hash(settings.catalog)
    if catalog_hash is None:  # the gate says why it cannot read it
        return
    calibrate = calibrate_hint(settings.write_flag(), str(settings.catalog))
    check_catalog_fits(
        settings.gate,
        catalog_hash=catalog_hash,
        catalog=str(settings.catalog),
        own_catalog=settings.served_catalog,
        advice=f"Calibrate one for it: `{calibrate}`, then {command} with that --config",
    )


def check_catalog_fits(
    gate: GateSettings, *, catalog_hash: str, catalog: str, own_catalog: Path | None, advice: str
) -> None:
    """Refuse (:class:`UncalibratedError`) to judge ``catalog`` (contents ``catalog_hash``),
    another catalog file than the settings file's own (``own_catalog``; None: not another), at
    a threshold whose record is the hash of that own catalog as it is now: a threshold chosen
    for another catalog, as one of another model or rule is. The record holds a hash, not a
    path: when it matches neither catalog, the chosen one may be the catalog the threshold was
    calibrated on, since edited (a deployment's ``GATEKEEPER_CATALOG`` beside a file without
    ``catalog:``), so that is left to :func:`check_calibrated`'s warning. ``advice`` says what
    to do instead; a settings file of the catalog's own that serves it is named.
    ``gate.allow_uncalibrated`` lifts the refusal."""
    found = gate.calibrated_for
    if own_catalog is None or gate.allow_uncalibrated or found is None:
        return
    if found.catalog in (None, catalog_hash) or found.catalog != _content_hash(own_catalog):
        return
    own = settings_file_serving(Path(catalog))
    use_own = f"Use --config {own}, which serves {catalog}. Otherwise: " if own else ""
    raise UncalibratedError(
        f"gate.threshold {gate.threshold:g} was calibrated on the settings' own catalog "
        f"({own_catalog}), not on {catalog}, so deciding there would be at a threshold nobody "
        f"chose. {use_own}{advice} (or set gate.allow_uncalibrated: true to decide with it "
        "anyway)"
    )


def _content_hash(catalog: Path) -> str | None:
    """The content hash of the catalog file ``catalog``; None when it cannot be read."""
    from gatekeeper.catalog import read_catalog

    try:
        return read_catalog(catalog).catalog.content_hash()
    except (CatalogError, OSError):
        return None


@dataclass(frozen=True)
class Calibrated:
    """The outcome of the check: fine, or fine with warnings."""

    warnings: tuple[str, ...] = ()


def record(model: str, rule: str, catalog_hash: str) -> CalibrationRecord:
    """What a calibration on this model, rule and catalog writes into the settings."""
    return CalibrationRecord(model=model, rule=rule, catalog=catalog_hash)


def check_calibrated(
    gate: GateSettings,
    *,
    model: str,
    rule: str,
    catalog_hash: str,
    catalog: str,
    config_flag: str = "",
    from_file: bool = True,
) -> Calibrated:
    """Raise :class:`UncalibratedError` when ``gate.threshold`` was not calibrated for this
    model and rule (unless ``gate.allow_uncalibrated``); warn when only the catalog changed.
    ``from_file``: whether the settings were read from a settings file (else the message says
    that the shipped calibration lives in one)."""
    found = gate.calibrated_for
    hint = calibrate_hint(config_flag, catalog)
    if found is not None and rule != found.rule and "GATEKEEPER_GATE__RULE" not in os.environ:
        hint += f" --rule {rule}"  # chosen by the file or for this run (eval --rule): say so
    chats_hint = conversations_warning(gate, model=model, rule=rule, command=hint)
    if found is None:
        if gate.allow_uncalibrated:  # a threshold chosen by hand: the chats' settings still count
            return Calibrated((chats_hint,) if chats_hint else ())
        in_code = (
            ""
            if from_file
            else " (these settings were not read from a settings file: load them with "
            "load_settings() to use the calibration shipped in configs/gatekeeper.yaml)"
        )
        raise UncalibratedError(
            f"gate.threshold {gate.threshold:g} was never calibrated for this gate ({model}, "
            f"rule {rule}){in_code}: run `{hint}` on labelled messages of your own, or set "
            "gate.allow_uncalibrated: true to decide with it anyway"
        )
    differs = [
        f"{what} {was!r} (now {now!r})"
        for what, was, now in (("model", found.model, model), ("rule", found.rule, rule))
        if was != now
    ]
    if differs and not gate.allow_uncalibrated:
        scale = "another model's" if found.model != model else "another rule's"
        raise UncalibratedError(
            f"gate.threshold {gate.threshold:g} was calibrated for {', '.join(differs)}: a "
            f"threshold means nothing on {scale} scale. Run `{hint}` to calibrate it "
            f"for this gate{_chats_too(gate, model=model, rule=rule)}, or set "
            "gate.allow_uncalibrated: true to decide with it anyway"
        )
    warnings = []
    if found.catalog is not None and found.catalog != catalog_hash:
        warnings.append(
            "gate.threshold was calibrated on a catalog with other contents (an earlier version, "
            f"or another catalog); consider `{hint}`"
        )
    if chats_hint:
        warnings.append(chats_hint)
    return Calibrated(tuple(warnings))


def _chats_too(gate: GateSettings, *, model: str, rule: str) -> str:
    """What a refusal of another scale's threshold adds about the conversation settings: to
    calibrate them too, when they were calibrated for the old scale or have no record."""
    if conversations_foreign(gate, model=model, rule=rule):
        why = "they were calibrated for the old scale"
    elif conversations_unrecorded(gate):
        why = "nothing records which model they were chosen for"
    else:
        return ""
    return (
        " (if you serve chats, add --conversations CHATS.jsonl to calibrate the conversation "
        f"settings too: {why})"
    )


def conversations_foreign(gate: GateSettings, *, model: str, rule: str) -> str | None:
    """Why the conversation settings do not belong to this model and rule, if they do not.

    They are cosine values too (a margin under the threshold, an off-topic similarity), so a
    model switch moves them like the threshold: MiniLM's values on multilingual-e5 refused
    23 of 94 customer turns of the Chinese test chats. Only a warning, not a refusal: they act
    inside served chats alone, and a shop without labelled chats must still be able to serve.
    """
    found = gate.conversations_calibrated_for
    if found is None:
        return None
    differs = [
        f"{what} {was!r} (now {now!r})"
        for what, was, now in (("model", found.model, model), ("rule", found.rule, rule))
        if was != now
    ]
    if not differs:
        return None
    return (
        "the conversation settings (gate.session_margin, gate.followup_*) were calibrated for "
        f"{', '.join(differs)}: on another score scale they can refuse customers in the "
        "middle of a served chat, or let drifts through"
    )


#: What ``calibrate --conversations --write`` chooses: cosine values and a word count measured
#: at one model's threshold, on its score scale.
CONVERSATION_SETTINGS = (
    "session_margin",
    "followup_max_words",
    "followup_off_topic_max",
    "followup_off_topic_gap",
)


def conversations_unrecorded(gate: GateSettings) -> tuple[str, ...]:
    """The conversation settings whose model cannot be checked: those set to other than their
    defaults with no ``gate.conversations_calibrated_for`` beside a threshold that has its record
    (``calibrated_for``), as a ``calibrate --conversations --write`` from before that record
    existed left them. They went unchecked: after a ``tune`` and a threshold-only calibration,
    an adapter gate kept such values and refused 15 of 344 test customer turns (10 with values
    calibrated for it). Empty beside a threshold without a record: nothing is checked there."""
    if gate.conversations_calibrated_for is not None or gate.calibrated_for is None:
        return ()
    fields = GateSettings.model_fields
    return tuple(n for n in CONVERSATION_SETTINGS if getattr(gate, n) != fields[n].default)


def conversations_warning(gate: GateSettings, *, model: str, rule: str, command: str) -> str | None:
    """The warning to give about the conversation settings of a gate on ``model`` and ``rule``,
    if any (calibrated for another model or rule, or set with no record), with ``command`` (a
    ``gatekeeper calibrate ... --write`` for this gate) to fix it."""
    run = f"`{command} --conversations CHATS.jsonl` (labelled chats)"
    foreign = conversations_foreign(gate, model=model, rule=rule)
    if foreign:
        return f"{foreign}: if you serve chats, run {run}"
    unrecorded = conversations_unrecorded(gate)
    if not unrecorded:
        return None
    made_for = json.dumps({"model": model, "rule": rule}, ensure_ascii=False)
    one = len(unrecorded) == 1
    return (
        f"{', '.join(f'gate.{name}' for name in unrecorded)} {'is' if one else 'are'} set with "
        f"no record of the model {'it was' if one else 'they were'} chosen for (no "
        "gate.conversations_calibrated_for: set by hand, or by the `calibrate --conversations "
        "--write` of an older gatekeeper, which wrote none), so a change of model goes "
        "unnoticed, and on another model's score scale they can refuse customers in the middle "
        f"of a served chat. If you serve chats, calibrate them for this model: {run}; if they "
        "were chosen for this model, record that instead (which also ends this warning): "
        f"gate.conversations_calibrated_for: {made_for}"
    )


def without_conversation_settings(gate: GateSettings) -> GateSettings:
    """``gate`` with the conversation settings at their defaults and no record, for a run they
    change nothing in: one that judges single messages only (they act inside chats alone), or
    one that chooses them (``calibrate --conversations`` routes the chats with candidates of
    its own). A hint to calibrate them would be about values the run does not use."""
    fields = GateSettings.model_fields
    defaults = {name: fields[name].default for name in CONVERSATION_SETTINGS}
    return gate.model_copy(update={**defaults, "conversations_calibrated_for": None})
