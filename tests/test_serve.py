"""`localllm serve` as a real process on loopback, with the bundled model, through the official `openai`, `anthropic`
and `ollama` clients: plain and streamed answers, raw text completions, embeddings, a JSON schema, tools, the key,
the limits, the queue, and a client that goes away."""

import json
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
from conftest import BUNDLED_MODEL, run_cli, seed_verdict
from helpers.backend_servers import free_port
from helpers.serve_process import serving

MODEL = "smollm2-135m"
"""The bundled model, as serve names it: a request must name a served model."""

KEY = "test-key-1234"
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
          "required": ["colour", "count"]}
ADD = {"name": "add", "description": "Add two integers",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}}



@pytest.fixture(scope="module")
def server(tmp_path_factory, build_verdict):
    home = seed_verdict(tmp_path_factory.mktemp("serve"), build_verdict)  # no self-check of its own
    # Two answers decoded together and no waiting room: a third request at once is refused (503).
    with serving(home, "--api-key", KEY, "--parallel", "2", "--queue", "0", "--preset", "precise") as url:
        yield url, home / "serve.log"


def test_the_openai_client_chats_streams_follows_a_schema_and_gets_tool_calls(server):
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    (listed,) = client.models.list().data
    assert listed.id == "smollm2-135m"
    assert listed.created == int(BUNDLED_MODEL.stat().st_mtime) == client.models.retrieve(MODEL).created  # its file's
    plain = client.chat.completions.create(model=MODEL, max_tokens=8,
                                           messages=[{"role": "user", "content": "Name a colour."}])
    assert plain.choices[0].message.content and plain.usage.completion_tokens == 8
    assert plain.choices[0].finish_reason == "length"
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model=MODEL, max_tokens=8, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "Name a colour."}]):
        pieces += [chunk.choices[0].delta.content or ""] if chunk.choices else []
        usage = chunk.usage or usage
    # Not compared with the plain answer word for word: llama.cpp reusing the cached prompt can tip a greedy choice.
    assert "".join(pieces).strip() and usage.completion_tokens == 8
    structured = client.chat.completions.create(
        model=MODEL, max_tokens=60, messages=[{"role": "user", "content": "One colour and how many letters it has."}],
        response_format={"type": "json_schema", "json_schema": {"name": "colour", "schema": SCHEMA}})
    jsonschema.validate(json.loads(structured.choices[0].message.content), SCHEMA)
    called = client.chat.completions.create(
        model=MODEL, max_tokens=60, messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=[{"type": "function", "function": ADD}], tool_choice={"type": "function", "function": {"name": "add"}})
    (call,) = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), ADD["parameters"])
    answered = client.chat.completions.create(model=MODEL, max_tokens=12, tools=[{"type": "function", "function": ADD}],
                                              messages=[{"role": "user", "content": "What is 2 plus 3?"},
                                                        called.choices[0].message.model_dump(exclude_none=True),
                                                        {"role": "tool", "tool_call_id": call.id, "content": "5"}])
    assert answered.choices[0].message.content or answered.choices[0].message.tool_calls


def test_the_anthropic_client_gets_messages_events_and_tool_use(server):
    import anthropic

    url, _ = server
    client = anthropic.Anthropic(base_url=url, api_key=KEY)
    message = client.messages.create(model=MODEL, max_tokens=8,
                                     messages=[{"role": "user", "content": "Name a colour."}])
    assert message.content[0].type == "text" and message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 8
    with client.messages.stream(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}]) \
            as stream:
        streamed = "".join(stream.text_stream)
    assert streamed.strip()
    tool = {"name": "add", "description": ADD["description"], "input_schema": ADD["parameters"]}
    used = client.messages.create(model=MODEL, max_tokens=60, tools=[tool], tool_choice={"type": "tool", "name": "add"},
                                  messages=[{"role": "user", "content": "What is 2 plus 3?"}])
    (block,) = [b for b in used.content if b.type == "tool_use"]
    assert used.stop_reason == "tool_use" and block.name == "add"
    jsonschema.validate(block.input, ADD["parameters"])


def test_the_ollama_client_lists_shows_chats_and_generates(server):
    import ollama

    url, _ = server
    client = ollama.Client(host=url, headers={"Authorization": f"Bearer {KEY}"})
    assert [m.model for m in client.list().models] == ["smollm2-135m"]
    assert client.show("smollm2-135m").modelinfo["general.context_length"] > 0
    chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
                       options={"num_predict": 8})
    assert chat.message.content and chat.eval_count == 8 and chat.done_reason == "length"
    streamed = "".join(part.message.content for part in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], options={"num_predict": 8}, stream=True))
    assert streamed.strip()
    generated = client.generate(model=MODEL, prompt="Name a colour.", options={"num_predict": 8})
    assert generated.response and generated.done


