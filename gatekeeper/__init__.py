"""gatekeeper: an intent gate in front of a customer-service LLM.

The public API is what :data:`__all__` lists, importable from here::

    from gatekeeper import Gatekeeper, GatedBackend
    gate = Gatekeeper.from_settings()
    decision = gate.check("where is my parcel?")
    decision.route                       # Route.LLM, Route.OFF_TOPIC or Route.CANNED
    bot = GatedBackend(gate, my_llm)     # the gate in front of any callable

plus :mod:`gatekeeper.testing` (a gate without a model, loopback servers) for users' own tests.
Every other module is internal and may change: the core at the top level, ``embedding/``,
``interfaces/`` (wrapper, proxy, LangChain runnable), ``eval/`` and ``cli/``.

Importing this package is cheap: models, Chroma, FastAPI and LangChain load on first use; the
proxy (:func:`create_app`) and the runnable (:class:`GatekeeperRunnable`) are imported only when
first named.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from gatekeeper._version import __version__
from gatekeeper.catalog import Catalog, Intent, load_catalog
from gatekeeper.decision import Decision, Route
from gatekeeper.embedding import Embedder, LocalEmbedder, OpenAIEmbedder
from gatekeeper.errors import (
    BackendError,
    CatalogError,
    ConfigError,
    DatasetError,
    EmbeddingError,
    EmptyMessageError,
    GatekeeperError,
    IndexMismatchError,
    IndexMissingError,
    InputError,
    MessageTooLongError,
    ModelNotFoundError,
    StoreError,
    StoreUnavailableError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.interfaces.wrapper import Gated, GatedBackend
from gatekeeper.logging import configure_logging
from gatekeeper.settings import Settings, load_settings
from gatekeeper.types import Message, Neighbour, OnError

if TYPE_CHECKING:
    from gatekeeper.interfaces.langchain import GatekeeperRunnable
    from gatekeeper.interfaces.langchain_output import ReplyText
    from gatekeeper.interfaces.proxy import create_app


#: Names whose modules pull in a heavy dependency (FastAPI, LangChain): imported on first use.
_LAZY = {
    "GatekeeperRunnable": "gatekeeper.interfaces.langchain",
    "ReplyText": "gatekeeper.interfaces.langchain_output",
    "create_app": "gatekeeper.interfaces.proxy",
}


if not TYPE_CHECKING:  # a type checker would take every unknown name for a lazy one (Any)

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            value = getattr(import_module(_LAZY[name]), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'gatekeeper' has no attribute {name!r}")


__all__ = [
    "BackendError",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "DatasetError",
    "Decision",
    "Embedder",
    "EmbeddingError",
    "EmptyMessageError",
    "Gated",
    "GatedBackend",
    "Gatekeeper",
    "GatekeeperError",
    "GatekeeperRunnable",
    "IndexMismatchError",
    "IndexMissingError",
    "InputError",
    "Intent",
    "LocalEmbedder",
    "Message",
    "MessageTooLongError",
    "ModelNotFoundError",
    "Neighbour",
    "OnError",
    "OpenAIChatBackend",
    "OpenAIEmbedder",
    "ReplyText",
    "Route",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "__version__",
    "configure_logging",
    "create_app",
    "load_catalog",
    "load_settings",
]
