"""BERT encoders on ONNX Runtime: the same weights and vectors as the torch runtime, faster on
a CPU, and no torch in a serving process once the graph is cached.

The graph is the gate's own BERT encoder (:class:`gatekeeper.embedding.bert.PackedBert`: the
dense layers on the real tokens only, as the torch runtime runs them) exported once with
``torch.onnx`` and checked against torch on probe sentences before it is used. It is kept in a
cache directory (``embedding.cache_dir``, default ``$XDG_CACHE_HOME/gatekeeper`` or
``~/.cache/gatekeeper``) under a digest of the weights, the config and the graph format, so a
changed or fine-tuned model gets its own graph and later loads need neither torch nor the
export. Written to a temporary file and renamed into place, so an interrupted export leaves
no half-written graph; a cache that cannot be written only costs the export at every load.

Why: ONNX Runtime's CPU kernels (MLAS) multiply the small matrices of one customer message
far faster than torch's BLAS path, and batches somewhat faster (eval/README.md, Speed,
"Session 17"). The vectors agree with the torch runtime's to float rounding (a test holds them
within 1e-5), so the model identity, the index and the calibrated threshold stay the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.embedding import bert_files
from gatekeeper.errors import ModelNotFoundError
from gatekeeper.paths import write_atomically

#: Bump when :class:`~gatekeeper.embedding.bert.PackedBert`'s graph changes: graphs cached by
#: an earlier version are then not reused.
GRAPH_FORMAT = 1
#: Sentences an exported graph must embed as torch does (different lengths: padding).
PROBES = (
    "ok",
    "Where is my order? I placed it on Monday and it has not arrived yet.",
    "tell me a joke",
)
#: Largest difference between an exported graph's vectors and torch's for it to be used.
TOLERANCE = 1e-4
#: Smallest cosine between the int8 graph's vectors of :data:`PROBES` and the float graph's.
INT8_MIN_COSINE = 0.95
_OPSET = 17
#: Cached graphs are read by every user of a shared cache (mkstemp's 0600 would hide them).
_SHARED = 0o644
_GRAPH_SOURCES = ("config.json", "model.safetensors")


def available() -> bool:
    """Whether ONNX Runtime is installed (Chroma depends on it, so it usually is)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gatekeeper``, or ``~/.cache/gatekeeper``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "gatekeeper"


def graph_name(path: Path, *, int8: bool = False, memo_dir: Path | None = None) -> str:
    """The cached graph's file name: the model directory's name (with its parent's: a model
    package keeps its files in ``<package>/model``) and a digest of what the graph is made of
    (config, weights, graph format; remembered in ``memo_dir``, see :func:`weights_digest`)."""
    form = "-int8" if int8 else ""
    return f"{path.parent.name}-{path.name}-{weights_digest(path, memo_dir)}{form}.onnx"


def weights_digest(path: Path, memo_dir: Path | None = None) -> str:
    """A BLAKE2b digest of the graph format, config and weights in ``path``. Reading 86 MiB of
    weights takes ~0.2 s, a tenth of a cold start, so the digest is remembered in a small file
    in ``memo_dir`` (the graph cache) under the files' size, modification time and inode, and
    recomputed when any of them changes (a retuned or reinstalled model)."""
    files = [path / name for name in _GRAPH_SOURCES]
    stamp = [[st.st_size, st.st_mtime_ns, st.st_ino] for st in (f.stat() for f in files)]
    source = str(path.resolve())
    key = {"format": f"{GRAPH_FORMAT}:{_OPSET}", "source": source, "stamp": stamp}
    where = hashlib.blake2b(source.encode(), digest_size=6).hexdigest()
    memo = memo_dir / f".{path.parent.name}-{path.name}-{where}.digest" if memo_dir else None
    if memo is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            remembered = json.loads(memo.read_text())
            if remembered["key"] == key and isinstance(remembered["digest"], str):
                return remembered["digest"]
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"gatekeeper-onnx-graph:{GRAPH_FORMAT}:{_OPSET}\n".encode())
    for file in files:
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    if memo is not None:
        with contextlib.suppress(OSError):
            write_atomically(
                memo, json.dumps({"key": key, "digest": digest.hexdigest()}).encode(), _SHARED
            )
    return digest.hexdigest()


