"""Settings: every one of them is read somewhere (a setting nothing reads misleads users)."""

from __future__ import annotations

import ast
from pathlib import Path

from core.settings import Settings
from tests.test_architecture import PARTS, ROOT

#: Names the code gives a Settings object besides ``*settings*`` (a copy with live services).
SETTINGS_ALIASES = {"live", "run"}


def _is_settings(node: ast.expr) -> bool:
    """Whether an expression names a Settings object (``settings``, ``svc.settings``, ...)."""
    if isinstance(node, ast.Call):
        node = node.func
    name = (node.id if isinstance(node, ast.Name)
            else node.attr if isinstance(node, ast.Attribute) else "")
    return "settings" in name.lower() or name in SETTINGS_ALIASES


def _settings_read(path: Path) -> set[str]:
    """Names read off Settings objects in a module: ``settings.x``, ``getattr(settings, "x")``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and _is_settings(node.value):
            names.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "getattr" and len(node.args) >= 2 and _is_settings(node.args[0])
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            names.add(node.args[1].value)
    return names


def test_every_setting_is_read_outside_the_settings_module() -> None:
    settings_module = ROOT / "core" / "settings.py"
    read: set[str] = set()
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            if path != settings_module:
                read |= _settings_read(path)
    unread = sorted(set(Settings.model_fields) - read)
    assert unread == [], f"settings nothing reads: {unread}"
