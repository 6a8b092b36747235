"""Pipes into the row tasks: stdin is read when no file is given, rows are recognised by their content when the
name says nothing, and --field on input without rows is an error that says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = pytest.mark.model
TICKETS = (
    '{"id": 1, "text": "The app crashes when I upload a photo."}\n'
    '{"id": 2, "text": "Please add an export to PDF."}\n'
)
LABELS = ("--labels", "bug,feature,question", "--preset", "precise")


def rows_out(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_jsonl_piped_in_is_classified_row_by_row(shared_home: Path) -> None:
    done = run_cli("classify", *LABELS, "--field", "text", home=shared_home, stdin=TICKETS)
    assert done.returncode == 0, done.stderr_text
    rows = rows_out(done.stdout_text)
    assert [row["id"] for row in rows] == [1, 2]
    assert all(row["label"] in ("bug", "feature", "question") for row in rows)


def test_rows_are_recognised_by_content_not_by_name(shared_home: Path, tmp_path: Path) -> None:
    named_txt = tmp_path / "tickets.txt"
    named_txt.write_text(TICKETS)
    done = run_cli("sentiment", str(named_txt), "--field", "text", "--preset", "precise", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert [row["id"] for row in rows_out(done.stdout_text)] == [1, 2]
    csv_text = 'id,text\n1,"I love this app, it is great."\n'
    done = run_cli("sentiment", "-", "--field", "text", "--preset", "precise", home=shared_home, stdin=csv_text)
    assert done.returncode == 0, done.stderr_text
    (row,) = rows_out(done.stdout_text)
    assert row["id"] == "1" and "sentiment" in json.dumps(row)


def test_field_on_input_without_rows_says_so(shared_home: Path) -> None:
    done = run_cli("classify", *LABELS, "--field", "text", home=shared_home, stdin="Just one plain sentence.\n")
    assert done.returncode == 2
    assert done.stderr_text.startswith("error: --field text: stdin holds no rows")
    assert "drop --field" in done.stderr_text and "Traceback" not in done.stderr_text


def test_plain_text_piped_in_is_one_text(shared_home: Path) -> None:
    done = run_cli("classify", *LABELS, home=shared_home, stdin="The app crashes on start.\n")
    assert done.returncode == 0, done.stderr_text
    assert json.loads(done.stdout_text) in ("bug", "feature", "question")


def test_a_deeply_nested_line_is_one_failed_row(shared_home: Path) -> None:
    nested = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    done = run_cli("classify", *LABELS, "--field", "text", home=shared_home, stdin=TICKETS.splitlines()[0] + "\n"
                   + nested)
    assert done.returncode == 1  # one row failed; the other was done
    assert "Traceback" not in done.stderr_text and "unexpected" not in done.stderr_text
    rows = rows_out(done.stdout_text)
    assert rows[0]["id"] == 1 and "label" in rows[0]
    assert "nested too deeply" in json.dumps(rows[1]) or "not JSON" in json.dumps(rows[1])