def test_keys_limits_and_an_over_long_prompt_are_clear_http_errors(server):
    import openai

    url, _ = server
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong").models.list()
    assert httpx.get(f"{url}/v1/models").status_code == 401
    huge = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      content=b"{" + b" " * (9 * 1024 * 1024) + b"}")
    assert huge.status_code == 413 and "over 8 MiB" in huge.json()["error"]["message"]
    long_prompt = "The river flows past the old mill. " * 2000
    refused = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": MODEL, "messages": [{"role": "user", "content": long_prompt}]}, timeout=60)
    assert refused.status_code == 400 and "window" in refused.json()["error"]["message"]
    ollama_refused = httpx.post(f"{url}/api/chat", headers={"Authorization": f"Bearer {KEY}"},
                                json={"model": MODEL, "messages": [{"role": "user", "content": long_prompt}]},
                                timeout=60)
    assert ollama_refused.status_code == 400 and "window" in ollama_refused.json()["error"]  # Ollama would cut it
    bad = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})
    assert bad.status_code == 400 and "temperature" in bad.json()["error"]["message"]


def test_a_full_queue_is_503_and_a_client_that_leaves_stops_its_answer(server):
    url, log = server
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "stream": True, "max_tokens": 2000, "messages": [
        {"role": "user", "content": "Write a very long story about a lighthouse keeper."}]}
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{url}/v1/chat/completions", headers=headers,
                                                           json=body) as long_answer, \
            client.stream("POST", f"{url}/v1/chat/completions", headers=headers, json=body) as other_answer:
        streams = [answer.iter_lines() for answer in (long_answer, other_answer)]  # kept: a dropped one closes
        for lines in streams:  # both slots busy
            assert any('"content"' in line and '""' not in line for line in lines)
        crowded = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                             json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    # The streams are closed here, long before their 2,000 tokens: the server stops those answers.
    assert crowded.status_code == 503 and crowded.headers["retry-after"] == "5"
    started = time.monotonic()
    # The server frees a slot once it has noticed the client left and ended that answer's decode step: on a busy
    # machine that can come after this request, which is then told to retry, as a client would.
    while (after := httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})).status_code == 503:
        assert time.monotonic() - started < 30, "the answers of the clients that left were never stopped"
        time.sleep(0.1)
    assert after.status_code == 200, after.text
    deadline = time.monotonic() + 30
    while "the client went away" not in Path(log).read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = [line for line in Path(log).read_text().splitlines() if "the client went away" in line]
    assert stopped and int(stopped[-1].split("after ")[1].split()[0]) < 1000


def test_the_openai_client_completes_raw_text_plainly_streamed_and_with_stops(server):
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    plain = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8)
    (choice,) = plain.choices
    # Continued as raw text: no chat template around it (its prompt is a handful of tokens, not a templated turn).
    assert plain.object == "text_completion" and "Paris" in choice.text and choice.finish_reason == "length"
    assert plain.usage.completion_tokens == 8 and plain.usage.prompt_tokens < 10
    stopped = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, stop=["."],
                                        echo=True)
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens < 8
    assert stopped.choices[0].text.startswith("The capital of France is") and "." not in stopped.choices[0].text
    pieces: dict[int, str] = {0: "", 1: ""}
    finishes, usage = {}, None
    for chunk in client.completions.create(model=MODEL, prompt=["One, two, three,", "Red, green,"], max_tokens=4,
                                           stream=True, stream_options={"include_usage": True}):
        for part in chunk.choices:
            pieces[part.index] += part.text
            finishes.update({part.index: part.finish_reason} if part.finish_reason else {})
        usage = chunk.usage or usage
    assert pieces[0].strip() and pieces[1].strip() and finishes == {0: "length", 1: "length"}
    assert usage is not None and usage.completion_tokens == 8


def test_embeddings_through_the_openai_and_ollama_clients(server):
    import ollama
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    cat, kitten, revenue = ("The cat sat on the mat.", "A kitten was lying on the rug.",
                            "Quarterly revenue rose by four percent.")
    # One text: the client asks for base64 and decodes it; a list: plain floats.
    (alone,) = client.embeddings.create(model=MODEL, input=cat).data
    listed = client.embeddings.create(model=MODEL, input=[cat, kitten, revenue, cat], encoding_format="float")
    vectors = [item.embedding for item in listed.data]
    assert [item.index for item in listed.data] == [0, 1, 2, 3] and listed.usage.prompt_tokens > 12
    assert all(len(vector) == 576 for vector in [alone.embedding, *vectors])  # SmolLM2-135M's n_embd

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert abs(dot(vectors[0], vectors[0]) - 1) < 1e-4  # normalised
    assert max(abs(a - b) for a, b in zip(vectors[0], vectors[3], strict=True)) < 1e-4  # the same text, alike
    assert max(abs(a - b) for a, b in zip(vectors[0], alone.embedding, strict=True)) < 1e-4
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.1  # a kitten is nearer a cat than revenue
    ollama_client = ollama.Client(host=url, headers={"Authorization": f"Bearer {KEY}"})
    embedded = ollama_client.embed(model=MODEL, input=[cat, revenue])
    assert len(embedded.embeddings) == 2 and embedded.prompt_eval_count > 0
    assert max(abs(a - b) for a, b in zip(embedded.embeddings[1], vectors[2], strict=True)) < 1e-4
    assert len(ollama_client.embed(model=MODEL, input=kitten).embeddings) == 1
    legacy = ollama_client.embeddings(model=MODEL, prompt=cat).embedding
    assert max(abs(a - b) for a, b in zip(legacy, vectors[0], strict=True)) < 1e-4
    with pytest.raises(openai.BadRequestError, match="over the 2048-token window"):
        client.embeddings.create(model=MODEL, input=["fine", "word " * 3000])


