"""`localllm serve` against `python -m llama_cpp.server`: the same model, threads, prompt and greedy request, streamed
and read the same way (httpx, the SSE lines parsed with json), interleaved rounds, medians. Also the overhead of a
request whose answer is one token (the whole round trip)."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from openai_stream import PROMPT, start_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_localllm(model: Path, threads: int = 2) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"localllm-bench-serve-{port}"
    process = subprocess.Popen([sys.executable, "-m", "localllm", "serve", "-m", str(model), "--port", str(port),
                                "-o", f"threads={threads}", "-o", "ctx=2048"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "LOCALLLM_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            httpx.get(f"{url}/v1/models", timeout=2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("localllm serve did not start")


def stream(url: str, tokens: int) -> tuple[int, float, float]:
    """(tokens, seconds from the first to the last, seconds to the first) for one streamed answer."""
    import httpx

    body = {"model": "bench", "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "max_tokens": tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0}
    count, first, last = 0, None, None
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                count += 1
    assert first is not None and last is not None, "no text came back"
    return count, last - first, first - started


def one_token(url: str) -> float:
    import httpx

    started = time.perf_counter()
    httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "bench", "max_tokens": 1, "temperature": 0.0, "messages": [{"role": "user", "content": "Hi"}]})
    return time.perf_counter() - started


def measure(model: Path, rounds: int = 7, tokens: int = 128) -> dict[str, float]:
    servers = {"llama_cpp.server": start_server(model), "localllm serve": start_localllm(model)}
    try:
        for _, url in servers.values():
            stream(url, 8)  # warm: the first request pays for the first prompt
        rates: dict[str, list[float]] = {name: [] for name in servers}
        firsts: dict[str, list[float]] = {name: [] for name in servers}
        overheads: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for index in range(rounds):
            for name in names if index % 2 == 0 else names[::-1]:  # alternate who goes first
                count, seconds, first = stream(servers[name][1], tokens)
                rates[name].append((count - 1) / seconds)
                firsts[name].append(first)
                overheads[name].append(one_token(servers[name][1]))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    return {f"{kind} {name}": statistics.median(values[name])
            for kind, values in (("rate", rates), ("first", firsts), ("overhead", overheads)) for name in servers}
