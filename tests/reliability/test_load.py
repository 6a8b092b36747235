"""Load: a conversation of 10,000 messages opens in the app with its latest messages shown and the rest said, and
the next answer still comes (the window is filled from the newest end, not by counting the whole history); a 1 MB
document is planned by `summarize --plan`, and 1,000 rows go through `classify`, each in bounded memory (the peak
of the large run against a small one). The 1,000-row run with every row answered by the model takes minutes here:
benchmarks/load.py measures it."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import cli_executable, settings_for
from helpers.tui_helpers import ask, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import SHOWN_MESSAGES, ChatPane

pytestmark = pytest.mark.model


def peak_mib(command: list[str], home: Path, stdin: bytes = b"", exit_code: int = 0) -> float:
    """The child's peak resident memory, in MiB."""
    env = {**os.environ, "LOCALLLM_HOME": str(home)}
    with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stderr is not None
        process.stdin.write(stdin)
        process.stdin.close()
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == exit_code, errors.decode()
    return usage.ru_maxrss / 1024


def test_a_conversation_of_10000_messages_opens_and_goes_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ctx=1024)  # the window is filled: a small one is read quickly here
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    big = store.create("ten thousand")
    store.close()
    with sqlite3.connect(settings.paths.data_dir / "conversations.db") as db:
        db.executemany("INSERT INTO messages (conversation_id, role, content, created) VALUES (?, ?, ?, ?)",
                       [(big.id, "user" if n % 2 == 0 else "assistant",
                         f"question {n // 2}: what is {n} plus {n}?" if n % 2 == 0 else f"It is **{2 * n}**.",
                         "2026-01-01T00:00:00") for n in range(10_000)])

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=4))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            pane.sidebar.post_message(pane.sidebar.Opened(big.id))
            await wait_until(pilot, lambda: len(pane.session.history) == 10_000 and "left out" in str(
                pane.query_one("#status").render()))
            assert len(pane.query_one("#log").children) == SHOWN_MESSAGES + 1
            marker = str(pane.query_one("#log").children[0].render())
            status = str(pane.query_one("#status").render())
            turns = await ask(pilot, pane, "And what is 2 plus 2?")
            try:
                await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            except AssertionError:
                raise AssertionError(f"no answer; the app said {notes}") from None
            return marker, status, pane.session.dropped

    marker, status, dropped = run(session())
    assert f"{10_000 - SHOWN_MESSAGES:,} earlier messages are not shown here" in marker
    assert "earlier message(s) left out to fit the window" in status
    assert dropped > 9_000


def write_document(path: Path, size: int) -> None:
    words = "the of and to in is that for it as was with be by on not this are or from at which but have".split()
    chosen, parts, total = random.Random(1), [], 0
    while total < size:
        parts.append(" ".join(chosen.choice(words) for _ in range(12)).capitalize() + ". ")
        parts[-1] += "\n\n" if len(parts) % 8 == 0 else ""
        total += len(parts[-1])
    path.write_text("".join(parts))


def test_a_1_mb_document_is_planned_in_bounded_memory(tmp_path: Path, shared_home: Path) -> None:
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_document(small, 10_000)
    write_document(large, 1_000_000)
    base = peak_mib([cli_executable(), "summarize", "--plan", str(small)], shared_home)
    peak = peak_mib([cli_executable(), "summarize", "--plan", str(large)], shared_home)
    assert peak <= base + 2 * 1 + 64, f"{peak:.0f} MiB for 1 MB against {base:.0f} MiB for 10 KB"


def rows(count: int, answered: int) -> bytes:
    """``count`` rows, of which the first ``answered`` have the text field: the others are per-row errors."""
    lines = [json.dumps({"text": f"ticket {n}: the app crashes when I save"} if n < answered else {"id": n})
             for n in range(count)]
    return ("\n".join(lines) + "\n").encode()


def test_1000_rows_stream_through_classify_in_bounded_memory(shared_home: Path) -> None:
    command = [cli_executable(), "classify", "--labels", "bug,feature,question", "--field", "text"]
    base = peak_mib(command, shared_home, rows(100, 10), exit_code=1)  # 1: some rows failed, as they should
    peak = peak_mib(command, shared_home, rows(1000, 10), exit_code=1)
    assert peak <= base + 32, f"{peak:.0f} MiB for 1,000 rows against {base:.0f} MiB for 100"
    env = {**os.environ, "LOCALLLM_HOME": str(shared_home)}
    done = subprocess.run(command, env=env, input=rows(1000, 10), capture_output=True, timeout=300)
    out = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [record["row"] for record in out] == list(range(1, 1001))
    assert all(record.get("label") in ("bug", "feature", "question") for record in out[:10])
    assert all("error" in record for record in out[10:])
