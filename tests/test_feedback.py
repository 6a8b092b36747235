"""feedback on the real bundled model: every analysed row is counted exactly once, quotes are real rows."""

import json
from pathlib import Path

from conftest import run_cli

DATA = Path(__file__).parent / "data"


def test_counts_add_up_and_quotes_are_real_rows(shared_home):
    done = run_cli("feedback", str(DATA / "tickets.jsonl"), "--field", "text", "--top", "3", "--json",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert data["rows_analysed"] == 20
    assert sum(theme["count"] for theme in data["themes"]) == 20
    every_row = sorted(row for theme in data["themes"] for row in theme["rows"])
    assert every_row == list(range(1, 21))  # each row in exactly one theme
    texts = {json.loads(line)["text"] for line in (DATA / "tickets.jsonl").read_text().splitlines()}
    for theme in data["themes"]:
        assert theme["count"] == len(theme["rows"]) and 1 <= len(theme["quotes"]) <= 2
        assert set(theme["quotes"]) <= texts
    assert len(data["top"]) <= 3 and data["calls"] >= 1


def test_markdown_output_and_bad_rows(shared_home, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("id,review\n1,The delivery was late again.\n2,\n3,Great support team, fast answers.\n"
                      "4,Delivery took three weeks.\n")
    done = run_cli("feedback", str(source), "--field", "review", "--top", "2", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert done.stdout_text.startswith("Top ") and "in 3 rows:" in done.stdout_text
    assert "row 2: row 2 has an empty 'review'" in done.stderr_text
    missing = run_cli("feedback", str(source), "--field", "text", home=shared_home)
    assert missing.returncode == 2 and "its columns: id, review" in missing.stderr_text
