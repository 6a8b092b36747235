"""The conversation database's faults said alike by `logs`, `chat -c` and `run` (a damaged file, one locked by
another process, a read-only folder, a LOCALLLM_HOME that is a file), and where each conversation came from: `logs`
says it, the app's list hides `run`'s one-shots until asked, and one opened there goes on as a chat."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, settings_for
from helpers.fake_http import read_only
from helpers.tui_helpers import ask, run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import LOCK_WAIT_S, ConversationStore

QUICK = ("--preset", "precise", "-o", "max_tokens=8")


def one_line_error(done, *words: str) -> None:
    assert done.returncode != 0, done.stderr_text
    lines = done.stderr_text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — hint: " in lines[0], done.stderr_text
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in done.stderr_text


def damaged(home: Path) -> Path:
    database = home / "data" / "conversations.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"\x13garbage, not SQLite\x00" * 400)
    return database


def test_a_damaged_database_is_an_error_for_logs_and_chat_continue_and_is_left_alone(home: Path) -> None:
    database = damaged(home)
    before = database.read_bytes()
    for args in (("logs",), ("logs", "--json"), ("logs", "-q", "river"), ("chat", "-c"), ("run", "--cid", "1", "hi")):
        one_line_error(run_cli(*args, home=home, stdin="Hi\n"), "is damaged", ".recover", "mv ")
    assert database.read_bytes() == before


def test_a_home_that_is_a_file_is_an_error_for_logs_and_chat_continue(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder\n")
    for args in (("logs",), ("chat", "-c")):
        one_line_error(run_cli(*args, home=home, stdin="Hi\n"), f"{home} is a file, not a folder", "LOCALLLM_HOME")
    assert home.read_text() == "not a folder\n"


@pytest.fixture
def read_only_home(tmp_path: Path, home: Path):
    """A home whose data folder nobody can write to: a read-only tmpfs for root (who ignores permissions), else
    mode 0555."""
    with read_only(home / "data"):
        yield home


def test_a_read_only_data_folder_is_an_error_for_logs(read_only_home: Path) -> None:
    one_line_error(run_cli("logs", home=read_only_home), "cannot be saved", "permissions")
    one_line_error(run_cli("chat", "-c", home=read_only_home, stdin="Hi\n"), "cannot be saved")


HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(f"PRAGMA journal_mode={sys.argv[2]}")
db.execute("BEGIN EXCLUSIVE")
db.execute("CREATE TABLE IF NOT EXISTS holder (x)")
db.execute("INSERT INTO holder VALUES (1)")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def hold_lock(database: Path, journal: str) -> subprocess.Popen:
    """Another process in an exclusive transaction on ``database`` until its stdin closes. ``journal`` DELETE: no
    reader gets in either; WAL (localllm's own mode): readers do, writers wait."""
    database.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(database), journal], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.communicate(timeout=30)


def test_a_locked_database_is_waited_for_said_and_then_an_error_naming_the_lock(home: Path) -> None:
    database = home / "data" / "conversations.db"
    ConversationStore(database).close()
    holder = hold_lock(database, "DELETE")
    try:
        started = time.monotonic()
        done = run_cli("logs", home=home)
        took = time.monotonic() - started
    finally:
        release(holder)
    waiting, *rest = done.stderr_text.strip().splitlines()
    assert waiting.startswith("waiting for conversations.db, locked by another process")
    one_line_error(type(done)(done.args, done.returncode, done.stdout, "\n".join(rest).encode()),
                   "is locked by another process", f"waited {LOCK_WAIT_S:g} s")
    assert LOCK_WAIT_S <= took < LOCK_WAIT_S + 30  # the wait, then one CLI start, however busy the machine
    assert run_cli("logs", home=home).returncode == 0  # the lock gone, all is as it was


def test_a_writer_holding_the_lock_does_not_stop_logs_from_reading(home: Path) -> None:
    database = home / "data" / "conversations.db"
    store = ConversationStore(database)
    store.create("Rivers", origin="chat")
    store.close()
    holder = hold_lock(database, "WAL")
    try:
        started = time.monotonic()
        listed = run_cli("logs", "--json", home=home)
        # Not waited for: a reader the lock held would say so and wait its LOCK_WAIT_S (a loaded machine can take
        # seconds just to start the CLI, so the time alone is no proof).
        assert "waiting for" not in listed.stderr_text and time.monotonic() - started < LOCK_WAIT_S
    finally:
        release(holder)
    assert listed.returncode == 0 and [c["title"] for c in json.loads(listed.stdout_text)] == ["Rivers"]


def test_conversations_say_where_they_came_from_and_old_ones_say_nothing(home: Path) -> None:
    database = home / "data" / "conversations.db"
    store = ConversationStore(database)
    store.create("old one")  # as stored before origins were recorded
    store.create("from the app", origin="app")
    store.create("a one-shot", origin="run")
    store.close()
    listed = json.loads(run_cli("logs", "--json", home=home).stdout_text)
    assert [(c["title"], c["origin"]) for c in listed] == [("a one-shot", "run"), ("from the app", "app"),
                                                            ("old one", None)]
    table = run_cli("logs", home=home).stdout_text.splitlines()
    assert "FROM" in table[0] and " run " in table[1] and " app " in table[2] and " - " in table[3]


