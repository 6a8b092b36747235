"""Many clients of one model at once: `localllm serve` as a real process on loopback with the bundled model, four
answers decoded together (--parallel 4) and room for four more to wait, through the official openai client. Each
client gets its own answer (its grammar, stop strings and seed honoured, nothing of another's in it), the same
answer it gets alone; a client that leaves frees its slot for the next request at once; streams run together."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from conftest import seed_verdict
from helpers.serve_process import serving

MODEL = "smollm2-135m"
KEY = "batch-key-1234"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
"""A raw prompt the bundled model, greedy, continues by counting on."""
STORY = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, build_verdict):
    home = seed_verdict(tmp_path_factory.mktemp("serve-batching"), build_verdict)
    with serving(home, "--api-key", KEY, "--parallel", "4", "--queue", "8", "--preset", "precise") as url:
        yield url, home / "serve.log"


def schema_for(client: int) -> dict[str, Any]:
    """A schema only client ``client``'s answer fits: its own property, its own values."""
    return {"type": "object", "properties": {f"item_{client}": {"type": "string",
                                                                 "enum": [f"alpha_{client}", f"beta_{client}"]}},
            "required": [f"item_{client}"], "additionalProperties": False}


def ask(url: str, client: int) -> tuple[str, str | None]:
    """Client ``client``'s request: even ones a chat answer to their own schema, sampled with their own seed;
    odd ones a raw count continued greedily until their own stop string. (text, finish reason)."""
    import openai

    api = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)
    if client % 2 == 0:
        answer = api.chat.completions.create(
            model=MODEL, max_tokens=40, temperature=0.9, seed=1000 + client,
            messages=[{"role": "user", "content": f"Pick a value for item {client}."}],
            response_format={"type": "json_schema", "json_schema": {"name": f"item_{client}",
                                                                    "schema": schema_for(client)}})
        return answer.choices[0].message.content or "", answer.choices[0].finish_reason
    completed = api.completions.create(model=MODEL, prompt=COUNTING, max_tokens=60, temperature=0,
                                       stop=[f" {13 + client},"])
    return completed.choices[0].text, completed.choices[0].finish_reason


def test_eight_clients_at_once_each_get_their_own_answer_the_one_they_get_alone(server) -> None:
    url, _ = server
    alone = {client: ask(url, client) for client in range(8)}
    with ThreadPoolExecutor(8) as pool:
        together = dict(zip(range(8), pool.map(lambda client: ask(url, client), range(8)), strict=True))
    for client, (text, finish) in together.items():
        if client % 2 == 0:  # its own grammar: its own property and values, and nothing else
            assert json.loads(text) in ({f"item_{client}": f"alpha_{client}"}, {f"item_{client}": f"beta_{client}"}), \
                text
            assert finish == "stop"
        else:  # its own stop string: counted on up to the number before it
            assert finish == "stop" and text.rstrip(",").split(",")[-1].strip() == str(12 + client), text
            assert f" {13 + client}," not in text
    # The same seed and prompt give the same answer alone and beside seven others.
    assert together == alone


def test_a_client_that_leaves_mid_batch_frees_its_slot_at_once(server) -> None:
    """All four slots busy with long answers; one client leaves; a new request starts within a second, long before
    any of the others' 3,000 tokens are done."""
    url, log = server
    body = {"model": MODEL, "stream": True, "max_tokens": 3000, "messages": STORY}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        streams = [http.stream("POST", "/v1/chat/completions", json=body) for _ in range(4)]
        answers = [stream.__enter__() for stream in streams]
        try:
            lines = [answer.iter_lines() for answer in answers]  # kept: a dropped iterator closes its stream
            for each in lines:
                assert any('"content"' in line for line in each)
            streams[0].__exit__(None, None, None)  # the first client leaves
            left = time.monotonic()
            with http.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 8}) as late:
                assert late.status_code == 200
                first = next(line for line in late.iter_lines() if '"content"' in line)
                started = time.monotonic() - left
            # About a second quiet; a loaded machine reads the late prompt beside three answers more slowly. A slot
            # kept until its answer ended would wait for 3,000 tokens, minutes beyond this bound.
            assert first and started < 15, started
            for each in lines[1:]:  # the others were answering all along
                assert any('"content"' in line for line in each)
        finally:
            for stream in streams[1:]:
                stream.__exit__(None, None, None)
    assert "the client went away" in log.read_text()


def test_four_streams_run_together(server) -> None:
    """Four streaming clients started at once are all answering before any of them is done."""
    import openai

    url, _ = server
    times: dict[int, list[float]] = {}
    ready = threading.Barrier(4)

    def stream(client: int) -> str:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300)
        ready.wait()
        text, seen = [], times.setdefault(client, [])
        for chunk in api.chat.completions.create(model=MODEL, messages=STORY,  # type: ignore[arg-type]
                                                 max_tokens=48, stream=True, temperature=0):
            if isinstance(chunk, tuple):  # the SDK's stream yields chunks; its type also admits tuples
                continue
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(time.monotonic())
                text.append(chunk.choices[0].delta.content)
        return "".join(text)

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(stream, range(4)))
    assert all(texts)
    first_pieces, last_pieces = [seen[0] for seen in times.values()], [seen[-1] for seen in times.values()]
    assert max(first_pieces) < min(last_pieces), times  # every stream had begun before any ended
    assert len(set(texts)) == 1  # the same prompt, greedy: the same answer, whichever slot it had
