"""gatekeeper: an intent gate in front of a customer-service LLM.

The public API is what :data:`__all__` lists, plus three names imported on first use
(:func:`create_app`, :class:`GatekeeperRunnable`, :class:`ReplyText`), all importable from here::

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
first named, by name: ``from gatekeeper import *`` leaves them out (it would import FastAPI,
which only the ``[server]`` extra installs, and LangChain). ``create_app`` without FastAPI is an
ImportError naming that extra.
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
    UncalibratedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gatekeeper.gate import Gatekeeper
from gatekeeper.interfaces.openai_backend import OpenAIChatBackend
from gatekeeper.interfaces.wrapper import Gated, GatedBackend
from gatekeeper.logging import configure_logging
from gatekeeper.settings import Settings, load_settings
from gatekeeper.types import Message, Neighbour, OnError

if TYPE_CHECKING:  # re-exported explicitly: they are public, though not in __all__
    from gatekeeper.interfaces.langchain import GatekeeperRunnable as GatekeeperRunnable
    from gatekeeper.interfaces.langchain_output import ReplyText as ReplyText
    from gatekeeper.interfaces.proxy import create_app as create_app


#: Public names whose modules pull in a heavy dependency (FastAPI, LangChain): imported on first
#: use, by name only (not by ``import *``), with the extra that installs the dependency if any.
_LAZY = {
    "GatekeeperRunnable": ("gatekeeper.interfaces.langchain", None),
    "ReplyText": ("gatekeeper.interfaces.langchain_output", None),
    "create_app": ("gatekeeper.interfaces.proxy", "server"),
}


if not TYPE_CHECKING:  # a type checker would take every unknown name for a lazy one (Any)

    def __getattr__(name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module 'gatekeeper' has no attribute {name!r}")
        module, extra = _LAZY[name]
        try:
            value = getattr(import_module(module), name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").partition(".")[0]
            if extra is None or missing in ("", "gatekeeper"):
                raise
            raise ImportError(
                f"gatekeeper.{name} needs {missing}, which is not installed: "
                f"pip install 'gatekeeper[{extra}]'",
                name=exc.name,
            ) from exc
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*globals(), *_LAZY])


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
    "Route",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "UncalibratedError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "__version__",
    "configure_logging",
    "load_catalog",
    "load_settings",
]
