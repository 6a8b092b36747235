"""Each CLI module registers its own commands with a handler, and imports at module level only what `localllm --help`
can afford: argparse and the rest of the standard library, localllm.core and the other CLI modules."""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from pathlib import Path

import pytest

from localllm.cli.evaluate import eval_command
from localllm.cli.main import build_parser
from localllm.cli.tasks import code_command

CLI = Path(__file__).resolve().parent.parent / "localllm" / "cli"
ALLOWED_LOCALLLM = {"core", "cli", "__version__"}


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommands(sub, (*path, name))


def test_every_command_has_a_handler():
    parser = build_parser()
    top = [(path, sub) for path, sub in subcommands(parser) if len(path) == 1]
    assert len(top) > 30
    missing = [path for path, sub in top if not callable(sub.get_default("handler"))]
    assert missing == []
    for path, sub in top:
        assert list(inspect.signature(sub.get_default("handler")).parameters) == ["args", "settings"], path


def test_a_nested_command_gets_its_parents_handler():
    parser = build_parser()
    nested = [path for path, _ in subcommands(parser) if len(path) > 1]
    assert ("code", "gen") in nested
    for path in nested:
        argv = [*path, "a description" if path[-1] == "gen" else "x.py"] + (["--to", "go"] if "convert" in path else [])
        expected = eval_command if path[0] == "eval" else code_command
        assert parser.parse_args(argv).handler is expected


def _runs_at_import(body: list[ast.stmt]):
    """The statements of ``body`` that run when the module is imported: not function bodies, not the blocks only a
    type checker reads."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from _runs_at_import(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _runs_at_import([child])
            elif isinstance(child, ast.ExceptHandler):
                yield from _runs_at_import(child.body)


def module_level_imports_not_allowed(folder: Path = CLI) -> list[str]:
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in _runs_at_import(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = ([f"{node.module}.{alias.name}" for alias in node.names] if node.module == "localllm"
                         else [node.module])
            else:
                continue
            for name in names:
                top, _, rest = name.partition(".")
                allowed = (top in sys.stdlib_module_names or top == "__future__" if top != "localllm"
                           else rest.partition(".")[0] in ALLOWED_LOCALLLM)
                if not allowed:
                    found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_cli_modules_import_only_the_light_layers_at_module_level():
    assert module_level_imports_not_allowed() == []


@pytest.mark.parametrize("source, expected", [
    ("from localllm.tasks.chat import ChatSession\n", "bad.py:1: localllm.tasks.chat"),
    ("from localllm import store\n", "bad.py:1: localllm.store"),
    ("import rich\n", "bad.py:1: rich"),
    ("try:\n    import textual\nexcept ImportError:\n    pass\n", "bad.py:2: textual"),
])
def test_the_scan_sees_a_heavy_import(tmp_path, source, expected):
    (tmp_path / "bad.py").write_text(source)
    assert module_level_imports_not_allowed(tmp_path) == [expected]


def test_the_scan_lets_function_and_type_checking_imports_be(tmp_path):
    (tmp_path / "fine.py").write_text(
        "import argparse\nfrom typing import TYPE_CHECKING\nfrom localllm import __version__\n"
        "from localllm.core.settings import Settings\nfrom localllm.cli.output import note\n"
        "if TYPE_CHECKING:\n    from localllm.tasks.loading import LoadedModel\n"
        "def handler(args, settings):\n    from localllm.tasks import reports\n")
    assert module_level_imports_not_allowed(tmp_path) == []
