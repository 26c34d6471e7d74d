"""The package as users import it: names a type checker sees, lazy names, exported errors."""

from __future__ import annotations

from pathlib import Path

import gatekeeper

PACKAGE_INIT = Path(gatekeeper.__file__).resolve()


def _mypy(tmp_path: Path, code: str) -> str:
    """mypy --strict's report on ``code`` importing this checkout's gatekeeper/__init__.py (its
    submodules are not followed: what the package itself declares is under test, in a second)."""
    from mypy import api

    probe = tmp_path / "probe.py"
    probe.write_text(code, encoding="utf-8")
    out, err, _ = api.run(
        [
            "--strict",
            "--config-file=",
            "--follow-imports=skip",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(probe),
            str(PACKAGE_INIT),
        ]
    )
    return out + err


def test_a_misspelled_import_is_a_type_error(tmp_path: Path) -> None:
    """mypy rejects a name gatekeeper does not have (the module's lazy __getattr__ made every
    unknown name an Any), and accepts the real and the lazy ones."""
    report = _mypy(tmp_path, "from gatekeeper import Gatekeper\n")
    assert 'Module "gatekeeper" has no attribute "Gatekeper"' in report, report
    report = _mypy(tmp_path, "from gatekeeper import Gatekeeper, create_app\n")
    assert "Success" in report, report
