"""Tool calling and MCP, with real parts: the bundled model makes the calls (constrained by a grammar), the MCP
servers are real processes started by the tests (PyPI's mcp-server-time over stdio; tests/helpers/mcp_test_server.py,
built with the official SDK, over stdio and streamable HTTP)."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from conftest import settings_for
from helpers.backend_servers import free_port

from localllm.core.chunks import TextChunk, ToolCallChunk, ToolResultChunk
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.core.tools import ToolCall, ToolSpec
from localllm.tasks.loading import load_model
from localllm.tasks.tools.calling import AnswerField, ToolLoop, decision_schema
from localllm.tasks.tools.mcp_config import ServerEntry, read_servers
from localllm.tasks.tools.mcp_servers import McpServers

TEST_SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"
TIME = ServerEntry("time", sys.executable, ("-m", "mcp_server_time"))
LOADED_START_S = 60
"""A start timeout for servers that only have to start: a Python MCP server imports its SDK first, which a machine
busy with the whole suite can take many seconds to do (the timeout itself is tested on its own)."""


def entry_for_test_server(tmp_path: Path, **env: str) -> ServerEntry:
    return ServerEntry("t", sys.executable, (str(TEST_SERVER), "stdio"),
                       {"RECORD_FILE": str(tmp_path / "record.txt"), **env})


def run_loop(loaded, loop: ToolLoop, question: str, max_tokens: int = 120):
    chunks = list(loop.chat(loaded.backend, [Message("user", question)],
                            preset("precise").with_overrides(max_tokens=max_tokens)))
    calls = [chunk.call for chunk in chunks if isinstance(chunk, ToolCallChunk)]
    results = [chunk.result for chunk in chunks if isinstance(chunk, ToolResultChunk)]
    return chunks, calls, results


@pytest.mark.usefixtures("bundled_model")
def test_a_forced_call_is_valid_for_its_schema_and_its_result_reaches_the_next_prompt(tmp_path):
    with McpServers([TIME], start_timeout=LOADED_START_S) as servers, \
            load_model(settings_for(tmp_path), "smollm2-135m") as loaded:
        (status,) = servers.start()
        assert status.started, status.error
        tools = servers.select(["time.get_current_time"])
        loop = ToolLoop(tools, servers.call, approve=lambda call: True, choice="get_current_time", chain_limit=1)
        chunks, calls, results = run_loop(loaded, loop, "What time is it in UTC?")

    assert calls and calls[0].name == "get_current_time" and calls[0].server == "time"
    jsonschema.validate(calls[0].arguments, tools[0].parameters)  # the grammar kept the call to the schema
    first = results[0]
    assert first.ran, first.content
    # The real server's answer: the time, or its own error for a zone the small model made up.
    assert '"datetime"' in first.content or "Invalid timezone" in first.content, first.content
    # The next step's prompt carries the call and its result as a tool message.
    assert len(loop.prompts) == 2
    assert loop.prompts[1][-1] == Message("tool", first.content, name="get_current_time")
    assert json.loads(loop.prompts[1][-2].content) == {"tool": "get_current_time", "arguments": calls[0].arguments}
    assert "".join(chunk.text for chunk in chunks if isinstance(chunk, TextChunk)).strip()  # then an answer


@pytest.mark.usefixtures("bundled_model")
def test_a_declined_call_never_reaches_the_server(tmp_path):
    asked = []
    with McpServers([entry_for_test_server(tmp_path)], start_timeout=LOADED_START_S) as servers, \
            load_model(settings_for(tmp_path), "smollm2-135m") as loaded:
        servers.start()
        loop = ToolLoop(servers.select(["t.record"]), servers.call, approve=lambda call: asked.append(call) or False,
                        choice="record", chain_limit=1)
        _, calls, results = run_loop(loaded, loop, "Record the word river.")
    assert asked == calls[:1]
    assert not results[0].ran and "did not allow" in results[0].content
    assert not (tmp_path / "record.txt").exists(), "the server saw no request"


def test_server_faults_are_statuses_and_results_never_exceptions(tmp_path):
    entries = [
        entry_for_test_server(tmp_path),
        ServerEntry("missing", "no-such-mcp-server-command"),
        ServerEntry("exits", sys.executable, ("-c", "import sys; print('bad token', file=sys.stderr); sys.exit(3)")),
    ]
    # Room for the test server to import the MCP SDK on a loaded machine; the others end long before.
    with McpServers(entries, start_timeout=LOADED_START_S) as servers:
        statuses = {status.name: status for status in servers.start()}
        failed = servers.call(ToolCall("fail", {"reason": "test"}, "t"))
        crashed = servers.call(ToolCall("crash", {}, "t"))
        after = servers.call(ToolCall("echo", {"text": "hello"}, "t"))
        to_missing = servers.call(ToolCall("anything", {}, "missing"))

    assert statuses["t"].started, statuses["t"].error
    assert "not found" in statuses["missing"].error
    assert "bad token" in statuses["exits"].error  # the end of its stderr says why
    assert failed.is_error and "fail" in failed.content
    assert crashed.is_error and "closed the connection during the call" in crashed.content
    assert after.is_error and "cannot take calls" in after.content
    assert to_missing.is_error and "not found" in to_missing.content


def test_a_server_that_never_answers_is_given_up_on_after_the_start_timeout():
    started = time.monotonic()
    with McpServers([ServerEntry("silent", sys.executable, ("-c", "import time; time.sleep(60)"))],
                    start_timeout=2) as servers:
        (status,) = servers.start()
    assert not status.started and "did not answer within 2 s (is it an MCP server?)" in status.error
    assert time.monotonic() - started < 20  # not the minute the server would sleep


def test_a_stdio_server_gets_only_its_declared_environment_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLLM_TEST_SECRET", "do-not-pass")
    with McpServers([entry_for_test_server(tmp_path, DECLARED="yes")], start_timeout=LOADED_START_S) as servers:
        servers.start()
        names = set(servers.call(ToolCall("env_names", {}, "t")).content.split())
    assert "LOCALLLM_TEST_SECRET" not in names
    assert {"PATH", "DECLARED", "RECORD_FILE"} <= names
    # The SDK adds HOME, SHELL and TERM, and Python its locale variable: none of them holds a secret.
    assert names <= {"PATH", "DECLARED", "RECORD_FILE", "HOME", "SHELL", "TERM", "LC_CTYPE"}



def test_a_streamable_http_server_on_loopback(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(TEST_SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "RECORD_FILE": str(tmp_path / "r")})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        web = ServerEntry("web", url=f"http://127.0.0.1:{port}/mcp")
        with McpServers([web], start_timeout=LOADED_START_S) as servers:
            (status,) = servers.start()
            echoed = servers.call(ToolCall("echo", {"text": "over HTTP"}, "web"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert status.started, status.error
    assert "echo" in [tool.name for tool in status.tools]
    assert echoed.content == "over HTTP" and not echoed.is_error


def test_the_answer_streams_out_of_its_json_escapes_included():
    reader = AnswerField()
    pieces = ['{"ans', 'wer": "Line one\\', 'nsays \\"hi\\" \\u00e', '9t\\ud83d', '\\ude00', ' end"}']
    assert "".join(reader.feed(piece) for piece in pieces) == 'Line one\nsays "hi" ét😀 end'
    assert not AnswerField().feed('{"tool": "echo", "arguments": {}}')


def test_the_decision_schema_offers_calls_and_an_answer_as_asked():
    echo = ToolSpec("echo", "Echo", {"type": "object", "properties": {"text": {"type": "string"}}})
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    call = {"type": "object", "properties": {"tool": {"const": "echo"}, "arguments": echo.parameters},
            "required": ["tool", "arguments"]}
    assert decision_schema([echo], answer=True) == {"anyOf": [call, answer]}
    assert decision_schema([echo], answer=False) == call  # a forced call
    assert decision_schema([], answer=True) == answer  # the chain limit reached: only an answer


def run_cli(args, home: Path, stdin: str = "", timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCALLLM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    if stdin:
        return subprocess.run([sys.executable, "-m", "localllm", *args], input=stdin, capture_output=True,
                              text=True, env=env, timeout=timeout)
    return subprocess.run([sys.executable, "-m", "localllm", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.fixture
def mcp_config(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(2)"]},
    }}))
    return path


def test_tools_lists_each_server_and_its_tools(tmp_path, mcp_config):
    listed = run_cli(["tools", "--mcp-config", str(mcp_config), "--json"], tmp_path / "home")
    assert listed.returncode == 1, listed.stderr  # one server did not start
    servers = {server["server"]: server for server in json.loads(listed.stdout)["servers"]}
    assert servers["time"]["started"] and "get_current_time" in [t["name"] for t in servers["time"]["tools"]]
    assert not servers["broken"]["started"] and servers["broken"]["error"]
    assert [entry.name for entry in read_servers(mcp_config)] == ["time", "broken"]


@pytest.mark.usefixtures("bundled_model")
def test_chat_asks_before_a_call_then_gets_the_time_and_the_log_keeps_the_call(tmp_path, mcp_config):
    home = tmp_path / "home"
    chat = run_cli(["chat", "-T", "time", "--mcp-config", str(mcp_config), "--tool-choice", "get_current_time",
                    "--chain-limit", "1", "--preset", "precise", "-o", "max_tokens=80"], home,
                   stdin="What time is it in UTC?\ny\n")
    assert chat.returncode == 0, chat.stderr
    assert "⚙ time.get_current_time {" in chat.stderr
    assert "run time.get_current_time? [y]es, [n]o, [a]lways" in chat.stderr
    assert re.search(r"(result|error) after [\d.]+ s: ", chat.stderr), chat.stderr
    assert '"datetime"' in chat.stderr or "Invalid timezone" in chat.stderr
    assert "Traceback" not in chat.stderr
    logs = run_cli(["logs", "--json", "-n", "1"], home)
    (conversation,) = json.loads(logs.stdout)
    answer = conversation["messages"][-1]
    (call,) = answer["meta"]["tool_calls"]
    assert call["tool"] == "time.get_current_time" and call["ran"] and call["result"]


def test_bad_tool_choices_are_one_line_errors(tmp_path, mcp_config):
    home = tmp_path / "home"
    unknown = run_cli(["run", "-T", "nosuch", "--mcp-config", str(mcp_config), "hello"], home)
    # A bare name may be any server's tool, so every server was started (the broken one is noted first).
    last = unknown.stderr.strip().splitlines()[-1]
    assert unknown.returncode != 0 and last.startswith("error: no MCP server or tool named 'nosuch' — hint: known:")
    (tmp_path / "bad.json").write_text("{not json")
    bad = run_cli(["run", "-T", "time", "--mcp-config", str(tmp_path / "bad.json"), "hello"], home)
    assert bad.returncode != 0 and bad.stderr.startswith("error: ") and "not valid JSON" in bad.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux's script gives the command a terminal")
@pytest.mark.usefixtures("bundled_model")
def test_run_asks_on_the_terminal_even_with_stdin_taken(tmp_path, mcp_config):
    """`run` reads its question's answer from the terminal (/dev/tty), as a user at a prompt would type it."""
    command = " ".join(shlex.quote(part) for part in [
        sys.executable, "-m", "localllm", "run", "-T", "time", "--mcp-config", str(mcp_config), "--tool-choice",
        "time.get_current_time", "--chain-limit", "1", "--preset", "precise", "-o", "max_tokens=40",
        "What time is it in UTC?"])
    done = subprocess.run(["script", "-qec", command, "/dev/null"], input="y\n", capture_output=True, text=True,
                          timeout=240, env={**os.environ, "LOCALLLM_HOME": str(tmp_path / "home")})
    screen = done.stdout.replace("\r", "")
    assert done.returncode == 0, screen
    assert "run time.get_current_time? [y]es, [n]o, [a]lways for this tool:" in screen
    assert re.search(r"(result|error) after [\d.]+ s: ", screen) and "no terminal to ask" not in screen