def test_over_long_completions_and_out_of_range_values_are_400s(server):
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    long_prompt = "The river flows past the old mill. " * 2000
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="context window is"):
            client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4, stream=stream)
    with pytest.raises(openai.BadRequestError, match="top_p must be a number from 0 to 1"):
        client.chat.completions.create(model=MODEL, max_tokens=4, top_p=1.5,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="top_p must be a number from 0 to 1"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=4, top_p=1.5)
    with pytest.raises(openai.BadRequestError, match="temperature must be a number from 0 to 2"):
        client.chat.completions.create(model=MODEL, max_tokens=4, temperature=3,
                                       messages=[{"role": "user", "content": "hi"}])


def test_a_backend_without_embeddings_or_raw_text_says_so():
    """Checked before the backend is asked anything, so a real but unconnected Ollama backend is enough here."""
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from localllm.backends.ollama import OllamaBackend
    from localllm.core.options import preset
    from localllm.server.app import build_app
    from localllm.server.engine import Engine

    loaded = SimpleNamespace(backend=OllamaBackend(), ref=SimpleNamespace(name="llama3.2"))
    with TestClient(build_app(Engine(loaded), preset("precise"))) as client:
        refused = client.post("/v1/embeddings", json={"input": "hi"})
        assert refused.status_code == 501
        assert refused.json()["error"]["message"].startswith("backend ollama cannot compute embeddings")
        assert client.post("/api/embed", json={"input": "hi"}).status_code == 501
        raw = client.post("/v1/completions", json={"prompt": "hi"})
        assert raw.status_code == 501 and "backend ollama cannot continue raw text" in raw.json()["error"]["message"]


def test_a_stream_gathers_the_tokens_made_while_it_waits_and_ends_without_waiting():
    """The engine's hand-over from the generating thread: the first piece at once, then what was made during each
    interval in one event, every piece in order, and the end as soon as it comes."""
    import asyncio

    from localllm.core.chunks import FinalChunk, TextChunk, Timings, Usage
    from localllm.server.engine import Handover, merged

    async def consume(tokens: int, gap: float, interval: float) -> tuple[list[list], float, float]:
        loop = asyncio.get_running_loop()
        handover = Handover(loop)
        finished = []
        first_taken = threading.Event()

        def produce() -> None:
            for index in range(tokens):
                handover.put(TextChunk(f"{index} "))
                if index == 0:  # on a loaded machine the taker may be late: the first piece is still alone
                    first_taken.wait(10)
                time.sleep(gap)
            finished.append(loop.time())
            handover.put(FinalChunk("stop", Usage(5, tokens), Timings(None, 0.0, 0.0)), last=True)

        thread = threading.Thread(target=produce)
        started = loop.time()
        thread.start()
        batches: list[list] = []
        next_event = None
        while not batches or not isinstance(batches[-1][-1], FinalChunk):
            batches.append(merged(await handover.take(next_event)))
            first_taken.set()
            next_event = loop.time() + interval
        ended = loop.time()
        thread.join()
        return batches, finished[0] - started, ended - finished[0]

    batches, producing, _ = asyncio.run(consume(40, 0.002, 0.05))
    assert batches[0] == [TextChunk("0 ")]
    texts = [item.text for batch in batches for item in batch if isinstance(item, TextChunk)]
    assert "".join(texts) == "".join(f"{index} " for index in range(40))
    assert len(batches) <= producing / 0.05 + 3  # an event an interval, not one a token
    assert all(len([item for item in batch if isinstance(item, TextChunk)]) <= 1 for batch in batches)
    # The end did not wait out the interval: a 5 s interval, so that a loaded machine's late wake-up (a fraction of
    # a second) stays far from it.
    _, _, lag = asyncio.run(consume(5, 0.0, 5.0))
    assert lag < 2.5


