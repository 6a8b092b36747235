"""Quitting the app: Ctrl+Q ends it at once whatever still runs in the background (a model load is not waited
for), a background job that writes files is waited for, and the real app in a terminal ends quickly with the model
loaded and keeps the conversation."""

from __future__ import annotations

import fcntl
import os
import re
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
from helpers.tui_helpers import wait_until

from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.shared_model import ModelClosed, SharedModel


class StuckLoad(SharedModel):
    """A model load that does not end until ``release`` is set (a large model on a slow disk)."""

    def __init__(self, settings, release: threading.Event) -> None:
        super().__init__(settings)
        self.release = release
        self.loading = threading.Event()

    def get(self):
        self.loading.set()
        self.release.wait(120)
        raise ModelClosed()


def test_ctrl_q_during_a_model_load_ends_the_app_without_waiting_for_the_load(tmp_path):
    settings = settings_for(tmp_path, discover=False)
    release = threading.Event()
    shared = StuckLoad(settings, release)
    app = LocalLLMApp(settings, preset("precise"), shared=shared)
    timing: dict[str, float] = {}

    async def quit_while_loading(pilot):
        await wait_until(pilot, shared.loading.is_set)
        timing["quit"] = time.monotonic()
        await pilot.press("ctrl+q")

    # Without the fix the app waits for the load, which this timer ends (so the test cannot hang): a minute, far
    # beyond the bound below, which leaves a loaded machine room to end the app.
    timer = threading.Timer(60, release.set)
    timer.start()
    try:
        app.run(headless=True, size=(120, 40), auto_pilot=quit_while_loading)
        timing["returned"] = time.monotonic()
        assert not release.is_set(), "the load was still running when the app returned"
    finally:
        timer.cancel()
        release.set()
    assert timing["returned"] - timing["quit"] < 20
    assert app.wait_for_writes(), "no worker that writes files was running"


def test_a_background_job_that_writes_a_file_is_waited_for(tmp_path):
    settings = settings_for(tmp_path, discover=False)
    release = threading.Event()
    app = LocalLLMApp(settings, preset("precise"), shared=StuckLoad(settings, release))
    written = tmp_path / "model.gguf"
    started, finish_writing = threading.Event(), threading.Event()

    def download() -> None:
        started.set()
        finish_writing.wait(30)  # still writing when the app returns, however long quitting takes
        written.write_text("all of it")

    async def quit_while_writing(pilot):
        app.run_worker(download, thread=True, group="models-pull")
        await wait_until(pilot, started.is_set)
        await pilot.press("ctrl+q")

    try:
        app.run(headless=True, size=(120, 40), auto_pilot=quit_while_writing)
        assert not written.exists(), "the app itself does not wait"
        finish_writing.set()
        assert app.wait_for_writes(timeout=30)
        assert written.read_text() == "all of it"
    finally:
        release.set()
        finish_writing.set()


@pytest.mark.model
def test_the_real_app_quits_quickly_with_the_model_loaded_and_keeps_the_conversation(home: Path) -> None:
    """A check that quitting does not hang (the figures are in the change's notes): the app in a terminal (a pty),
    a question answered, then Ctrl+Q."""
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
    try:
        deadline = time.monotonic() + 120
        while b"context 0/" not in screen and time.monotonic() < deadline:  # the status bar of a loaded model
            time.sleep(0.1)
        assert b"context 0/" in screen, f"the model did not load; the screen ended with {bytes(screen[-400:])!r}"
        os.write(master, b"Say hello.\r")
        while not re.search(rb"first \d", screen) and time.monotonic() < deadline:  # the answer's stats in the status
            time.sleep(0.1)
        quit_at = time.monotonic()
        os.write(master, b"\x11")  # Ctrl+Q
        code = app.wait(timeout=60)
        took = time.monotonic() - quit_at
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait()
        os.close(master)
    assert code == 0
    assert took < 15, f"quitting took {took:.1f} s"  # about a second quiet: room for a loaded machine, not a hang
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows[0] == ("user", "Say hello.") and rows[1][0] == "assistant" and rows[1][1].strip()
