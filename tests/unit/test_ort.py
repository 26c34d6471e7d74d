"""The ONNX Runtime encoder's pure parts: pooling packed tokens, the cache's file names and
its atomic writes (the model itself: tests/integration/test_default_model.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gatekeeper.embedding.ort import graph_name, pool, weights_digest, write_atomically


def _padded_and_packed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three texts of 4, 2 and 3 tokens: padded states, their mask, and the packed rows."""
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=np.int64)
    padded = rng.normal(size=(3, 4, 5)).astype(np.float32) * mask[..., None]
    return padded, mask, padded[mask.astype(bool)]


def test_mean_pooling_of_packed_tokens_equals_the_padded_mean() -> None:
    """Mean pooling over packed real tokens equals the masked mean of the padded batch."""
    padded, mask, packed = _padded_and_packed()
    expected = padded.sum(axis=1) / mask.sum(axis=1, keepdims=True)
    assert np.allclose(pool(packed, mask, "mean"), expected, atol=1e-6)


def test_cls_pooling_takes_each_texts_first_token() -> None:
    """CLS pooling picks each text's first real token from the packed rows."""
    padded, mask, packed = _padded_and_packed()
    assert np.array_equal(pool(packed, mask, "cls"), padded[:, 0])


def _model(directory: Path, weights: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(weights)
    return directory


def test_the_graph_name_follows_the_weights(tmp_path: Path) -> None:
    """Same files, same cached graph name; other weights (a retuned model), another."""
    one = graph_name(_model(tmp_path / "a" / "model", b"weights"))
    same = graph_name(_model(tmp_path / "b" / "model", b"weights"))
    other = graph_name(_model(tmp_path / "c" / "model", b"retuned weights"))
    assert one.removeprefix("a-") == same.removeprefix("b-")
    assert one.removeprefix("a-") != other.removeprefix("c-")
    assert one.startswith("a-model-") and one.endswith(".onnx")


def test_the_weights_digest_is_remembered_until_the_files_change(tmp_path: Path) -> None:
    """A remembered digest is reused while the files are unchanged and recomputed after a
    retune rewrites the weights."""
    model = _model(tmp_path / "pkg" / "model", b"weights")
    memo_dir = tmp_path / "cache"
    first = weights_digest(model, memo_dir)
    assert first == weights_digest(model)  # the same digest whether remembered or not
    (memo,) = memo_dir.glob(".pkg-model-*.digest")
    memo.write_text(memo.read_text().replace(first, "remembered"))
    assert weights_digest(model, memo_dir) == "remembered"  # no reread of the weights
    (model / "model.safetensors").write_bytes(b"retuned weights")
    assert weights_digest(model, memo_dir) == weights_digest(model) != first


def test_a_damaged_or_unwritable_memo_only_costs_a_reread(tmp_path: Path) -> None:
    """A garbled memo file, or a memo directory that is a file, still yields the digest."""
    model = _model(tmp_path / "pkg" / "model", b"weights")
    expected = weights_digest(model)
    memo_dir = tmp_path / "cache"
    weights_digest(model, memo_dir)
    for memo in memo_dir.glob(".pkg-model-*.digest"):
        memo.write_text("{not json")
    assert weights_digest(model, memo_dir) == expected
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert weights_digest(model, blocked) == expected


def test_an_interrupted_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write interrupted before the rename leaves neither the graph nor a temporary file."""
    target = tmp_path / "cache" / "graph.onnx"

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, b"graph bytes")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_write_puts_the_whole_file_in_place(tmp_path: Path) -> None:
    """A completed write leaves exactly the data at the target, nothing else."""
    target = tmp_path / "cache" / "graph.onnx"
    write_atomically(target, b"graph bytes")
    assert target.read_bytes() == b"graph bytes"
    assert [p.name for p in target.parent.iterdir()] == ["graph.onnx"]
