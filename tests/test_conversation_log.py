"""One conversation log for the CLI and the app, on the real bundled model: `run` records its exchange, `chat -c` in
another process goes on with it, `logs -q` finds it by full-text search, the app opens it; `logs off` records
nothing; a killed `chat` keeps the prompt it was answering."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import cli_executable, run_cli, settings_for
from helpers.tui_helpers import run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore

QUICK = ("--preset", "precise", "-o", "max_tokens=12")


def recorded(home):
    store = ConversationStore.in_data_dir(home / "data")
    try:
        return [(c.title, [(m.role, m.content, m.finish) for m in store.messages(c.id)]) for c in store.list()]
    finally:
        store.close()


@pytest.mark.usefixtures("bundled_model")
def test_run_then_chat_continue_then_search_then_the_app(home):
    first = run_cli("run", *QUICK, "Name a river in Vienna.", home=home)
    assert first.returncode == 0, first.stderr_text
    again = run_cli("chat", "-c", *QUICK, home=home, stdin="Which city did I name?\n")
    assert again.returncode == 0, again.stderr_text
    ((title, messages),) = recorded(home)  # one conversation, continued by the second process
    assert title == "Name a river in Vienna."
    assert [(role, finish) for role, _, finish in messages] == [("user", None), ("assistant", "length"),
                                                                 ("user", None), ("assistant", "length")]
    assert messages[1][1] == first.stdout_text.strip() and messages[3][1] == again.stdout_text.strip()

    found = json.loads(run_cli("logs", "-q", "vienna", "--json", home=home).stdout_text)
    assert {hit["content"] for hit in found} >= {"Name a river in Vienna."}
    listed = json.loads(run_cli("logs", "--json", home=home).stdout_text)
    meta = listed[0]["messages"][3]["meta"]
    assert meta["model"] == "smollm2-135m" and meta["usage"]["completion_tokens"] == 12
    # The second answer was asked with the first exchange before it: its prompt is the longer.
    assert meta["usage"]["prompt_tokens"] > listed[0]["messages"][1]["meta"]["usage"]["prompt_tokens"] + 10
    human = run_cli("logs", "-q", "nothing-like-this", home=home)
    assert human.returncode == 1 and "no message holds every word" in human.stderr_text

    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane

    async def session():
        app = LocalLLMApp(settings_for(home), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: len(pane._messages_in_log()) == 4)  # the CLI's conversation, opened
            return [m.text for m in pane._messages_in_log()]

    assert run(session())[0] == "Name a river in Vienna."


@pytest.mark.usefixtures("bundled_model")
def test_logs_off_records_nothing_and_a_missing_conversation_is_an_error(home):
    assert run_cli("logs", "off", home=home).returncode == 0
    assert run_cli("logs", "status", home=home).stdout_text == "off\n"
    assert run_cli("run", *QUICK, "Hello", home=home).returncode == 0
    assert recorded(home) == []
    assert run_cli("logs", "on", home=home).returncode == 0
    missing = run_cli("run", "--cid", "42", *QUICK, "Hello", home=home)
    assert missing.returncode != 0 and missing.stderr_text.startswith("error: there is no conversation 42")
    nothing = run_cli("chat", "-c", *QUICK, home=home, stdin="Hi\n")
    assert nothing.returncode != 0 and "no conversation to continue" in nothing.stderr_text


@pytest.mark.usefixtures("bundled_model")
def test_a_killed_chat_keeps_the_prompt_and_marks_the_answer_stopped(home):
    env = {**os.environ, "LOCALLLM_HOME": str(home)}
    process = subprocess.Popen([cli_executable(), "chat", "--preset", "precise", "-o", "max_tokens=2000"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"Write a very long story about a dragon.\n")
    process.stdin.flush()
    assert process.stdout.read(20)  # the answer is streaming
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(0.2)
    ((_, messages),) = recorded(home)
    assert messages[0] == ("user", "Write a very long story about a dragon.", None)
    assert messages[1][0] == "assistant" and messages[1][2] == "stopped"  # never passed off as a whole answer
