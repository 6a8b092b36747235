"""Streaming overhead of the OpenAI-compatible backend: tokens/s through localllm against the raw HTTP SSE stream
of the same llama_cpp.server, interleaved runs, medians.

Both sides send the same request body, the one the backend builds (greedy, the same prompt, token budget and
sampling fields: the backend speaks to the server through its llama-cpp-python profile, as a user pointing it at
that server would). A body that differs in its sampling fields is different work for the server: the raw side once
asked for top_k 1 and repeat_penalty 1.0 while the backend's generic body left the server's defaults (top_k 40,
repeat_penalty 1.1). Both are timed the same way in this process, from the first text token to the last one
received, and both count the tokens the server says it generated (its usage report), not the pieces received: the
backend's pieces need not be one per token.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, threads: int = 2) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
                                "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
                                "--model_alias", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("llama_cpp.server did not start")


def request_body(backend, tokens: int) -> dict:
    """The body the backend sends for the benchmark's request, with its extra sampling fields in place."""
    from localllm.core.messages import Message
    from localllm.core.options import preset

    body = dict(backend.request([Message("user", PROMPT)], preset("precise").with_overrides(max_tokens=tokens)))
    return {**body, **body.pop("extra_body", {})}


def raw_sse(url: str, body: dict) -> tuple[int, float]:
    """(tokens, seconds from the first to the last) reading the SSE stream with httpx and json alone."""
    import httpx

    count, first, last, usage = 0, None, None, None
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            delta = (event.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content"):
                last = time.perf_counter()
                first = first or last
                count += 1
    return (usage or {}).get("completion_tokens") or count, (last - first) if first and last else 0.0


def through_backend(backend, tokens: int) -> tuple[int, float]:
    from localllm.core.chunks import FinalChunk, TextChunk
    from localllm.core.messages import Message
    from localllm.core.options import preset

    count, first, last, generated = 0, None, None, 0
    for chunk in backend.chat([Message("user", PROMPT)], preset("precise").with_overrides(max_tokens=tokens)):
        if isinstance(chunk, TextChunk) and chunk.text:
            last = time.perf_counter()
            first = first or last
            count += 1
        elif isinstance(chunk, FinalChunk):
            generated = chunk.usage.completion_tokens
    return generated or count, (last - first) if first and last else 0.0


def measure(model: Path, rounds: int = 7, tokens: int = 128) -> dict[str, list[float]]:
    """Each side's tokens/s, round by round."""
    from localllm.backends.openai_compat import OpenAICompatBackend

    process, url = start_server(model)
    try:
        backend = OpenAICompatBackend(f"{url}/v1", profile="llama-cpp-python", timeout=120)
        backend.connect("bench")
        body = request_body(backend, tokens)
        raw_sse(url, {**body, "max_tokens": 8})  # warm both paths before timing
        through_backend(backend, 8)
        rates: dict[str, list[float]] = {"raw": [], "backend": []}
        for index in range(rounds):
            order = (("raw", lambda: raw_sse(url, body)), ("backend", lambda: through_backend(backend, tokens)))
            for name, run in order if index % 2 == 0 else order[::-1]:  # alternate who goes first
                count, seconds = run()
                rates[name].append((count - 1) / seconds)
        backend.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    return rates
