"""A store's builds in Chroma: their names, the pointer's keys, and orphan builds.

A build ``N--<time>-<nanoseconds>`` of the store ``N`` is filled by one process and then made
active by pointing the collection ``N`` at it (metadata :data:`POINTER_KEY`); the build it
replaced stays as the pointer's previous one (:data:`PREVIOUS_KEY`: readers elsewhere may
still hold it) until the next flip drops it (:mod:`gatekeeper.store`). A process killed while
it fills a build (SIGKILL, the OOM killer, a lost node) neither flips the pointer nor drops its
build, so the half-filled build would stay in Chroma for good: named by no pointer, it is
looked at by no later ``index`` or ``index --rebuild``.

So each sync, once its build is active, drops the store's *orphans*: builds that are neither
the active one nor the kept previous one, and were made more than :data:`ORPHAN_AGE` ago. The
age is what makes this safe: a build that no pointer names may be one that another process is
filling right now (a replica sharing the Chroma server, an ``index`` run in another shell, a
concurrent rebuild that has not flipped yet), and dropping it would fail that process's index.
Six hours is far beyond any fill measured (5,903 exemplars index in ≈13 s, eval/README.md; an
hour at that pace is over a million exemplars) and beyond clock skew between machines or a
daylight-saving shift, while an orphan that waits a few hours more costs only disk. A build's
age is read off its name, whose time is UTC so that replicas in other time zones read it
alike. (Builds named by earlier versions carry local time, so they read as up to 14 hours
off: only a fill by such an older process, west of UTC, running while a newer one syncs, could
look older than it is.)

What is dropped is logged (``index.orphan_builds_dropped``: collection names and ages, never
customer text).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from gatekeeper.logging import get_logger

#: The pointer's metadata key naming the active build.
POINTER_KEY = "gatekeeper_active"
#: The pointer's metadata key naming the build the active one replaced (kept for readers).
PREVIOUS_KEY = "gatekeeper_previous"
#: How long after it was made a build that no pointer names is taken for an orphan (seconds).
ORPHAN_AGE = 6 * 3600.0

_STAMP = "%Y%m%d%H%M%S"


def new_build_name(store: str, now_ns: int | None = None) -> str:
    """A new build's name, ``<store>--<UTC time to the second>-<nanoseconds>`` (``now_ns``:
    nanoseconds since the epoch, default now): unique, ordered by age, and dated alike by
    every replica whatever its time zone."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp = time.strftime(_STAMP, time.gmtime(now_ns // 10**9))
    return f"{store}--{stamp}-{now_ns % 10**9:09d}"


def built_at(store: str, name: str) -> float | None:
    """When the build ``name`` of ``store`` was made (seconds since the epoch), read off its
    name; None when ``name`` is not a build of ``store`` (another store's, or not a build)."""
    match = re.fullmatch(rf"{re.escape(store)}--(\d{{14}})-(\d{{9}})", name)
    if match is None:
        return None
    try:
        seconds = calendar.timegm(time.strptime(match[1], _STAMP))
    except ValueError:
        return None
    return seconds + int(match[2]) / 10**9


def orphans(
    store: str, names: Iterable[str], keep: Collection[Any], now: float, age: float
) -> dict[str, float]:
    """The builds of ``store`` among ``names`` that are not in ``keep`` and were made more
    than ``age`` seconds before ``now``, each with its age in seconds, oldest name first."""
    found = {}
    for name in sorted(names):
        made = built_at(store, name)
        if name not in keep and made is not None and now - made > age:
            found[name] = now - made
    return found


def drop_orphans(
    client: Any,
    store: str,
    active: str,
    drop: Callable[[str], bool],
    *,
    now: float | None = None,
    age: float = ORPHAN_AGE,
) -> list[str]:
    """Drop, with ``drop`` (which says whether it could), the orphan builds of ``store`` on the
    Chroma ``client``: every build but ``active`` (the build a sync just made or updated) and
    the two its pointer names, made more than ``age`` seconds ago. Log and return the ones
    dropped; a Chroma failure here leaves garbage, it does not fail the sync."""
    try:
        pointer = client.get_collection(store, embedding_function=None).metadata or {}
        listed = client.list_collections()
    except Exception as exc:  # the sync is done; the orphans wait for the next one
        get_logger().warning("index.orphan_builds_unchecked", store=store, error=repr(exc))
        return []
    names = [c if isinstance(c, str) else c.name for c in listed]
    keep = {active, pointer.get(POINTER_KEY), pointer.get(PREVIOUS_KEY)}
    found = orphans(store, names, keep, time.time() if now is None else now, age)
    dropped = [name for name in found if drop(name)]
    if dropped:
        get_logger().info(
            "index.orphan_builds_dropped",
            store=store,
            builds=dropped,
            hours_old=[round(found[name] / 3600, 1) for name in dropped],
            older_than_hours=round(age / 3600, 1),
        )
    return dropped
