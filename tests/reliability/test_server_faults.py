"""Servers that end or run on without a word: an Ollama stream without its `done` line is a cut answer, not a
finished one; an OpenAI-compatible server that ignores max_tokens is cut off at the budget and the answer marked so."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli

from localllm.backends.ollama import OllamaBackend
from localllm.backends.openai_compat import OpenAICompatBackend
from localllm.core.chunks import Response
from localllm.core.errors import GenerationError
from localllm.core.messages import Message
from localllm.core.options import preset

QUESTION = [Message("user", "Write a long story about a dragon.")]


@pytest.fixture
def standin(ollama_standin):
    ollama_standin.post("/_control", {})
    yield ollama_standin
    ollama_standin.post("/_control", {})


def test_an_ollama_stream_without_done_is_cut_not_finished(standin) -> None:
    standin.post("/_control", {"no_done": True})
    with OllamaBackend(standin.url, 60) as backend:
        backend.connect("smollm2:135m")
        response = Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=12)))
        with pytest.raises(GenerationError, match="without Ollama saying it was done"):
            response.text()
    assert response.partial_text and response.final is None


def test_the_cli_keeps_the_cut_answer_and_fails(standin, home) -> None:
    standin.post("/_control", {"no_done": True})
    done = run_cli("run", "-b", "ollama", "-m", "smollm2:135m", "--preset", "precise", "-o", "max_tokens=12",
                   "Write a story.", home=home, env={"OLLAMA_HOST": standin.url})
    assert done.returncode == 1
    assert done.stdout_text.strip()  # what arrived is kept
    assert done.stderr_text.strip().splitlines()[-1].startswith("error: ")
    assert "may be cut" in done.stderr_text and "Traceback" not in done.stderr_text


class EndlessServer(ThreadingHTTPServer):
    """A fake OpenAI-compatible server (no real one ignores max_tokens on purpose): it speaks the streaming
    chat-completions wire format, SSE `data:` events with `choices[0].delta.content`, and never finishes."""

    sent = 0
    disconnected = threading.Event()


class EndlessHandler(BaseHTTPRequestHandler):
    server: EndlessServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "endless", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.endswith("/chat/completions"):  # e.g. llama-cpp-python's /extras/tokenize: not here
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        deadline = time.monotonic() + 30  # bounded: the test ends it long before
        try:
            while time.monotonic() < deadline:
                event = {"id": "1", "object": "chat.completion.chunk", "model": "endless",
                         "choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                self.server.sent += 1
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()


def test_a_server_that_ignores_max_tokens_is_cut_at_the_budget() -> None:
    server = EndlessServer(("127.0.0.1", 0), EndlessHandler)
    server.disconnected = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with OpenAICompatBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=10) as backend:
            backend.connect(None)
            response = Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=20)))
            text = response.text()
        assert response.final is not None and response.final.finish_reason == "length"
        assert text.count("word") == 20
        assert server.disconnected.wait(10), "the connection was closed, so the server stopped"
    finally:
        server.shutdown()


class EndlessEverywhereHandler(EndlessHandler):
    """The same fake, streaming without end on every route, llama-cpp-python's /extras/tokenize included."""

    def do_POST(self) -> None:
        self.path = "/v1/chat/completions"
        super().do_POST()


def test_connecting_to_a_server_that_streams_everywhere_does_not_hang() -> None:
    server = EndlessServer(("127.0.0.1", 0), EndlessEverywhereHandler)
    server.disconnected = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with OpenAICompatBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=10) as backend:
            backend.connect(None)
            assert backend._exact_counts is False  # the endless answer is no tokenizer
        assert time.monotonic() - started < 20  # the probe gave up after a few KiB, not at the server's 30 s
    finally:
        server.shutdown()


class AbsurdWindowHandler(EndlessHandler):
    """The same fake, reporting model windows no server could have (vLLM's `max_model_len`, llama-cpp-python's
    `meta.n_ctx_train`), as JSON's non-standard Infinity and NaN, a boolean and a 400-digit number."""

    entries = [{"id": "inf", "object": "model", "max_model_len": float("inf")},
               {"id": "nan", "object": "model", "max_model_len": float("nan"), "meta": {"n_ctx_train": float("inf")}},
               {"id": "bool", "object": "model", "max_model_len": True},
               {"id": "huge", "object": "model", "max_model_len": 10 ** 400}]

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": self.entries}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("model", ["inf", "nan", "bool", "huge"])
def test_an_absurd_reported_window_is_ignored(model: str) -> None:
    server = EndlessServer(("127.0.0.1", 0), AbsurdWindowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with OpenAICompatBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=10) as backend:
            served = backend.connect(model, ctx=4096)
        assert served.n_ctx == 4096 and served.context_length is None
    finally:
        server.shutdown()
