"""``GATEKEEPER_*`` variables (environment, ``.env``) checked against the settings they could
set: a misspelt variable is an error with the likely name, never a setting silently ignored."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

CONFIG_VARIABLE = "GATEKEEPER_CONFIG"
PREFIX = "GATEKEEPER_"


def known_variables(settings: type[BaseModel]) -> tuple[set[str], tuple[str, ...]]:
    """The ``GATEKEEPER_*`` variable names ``settings`` read (upper case), and the prefixes
    under which any name is valid (dict-valued settings such as ``gate.intent_thresholds``)."""
    names, open_prefixes = {CONFIG_VARIABLE}, []
    for name, field in settings.model_fields.items():
        names.add(f"{PREFIX}{name.upper()}")
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for sub, sub_field in section.model_fields.items():
                names.add(f"{PREFIX}{name.upper()}__{sub.upper()}")
                if getattr(sub_field.annotation, "__origin__", None) is dict:
                    open_prefixes.append(f"{PREFIX}{name.upper()}__{sub.upper()}__")
    return names, tuple(open_prefixes)


def suggest_variable(name: str, known: set[str]) -> str | None:
    """The variable ``name`` was probably meant to be."""
    upper = name.upper()
    tail = upper.removeprefix(PREFIX)
    by_field = sorted(k for k in known if k.endswith(f"__{tail}"))
    if len(by_field) == 1:  # GATEKEEPER_THRESHOLD → GATEKEEPER_GATE__THRESHOLD
        return by_field[0]
    hits = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
    return hits[0] if hits else None


def unknown_variables(names: Any, source: str, settings: type[BaseModel]) -> list[str]:
    """One problem line per ``GATEKEEPER_*`` name in ``names`` that no setting reads."""
    known, open_prefixes = known_variables(settings)
    problems = []
    for name in sorted(n for n in names if n.upper().startswith(PREFIX)):
        upper = name.upper()
        if upper in known or upper.startswith(open_prefixes):
            continue
        hint = suggest_variable(name, known)
        problems.append(
            f"{source}: unknown variable {name}" + (f" (did you mean {hint}?)" if hint else "")
        )
    return problems


def dotenv_variables(env_file: Path) -> dict[str, str | None]:
    """The variables of ``env_file`` (``.env`` in the working directory: what
    pydantic-settings reads)."""
    if not env_file.is_file():
        return {}
    from dotenv import dotenv_values

    return dict(dotenv_values(env_file))
