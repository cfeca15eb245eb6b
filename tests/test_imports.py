"""Every server module imports, and no app reaches into another app's private names.

What one app shares with another is public (no leading underscore) and lives where it belongs;
a private name is free to change without a look outside its own app.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
APPS = ("accounts", "batching", "notifications", "uploads", "poolhub")


def app_modules() -> list[tuple[str, Path]]:
    modules = []
    for app in APPS:
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            parts = path.relative_to(BASE_DIR).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.append((name, path))
    return modules


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def app_of(module: str) -> str:
    return module.split(".")[0]


def private_uses(module: str, path: Path) -> list[str]:
    """`from other_app... import _name`, and `other_app_module._name` through an imported module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    home = app_of(module)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if app_of(node.module) not in APPS or app_of(node.module) == home:
                continue
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"{module}: from {node.module} import {alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if app_of(alias.name) in APPS and app_of(alias.name) != home:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            base = node.value
            dotted: list[str] = []
            while isinstance(base, ast.Attribute):
                dotted.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{module}: {'.'.join([base.id, *dotted, node.attr])}")
    return found


MODULES = app_modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_module_imports_without_reaching_into_another_app(module: str, path: Path) -> None:
    importlib.import_module(module)
    assert private_uses(module, path) == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The scan itself works: a planted cross-app private import is reported, a same-app one is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from uploads.staging import _policy_verdict\nimport batching.services\nbatching.services._x()\n")
    assert len(private_uses("notifications.probe", probe)) == 2
    assert private_uses("uploads.probe", probe) == ["uploads.probe: batching.services._x"]


def test_every_task_is_named_like_the_function_and_service_it_runs() -> None:
    """One rule for Celery task names: `name=` is the task function's name (the service it calls)."""
    from celery_app import app

    for module, _ in MODULES:
        if module.endswith(".tasks"):
            importlib.import_module(module)
    ours = {name: task for name, task in app.tasks.items() if task.__module__.split(".")[0] in APPS}
    assert len(ours) >= 10
    assert sorted(name for name, task in ours.items() if name != task.run.__name__) == []
