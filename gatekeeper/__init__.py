"""gatekeeper: an intent gate in front of a customer-service LLM.

Public API (everything else is private)::

    from gatekeeper import Gatekeeper
    gate = Gatekeeper.from_settings()
    decision = gate.check("where is my parcel?")
    decision.route  # Route.LLM, Route.OFF_TOPIC or Route.CANNED

Importing this package is cheap: models, Chroma and web frameworks load on first use.
"""

from gatekeeper.catalog import Catalog, Intent, load_catalog
from gatekeeper.decision import Decision, Neighbour, Route
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
from gatekeeper.gate import Gatekeeper, Message
from gatekeeper.settings import Settings, load_settings

__version__ = "0.1.0"

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
    "OpenAIEmbedder",
    "Route",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "__version__",
    "load_catalog",
    "load_settings",
]