def test_another_address_without_a_key_is_refused(tmp_path):
    done = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), home=tmp_path)
    assert done.returncode == 2
    assert done.stderr_text.startswith("error: serving on 0.0.0.0 without an API key would let anyone")


def test_a_parallel_count_out_of_range_is_a_usage_error(tmp_path):
    done = run_cli("serve", "--parallel", "0", "--port", str(free_port()), home=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr_text
    assert done.stderr_text.startswith("error: --parallel 0 is out of range") and "--parallel 4" in done.stderr_text


def test_a_stop_sequence_is_named_by_anthropic_and_openai_says_stop(server):
    """The stop string that ended an answer is reported (Anthropic's stop_reason and stop_sequence), streamed or not."""
    import anthropic
    import openai

    url, _ = server
    client = anthropic.Anthropic(base_url=url, api_key=KEY)
    ask = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    plain = client.messages.create(model=MODEL, max_tokens=40, stop_sequences=["4", "zzz"], messages=ask)
    assert plain.stop_reason == "stop_sequence" and plain.stop_sequence == "4", plain
    assert "4" not in plain.content[0].text
    with client.messages.stream(model=MODEL, max_tokens=40, stop_sequences=["4"], messages=ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "stop_sequence" and streamed.stop_sequence == "4"
    ended = client.messages.create(model=MODEL, max_tokens=3, messages=ask)
    assert ended.stop_reason == "max_tokens" and ended.stop_sequence is None
    chat = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY).chat.completions.create(
        model=MODEL, max_tokens=40, stop=["4"], messages=ask)
    assert chat.choices[0].finish_reason == "stop" and "4" not in chat.choices[0].message.content


def test_a_route_or_method_it_lacks_is_a_404_or_405_in_the_clients_shape_and_logged(server):
    """A client that calls what serve does not have gets its own API family's error, through its own SDK, and the
    log has a line for it (Starlette's own answer was plain text and left none)."""
    import anthropic
    import ollama
    import openai

    url, log = server
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(openai.NotFoundError) as not_there:
        openai.OpenAI(base_url=f"{url}/v1", api_key=KEY).post("/no-such-route", cast_to=object, body={})
    assert "there is no route POST /v1/no-such-route (GET / lists the routes)" in str(not_there.value)
    assert not_there.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as no_count:
        anthropic.Anthropic(base_url=url, api_key=KEY).post("/v1/messages/no-such-route", cast_to=object, body={})
    assert no_count.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
        "type": "not_found_error", "message": "there is no route POST /v1/messages/no-such-route (GET / lists the "
                                              "routes)"}}
    with pytest.raises(ollama.ResponseError) as no_ollama_route:
        ollama.Client(host=url, headers=auth)._request_raw("POST", "/api/no-such-route", json={})
    assert no_ollama_route.value.status_code == 404 and "no route POST /api/no-such-route" in \
        no_ollama_route.value.error
    wrong_method = httpx.get(f"{url}/api/chat", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json() == {"error": "/api/chat takes POST, not GET"}
    listed = httpx.get(f"{url}/", headers=auth).json()["routes"]
    assert "POST /v1/chat/completions" in listed and "POST /api/chat" in listed and "GET /api/tags" in listed
    lines = Path(log).read_text().splitlines()
    for logged in ("POST /v1/no-such-route 404", "POST /v1/messages/no-such-route 404",
                   "POST /api/no-such-route 404", "GET /api/chat 405"):
        assert any(logged in line for line in lines), (logged, lines[-6:])


def test_the_loaded_model_is_listed_by_ps_retrieved_by_name_and_tagged_with_its_file(server, bundled_model):
    import ollama
    import openai

    url, log = server
    auth = {"Authorization": f"Bearer {KEY}"}
    client = ollama.Client(host=url, headers=auth)
    window = client.show("smollm2-135m").modelinfo["general.context_length"]
    (running,) = client.ps().models  # what oterm asks after each answer, to fit a long chat into the window
    assert running.model == "smollm2-135m" and running.context_length == window
    assert running.size > bundled_model.stat().st_size and running.size_vram == 0  # weights and cache, on the CPU
    # Unloaded five minutes (the default keep-alive) after its last request
    assert 0 < running.expires_at.timestamp() - time.time() <= 300 + 5
    (tagged,) = client.list().models
    assert tagged.size == bundled_model.stat().st_size
    assert abs(tagged.modified_at.timestamp() - bundled_model.stat().st_mtime) < 1  # the file's time, not now
    models = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY).models
    assert models.retrieve("smollm2-135m").id == "smollm2-135m"
    with pytest.raises(openai.NotFoundError) as other:
        models.retrieve("gpt-4o")
    assert "model 'gpt-4o' is not served here; served: smollm2-135m" in str(other.value)
    assert any("GET /api/ps 200" in line for line in Path(log).read_text().splitlines())
