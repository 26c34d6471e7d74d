"""Running a dataset through the gate: calls counted at a counting backend, latency measured."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gatekeeper.eval.datasets import Dataset
from gatekeeper.eval.gates import check_lengths, chunks, judge_chunk, with_gate_settings
from gatekeeper.eval.progress import TaskFactory, no_progress
from gatekeeper.eval.schema import EvalOptions, EvalRun, Outcome
from gatekeeper.interfaces.wrapper import GatedBackend

if TYPE_CHECKING:
    from gatekeeper.gate import Gatekeeper


class CountingBackend:
    """A backend that counts the calls that reach it and answers with a short fixed text."""

    reply = "(answer from the counting backend)"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        with self._lock:
            self.calls += 1
        return self.reply


def run_eval(
    gate: Gatekeeper,
    dataset: Dataset,
    options: EvalOptions | None = None,
    task: TaskFactory = no_progress,
) -> EvalRun:
    """Every example judged and routed by the gate, then through the wrapper in front of a
    :class:`CountingBackend` (the calls that reach it are counted); latency measured."""
    options = options or EvalOptions()
    check_lengths(dataset, gate.settings.gate.max_message_chars)
    counter = CountingBackend()
    gated = GatedBackend(gate, counter)
    advance, set_total = task(f"judging {dataset.name}")
    set_total(len(dataset))
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for chunk in chunks(dataset.examples, options.chunk_size):
        inputs = [e.as_input() for e in chunk]
        judged_at = time.perf_counter()
        judged = judge_chunk(gate, chunk, inputs)
        ms = (time.perf_counter() - judged_at) * 1000 / len(chunk)
        for example, message, turns in zip(chunk, inputs, judged, strict=True):
            result = gated.respond(message, gate.conclude(turns, latency_ms=ms), {})
            outcomes.append(Outcome(example, result.decision, result.called, tuple(turns)))
        advance(len(chunk))
    run = EvalRun(outcomes=outcomes, llm_calls=counter.calls, seconds=time.perf_counter() - started)
    run.gate_ms, run.embed_ms = measure_latency(gate, dataset, options, task)
    return run


def measure_latency(
    gate: Gatekeeper, dataset: Dataset, options: EvalOptions, task: TaskFactory = no_progress
) -> tuple[list[float], list[float]]:
    """Per-message latency of single ``gate.check`` calls, and of the embedding model alone,
    side by side on a seeded sample of the dataset. The run has just judged these messages, so
    the gate timed keeps no recent turns (``gate.turn_cache`` 0): each decision is a fresh one."""
    size = min(options.latency_sample, len(dataset))
    if size <= 0:
        return [], []
    # Timing only: the run has already decided with this gate's threshold, calibrated or not.
    gate = with_gate_settings(gate, turn_cache=0, allow_uncalibrated=True)
    rng = np.random.default_rng(options.seed)
    picked = [dataset.examples[int(i)] for i in rng.choice(len(dataset), size=size, replace=False)]
    gate.check(picked[0].as_input(), on_error="raise")  # warm-up, not measured
    advance, set_total = task("timing single messages")
    set_total(size)
    gate_ms, embed_ms = [], []
    for example in picked:
        started = time.perf_counter()
        gate.check(example.as_input(), on_error="raise")
        gate_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        gate.embedder.embed([example.text])
        embed_ms.append((time.perf_counter() - started) * 1000)
        advance(1)
    return gate_ms, embed_ms