def load_graph(path: Path, cache_dir: Path | None, log: Any, *, int8: bool = False) -> bytes | Path:
    """The model's graph (``int8``: its int8 form, made from the float graph): its cached
    file, or the bytes of a fresh export (cached if the cache can be written)."""
    directory = (cache_dir or default_cache_dir()).expanduser()
    cached = directory / graph_name(path, int8=int8, memo_dir=directory)
    if cached.is_file():
        return cached
    started = time.perf_counter()
    graph = quantized(load_graph(path, cache_dir, log), path) if int8 else export_graph(path)
    log.info(
        "embedding.onnx_exported",
        model=path.name,
        int8=int8,
        seconds=round(time.perf_counter() - started, 2),
    )
    try:
        write_atomically(cached, graph, _SHARED)
    except OSError as exc:
        log.warning("embedding.onnx_cache_unwritable", cache_dir=str(directory), error=str(exc))
        return graph
    return cached


def export_graph(path: Path) -> bytes:
    """The ONNX graph of the BERT encoder in ``path``, checked against torch on
    :data:`PROBES`; :class:`ModelNotFoundError` when it cannot be made or does not agree."""
    try:
        import torch

        from gatekeeper.embedding import bert
    except ImportError as exc:
        raise ModelNotFoundError(
            "exporting the model for ONNX Runtime needs torch: pip install 'gatekeeper[local]'"
        ) from exc
    encoder = bert.load_encoder(path)
    packed = bert.PackedBert(encoder).eval()
    tokenizer = bert_files.load_tokenizer(path, 512)
    ids, mask = token_arrays(tokenizer, list(PROBES))
    inputs = (torch.from_numpy(ids), torch.from_numpy(mask))
    try:
        with torch.no_grad(), tempfile.TemporaryDirectory(prefix="gatekeeper-onnx-") as work:
            target = Path(work) / "graph.onnx"
            torch.onnx.export(
                packed,
                inputs,
                target,
                input_names=["input_ids", "attention_mask"],
                output_names=["tokens"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "length"},
                    "attention_mask": {0: "batch", 1: "length"},
                    "tokens": {0: "tokens"},
                },
                opset_version=_OPSET,
                dynamo=False,
            )
            graph = target.read_bytes()
            expected = packed(*inputs).numpy()
    except Exception as exc:  # torch.onnx raises many types; all mean "no graph"
        raise ModelNotFoundError(
            f"cannot export the model in {path} for ONNX Runtime: {exc} "
            "(is the onnx package installed? pip install 'gatekeeper[local]')"
        ) from exc
    got = session(graph, threads=1).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    worst = float(np.abs(np.asarray(got) - expected).max())
    if worst > TOLERANCE:
        raise ModelNotFoundError(
            f"the ONNX graph of {path} does not compute what torch computes (largest "
            f"difference {worst:.2e}); set embedding.runtime: native"
        )
    return graph


