"""segment and recommend on the real bundled model: every item named exists in the input, every row is counted once,
and inputs larger than one window go through batches and a merge."""

import csv
import json
from pathlib import Path

from conftest import run_cli

DATA = Path(__file__).parent / "data"


def test_segments_cover_each_row_once(shared_home):
    done = run_cli("segment", str(DATA / "customers.csv"), "--field", "notes", "--segments", "3", "--json",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    rows = sorted(row for segment in data["segments"] for row in segment["rows"])
    assert rows == list(range(1, 9)) and data["rows_analysed"] == 8
    named = [s for s in data["segments"] if s["name"] != "unassigned"]
    assert 1 <= len(named) <= 3 and all(s["description"] and s["count"] == len(s["rows"]) for s in named)


def test_many_customers_go_through_batches_and_a_merge(shared_home, tmp_path):
    source = tmp_path / "many.csv"
    with source.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "notes"])
        base = [r["notes"] for r in csv.DictReader((DATA / "customers.csv").open())]
        for number in range(1, 49):
            writer.writerow([number, base[number % len(base)] + f" Customer since {2000 + number % 20}."])
    done = run_cli("segment", str(source), "--field", "notes", "--segments", "3", "--json", "-o", "ctx=1024",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert "batch 2 of" in done.stderr_text
    assert sorted(row for s in data["segments"] for row in s["rows"]) == list(range(1, 49))
    assert len([s for s in data["segments"] if s["name"] != "unassigned"]) <= 3 or "kept as found" in \
        done.stderr_text


def test_recommendations_name_only_catalogue_items(shared_home):
    done = run_cli("recommend", "--catalog", str(DATA / "products.csv"), "--profile",
                   "likes hiking, budget under 100", "--top", "3", "--json", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    names = {r["name"] for r in csv.DictReader((DATA / "products.csv").open())}
    assert 1 <= len(data["picks"]) <= 3
    assert all(p["item"]["name"] in names and p["reason"] for p in data["picks"])
    assert len({p["row"] for p in data["picks"]}) == len(data["picks"])


def test_recommend_needs_a_profile_and_rows(shared_home):
    done = run_cli("recommend", "--catalog", str(DATA / "invoice.txt"), "--profile", "x", home=shared_home)
    assert done.returncode == 2 and "not a CSV or JSONL file" in done.stderr_text
    empty = run_cli("recommend", "--catalog", str(DATA / "products.csv"), "--profile", " ", home=shared_home)
    assert empty.returncode == 2 and "--profile is empty" in empty.stderr_text
