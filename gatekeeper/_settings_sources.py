"""The settings' own sources (pydantic-settings sources): the ``.env`` file filtered to
gatekeeper's variables, and the YAML settings file with paths relative to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import PydanticBaseSettingsSource, YamlConfigSettingsSource

from gatekeeper._rows import load_yaml


class OwnVariables(PydanticBaseSettingsSource):
    """A ``.env`` source that keeps gatekeeper's own variables: a project's ``.env`` may well
    hold ``OPENAI_API_KEY`` and friends, which are none of these settings' business."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {key: value for key, value in self._inner().items() if key in fields}


class YamlFile(YamlConfigSettingsSource):
    """The YAML settings file, with its paths taken relative to the file's directory."""

    _PATHS = ("catalog", "data_dir")
    _EMBEDDING_PATHS = ("adapter", "cache_dir")

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        """The file as pydantic-settings reads it (UTF-8), refusing a key given twice."""
        with file_path.open(encoding=self.yaml_file_encoding or "utf-8") as stream:
            data = load_yaml(stream) or {}
        if not isinstance(data, dict):
            kind = "one text" if isinstance(data, str) else type(data).__name__
            raise ValueError(
                f"the file must be a mapping of settings ('key: value' lines), got {kind}"
            )
        return data

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        yaml_file = self.settings_cls.model_config.get("yaml_file")
        if not isinstance(yaml_file, str | Path):
            return data
        base = Path(yaml_file).parent
        sections = ((data, self._PATHS), (data.get("embedding"), self._EMBEDDING_PATHS))
        for section, keys in sections:
            for key in keys if isinstance(section, dict) else ():
                assert isinstance(section, dict)
                if isinstance(value := section.get(key), str) and value:
                    section[key] = _relative_to(base, value)
        return data


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
