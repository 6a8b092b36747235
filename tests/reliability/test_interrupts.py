"""Ctrl-C (SIGINT) at any moment of `localllm run`: imports, the load, the prompt, the answer. It always ends with
status 130 and no traceback, within half a second once the answer streams, keeping what was written (as JSON with
--json).

"Any moment" starts at localllm's first line. Before it, the interpreter is still starting and running the launcher
pip wrote (`import re`, ...): a Ctrl-C there is Python's own, which prints a traceback, and nothing a program can do
reaches that far back. The moments are therefore timed from when the process installs its crash reporter (the first
thing `localllm.cli.main` does), which shows in /proc as a handler for SIGSEGV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli_executable

pytestmark = pytest.mark.model
STORY = ["run", "--preset", "precise", "-o", "max_tokens=400", "-v", "Write a long story about a lighthouse."]


def start(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([cli_executable(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "LOCALLLM_HOME": str(home)})


def wait_for_localllm_code(process: subprocess.Popen) -> None:
    """Until the process catches SIGSEGV (faulthandler, installed by localllm's first line): /proc's SigCgt mask."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGSEGV - 1)):
            return
        time.sleep(0.001)
    raise AssertionError("localllm never started its own code")


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.2, 0.4, 0.7, 1.2])
def test_sigint_at_any_moment_ends_with_130_and_no_traceback(shared_home: Path, delay: float) -> None:
    process = start(shared_home, *STORY)
    wait_for_localllm_code(process)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), (process.returncode, err.decode()[-500:])
    assert b"Traceback" not in err and b"Exception ignored" not in err, err.decode()[-800:]


def test_sigint_while_the_answer_streams_keeps_it(shared_home: Path) -> None:
    # An answer the bundled model writes to its 3,000-token limit (greedy): one that went on after the signal would
    # take a minute, far past the bound below.
    process = start(shared_home, "run", "--preset", "precise", "-o", "max_tokens=3000", "-v",
                    "Write a very long story about a lighthouse keeper.")
    assert process.stdout is not None
    first = process.stdout.read(20)  # the answer has started
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    # Within half a second on a quiet machine; a loaded one can take seconds to schedule the process and let it end.
    assert time.monotonic() - started < 5
    assert process.returncode == 130 and (first + rest).strip()
    assert b"[stopped]" in err and b"Traceback" not in err


def test_sigint_with_json_keeps_the_partial_answer_as_json(shared_home: Path) -> None:
    # The answer's first words come some time after the load; on a busy machine later than 0.8 s, so a Ctrl-C that
    # found none yet is tried again, later.
    for wait in (0.8, 2.5, 6.0):
        process = start(shared_home, *STORY, "--json")
        assert process.stderr is not None
        line = process.stderr.readline()  # -v: the plan, printed once the model is loaded
        assert b"via llama.cpp" in line, line
        time.sleep(wait)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err.decode()[-500:]
        answer = json.loads(out)
        assert answer["finish_reason"] == "cancelled"
        if answer["text"].strip():
            break
    assert answer["text"].strip(), "no partial answer after 6 s of generating"


def test_a_native_crash_while_stderr_is_silenced_still_leaves_a_message() -> None:
    """What llama-cpp-python does while a model loads (fd 2 pointed at /dev/null), then what a llama.cpp assertion
    does (abort): the report still reaches the real stderr."""
    import subprocess
    import sys

    code = ("import os\nfrom localllm.cli import report_native_crashes\nreport_native_crashes()\n"
            "silence = os.open(os.devnull, os.O_WRONLY)\nos.dup2(silence, 2)\nos.abort()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode < 0
    assert "Fatal Python error: Aborted" in done.stderr and 'File "<string>", line 6' in done.stderr
