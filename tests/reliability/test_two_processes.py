"""Two localllm processes on one store and one database at once: `rm` or `downloads clean` while a pull is under
way leaves the download whole (it installs, verified); a model removed while another process answers with it
finishes its answer; two processes writing the conversation database at once lose nothing."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_executable, run_cli
from helpers.hub_fixture import FILE, REPO, start_hub

URI = f"hf://{REPO}/{FILE}"
NAME = FILE.removesuffix(".gguf").lower()


@pytest.fixture
def hub(tmp_path: Path, bundled_model: Path):
    server = start_hub(tmp_path / "hub-root", bundled_model)
    yield server
    server.stop()


def start_pull(home: Path, hub) -> tuple[subprocess.Popen, Path]:
    hub.control(rate=20_000_000)
    env = {**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)}
    process = subprocess.Popen([cli_executable(), "pull", URI], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    partial = home / "data" / "models" / NAME / (FILE + ".partial")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 4 << 20):
        time.sleep(0.05)
    assert partial.exists(), "the pull started writing"
    return process, partial


@pytest.mark.parametrize("command", [("rm", NAME, "-y"), ("downloads", "clean")])
def test_removing_during_a_pull_leaves_the_download_whole(command: tuple[str, ...], home: Path, hub,
                                                          bundled_model: Path) -> None:
    process, partial = start_pull(home, hub)
    try:
        other = run_cli(*command, home=home, env=hub.env())
        assert "Traceback" not in other.stderr_text
        _, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors
    installed = partial.with_name(FILE)
    assert hashlib.sha256(installed.read_bytes()).digest() == hashlib.sha256(bundled_model.read_bytes()).digest()
    assert run_cli("verify", NAME, home=home).returncode == 0


@pytest.mark.model
def test_a_model_removed_while_it_answers_finishes_the_answer(home: Path, hub) -> None:
    hub.control()
    assert run_cli("pull", URI, home=home, env=hub.env()).returncode == 0
    env = {**os.environ, "LOCALLLM_HOME": str(home)}
    answering = subprocess.Popen([cli_executable(), "run", "-m", NAME, "--preset", "precise", "-o", "max_tokens=200",
                                  "Write a long story about a dragon."], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    assert answering.stdout is not None
    # Removed once it answers (the model loaded and reading): a fixed sleep could end before a loaded machine had
    # even loaded the model, and the run would then find none.
    first = answering.stdout.read(20)
    removed = run_cli("rm", NAME, "-y", home=home)
    rest, errors = answering.communicate(timeout=120)
    answer = first + rest
    assert answering.returncode == 0 and len(answer.split()) > 20, errors
    assert removed.returncode == 0, removed.stderr_text
    assert NAME not in run_cli("list", home=home).stdout_text


WRITER = """
import sys
from pathlib import Path
from localllm.store.conversations import ConversationStore
store = ConversationStore(Path(sys.argv[1]))
assert store.problem is None, store.problem.message
conversation = store.create(sys.argv[2])
for n in range(300):
    store.add_message(conversation.id, "user", f"{sys.argv[2]} {n}")
    if n % 50 == 0:
        store.list()
store.close()
"""


def test_two_processes_writing_the_database_lose_nothing(tmp_path: Path) -> None:
    for round in range(6):  # a new file each round: both processes creating it at once is the narrowest moment
        database = tmp_path / f"conversations-{round}.db"
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(database), name], stderr=subprocess.PIPE,
                                    text=True) for name in ("first", "second")]
        for writer in writers:
            _, errors = writer.communicate(timeout=120)
            assert writer.returncode == 0, errors
        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            counts = dict(db.execute("SELECT c.title, count(m.id) FROM conversations c JOIN messages m "
                                     "ON m.conversation_id = c.id GROUP BY c.title"))
        assert counts == {"first": 300, "second": 300}
