"""The part boundaries of ARCHITECTURE.md, checked on every import of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("core", "online_models", "index", "offline", "infra", "consumers", "api", "cli")

#: part -> the project parts it may import (itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "online_models": {"core"},
    "index": {"core"},
    "offline": {"core", "online_models", "index"},
    "infra": {"core", "online_models", "index", "offline"},
    # consumers and api get from infra what bootstrap built; they never import each other.
    "consumers": {"core", "infra", "online_models"},
    "api": {"core", "infra", "online_models"},
    "cli": set(PARTS),
}

#: Modules whose importing means I/O or clients; core must not touch them.
IO_MODULES = {"redis", "aiokafka", "faststream", "sqlalchemy", "psycopg", "flask", "requests",
              "socket", "subprocess", "faiss"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(part, p) for part in PARTS for p in sorted((ROOT / part).rglob("*.py"))]


@pytest.mark.parametrize(("part", "path"), _modules(), ids=lambda v: str(v)[-60:])
def test_each_module_imports_only_the_parts_its_part_may_use(part: str, path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    allowed = ALLOWED[part] | {part}
    used = _imports(path) & set(PARTS)
    assert used <= allowed, f"{rel} imports {sorted(used - allowed)}"


@pytest.mark.parametrize("path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_does_no_io(path: Path) -> None:
    assert not (_imports(path) & IO_MODULES), f"core/{path.name} imports an I/O library"


def test_consumers_and_api_never_import_each_other() -> None:
    for part, other in (("consumers", "api"), ("api", "consumers")):
        for path in (ROOT / part).rglob("*.py"):
            assert other not in _imports(path), f"{path} imports {other}"
