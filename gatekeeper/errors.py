"""The one error hierarchy of gatekeeper.

Every error the library raises on purpose derives from :class:`GatekeeperError`. The library
never maps errors to exit codes or HTTP statuses itself: the CLI (``gatekeeper.cli._app``) and
the proxy (``gatekeeper.interfaces.proxy``) do that at the edge, from the class alone (the table
is in README.md, "Errors").

::

    GatekeeperError
    ├── ConfigError            settings that do not validate, a settings file that is not YAML
    │   └── UncalibratedError  gate.threshold was calibrated for another model or rule
    ├── CatalogError           a catalog file that is missing, malformed or inconsistent
    ├── DatasetError           a labelled dataset that is missing or malformed
    ├── InputError             a customer message the gate cannot judge (a client's mistake)
    │   ├── EmptyMessageError
    │   └── MessageTooLongError
    ├── EmbeddingError         the embedding model failed
    │   └── ModelNotFoundError
    ├── StoreError             Chroma failed
    │   ├── StoreUnavailableError
    │   ├── IndexMissingError
    │   └── IndexMismatchError
    └── BackendError           the LLM backend failed
        ├── UpstreamTimeoutError
        └── UpstreamUnavailableError
"""

from __future__ import annotations


class GatekeeperError(Exception):
    """Base class of every error gatekeeper raises on purpose."""


class ConfigError(GatekeeperError):
    """Settings do not validate."""


class UncalibratedError(ConfigError):
    """``gate.threshold`` was not calibrated for this gate's model and rule; the message gives
    the ``gatekeeper calibrate`` command that fixes it."""


class CatalogError(GatekeeperError):
    """A catalog cannot be loaded; the message names the file, the intent and the problem."""


class DatasetError(GatekeeperError):
    """A labelled dataset cannot be loaded; the message names the file and the row."""


class InputError(GatekeeperError):
    """A message the gate cannot judge: the caller's mistake, not the gate's."""


class EmptyMessageError(InputError):
    """The message to judge is empty or only white space."""


class MessageTooLongError(InputError):
    """The message to judge is longer than ``gate.max_message_chars``."""


class EmbeddingError(GatekeeperError):
    """The embedding model failed to load or to encode."""


class ModelNotFoundError(EmbeddingError):
    """The configured embedding model is not installed or not found at its path."""


class StoreError(GatekeeperError):
    """The Chroma store failed."""


class StoreUnavailableError(StoreError):
    """Chroma cannot be reached (server down, data dir not writable)."""


class IndexMissingError(StoreError):
    """No index has been built for this collection yet (run ``gatekeeper index``)."""

    @classmethod
    def for_collection(cls, name: str, command: str = "gatekeeper index") -> IndexMissingError:
        """The error for collection ``name``, advising ``command`` (with the flags that name
        the gate's settings file and catalog, when known)."""
        return cls(f"no index in collection {name!r} yet: run `{command}`")


class IndexMismatchError(StoreError):
    """The index was built with another embedding model (run ``gatekeeper index --rebuild``)."""


class BackendError(GatekeeperError):
    """The LLM backend failed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class UpstreamTimeoutError(BackendError):
    """The upstream LLM endpoint did not answer in time."""


class UpstreamUnavailableError(BackendError):
    """The upstream LLM endpoint cannot be reached."""
