"""The library stands alone: no module under src/gazette imports `worker`, and importing
any module of gazette or worker writes nothing and, without a broker, loads no Celery.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "gazette"

# Imports every module of both packages, then reports what it loaded. Skipped: the
# `python -m` entry (running it is its point) and alembic's scripts, which alembic
# executes inside a migration context rather than imports.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import gazette, worker
names = []
for package in (gazette, worker):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith("__main__") or module.name.startswith("gazette.migrations."):
            continue
        importlib.import_module(module.name)
        names.append(module.name)
print(json.dumps(names))
"""

# The web endpoint and the CLI on an installation with no broker: no Celery, no kombu.
NO_BROKER = """
import json, sys
from gazette.config import load_settings
from gazette.runtime import build_runtime
from gazette.web import create_app
import gazette.cli
create_app(build_runtime(load_settings()))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("celery", "kombu"))))
"""


def _run(script: str, cwd: Path, home: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**clean, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _written(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


def test_importing_every_module_writes_nothing(tmp_path: Path) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()

    names = json.loads(_run(IMPORT_ALL, cwd, home))

    assert {"gazette.runtime", "gazette.web.app", "gazette.cli.serve", "worker.app"} <= set(names)
    assert {"worker.tasks", "worker.dispatch", "worker.cli"} <= set(names)
    assert _written(cwd, home) == []


def test_the_web_app_and_cli_without_a_broker_load_no_celery(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    database = f"sqlite:///{tmp_path / 'gazette.db'}"
    output = _run(
        NO_BROKER, tmp_path, home, GAZETTE_DATABASE_URL=database, GAZETTE_SECRET_KEYS="k" * 32
    )
    loaded = json.loads(output)
    assert loaded == []


def _imported_modules(tree: ast.AST) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, and import_module("...")."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(str(node.args[0].value))
    return found


def test_no_library_module_imports_worker() -> None:
    offenders = []
    modules = sorted(LIBRARY.rglob("*.py"))
    assert len(modules) > 30
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported_modules(tree):
            if name == "worker" or name.startswith("worker."):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_the_scan_sees_every_kind_of_import() -> None:
    # The scan above passes only if it can fail: each spelling here must be caught.
    source = (
        "import worker\nfrom worker.tasks import x\n"
        "def f():\n    from worker import app\n    importlib.import_module('worker.cli')\n"
    )
    assert _imported_modules(ast.parse(source)) == [
        "worker",
        "worker.tasks",
        "worker",
        "worker.cli",
    ]
