"""Fixtures of the fuzz tests: the stream fuzz tests' proxy in front of a scripted upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.stream_stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The proxy (uvicorn on loopback) in front of a :class:`ScriptedUpstream`, per module."""
    with running_stack(tmp_path_factory.mktemp("stream-fuzz")) as running:
        yield running
