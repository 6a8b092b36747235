"""The behaviour every backend shares, run over each backend available here: llama.cpp in-process, a real
llama-cpp-python server through the OpenAI-compatible backend, the Ollama protocol stand-in (and a real Ollama when
OLLAMA_HOST is set), and GPT4All with a tiny llama GGUF written at test time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from conftest import settings_for

from localllm.core.chunks import FinalChunk, Response, TextChunk
from localllm.core.errors import ContextOverflow
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.tasks.chat import ChatSession

QUESTION = [Message("user", "Name three colours.")]
SCHEMA = {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
          "required": ["colours"]}


def greedy(**changes):
    return preset("precise").with_overrides(**changes)


@dataclass
class Case:
    loaded: object
    exact_prompt_tokens: Callable[[list[Message]], int]
    """The prompt's true size in the served model's own tokenizer."""


def _real_ollama_model() -> str | None:
    return os.environ.get("LOCALLLM_TEST_OLLAMA_MODEL")


@pytest.fixture(scope="module", params=["llama.cpp", "openai", "ollama-standin", "ollama-real", "gpt4all"])
def case(request, loaded, tmp_path_factory):
    """A loaded model on one backend, through the same load_model the CLI and the TUI use."""
    from localllm.tasks.loading import load_model

    exact = loaded.backend.count_prompt_tokens  # the bundled model, which every server below serves
    if request.param == "llama.cpp":
        yield Case(loaded, exact)
        return
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    if request.param == "openai":
        server = request.getfixturevalue("llama_server")
        settings = settings_for(home, base_url=f"{server.url}/v1", request_timeout=60)
        model = load_model(settings, backend="openai")
    elif request.param == "ollama-standin":
        server = request.getfixturevalue("ollama_standin")
        model = load_model(settings_for(home, ollama_host=server.url, ctx=2048), "smollm2:135m", backend="ollama")
    elif request.param == "ollama-real":
        if not os.environ.get("OLLAMA_HOST"):
            pytest.skip("set OLLAMA_HOST (and LOCALLLM_TEST_OLLAMA_MODEL) to run these against a real Ollama")
        settings = settings_for(home, ollama_host=os.environ["OLLAMA_HOST"], ctx=2048)
        model = load_model(settings, _real_ollama_model(), backend="ollama")
        exact = None
    else:
        pytest.importorskip("gpt4all")
        model = load_model(settings_for(home, ctx=1024), str(request.getfixturevalue("tiny_gguf")), backend="gpt4all")
        exact = None
    with model:
        yield Case(model, exact)


def reported_prompt_tokens(backend, messages) -> int:
    response = Response(backend.chat(messages, greedy(max_tokens=2)))
    response.text()
    assert response.final is not None
    return response.final.usage.prompt_tokens


def test_stream_is_text_chunks_then_one_final_chunk(case):
    chunks = list(case.loaded.backend.chat(QUESTION, greedy(max_tokens=12)))
    assert len(chunks) > 2 and all(isinstance(c, TextChunk) and c.text for c in chunks[:-1])
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert final.usage.completion_tokens == 12 and final.finish_reason == "length"
    assert final.usage.prompt_tokens > 0
    assert final.timings.first_token_s is not None and final.tokens_per_second > 0


def test_greedy_is_deterministic_and_seed_repeats_sampling(case):
    backend = case.loaded.backend
    first = Response(backend.chat(QUESTION, greedy(max_tokens=10))).text()
    assert first and first == Response(backend.chat(QUESTION, greedy(max_tokens=10))).text()
    if backend.capabilities.seed:
        creative = preset("creative").with_overrides(max_tokens=10, seed=1234)
        assert Response(backend.chat(QUESTION, creative)).text() == Response(backend.chat(QUESTION, creative)).text()


def test_stop_string_ends_the_answer(case):
    backend = case.loaded.backend
    unstopped = Response(backend.chat(QUESTION, greedy(max_tokens=16))).text()
    word = unstopped.split()[2]
    response = Response(backend.chat(QUESTION, greedy(max_tokens=16, stop=(word,))))
    text = response.text()
    assert word not in text and unstopped.startswith(text.rstrip())
    assert response.final.finish_reason == "stop"


def test_max_tokens_option_bounds_the_answer(case):
    response = Response(case.loaded.backend.chat(QUESTION, greedy(max_tokens=3)))
    assert response.text()
    assert response.final.usage.completion_tokens == 3


def test_closing_the_stream_stops_and_the_backend_answers_again(case):
    backend = case.loaded.backend
    response = Response(backend.chat([Message("user", "Write a long story about a dragon.")], greedy(max_tokens=300)))
    for count, _chunk in enumerate(response, start=1):
        if count == 3:
            response.close()
            break
    assert response.final is None and response.partial_text
    again = Response(backend.chat(QUESTION, greedy(max_tokens=4)))
    assert again.text() and again.final.usage.completion_tokens == 4


def test_json_schema_output_is_valid(case):
    backend = case.loaded.backend
    if not backend.capabilities.json_schema:
        pytest.skip(f"{backend.name} has no constrained JSON output; tasks validate and retry instead")
    import jsonschema

    text = Response(backend.chat([Message("user", "List three colours as JSON.")],
                                 greedy(max_tokens=60, json_schema=SCHEMA))).text()
    jsonschema.validate(json.loads(text), SCHEMA)


def test_prompt_counts_are_exact_or_never_below_the_truth(case):
    backend = case.loaded.backend
    messages = [Message("system", "Answer briefly."),
                Message("user", "What is 1234 + 5678? Ünïcode, 東京, code: x=[1,2]")]
    counted = backend.count_prompt_tokens(messages)
    exact = case.exact_prompt_tokens
    truth = exact(messages) if exact else reported_prompt_tokens(backend, messages)
    if backend.capabilities.tokenize:
        assert counted == truth
    else:
        assert truth <= counted <= 3 * truth + 64
    assert backend.count_tokens("Hello world") >= 2 and backend.context_window >= 1024


def test_prompt_longer_than_the_window_is_an_error_not_a_cut(case):
    backend = case.loaded.backend
    long = [Message("user", "word " * (backend.context_window + 100))]
    with pytest.raises(ContextOverflow):
        list(backend.chat(long, greedy(max_tokens=4)))


def test_chat_session_keeps_history_and_counts(case):
    session = ChatSession(case.loaded, greedy(max_tokens=6))
    session.send("Name a colour.").text()
    second = session.send("And another one?")
    assert second.text()
    assert len(session.history) == 4 and session.stats.turns == 2
    assert session.stats.completion_tokens == 12
    assert case.loaded.plan.n_ctx == case.loaded.backend.context_window
