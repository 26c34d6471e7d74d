"""The package as users import it: names a type checker sees, lazy names, exported errors."""

from __future__ import annotations

import subprocess
import sys
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


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (its own sys.modules), stdout and stderr captured."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_star_import_works_without_the_server_extra() -> None:
    """`from gatekeeper import *` without FastAPI imports the library (it failed with
    ModuleNotFoundError: fastapi), and naming create_app says which extra to install."""
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from gatekeeper import *\n"
        "print(Gatekeeper.__name__, 'create_app' in dir())\n"
        "try:\n"
        "    from gatekeeper import create_app\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Gatekeeper False"
    assert lines[1].startswith("ImportError gatekeeper.create_app needs fastapi")
    assert "pip install 'gatekeeper[server]'" in lines[1]


def test_star_import_loads_no_web_framework_or_langchain() -> None:
    """`from gatekeeper import *` stays as cheap as `import gatekeeper`: the lazy names are
    imported when named, not by a star import."""
    heavy = ("fastapi", "langchain_core")
    done = _run(
        f"import sys\nfrom gatekeeper import *\nprint([m for m in {heavy!r} if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_lazy_names_are_listed_and_resolve() -> None:
    """dir(gatekeeper) lists the lazy names (completion in a REPL), which resolve by name."""
    assert {"create_app", "GatekeeperRunnable", "ReplyText"} <= set(dir(gatekeeper))
    from gatekeeper import GatekeeperRunnable, create_app

    assert callable(create_app) and GatekeeperRunnable.__name__ == "GatekeeperRunnable"


def _error_classes() -> list[type[Exception]]:
    """Every class of gatekeeper.errors that derives from GatekeeperError, the base included."""
    import inspect

    from gatekeeper import errors

    return [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.GatekeeperError)
    ]


def test_every_error_class_is_exported_and_in_the_readme_table() -> None:
    """Each error class is importable from gatekeeper (UncalibratedError was not) and each
    derived one is named in README.md's error table (BackendError, IndexMissingError and
    StoreUnavailableError were not)."""
    import re

    readme = (PACKAGE_INIT.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Errors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    tabled = {name for row in rows for name in re.findall(r"`(\w+Error)`", row.split("|")[1])}
    classes = _error_classes()
    assert len(classes) >= 17
    for cls in classes:
        assert cls.__name__ in gatekeeper.__all__ and getattr(gatekeeper, cls.__name__) is cls
        assert cls is gatekeeper.GatekeeperError or cls.__name__ in tabled, cls.__name__
