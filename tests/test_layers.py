"""The package's layers, checked on its source: imports only point down, modules stay small.

Layers, bottom to top (docs/architecture.md): errors, catalog, settings -> capability ->
families -> the engine protocol -> the embedded engine's decoding -> the engines -> the engine registry
-> protocol -> service -> gateway, generate -> surfaces -> app -> cli. A module may import
its own layer or a lower one; it may import the one above it only where the table says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mcp_server"

LAYERS: list[tuple[str, int]] = [  # longest prefix wins
    ("mcp_server", 0),  # the package root: __version__ only
    ("mcp_server.errors", 0),
    ("mcp_server.catalog", 0),
    ("mcp_server.settings", 0),
    ("mcp_server.capability", 1),
    ("mcp_server.deployment", 1),
    ("mcp_server.families", 1),  # the model-family table and its parsers: pure text, no engine
    ("mcp_server.engines.base", 2),
    ("mcp_server.engines.embedded.decoding", 3),
    ("mcp_server.engines.embedded", 4),
    ("mcp_server.engines.sglang", 4),
    ("mcp_server.engines", 5),
    ("mcp_server.protocol", 6),
    ("mcp_server.service", 7),
    ("mcp_server.gateway", 8),
    ("mcp_server.generate", 8),
    ("mcp_server.surfaces", 9),
    ("mcp_server.app", 10),
    ("mcp_server.cli", 11),
    ("mcp_server.workers", 11),  # --workers: the processes cli starts
    ("mcp_server.__main__", 12),
]
SIBLINGS_APART = [("mcp_server.engines.embedded", "mcp_server.engines.sglang")]
MAX_LINES = 400


def layer_of(module: str) -> tuple[str, int]:
    matches = [(prefix, rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=lambda match: len(match[0]))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[str]:
    """Every mcp_server module ``path`` imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
    return [m for m in found if m == "mcp_server" or m.startswith("mcp_server.")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_imports_point_down(path: Path):
    name = module_name(path)
    own_prefix, own = layer_of(name)
    for target in imports(path):
        target_prefix, rank = layer_of(target)
        assert rank <= own, f"{name} (layer {own_prefix}) imports {target} from the higher layer {target_prefix}"
        for a, b in SIBLINGS_APART:
            pair = {own_prefix, target_prefix}
            assert pair != {a, b}, f"{name} imports its sibling {target}"


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_modules_stay_small(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines; split it by job"


def test_the_layer_table_covers_every_module():
    assert all(layer_of(module_name(p))[0] != "mcp_server" or module_name(p) == "mcp_server" for p in SOURCES)
