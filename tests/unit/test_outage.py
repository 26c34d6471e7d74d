"""A run of gate failures is logged once, then every few seconds, and its end once."""

from __future__ import annotations

from structlog.testing import capture_logs

from gatekeeper.errors import StoreUnavailableError
from gatekeeper.logging import get_logger
from gatekeeper.outage import Outage


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_line_then_one_every_interval_then_recovered() -> None:
    """1,000 failures in 15 s give two `gate.failed` lines (the second counting the repeats)
    and one `gate.recovered` with the run's length; a working gate logs nothing."""
    clock = Clock()
    outage = Outage(get_logger(), every=10.0, clock=clock)
    error = StoreUnavailableError("cannot connect")
    with capture_logs() as logs:
        outage.succeeded()
        for _ in range(1000):
            outage.failed(error, "fail_open")
            clock.now += 0.015
        outage.succeeded()
        outage.succeeded()
    events = [(e["event"], e.get("repeated"), e.get("failures")) for e in logs]
    assert events == [
        ("gate.failed", None, None),
        ("gate.failed", 667, None),
        ("gate.recovered", None, 1000),
    ]
    assert logs[-1]["seconds"] == 15.0
    assert logs[0]["error_type"] == "StoreUnavailableError" and logs[0]["policy"] == "fail_open"


def test_a_new_outage_after_recovery_is_logged_at_once() -> None:
    """After `gate.recovered`, the next failure starts a new run and is logged immediately."""
    clock = Clock()
    outage = Outage(get_logger(), every=10.0, clock=clock)
    with capture_logs() as logs:
        outage.failed(StoreUnavailableError("down"), "fail_closed")
        outage.succeeded()
        clock.now += 1
        outage.failed(StoreUnavailableError("down again"), "fail_closed")
    assert [e["event"] for e in logs] == ["gate.failed", "gate.recovered", "gate.failed"]
    assert "repeated" not in logs[-1]
