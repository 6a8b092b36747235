"""docs/reliability.md is generated from tests/reliability: a test added there without the page rewritten fails
here, so the page cannot drift from what is tested."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "helpers" / "document.py"


def test_the_reliability_page_lists_every_reliability_test() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_check_notices_a_missing_case(tmp_path: Path) -> None:
    page = SCRIPT.parent.parent.parent / "docs" / "reliability.md"
    edited = tmp_path / "reliability.md"
    edited.write_text(page.read_text(encoding="utf-8").replace("| summarize refuses dev zero", "| (removed)"))
    done = subprocess.run([sys.executable, str(SCRIPT), "--check", "--page", str(edited)], capture_output=True,
                          text=True)
    assert done.returncode == 1 and "test_summarize_refuses_dev_zero" in done.stderr
