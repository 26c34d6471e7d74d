"""The base of every settings section, and the type of a key the settings hold."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

from gatekeeper._validation import sendable_key


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: A secret an HTTP client can send (see :func:`gatekeeper._validation.sendable_key`).
ApiKey = Annotated[SecretStr, AfterValidator(sendable_key)]