def quantized(graph: bytes | Path, path: Path) -> bytes:
    """``graph`` (of the model in ``path``) with its matrix products in int8 (ONNX Runtime's
    dynamic quantisation: weights per output channel, activations per batch at run time),
    checked to stay close to the float graph on :data:`PROBES` (cosine at least
    :data:`INT8_MIN_COSINE`)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelNotFoundError(
            "quantising the graph needs the onnx package: pip install 'gatekeeper[local]'"
        ) from exc
    source = onnx.load_model_from_string(graph) if isinstance(graph, bytes) else str(graph)
    try:
        with tempfile.TemporaryDirectory(prefix="gatekeeper-onnx-") as work, _quiet_root_logger():
            target = Path(work) / "int8.onnx"
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
            result = target.read_bytes()
    except Exception as exc:  # the quantiser raises many types; all mean "no int8 graph"
        raise ModelNotFoundError(f"cannot quantise the graph of {path}: {exc}") from exc
    probes = token_arrays(bert_files.load_tokenizer(path, 512), list(PROBES))
    worst = float(min(_probe_cosines(graph, result, probes)))
    if worst < INT8_MIN_COSINE:
        raise ModelNotFoundError(
            f"the int8 graph's vectors are too far from the float model's (cosine {worst:.3f}); "
            "set embedding.quantize: none"
        )
    return result


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser's advice goes to the root logger as warnings: errors only, meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _probe_cosines(
    one: bytes | Path, other: bytes | Path, probes: tuple[npt.NDArray[Any], npt.NDArray[Any]]
) -> npt.NDArray[Any]:
    """Cosines between two graphs' mean-pooled vectors of the same tokens."""
    ids, mask = probes
    vectors = []
    for graph in (one, other):
        tokens = session(graph, threads=1).run(None, {"input_ids": ids, "attention_mask": mask})
        pooled = pool(tokens[0], mask, "mean")
        vectors.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.asarray((vectors[0] * vectors[1]).sum(axis=1))


def session(graph: bytes | Path, *, threads: int | None) -> Any:
    """An ONNX Runtime CPU session for ``graph``: ``threads`` per forward pass (unset: ONNX
    Runtime's default, the physical cores); one thread runs on the caller's own thread, so
    the proxy's decision workers each compute in parallel."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its optimiser's notes are not our users' news
    source = str(graph) if isinstance(graph, Path) else graph
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def token_arrays(tokenizer: Any, texts: list[str]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Token ids and attention mask of ``texts``, padded to the longest (int64)."""
    batch = tokenizer.encode_batch(texts)
    ids = np.array([encoding.ids for encoding in batch], dtype=np.int64)
    mask = np.array([encoding.attention_mask for encoding in batch], dtype=np.int64)
    return ids, mask


def pool(tokens: npt.NDArray[Any], mask: npt.NDArray[Any], method: str) -> npt.NDArray[Any]:
    """Mean or CLS pooling of the real tokens' states (``tokens``: all texts' real tokens, in
    order; right padding, so each text's first real token is its ``[CLS]``)."""
    lengths = mask.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if method == "cls":
        return np.asarray(tokens[starts])
    sums = np.add.reduceat(tokens, starts, axis=0)
    return np.asarray(sums / lengths[:, None].astype(np.float32))


class OrtBert:
    """A BERT encoder run by ONNX Runtime (see the module docstring). Thread-safe: the
    tokenizer's settings are fixed at load and an ONNX Runtime session runs calls side by
    side."""

    def __init__(
        self,
        path: Path,
        pooling_method: str,
        max_length: int,
        *,
        threads: int | None,
        cache_dir: Path | None,
        log: Any,
        int8: bool = False,
    ) -> None:
        self.tokenizer = bert_files.load_tokenizer(path, max_length)
        self.pooling_method = pooling_method
        self.hidden_size = int(bert_files.config(path)["hidden_size"])
        graph = load_graph(path, cache_dir, log, int8=int8)
        try:
            self._session = session(graph, threads=threads)
        except Exception as exc:  # a damaged cached file: export again, once
            if not isinstance(graph, Path):
                raise ModelNotFoundError(f"ONNX Runtime cannot load the graph: {exc}") from exc
            log.warning("embedding.onnx_cache_damaged", file=str(graph), error=str(exc))
            graph.unlink(missing_ok=True)
            graph = load_graph(path, cache_dir, log, int8=int8)
            self._session = session(graph, threads=threads)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[Any]:
        """One forward pass and the pooling."""
        ids, mask = token_arrays(self.tokenizer, list(texts))
        tokens = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return pool(tokens, mask, self.pooling_method)
