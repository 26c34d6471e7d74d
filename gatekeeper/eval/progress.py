"""Progress reporting for long eval steps, without depending on any UI."""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
#: Makes one progress task: description -> (advance by n, set the total).
TaskFactory = Callable[[str], tuple[Advance, Advance]]


def no_progress(description: str) -> tuple[Advance, Advance]:
    """A task factory that shows nothing."""

    def ignore(n: int) -> None:
        return None

    return ignore, ignore
