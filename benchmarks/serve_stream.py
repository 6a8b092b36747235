"""`localllm serve` against `python -m llama_cpp.server`: the same model, threads, prompt and greedy request, streamed
and read the same way (httpx, the SSE lines parsed with json), interleaved rounds, medians. Also the overhead of a
request whose answer is one token (the whole round trip).

And `localllm serve` streamed through the official `openai` client against `localllm run` printing the same answer
(same model, threads, window, prompt and greedy preset), interleaved rounds, medians (``measure_against_run``).
Both sides are timed from outside the same way: from the first piece of text received to the last, over the tokens
localllm reports generating less one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from openai_stream import PROMPT, start_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_localllm(model: Path, threads: int = 2, preset: str | None = None,
                   extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"localllm-bench-serve-{port}"
    chosen = [*(["--preset", preset] if preset else []), *extra]
    process = subprocess.Popen([sys.executable, "-m", "localllm", "serve", "-m", str(model), "--port", str(port),
                                "-o", f"threads={threads}", "-o", "ctx=2048", *chosen],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "LOCALLLM_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            httpx.get(f"{url}/v1/models", timeout=2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("localllm serve did not start")


def stream(url: str, tokens: int, prompt: str = PROMPT, timeout: float = 120) -> tuple[int, float, float]:
    """(tokens, seconds from the first to the last, seconds to the first) for one streamed answer. The tokens are
    the usage event's count where the server sends one (localllm serve: an event may carry several tokens), else
    the events with text (llama_cpp.server sends an event per token and no usage)."""
    import httpx

    # No "model": each server's default (localllm serve refuses a name it does not serve)
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": tokens, "temperature": 0.0, "top_p": 1.0, "top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0,
            "stream_options": {"include_usage": True}}
    count, first, last, usage = 0, None, None, None
    started = time.perf_counter()
    with httpx.Client(timeout=timeout) as client, \
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                count += 1
            usage = event.get("usage") or usage
    assert first is not None and last is not None, "no text came back"
    return usage["completion_tokens"] if usage else count, last - first, first - started


def one_token(url: str) -> float:
    import httpx

    started = time.perf_counter()
    httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "max_tokens": 1, "temperature": 0.0, "messages": [{"role": "user", "content": "Hi"}]})
    return time.perf_counter() - started


def measure(model: Path, rounds: int = 7, tokens: int = 128) -> dict[str, list[float]]:
    """Each round's value by what and whose: "rate localllm serve", "first llama_cpp.server", "overhead ..."."""
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
    return {f"{kind} {name}": values[name]
            for kind, values in (("rate", rates), ("first", firsts), ("overhead", overheads)) for name in servers}


def through_openai(url: str, tokens: int) -> tuple[int, float, str]:
    """(tokens generated, seconds from the first text to the last, the text) for one answer streamed through the
    official openai client. The sampling is the server's --preset precise: greedy, as `run --preset precise`."""
    import httpx
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    served = httpx.get(f"{url}/", timeout=10).json()["model"]  # the model serve's -m loaded
    first = last = None
    pieces, generated = [], 0
    for chunk in client.chat.completions.create(model=served, max_tokens=tokens, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": PROMPT}]):
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            generated = chunk.usage.completion_tokens
    client.close()
    assert first is not None and last is not None and generated, "no text came back"
    return generated, last - first, "".join(pieces)


def through_run(model: Path, tokens: int, threads: int, env: dict[str, str]) -> tuple[int, float, str]:
    """The same for `localllm run -v` printing the answer to a pipe: timed from its first byte to its last."""
    process = subprocess.Popen([sys.executable, "-m", "localllm", "run", "-m", str(model), "--preset", "precise",
                                "-o", f"threads={threads}", "-o", "ctx=2048", "-o", f"max_tokens={tokens}", "-v",
                                PROMPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    first = last = 0.0
    data = bytearray()
    while piece := os.read(process.stdout.fileno(), 65536):
        last = time.perf_counter()
        first = first or last
        data += piece
    report = process.stderr.read().decode()
    if process.wait() != 0:
        raise RuntimeError(f"localllm run failed: {report[-500:]}")
    found = re.search(r"([\d,]+) generated", report)
    if found is None:
        raise RuntimeError(f"localllm run -v reported no token count: {report[-500:]}")
    return int(found.group(1).replace(",", "")), last - first, data.decode()


SERVE_DEFAULT, SERVE_PER_TOKEN = "localllm serve", "localllm serve --stream-interval 0"


def measure_against_run(model: Path, rounds: int = 15, tokens: int = 128, threads: int = 2
                        ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Tokens/s for `localllm run` and for `localllm serve` through the openai client, as it streams by default
    and with an event per token (--stream-interval 0), rounds interleaved (the order turns each round): (medians,
    with "same text" 1.0 when the first answers of all three were the same text; each round's rates)."""
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"localllm-bench-run-{os.getpid()}"
    env = {**os.environ, "LOCALLLM_HOME": str(home)}
    servers = {SERVE_DEFAULT: start_localllm(model, threads, preset="precise"),
               SERVE_PER_TOKEN: start_localllm(model, threads, preset="precise", extra=("--stream-interval", "0"))}
    try:
        # Warm every path (the page cache, each server's first prompt); a server's first answer, its prompt not
        # yet cached, is the same greedy text as run's when the settings are the same. (Later ones may part: reading
        # only the prompt's last token again can tip a greedy choice.)
        first = {through_run(model, 8, threads, env)[2].rstrip("\n")}
        first |= {through_openai(url, 8)[2].rstrip("\n") for _, url in servers.values()}
        same = len(first) == 1
        contestants: dict[str, Callable[[], tuple[int, float, str]]] = {
            "localllm run": lambda: through_run(model, tokens, threads, env),
            SERVE_DEFAULT: lambda: through_openai(servers[SERVE_DEFAULT][1], tokens),
            SERVE_PER_TOKEN: lambda: through_openai(servers[SERVE_PER_TOKEN][1], tokens)}
        rates: dict[str, list[float]] = {name: [] for name in contestants}
        names = list(contestants)
        for index in range(rounds):
            for name in names[index % len(names):] + names[:index % len(names)]:
                count, seconds, _ = contestants[name]()
                rates[name].append((count - 1) / seconds)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    for name, values in rates.items():
        print(f"  {name}, each round: {', '.join(f'{value:.1f}' for value in values)} tokens/s", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {**medians, "same text": 1.0 if same else 0.0}, rates
