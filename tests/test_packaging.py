"""Every third-party module the shipped packages import is declared in pyproject.toml."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
#: The packages pyproject ships (``[tool.setuptools.packages.find]``).
SHIPPED = ("core", "online_models", "index", "offline", "infra", "consumers", "api", "cli")


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def test_every_third_party_import_of_the_shipped_packages_is_a_declared_dependency() -> None:
    imported: set[str] = set()
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            imported |= _top_level_imports(path)
    third_party = imported - set(sys.stdlib_module_names) - set(SHIPPED)
    distributions = packages_distributions()
    declared = _declared()
    missing = {}
    for module in sorted(third_party):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        if names and not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
