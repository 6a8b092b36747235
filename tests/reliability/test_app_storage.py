"""The app and its conversation database under faults: killed mid-answer (the prompt and the answer so far are in
the database, which passes its integrity check), a damaged database (left untouched, the chat still works, in
memory, and says so), a read-only data folder, and a database that stops taking writes mid-session."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from conftest import cli_executable, settings_for
from helpers.fake_http import read_only
from helpers.tui_helpers import ask, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore, StorageProblem
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane

pytestmark = pytest.mark.model
SHORT = preset("precise").with_overrides(max_tokens=8)


def stored(database: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return db.execute("SELECT role, content, stopped FROM messages ORDER BY id").fetchall()


def test_a_kill_mid_answer_keeps_the_prompt_and_the_answer_so_far(home: Path) -> None:
    """The real app in a real terminal (a pty), killed with SIGKILL while the answer streams."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "LOCALLLM_HOME": str(home), "TERM": "xterm-256color"}
    app = subprocess.Popen([cli_executable(), "tui"], stdin=slave, stdout=slave, stderr=slave, env=env,
                           start_new_session=True)
    os.close(slave)
    screen = bytearray()

    def read_screen() -> None:  # a terminal nobody reads from would block the app
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data)

    threading.Thread(target=read_screen, daemon=True).start()
    database = home / "data" / "conversations.db"
    prompt = "Write a long story about a dragon who learns to bake bread."
    try:
        deadline = time.monotonic() + 120
        while b"context 0/" not in screen and time.monotonic() < deadline:  # the status bar of a loaded model
            time.sleep(0.2)
        os.write(master, prompt.encode() + b"\r")
        while time.monotonic() < deadline:
            time.sleep(0.5)
            rows = stored(database) if database.exists() else []
            if len(rows) >= 2 and rows[1][1]:
                break
        else:
            pytest.fail(f"no answer was saved while streaming; the screen ended with {bytes(screen[-400:])!r}")
        os.killpg(app.pid, signal.SIGKILL)
        app.wait(timeout=10)
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        os.close(master)
    rows = stored(database)
    assert rows[0] == ("user", prompt, 0)
    assert rows[1][0] == "assistant" and rows[1][1].strip() and rows[1][2] == 1  # marked stopped: it never ended
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def chat_once(settings) -> tuple[list[tuple[str, str]], list[str]]:
    """One exchange in the app: what it notified, and the roles the store kept (in memory or on disk)."""

    async def session():
        app = LocalLLMApp(settings, SHORT)
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            turns = await ask(pilot, pane, "Hello")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            kept = [m.role for m in pane.store.messages(pane.conversation_id)]
        return notes, kept

    return run(session())


def test_a_damaged_database_is_left_alone_and_the_chat_goes_on_in_memory(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.paths.data_dir.mkdir(parents=True)
    database = settings.paths.data_dir / "conversations.db"
    database.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    before = database.read_bytes()
    notes, kept = chat_once(settings)
    assert kept == ["user", "assistant"]
    assert any("is damaged" in text and "kept in memory only" in text and ".recover" in text for _, text in notes)
    assert database.read_bytes() == before


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder nobody can write to: a read-only tmpfs for root (who ignores permissions), else mode 0555."""
    with read_only(tmp_path / "home" / "data") as folder:
        yield folder


def test_a_read_only_data_folder_says_so_and_the_chat_goes_on(read_only_folder: Path) -> None:
    notes, kept = chat_once(settings_for(read_only_folder.parent))
    assert kept == ["user", "assistant"]
    assert any("cannot be saved" in text and "permissions" in text for _, text in notes), notes


def test_a_database_that_stops_taking_writes_keeps_the_session_in_memory(tmp_path: Path) -> None:
    """What a disk filling up or a folder turned read-only does to SQLite mid-session: the next write fails. Here
    the file is made read-only under an open store (a full disk fails the same call with SQLITE_FULL)."""
    store = ConversationStore(tmp_path / "conversations.db")
    problems: list[StorageProblem] = []
    store.on_problem = problems.append
    first = store.create("kept")
    store.add_message(first.id, "user", "before")
    store.close()
    store = ConversationStore(tmp_path / "conversations.db")
    store.on_problem = problems.append
    store._db.execute("PRAGMA query_only = ON")  # every write now fails inside SQLite, as on a full disk
    second = store.create("in memory")
    store.add_message(second.id, "user", "after")
    assert len(problems) == 1 and "kept in memory only" in problems[0].message
    assert [c.title for c in store.list()] == ["in memory", "kept"]
    assert [m.content for m in store.messages(first.id)] == ["before"]
    store.close()
    reopened = ConversationStore(tmp_path / "conversations.db")
    assert [c.title for c in reopened.list()] == ["kept"] and reopened.problem is None
    reopened.close()
