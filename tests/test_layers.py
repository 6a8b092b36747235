"""The layer rule of docs/design.md, held by a scan of the source: cli, tui and server on top; then tasks; then
backends, store and hardware; core at the bottom. A module may import from its own layer and the layers below, never
from one above (an import inside a function counts as much as one at the top)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "localllm"
LAYERS = {"cli": 3, "tui": 3, "server": 3, "tasks": 2, "backends": 1, "store": 1, "hardware": 1, "core": 0}


def imports_pointing_up() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in LAYERS:
            continue
        here = parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                there = name.split(".")[1] if name.startswith("localllm.") and name.count(".") else None
                if there in LAYERS and LAYERS[there] > LAYERS[here]:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {here} imports {name}")
                    break
    return found


def test_no_import_points_up_a_layer():
    assert imports_pointing_up() == []


def test_the_scan_sees_an_import_that_points_up(tmp_path, monkeypatch):
    """The check can fail: a core module that imports from tasks inside a function is found."""
    package = tmp_path / "localllm"
    (package / "core").mkdir(parents=True)
    (package / "core" / "bad.py").write_text("def f():\n    from localllm.tasks.chat import ChatSession\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    assert imports_pointing_up() == ["localllm/core/bad.py:2: core imports localllm.tasks.chat"]
