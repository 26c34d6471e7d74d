"""The house's shape: the import graph, the direction of imports, module sizes, the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import gatekeeper

PACKAGE = Path(gatekeeper.__file__).resolve().parent
#: Layers the core must never import: the interfaces, the eval harness, the CLI.
OUTER = ("gatekeeper.interfaces", "gatekeeper.eval", "gatekeeper.cli", "gatekeeper.testing")
MAX_LINES = 520


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every gatekeeper module and the gatekeeper modules it imports (anywhere in its code)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for imported in names:
                while imported and imported not in modules:
                    imported = imported.rpartition(".")[0]
                if imported.startswith("gatekeeper") and imported != name:
                    targets.add(imported)
        graph[name] = targets
    return graph


def _is_core(module: str) -> bool:
    return not module.startswith(OUTER) and module not in {"gatekeeper", "gatekeeper.__main__"}


def test_core_never_imports_an_outer_layer() -> None:
    """No core module (top level, embedding/) imports interfaces, eval, cli or testing."""
    graph = _graph()
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if _is_core(module)
        for target in targets
        if target.startswith(OUTER) or target == "gatekeeper"
    }
    assert not wrong, f"core modules importing outer layers: {sorted(wrong)}"


def test_the_direction_check_would_catch_a_violation() -> None:
    """The check above sees a core module importing an interface (so it can fail)."""
    graph = _graph()
    graph["gatekeeper.gate"] = graph["gatekeeper.gate"] | {"gatekeeper.interfaces.wrapper"}
    assert any(_is_core(m) and any(t.startswith(OUTER) for t in ts) for m, ts in graph.items())


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, ignoring a package's edges to
    its own submodules (re-exports in ``__init__``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def edges(module: str) -> set[str]:
        return {t for t in graph[module] if not t.startswith(module + ".")}

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    """The package's import graph has no cycle."""
    assert _cycles(_graph()) == []


def test_the_cycle_check_would_catch_a_cycle() -> None:
    """Adding a back edge makes the cycle check fail (so it can fail)."""
    graph = _graph()
    graph["gatekeeper.types"] = graph["gatekeeper.types"] | {"gatekeeper.gate"}
    assert _cycles(graph)


def test_no_module_is_too_long() -> None:
    """One concept per module: none is much over 500 lines."""
    long = {
        _module(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long


def test_public_api_snapshot() -> None:
    """What users import from gatekeeper; changing it is a deliberate, visible decision."""
    assert sorted(gatekeeper.__all__) == [
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
    # imported on first use, by name only: `import *` would load FastAPI and LangChain
    assert sorted(gatekeeper._LAZY) == ["GatekeeperRunnable", "ReplyText", "create_app"]


def test_every_public_name_resolves() -> None:
    """Each name in __all__ is importable from gatekeeper, and so is each lazy one."""
    for name in [*gatekeeper.__all__, *gatekeeper._LAZY]:
        assert getattr(gatekeeper, name) is not None


def test_importing_gatekeeper_loads_nothing_heavy() -> None:
    """import gatekeeper loads no model library, Chroma, web framework or LangChain."""
    import subprocess
    import sys

    heavy = ("torch", "chromadb", "fastapi", "langchain_core", "FlagEmbedding", "transformers")
    code = f"import sys, gatekeeper; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