# -- with the model -------------------------------------------------------------------------------------------------
@pytest.mark.model
def test_run_and_chat_record_their_origin_and_chat_continuing_a_run_makes_it_a_chat(home: Path) -> None:
    assert run_cli("run", *QUICK, "Name a river.", home=home).returncode == 0
    assert run_cli("chat", *QUICK, home=home, stdin="Name a city.\n").returncode == 0
    listed = json.loads(run_cli("logs", "--json", home=home).stdout_text)
    assert [(c["title"], c["origin"]) for c in listed] == [("Name a city.", "chat"), ("Name a river.", "run")]
    assert run_cli("chat", "--cid", str(listed[1]["id"]), *QUICK, home=home, stdin="And another?\n").returncode == 0
    listed = json.loads(run_cli("logs", "--json", home=home).stdout_text)
    assert [(c["title"], c["origin"], len(c["messages"])) for c in listed] == [("Name a river.", "chat", 4),
                                                                                ("Name a city.", "chat", 2)]


@pytest.mark.model
def test_run_with_a_damaged_database_answers_and_says_it_was_not_recorded(home: Path) -> None:
    database = damaged(home)
    before = database.read_bytes()
    done = run_cli("run", *QUICK, "Name a river.", home=home)
    assert done.returncode == 0 and done.stdout_text.strip(), done.stderr_text
    (warning,) = [line for line in done.stderr_text.splitlines() if "not recorded" in line]
    assert warning.startswith("warning: this conversation is not recorded: ") and "is damaged" in warning
    assert database.read_bytes() == before


@pytest.mark.model
def test_run_with_a_read_only_folder_answers_and_says_it_was_not_recorded(read_only_home: Path) -> None:
    done = run_cli("run", *QUICK, "Name a river.", home=read_only_home)
    assert done.returncode == 0 and done.stdout_text.strip(), done.stderr_text
    assert "warning: this conversation is not recorded: conversations cannot be saved" in done.stderr_text


@pytest.mark.model
def test_run_waits_for_a_locked_database_then_answers_unrecorded(home: Path) -> None:
    database = home / "data" / "conversations.db"
    ConversationStore(database).close()
    holder = hold_lock(database, "WAL")  # readers get in: the wait is for the write
    try:
        done = run_cli("run", *QUICK, "Name a river.", home=home)
    finally:
        release(holder)
    assert done.returncode == 0 and done.stdout_text.strip(), done.stderr_text
    errors = done.stderr_text
    assert "waiting for conversations.db, locked by another process" in errors
    assert "warning: this conversation is not recorded: " in errors and "is locked by another process" in errors
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0


@pytest.mark.model
def test_the_app_hides_one_shots_until_asked_and_an_opened_one_goes_on_as_a_chat(home: Path) -> None:
    store = ConversationStore(home / "data" / "conversations.db")
    chat = store.create("a chat", origin="app")
    store.add_message(chat.id, "user", "Hello")
    one_shot = store.create("a one-shot", origin="run")
    store.add_message(one_shot.id, "user", "Name a river.")
    store.add_message(one_shot.id, "assistant", "The Danube.")
    store.close()

    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane
    from localllm.tui.prompt import PromptArea
    from localllm.tui.sidebar import ConversationItem

    async def session():
        app = LocalLLMApp(settings_for(home), preset("precise").with_overrides(max_tokens=8))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            sidebar = pane.sidebar

            def listed() -> list[int]:
                return [item.conversation_id for item in sidebar.list_view.children
                        if isinstance(item, ConversationItem)]

            await wait_until(pilot, lambda: pane.conversation_id == chat.id)  # the latest chat, not the one-shot
            assert listed() == [chat.id]
            assert "1 one-shot hidden: runs, code actions (R in the list shows them)" in str(
                sidebar.query_one("#one-shots").render())
            pane.focus_prompt()
            await pilot.press("r")  # in the prompt box: a letter, not the toggle
            prompt = pane.query_one("#prompt", PromptArea)
            assert listed() == [chat.id] and prompt.text == "r"
            prompt.clear()
            sidebar.list_view.focus()
            await pilot.press("r")
            assert listed() == [one_shot.id, chat.id]
            assert "one-shots listed" in str(sidebar.query_one("#one-shots").render())
            sidebar.list_view.index = 0
            await pilot.press("enter")
            await wait_until(pilot, lambda: pane.conversation_id == one_shot.id
                             and len(pane._messages_in_log()) == 2)
            turns = await ask(pilot, pane, "Another one?")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            assert pane.session.history[0].content == "Name a river."  # it went on from the one-shot's exchange
            sidebar.list_view.focus()
            await pilot.press("r")  # hidden again: the one-shot is a chat now and stays listed
            await wait_until(pilot, lambda: listed() == [one_shot.id, chat.id])

    run(session())
    reopened = ConversationStore(home / "data" / "conversations.db")
    assert reopened.get(one_shot.id).origin == "app"
    assert [m.content for m in reopened.messages(one_shot.id)][:3] == ["Name a river.", "The Danube.",
                                                                        "Another one?"]
    reopened.close()


def test_the_app_names_the_lock_not_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localllm.store import conversations

    monkeypatch.setattr(conversations, "LOCK_WAIT_S", 2.0)  # the wait's length is the CLI test's; here, the words
    database = tmp_path / "conversations.db"
    ConversationStore(database).close()
    holder = hold_lock(database, "DELETE")
    waits: list[Path] = []
    try:
        store = ConversationStore(database, on_wait=waits.append)
    finally:
        release(holder)
    assert waits == [database] and store.problem is not None
    assert "is locked by another process" in store.problem.message and "in memory" in store.problem.message
    assert store.problem.hint is not None and "disk" not in store.problem.hint and "localllm" in store.problem.hint
    store.close()
