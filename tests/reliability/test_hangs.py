"""Hangs: a Hub that accepts the connection and never answers ends `pull` with a clear error after --timeout; the
app without a terminal says it needs one instead of writing escape codes into a pipe."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from conftest import run_cli


def test_pull_from_a_hub_that_never_answers_gives_up(home: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    try:
        started = time.monotonic()
        done = run_cli("pull", "hf://owner/repo/model.gguf", "--timeout", "2", home=home, timeout=60,
                       env={"HF_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}"})
        assert time.monotonic() - started < 45
    finally:
        stop.set()
        for connection in held:
            connection.close()
        listener.close()
    assert done.returncode == 1
    assert "did not answer within 2 s" in done.stderr_text and "Traceback" not in done.stderr_text


def test_the_app_without_a_terminal_says_so(home: Path) -> None:
    done = run_cli("tui", home=home, timeout=30)
    assert done.returncode == 2
    assert done.stderr_text.startswith("error: the app needs a terminal")
    assert "\x1b" not in done.stdout_text


def test_errors_with_json_are_json_too(home: Path) -> None:
    import json

    done = run_cli("show", "no-such-model", "--json", home=home)
    assert done.returncode == 1 and done.stderr_text.startswith("error: ")
    answer = json.loads(done.stdout_text)
    assert "no-such-model" in answer["error"] and answer["hint"]
