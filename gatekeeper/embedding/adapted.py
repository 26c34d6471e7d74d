"""An embedder with a learned linear adapter: ``normalise(base.embed(texts) @ W)``.

``gatekeeper tune`` learns ``W`` (d×d) for a catalog on the frozen vectors of the configured
embedder; this wrapper applies it to whatever the base returns, so a local model and an
OpenAI-compatible endpoint are adapted the same way. The adapter lives in a directory
(``W.npy`` + ``manifest.json``, see :mod:`gatekeeper.tuning`); the adapted embedder's identity
is ``<base identity>+adapter:<manifest hash[:12]>``, so an index or a threshold made with the
frozen model (or another adapter) is refused, as for any other model change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gatekeeper.artifacts import MANIFEST_FILE
from gatekeeper.embedding.base import Embedder, Progress, Vectors, normalise
from gatekeeper.errors import ConfigError

ADAPTER_METHOD = "linear-adapter"
WEIGHTS = "W.npy"


@dataclass(frozen=True)
class Adapter:
    """A loaded adapter: the matrix, its manifest and the manifest's hash."""

    path: Path
    weights: npt.NDArray[np.float32]
    manifest: dict[str, Any]

    @property
    def hash(self) -> str:
        return str(self.manifest["hash"])

    @property
    def base_identity(self) -> str:
        return str(self.manifest["base_embedder"])


def weights_digest(weights: npt.NDArray[Any]) -> str:
    """sha256 of the matrix as float32 little-endian bytes (what ``W.npy`` holds)."""
    data = np.ascontiguousarray(weights, dtype="<f4")
    return hashlib.sha256(data.tobytes()).hexdigest()


def load_adapter(path: Path | str) -> Adapter:
    """The adapter in directory ``path``; :class:`ConfigError` when it is missing, incomplete,
    not a linear adapter, or its ``W.npy`` is not the matrix the manifest describes."""
    path = Path(path).expanduser()
    where = f"embedding.adapter {path}"
    if not path.is_dir():
        raise ConfigError(f"{where} is not a directory (made by `gatekeeper tune`)")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        weights = np.load(path / WEIGHTS, allow_pickle=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: {Path(str(exc.filename)).name} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read the adapter: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("method") != ADAPTER_METHOD:
        raise ConfigError(f"{where}: not a {ADAPTER_METHOD} manifest")
    for key in ("hash", "base_embedder", "dimension", "weights_sha256"):
        if key not in manifest:
            raise ConfigError(f"{where}: the manifest lacks {key!r}")
    weights = np.asarray(weights, dtype=np.float32)
    dim = int(manifest["dimension"])
    if weights.shape != (dim, dim):
        raise ConfigError(f"{where}: W is {weights.shape}, the manifest says {dim}×{dim}")
    if weights_digest(weights) != manifest["weights_sha256"]:
        raise ConfigError(f"{where}: W.npy does not match its manifest (edited or corrupted)")
    return Adapter(path=path, weights=weights, manifest=manifest)


class AdaptedEmbedder(Embedder):
    """``base`` followed by the adapter's matrix, re-normalised."""

    def __init__(self, base: Embedder, adapter: Adapter) -> None:
        self.base = base
        self.adapter = adapter
        self.batch_size = base.batch_size
        self.identity = f"{base.identity}+adapter:{adapter.hash[:12]}"

    @property
    def dimension(self) -> int:
        return int(self.adapter.weights.shape[1])

    @property
    def runtime(self) -> str:
        return self.base.runtime

    def load(self) -> None:
        self.base.load()
        if self.base.dimension != self.adapter.weights.shape[0]:
            raise ConfigError(
                f"embedding.adapter {self.adapter.path} expects {self.adapter.weights.shape[0]}-"
                f"dimensional vectors; {self.base.identity} gives {self.base.dimension}"
            )

    def close(self) -> None:
        self.base.close()

    def legible(self, texts: Sequence[str]) -> list[str | None]:
        return self.base.legible(texts)

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> Vectors:
        vectors = self.base.embed(texts, progress=progress)
        if not len(texts):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalise(vectors @ self.adapter.weights)

    def _encode(self, texts: list[str]) -> npt.NDArray[Any]:
        return self.embed(texts)


class ForeignAdapterError(ConfigError):
    """An adapter trained on another embedder's vectors than the configured one's; the command
    advised is the gate's own ``gatekeeper tune ... --write`` once the gate names it
    (:meth:`advising`)."""

    def __init__(self, adapter: Adapter, base: str, command: str = "gatekeeper tune") -> None:
        self.adapter, self.base = adapter, base
        super().__init__(
            f"embedding.adapter {adapter.path} was trained on {adapter.base_identity!r} vectors, "
            f"but the configured embedder is {base!r}: run `{command}` to train one for this "
            "model, or unset embedding.adapter"
        )

    def advising(self, command: str) -> ForeignAdapterError:
        """The same error, advising ``command`` (with this gate's settings file and catalog)."""
        return ForeignAdapterError(self.adapter, self.base, command)


def adapt(base: Embedder, path: Path | str) -> AdaptedEmbedder:
    """``base`` with the adapter in ``path``; :class:`ForeignAdapterError` (a
    :class:`ConfigError`) when the adapter was trained on another embedder's vectors."""
    adapter = load_adapter(path)
    if adapter.base_identity != base.identity:
        raise ForeignAdapterError(adapter, base.identity)
    return AdaptedEmbedder(base, adapter)


def adapter_catalog_warning(embedder: Embedder, catalog_hash: str, command: str) -> str | None:
    """The warning to give when ``embedder``'s adapter was trained on another catalog than the
    one served (``catalog_hash``): another catalog's adapter sharpens that catalog's intents,
    not these. A warning, not a refusal: a catalog edited after tuning is normal. ``command``
    (``gatekeeper tune ... --write`` for this gate) retrains it."""
    if not isinstance(embedder, AdaptedEmbedder):
        return None
    trained_on = embedder.adapter.manifest.get("catalog_hash")
    if trained_on is None or trained_on == catalog_hash:
        return None
    return (
        f"embedding.adapter {embedder.adapter.path} was trained on a catalog with other "
        "contents than the one served (another catalog, or an earlier version of this one); "
        f"to retrain it for this catalog, run `{command}` (then rebuild the index and "
        "recalibrate, as it says)"
    )
