"""The OpenAI-compatible backend against a real `python -m llama_cpp.server`: profiles and their request fields,
exact counts through /extras/tokenize, API keys, the CLI, and the faults (a wrong key, a killed or silent server,
garbage instead of JSON)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli, settings_for
from helpers.backend_servers import SERVED_NAME, free_port, start_llama_server

from localllm.backends.openai_compat import OpenAICompatBackend, display_url
from localllm.backends.profiles import PROFILES, server_profile
from localllm.core.chunks import Response
from localllm.core.errors import BackendUnavailable, GenerationError, ModelNotFound, UsageError
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.core.settings import Settings
from localllm.tasks.loading import load_model

QUESTION = [Message("user", "Name three colours.")]
SECRET = "sk-test-0123456789-secret"


def connected(url: str, profile: str = "", timeout: float = 60, key: str = "") -> OpenAICompatBackend:
    backend = OpenAICompatBackend(f"{url}/v1", key, profile, timeout)
    backend.connect(None)
    return backend


@pytest.fixture
def own_server(bundled_model):
    server = start_llama_server(bundled_model)
    yield server
    server.stop()


def test_profiles_map_options_to_each_servers_fields():
    options = preset("precise").with_overrides(max_tokens=9, seed=3, stop=("END",), repeat_penalty=1.2)
    schema = {"type": "object"}
    vllm = OpenAICompatBackend(profile="vllm")
    vllm._model = "m"
    body = vllm.request(QUESTION, options.with_overrides(json_schema=schema))
    assert vllm.base_url == "http://127.0.0.1:8000/v1"
    assert body["extra_body"] == {"top_k": 1, "min_p": 0.0, "repetition_penalty": 1.2}
    assert body["response_format"]["json_schema"]["schema"] == schema and body["max_tokens"] == 9
    assert body["stop"] == ["END"] and body["seed"] == 3 and body["stream_options"] == {"include_usage": True}
    llamafile = OpenAICompatBackend(profile="llamafile")
    llamafile._model = "m"
    body = llamafile.request(QUESTION, options.with_overrides(json_schema=schema))
    assert llamafile.base_url.endswith(":8080/v1") and body["extra_body"]["repeat_penalty"] == 1.2
    assert body["response_format"] == {"type": "json_object", "schema": schema}
    tgi = OpenAICompatBackend(profile="tgi")
    tgi._model = "m"
    assert not {"extra_body", "stream_options"} & set(tgi.request(QUESTION, options))
    assert {p.base_url.rsplit(":", 1)[1] for p in PROFILES.values()} == {"8000/v1", "8080/v1", "1234/v1", "3000/v1"}
    with pytest.raises(UsageError) as err:
        server_profile("vlm")
    assert "did you mean 'vllm'" in err.value.hint


def test_connect_finds_the_model_and_counts_exactly(llama_server, loaded):
    with connected(llama_server.url) as backend:
        assert backend.profile.name == "llama-cpp-python"  # recognised by its /extras/tokenize route
        assert backend.context_window == 2048
        for text in ("Hello world", "ünïcode 東京 1234567", "def f(x):\n    return x * 2\n"):
            assert backend.count_tokens(text) == loaded.backend.count_tokens(text)
        assert backend.count_prompt_tokens(QUESTION) >= loaded.backend.count_prompt_tokens(QUESTION)
        with pytest.raises(ModelNotFound) as err:
            backend.connect("llama-70b")
        assert SERVED_NAME in err.value.hint
        assert backend.connect("SmolLM2-135M").name == SERVED_NAME


def test_remote_tls_urls_are_shown_without_credentials_or_key():
    assert display_url("https://user:pw@gpu.example.com:8443/v1/") == "https://gpu.example.com:8443/v1"
    port = free_port()
    backend = OpenAICompatBackend(f"https://user:pw@127.0.0.1:{port}/v1", SECRET, "vllm", timeout=5)
    with backend, pytest.raises(BackendUnavailable) as err:
        backend.connect(None)
    said = f"{err.value.message} {err.value.hint}"
    assert f"https://127.0.0.1:{port}/v1" in said and "pw" not in said and SECRET not in said


def test_wrong_api_key_is_a_clear_401_and_the_key_is_never_printed(bundled_model, home):
    server = start_llama_server(bundled_model, api_key=SECRET)
    try:
        with pytest.raises(BackendUnavailable, match="401"):
            connected(server.url, key="sk-wrong-key")
        with connected(server.url, key=SECRET) as backend:
            assert Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=3))).text()
        done = run_cli("run", "-b", "openai", "--base-url", f"{server.url}/v1", "hi", home=home,
                       env={"OPENAI_API_KEY": "sk-wrong-key"})
        assert done.returncode == 1 and "401" in done.stderr_text and "sk-wrong-key" not in done.stderr_text
        assert "OPENAI_API_KEY" in done.stderr_text
        done = run_cli("--debug", "backends", "--json", "--base-url", f"{server.url}/v1", "--api-key", SECRET,
                       home=home)
        assert done.returncode == 0 and SECRET not in done.stdout_text + done.stderr_text
    finally:
        server.stop()
    assert SECRET not in repr(Settings.load({"LOCALLLM_HOME": str(home), "OPENAI_API_KEY": SECRET}))


def test_server_killed_mid_stream_keeps_the_partial_answer(own_server):
    with connected(own_server.url) as backend:
        response = Response(backend.chat([Message("user", "Write a long story about a dragon.")],
                                         preset("precise").with_overrides(max_tokens=400)))
        chunks = iter(response)
        for _ in range(3):
            next(chunks)
        own_server.kill()
        with pytest.raises(GenerationError, match="connection broke|stream ended"):
            for _ in chunks:
                pass
    assert response.partial_text and response.final is None


def test_server_that_stops_answering_times_out(own_server):
    # 5 s: the connection's own requests answered by a loaded machine's server stay well inside it; the paused
    # server's silence still ends in this timeout.
    with connected(own_server.url, timeout=5) as backend:
        own_server.pause()
        try:
            with pytest.raises(GenerationError, match="no answer within 5 s"):
                Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=3))).text()
        finally:
            own_server.resume()


class GarbageHandler(BaseHTTPRequestHandler):
    """A server that answers every route with HTML, or with SSE events that are not JSON."""

    def log_message(self, *args) -> None:
        pass

    def reply(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/models") and getattr(self.server, "models_ok", False):
            self.reply(json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode(),
                       "application/json")
        else:
            self.reply(b"<html><body>Welcome to nginx!</body></html>", "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(b"data: {not json at all\n\n", "text/event-stream")


@pytest.mark.parametrize("models_ok", [False, True], ids=["models", "stream"])
def test_garbage_instead_of_json_is_a_clear_error(models_ok):
    server = ThreadingHTTPServer(("127.0.0.1", 0), GarbageHandler)
    server.models_ok = models_ok
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAICompatBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=10)
        with backend, pytest.raises(GenerationError, match="not the expected JSON"):
            backend.connect(None)
            Response(backend.chat(QUESTION, preset("precise"))).text()
    finally:
        server.shutdown()


def test_unreachable_server_names_the_profile_command():
    backend = OpenAICompatBackend(f"http://127.0.0.1:{free_port()}/v1", profile="vllm", timeout=5)
    with backend, pytest.raises(BackendUnavailable) as err:
        backend.connect(None)
    assert "vllm serve" in err.value.hint and "vLLM" in err.value.message


def test_a_refused_connection_is_said_before_the_client_is_imported(monkeypatch):
    """No server at the address: said from a refused connection, without the client's second of imports. Anything
    else (a listener, a proxy in the way, a name that does not resolve) is left to the client to judge."""
    import socket

    from localllm.backends.openai_compat import nothing_listens

    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    assert nothing_listens(closed)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert not nothing_listens(f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    assert not nothing_listens("http://no-such-host.invalid:8000/v1")
    assert not nothing_listens("http://127.0.0.1:port/v1")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not nothing_listens(closed)  # the proxy reaches the server, not this machine
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert nothing_listens(closed)


def test_auto_picks_the_configured_server_and_the_tasks_run_through_it(llama_server, tmp_path):
    from localllm.tasks.structured import ask_json

    settings = settings_for(tmp_path, base_url=f"{llama_server.url}/v1")
    with load_model(settings) as loaded:
        assert loaded.choice.name == "openai" and "base URL is configured" in loaded.choice.reasons[0]
        assert loaded.ref.name == SERVED_NAME and loaded.plan.n_ctx == 2048
        schema = {"type": "object", "properties": {"label": {"enum": ["bug", "feature"]}}, "required": ["label"]}
        answer = ask_json(loaded.backend, [Message("user", "The app crashes on start. Is this a bug or a feature?")],
                          schema, preset("precise"))
        assert answer.value["label"] in ("bug", "feature")


def test_cli_run_and_summarize_through_the_server(llama_server, home, tmp_path):
    env = {"OPENAI_BASE_URL": f"{llama_server.url}/v1"}
    done = run_cli("run", "--preset", "precise", "-o", "max_tokens=5", "--json", "-v", "Name a colour.",
                   home=home, env=env)
    assert done.returncode == 0, done.stderr_text
    answer = json.loads(done.stdout_text)
    assert answer["backend"] == "openai" and answer["model"] == SERVED_NAME and answer["text"]
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting moved to Tuesday. Alice will bring the slides. Bob books the room.\n" * 3)
    done = run_cli("summarize", str(notes), "--style", "tldr", "--words", "20", "--json", home=home, env=env)
    assert done.returncode == 0, done.stderr_text
    assert json.loads(done.stdout_text)["summary"]
    report = json.loads(run_cli("backends", "--json", home=home, env=env).stdout_text)
    assert report["auto"]["name"] == "openai"
    assert next(b for b in report["backends"] if b["name"] == "openai")["models"] == [SERVED_NAME]


def test_show_describes_the_served_model(llama_server, home):
    shown = run_cli("show", "-b", "openai", "--base-url", f"{llama_server.url}/v1", SERVED_NAME, "--json", home=home)
    assert shown.returncode == 0, shown.stderr_text
    report = json.loads(shown.stdout_text)
    assert report["name"] == SERVED_NAME and report["backend"]["name"] == "openai"
    assert report["context"] == 2048 and llama_server.url.split("//")[1] in report["where"]


def test_hw_names_the_server_auto_would_use(llama_server, home):
    env = {"OPENAI_BASE_URL": f"{llama_server.url}/v1"}
    report = json.loads(run_cli("hw", "--json", home=home, env=env).stdout_text)
    assert report["backend"]["name"] == "openai", report["backend"]


def test_summarize_plan_counts_on_the_server(llama_server, home, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting moved to Tuesday. Alice will bring the slides.\n" * 40)
    env = {"OPENAI_BASE_URL": f"{llama_server.url}/v1"}
    done = run_cli("summarize", str(notes), "--plan", "--json", home=home, env=env)
    assert done.returncode == 0, done.stderr_text
    plan = json.loads(done.stdout_text)
    assert plan["window"] == 2048 and plan["input_tokens"] > 400, plan


class FakeReasoningServer(GarbageHandler):
    """A fake: llama_cpp.server has no reasoning model here, so this replays the stream a reasoning model's server
    sends (llama-server with --reasoning-format deepseek, vLLM, DeepSeek's API): the thinking as
    ``delta.reasoning_content`` events, then the answer as ``delta.content``, then usage and [DONE]."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        events: list[dict] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}]
        events += [{"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]}
                   for piece in ("The user wants ", "a colour.")]
        events += [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in ("Bl", "ue.")]
        events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                   {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}]
        body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        self.reply(body.encode(), "text/event-stream")


def test_reasoning_content_is_thinking_and_not_the_answer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeReasoningServer)
    server.models_ok = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with OpenAICompatBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=10) as backend:
            backend.connect(None)
            response = Response(backend.chat(QUESTION, preset("precise")))
            answer = response.text()
    finally:
        server.shutdown()
    assert answer == "Blue." and response.thinking == "The user wants a colour."
    assert response.final.finish_reason == "stop" and response.final.usage.completion_tokens == 9
