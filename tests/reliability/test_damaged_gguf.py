"""Damaged and hostile GGUF metadata: each bad file is one clear error (or one row of a listing that says what is
wrong), never a traceback, a crash of the whole listing, or a llama.cpp abort. Every file is written here, with
gguf's own writer."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from helpers.gguf_files import write_gguf

Write = Callable[[Any], None]

CASES: dict[str, tuple[Write, str]] = {
    "nan-context": (lambda w: w.add_float32("llama.context_length", math.nan),
                    "llama.context_length should be a whole number, got nan"),
    "infinite-heads": (lambda w: w.add_float32("llama.attention.head_count", math.inf),
                       "llama.attention.head_count should be a whole number, got inf"),
    "text-layers": (lambda w: w.add_string("llama.block_count", "thirty"),
                    "llama.block_count should be a whole number, got 'thirty'"),
    "context-over-int32": (lambda w: w.add_uint32("llama.context_length", 1 << 31),
                           "llama.context_length = 2147483648 is out of range (0 to 2147483647: llama.cpp reads it "
                           "as a 32-bit signed integer)"),
    "no-layers": (lambda w: w.add_block_count(0), "llama.block_count = 0 is out of range (1 to 512)"),
    "too-many-layers": (lambda w: w.add_block_count(100_000),
                        "llama.block_count = 100000 is out of range (1 to 512)"),
    "odd-alignment": (lambda w: w.add_uint32("general.alignment", 3),
                      "general.alignment should be a power of two, got '3'"),
    "text-alignment": (lambda w: w.add_string("general.alignment", "wide"),
                       "general.alignment should be a power of two, got 'wide'"),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    for name, (tweak, _) in CASES.items():
        write_gguf(folder / f"{name}.gguf", tweak)
    return folder


@pytest.mark.parametrize("case", CASES)
def test_show_and_run_say_what_is_wrong_in_one_line(damaged: Path, home: Path, case: str) -> None:
    path = damaged / f"{case}.gguf"
    for args in (("show", str(path)), ("run", "-m", str(path), "Hello")):
        done = run_cli(*args, home=home)
        assert done.returncode == 1, (args, done.stderr_text)
        lines = done.stderr_text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr_text
        assert CASES[case][1] in lines[0] and "hint: " in lines[0]
        assert not done.stdout_text


def test_one_damaged_file_is_one_row_of_the_listing(damaged: Path, home: Path) -> None:
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(f'model_dirs = ["{damaged}"]\n')
    listed = run_cli("list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr_text
    rows = {row["name"]: row for row in json.loads(listed.stdout_text)}
    assert rows["smollm2-135m"]["problem"] is None and rows["smollm2-135m"]["context_length"] == 8192
    for case, (_, fragment) in CASES.items():
        assert fragment in rows[case]["problem"], rows[case]
    table = run_cli("list", home=home)
    assert table.returncode == 0 and "smollm2-135m" in table.stdout_text
    assert "got nan" in table.stdout_text


def test_escape_sequences_in_metadata_reach_the_terminal_inert(tmp_path: Path, home: Path) -> None:
    path = write_gguf(tmp_path / "escapes.gguf", name="\x1b]0;owned\x07title\x1b[2J [/bold] [red]x")
    done = run_cli("show", str(path), home=home)
    assert done.returncode == 0, done.stderr_text
    assert "\x1b" not in done.stdout_text and "\x07" not in done.stdout_text
    assert "[/bold] [red]x" in done.stdout_text  # Rich markup in a name is shown as typed, not parsed
