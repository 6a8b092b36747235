"""Odd inputs that used to end in "unexpected ...": impossible model paths, an empty stop string, a chat line that
is not UTF-8, a CSV field over the csv module's 128 KiB limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli


def test_impossible_model_paths_are_one_clear_error(tmp_path: Path, home: Path) -> None:
    loop = tmp_path / "loop.gguf"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.gguf"
    dangling.symlink_to(tmp_path / "never-there.gguf")
    for name, fragment in ((("x" * 10_000) + ".gguf", "cannot use xxx"), ("~no-such-user-here/m.gguf", "home folder"),
                           (str(loop), "symbolic links"), (str(dangling), "a link to a file that does not exist")):
        done = run_cli("run", "-m", name, "Hello", home=home)
        assert done.returncode == 1, done.stderr_text
        lines = done.stderr_text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
        assert len(lines[0]) < 400  # a 10,000-character name is cut short


def test_an_empty_stop_string_is_refused(home: Path) -> None:
    done = run_cli("run", "-o", "stop=", "Hello", home=home)
    assert done.returncode == 2 and "empty stop string" in done.stderr_text


@pytest.mark.model
def test_a_chat_line_that_is_not_utf8_does_not_end_the_chat(shared_home: Path) -> None:
    done = run_cli("chat", "--preset", "precise", "-o", "max_tokens=4", home=shared_home,
                   stdin=b"Hello \xff\xfe there\nName a colour.\n/exit\n")
    assert done.returncode == 0, done.stderr_text
    assert "not valid UTF-8" in done.stderr_text
    assert len([line for line in done.stdout_text.splitlines() if line.strip()]) >= 2


@pytest.mark.model
def test_a_csv_field_over_128_kib_is_one_failed_row(shared_home: Path, tmp_path: Path) -> None:
    rows = tmp_path / "tickets.csv"
    rows.write_text('id,text\n1,"The app crashes on start."\n2,"' + "word " * 40_000 + '"\n')
    done = run_cli("classify", str(rows), "--labels", "bug,feature", "--field", "text", "--preset", "precise",
                   home=shared_home)
    assert "unexpected" not in done.stderr_text and "Traceback" not in done.stderr_text
    out = [json.loads(line) for line in done.stdout_text.splitlines() if line.strip()]
    assert [row["id"] for row in out] == ["1", "2"]
    assert out[0].get("label") in ("bug", "feature") and "error" in out[1]
    assert done.returncode == 1
