"""The gating proxy's settings (``server.*``): where it listens, the keys it takes, which paths
are open without a key, and which ``/v1/...`` endpoints it passes through ungated."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from gatekeeper._section import ApiKey, _Section

#: The proxy's paths outside the API, which ``server.public_paths`` may open.
OPERATIONAL_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")


#: Default of ``server.passthrough`` (see :mod:`gatekeeper.interfaces.proxy.passthrough`).
PASSTHROUGH = (
    "models",
    "embeddings",
    "files",
    "uploads",
    "moderations",
    "audio",
    "vector_stores",
    "chat",
    "responses",
)
#: First segments of the OpenAI API's other endpoints: a name close to one of these but not it
#: is a typo ("modles"); a name close to none may be an upstream's own endpoint, and passes.
OTHER_ENDPOINTS = ("images", "fine_tuning", "assistants", "containers", "evals", "videos")

#: Endpoints generating text from input the gate does not read: never passed through.
NEVER_PASSED = ("completions", "threads", "realtime", "batches", "engines", "messages")


#: Why ``server.api_keys`` set to text with no key (``GATEKEEPER_SERVER__API_KEYS=""``, or
#: only commas and spaces) is refused: read as "no keys", it turned inbound auth off unnoticed,
#: as a template's ``${KEYS}`` left unset does.
NO_KEYS = (
    "is set but holds no key, which would turn inbound auth off: anyone who reaches the proxy "
    "would use the upstream key (an unset ${KEYS} in a template gives this). Give the client "
    "keys, comma-separated; to serve without inbound auth, unset the variable (or leave the "
    "setting out) instead of setting it empty"
)


class ServerSettings(_Section):
    """The gating proxy."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(
        16_000_000,
        ge=1024,
        description="largest gated request body: a chat resends its photos (base64) every turn",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a request's body may take to arrive whole, from its headers on "
        "(beyond: 408, the connection closed): a client trickling its body holds a connection "
        "no longer; passed-through uploads (files, audio) must arrive within it too",
    )
    shutdown_grace: int = Field(
        30,
        ge=2,
        le=3600,
        description="seconds a SIGTERM gives the requests in flight to finish; a stream still "
        "running 1 s before the end is ended by the proxy with an SSE error event "
        "server_shutting_down, and a request still waiting on the upstream gets a 503 "
        "server_shutting_down (a container's stop grace period must exceed this)",
    )
    # Threads per forward pass of a local model: cores / (processes * decision_workers).
    decision_workers: int = Field(2, ge=1, le=64, description="micro-batches decided at once")
    max_batch: int = Field(32, ge=1, le=1024, description="most messages in one micro-batch")
    processes: int = Field(1, ge=1, le=64, description="serving processes sharing the port")
    response_threads: int = Field(
        10_000,
        ge=0,
        description="Responses API answers whose conversation each process remembers, so that "
        "a request naming one in previous_response_id is judged as the whole chat (0: none)",
    )
    response_threads_bytes: int = Field(
        256 * 2**20,
        ge=0,
        description="most memory those remembered conversations take in all (each turn and item "
        "held as its compact JSON in UTF-8, counted as the bytes objects in memory); the least "
        "recently used go first, and one larger than this is not remembered",
    )
    max_passthrough: int = Field(
        128,
        ge=1,
        description="passed-through requests in progress at once per process (beyond: 503 with "
        "Retry-After); keep it below upstream.max_connections, so that gated requests always "
        "find a connection",
    )
    forward_refused_turns: bool = Field(
        False,
        description="forward the chat as sent, with the turns the gate refused (each customer "
        "turn answered by the off-topic reply, and that reply); by default they are taken out, "
        "so the LLM is never handed a request the gate turned away",
    )
    public_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/healthz"],
        description="paths answered without an inbound key when api_keys is set (comma-separated"
        " in env); the API endpoints (/v1/...) always need a key",
    )

    passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(PASSTHROUGH),
        description="first segments of the /v1/... endpoints passed through ungated with the "
        "upstream key (comma-separated in env); every other /v1/ path is refused (403)",
    )

    allow_open: bool = Field(
        False,
        description="serve on a non-loopback address without api_keys (anyone who reaches the "
        "port then uses the upstream key): only behind something that authenticates clients. "
        "Without it, `serve` refuses to start there",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port], comma-separated in env) whose "
        "requests are served, with CORS headers; a request carrying any other Origin header, "
        "and any OPTIONS preflight from one, is refused (403). Empty: no browser is served "
        "(API clients such as the openai SDK send no Origin)",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names served besides localhost, 127.0.0.1 and [::1] "
        "(comma-separated in env), e.g. the name a reverse proxy on this machine passes on. "
        "Checked when the proxy listens on a loopback address, or when any are set; another "
        "Host is refused (403): a DNS-rebinding page cannot reach a proxy on 127.0.0.1",
    )

    @field_validator(
        "api_keys",
        "public_paths",
        "passthrough",
        "allowed_origins",
        "allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_keys(cls, value: Any, info: ValidationInfo) -> Any:
        """A comma-separated list, or a JSON list (as pydantic-settings reads other lists).
        ``api_keys`` given as text that holds no key is refused (:data:`NO_KEYS`)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                items = json.loads(value)  # then each item is validated as a string
            except ValueError:
                raise ValueError("is neither a JSON list nor comma-separated values") from None
        else:
            items = [key.strip() for key in value.split(",") if key.strip()]
        blank = all(isinstance(item, str) and not item.strip() for item in items)
        if info.field_name == "api_keys" and blank:  # "", ",", "[]", '[""]'
            raise ValueError(NO_KEYS)
        return items

    @field_validator("api_keys")
    @classmethod
    def _no_empty_key(cls, keys: list[SecretStr]) -> list[SecretStr]:
        """An empty key among others is a mistake (a stray comma in a JSON list, a blank line
        of a YAML list): no client can send it."""
        if any(not key.get_secret_value() for key in keys):
            raise ValueError("holds an empty key: every client key needs at least one character")
        return keys

    @field_validator("passthrough")
    @classmethod
    def _passable_endpoints(cls, names: list[str]) -> list[str]:
        segments = [name.strip().strip("/").lower() for name in names]
        for given, segment in zip(names, segments, strict=True):
            if not segment or "/" in segment:
                raise ValueError(f"{given!r}: name an endpoint's first segment, e.g. 'embeddings'")
            if segment in NEVER_PASSED:
                raise ValueError(f"{given!r} would reach the LLM without passing the gate")
            known = (*PASSTHROUGH, *OTHER_ENDPOINTS, *NEVER_PASSED)
            close = difflib.get_close_matches(segment, known, n=1, cutoff=0.8)
            if segment not in known and close:
                raise ValueError(f"{given!r} is no endpoint of the API: did you mean {close[0]!r}?")
        return segments

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        normal = []
        for origin in origins:
            scheme, sep, rest = origin.strip().lower().rstrip("/").partition("://")
            if not sep or scheme not in {"http", "https"} or not rest or "/" in rest:
                raise ValueError(
                    f"{origin!r} is no browser origin: write it as scheme://host[:port], "
                    "e.g. 'https://shop.example'"
                )
            normal.append(f"{scheme}://{rest}")
        return normal

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            bare_colon = ":" in host and not host.strip().startswith("[")
            if not host.strip() or bare_colon or any(c in host for c in "/@ "):
                raise ValueError(
                    f"{host!r}: name a host without scheme or port, e.g. 'shop.example'"
                )
        return [host.strip().lower() for host in hosts]

    @field_validator("public_paths")
    @classmethod
    def _answerable_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is no path: write it as '/{path}'")
            if path == "/v1" or path.startswith("/v1/"):
                raise ValueError(f"{path!r}: the API endpoints (/v1/...) always need a key")
            if path not in OPERATIONAL_PATHS:  # a typo would leave the real path behind the key
                close = difflib.get_close_matches(path, OPERATIONAL_PATHS, n=1, cutoff=0.6)
                meant = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"{path!r} is not a path the proxy serves ({meant}public paths are among "
                    f"{', '.join(OPERATIONAL_PATHS)})"
                )
        return paths


__all__ = ["NEVER_PASSED", "OPERATIONAL_PATHS", "PASSTHROUGH", "ServerSettings"]
