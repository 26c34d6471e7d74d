"""Fixtures of the proxy's integration tests: a recording upstream, the tiny gate and proxies
on loopback in front of them (:mod:`tests.support.loopback`; its modules are imported by the
fixtures, so other tests do not load them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.testing import RecordingUpstream
    from tests.support.loopback import StartProxy


@pytest.fixture(scope="module")
def recording_upstream() -> Iterator[RecordingUpstream]:
    """One recording upstream for the module; it accepts only the proxy's own key."""
    from gatekeeper.testing import RecordingUpstream
    from tests.support.loopback import UPSTREAM_KEY

    with RecordingUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def upstream(recording_upstream: RecordingUpstream) -> RecordingUpstream:
    """The module's recording upstream, with no recorded calls and no simulated failure."""
    recording_upstream.reset()
    return recording_upstream


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gatekeeper:
    """The tiny hashing gate, indexed once for the module."""
    from tests.support.loopback import tiny_gate_at

    return tiny_gate_at(tmp_path_factory.mktemp("proxy-gate"))


@pytest.fixture
def start_proxy(gate: Gatekeeper, upstream: RecordingUpstream) -> Iterator[StartProxy]:
    """Start a real proxy (uvicorn on loopback); stopped when the test ends."""
    from tests.support.loopback import proxies

    with proxies(gate, upstream) as start:
        yield start
