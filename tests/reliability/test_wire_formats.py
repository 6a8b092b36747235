"""Malformed and hostile request bodies sent to `localllm serve` (a real process on loopback with the bundled
model) through its three APIs, OpenAI's, Anthropic's and Ollama's: a field of the wrong type at any depth, JSON
nested thousands of levels deep, a lone surrogate in the text, NaN, more messages, tools, prompts or tokens than one
request may ask, and random JSON values thrown at every field. The client gets a 400 in its API's own error shape
that names the field by its path (e.g. `messages[2].tool_calls[0].function.arguments`) or the bound, or an answer;
the server never prints a traceback and keeps serving. A bug of the server's own is a 500 in the same shape and one
log line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "smollm2-135m"
"""The bundled model, as serve names it: a request must name a served model."""

server = test_serve.server  # the same `localllm serve` process as tests/test_serve.py's (one per module)
HEADERS = {"Authorization": f"Bearer {test_serve.KEY}"}
HI = [{"role": "user", "content": "Hi"}]
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": MODEL, "max_tokens": 2, "messages": HI},
    "/v1/completions": {"model": MODEL, "max_tokens": 2, "prompt": "Once upon a time"},
    "/v1/messages": {"model": MODEL, "max_tokens": 2, "messages": HI},
    "/api/chat": {"model": MODEL, "stream": False, "options": {"num_predict": 2}, "messages": HI},
    "/api/generate": {"model": MODEL, "stream": False, "options": {"num_predict": 2}, "prompt": "Hi"},
}
TEXT_FIELD = {"/v1/chat/completions": ("messages", 0, "content"), "/v1/completions": ("prompt",),
              "/v1/messages": ("messages", 0, "content"), "/api/chat": ("messages", 0, "content"),
              "/api/generate": ("prompt",)}
"""Where each route's text is, and how a 400 names it."""
ADD: dict[str, Any] = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}}}}
ANTHROPIC_ADD = {"name": "add", "input_schema": ADD["function"]["parameters"]}
OK = {"role": "assistant", "content": "Sure."}


def openai_call(arguments: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": arguments}}]}


def anthropic_use(tool_input: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": tool_input}]}


def anthropic_result(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": content}]}


CHAT, TEXT, MESSAGES, OLLAMA, GENERATE = BASES
CASES: list[tuple[str, dict[str, Any], str]] = [
    # OpenAI's chat: (route, fields replaced in its base body, what the 400 says)
    (CHAT, {"messages": "hi"}, "messages must be a non-empty list"),
    (CHAT, {"messages": []}, "messages must be a non-empty list"),
    (CHAT, {"messages": ["hi"]}, "messages[0] must be an object"),
    (CHAT, {"messages": [{"role": 5, "content": "hi"}]}, "messages[0].role must be one of"),
    (CHAT, {"messages": [{"role": "user", "content": {"text": "hi"}}]},
     "messages[0].content must be a string or a list of text parts"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages[0].content[0].text must be a string"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     'messages[0].content[0]: parts of type "image_url" are not supported'),
    (CHAT, {"messages": [*HI, OK, openai_call("[1, 2]")]},
     "messages[2].tool_calls[0].function.arguments must be a JSON object"),
    (CHAT, {"messages": [*HI, openai_call('{"a": ')]}, "messages[1].tool_calls[0].function.arguments must be"),
    (CHAT, {"messages": [*HI, openai_call(7)]}, "messages[1].tool_calls[0].function.arguments must be"),
    (CHAT, {"messages": [*HI, {"role": "assistant", "tool_calls": {"id": "c1"}}]},
     "messages[1].tool_calls must be a list"),
    (CHAT, {"messages": [*HI, {"role": "assistant", "tool_calls": [{"function": "add"}]}]},
     "messages[1].tool_calls[0].function must be an object"),
    (CHAT, {"messages": [*HI, {"role": "assistant", "tool_calls": [{"function": {"name": 7}}]}]},
     "messages[1].tool_calls[0].function.name must be a string"),
    (CHAT, {"messages": [*HI, {"role": "tool", "content": "3", "tool_call_id": 5}]},
     "messages[1].tool_call_id must be a string"),
    (CHAT, {"tools": {"add": ADD}}, "tools must be a list"),
    (CHAT, {"tools": ["add"]}, "tools[0] must be an object"),
    (CHAT, {"tools": [{"type": "function", "function": {"name": "add", "parameters": "integers"}}]},
     "tools[0].function.parameters must be a JSON schema object"),
    (CHAT, {"tools": [{"type": "function", "function": {"description": "adds"}}]},
     "tools[0].function.name must be a string"),
    (CHAT, {"tool_choice": 5}, "tool_choice must be an object"),
    (CHAT, {"tool_choice": "sometimes"}, "tool_choice must be one of"),
    (CHAT, {"tool_choice": {"type": "function", "function": "add"}}, "tool_choice.function must be an object"),
    (CHAT, {"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "mul"}}},
     'tool_choice names the tool "mul", which is not among the tools'),
    (CHAT, {"response_format": "json"}, "response_format must be an object"),
    (CHAT, {"response_format": {"type": "xml"}}, "response_format.type must be one of"),
    (CHAT, {"response_format": {"type": "json_schema", "json_schema": "x"}},
     "response_format.json_schema must be an object"),
    (CHAT, {"response_format": {"type": "json_schema", "json_schema": {"schema": ["a"]}}},
     "response_format.json_schema.schema must be a JSON schema object"),
    (CHAT, {"stream": "yes"}, "stream must be true or false"),
    (CHAT, {"stream_options": ["include_usage"]}, "stream_options must be an object"),
    (CHAT, {"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage must be true or false"),
    (CHAT, {"stop": 5}, "stop must be a string or a list of strings"),
    (CHAT, {"stop": ["a", 1]}, "stop must be a string or a list of strings"),
    (CHAT, {"temperature": 10**400}, "temperature must be a number from 0 to 2"),
    (CHAT, {"reasoning_effort": 3}, "reasoning_effort must be a string"),
    (CHAT, {"max_tokens": "2"}, "max_tokens must be an integer"),
    (CHAT, {"seed": 1.5}, "seed must be an integer"),
    (CHAT, {"messages": HI * 1025}, "messages has 1025 messages; at most 1024"),
    (CHAT, {"tools": [ADD] * 129}, "tools has 129 tools; at most 128"),
    (CHAT, {"stop": ["x"] * 65}, "stop has 65 stop sequences; at most 64"),
    # OpenAI's raw text completions
    (TEXT, {"prompt": ["Once"] * 65}, "prompt has 65 prompts; at most 64"),
    (TEXT, {"prompt": ["Once"] * 64, "max_tokens": 2048}, "at most 65536 may be asked for in one request"),
    (TEXT, {"prompt": {"text": "Once"}}, "prompt must be a string, a list of strings, a list of token ids"),
    (TEXT, {"prompt": ["Once", ""]}, "prompt must not be empty"),
    (TEXT, {"echo": "yes"}, "echo must be true or false"),
    (TEXT, {"n": True}, "n must be an integer from 1 to 8"),
    (TEXT, {"stop": {"a": 1}}, "stop must be a string or a list of strings"),
    (TEXT, {"stream_options": 1}, "stream_options must be an object"),
    # Anthropic's messages
    (MESSAGES, {"max_tokens": None}, "max_tokens is required"),
    (MESSAGES, {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role must be one of"),
    (MESSAGES, {"messages": [{"role": "user", "content": 5}]},
     "messages[0].content must be a string or a list of blocks"),
    (MESSAGES, {"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content[0] must be an object"),
    (MESSAGES, {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content[0].text must be a string"),
    (MESSAGES, {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
     'messages[0].content[0]: blocks of type "image" are not supported'),
    (MESSAGES, {"messages": [*HI, anthropic_use([1, 2])]}, "messages[1].content[0].input must be an object"),
    (MESSAGES, {"messages": [*HI, anthropic_use({"a": 1}), anthropic_result(5)]},
     "messages[2].content[0].content must be a string or a list of text blocks"),
    (MESSAGES, {"messages": [*HI, anthropic_use({"a": 1}), anthropic_result([{"type": "image", "source": {}}])]},
     'messages[2].content[0].content[0]: blocks of type "image" are not supported'),
    (MESSAGES, {"system": 5}, "system must be a string or a list of text blocks"),
    (MESSAGES, {"system": [{"type": "text", "text": 5}]}, "system[0].text must be a string"),
    (MESSAGES, {"stop_sequences": 5}, "stop_sequences must be a string or a list of strings"),
    (MESSAGES, {"thinking": "on"}, "thinking must be an object"),
    (MESSAGES, {"thinking": {"type": 5}}, "thinking.type must be a string"),
    (MESSAGES, {"tool_choice": "auto"}, "tool_choice must be an object"),
    (MESSAGES, {"tool_choice": {"type": "sometimes"}}, "tool_choice.type must be one of"),
    (MESSAGES, {"tools": [ANTHROPIC_ADD], "tool_choice": {"type": "tool", "name": "mul"}},
     'tool_choice names the tool "mul"'),
    (MESSAGES, {"tools": [{"name": "add", "input_schema": "x"}]},
     "tools[0].input_schema must be a JSON schema object"),
    (MESSAGES, {"stream": 1}, "stream must be true or false"),
    (MESSAGES, {"top_k": "x"}, "top_k must be an integer"),
    (MESSAGES, {"messages": [*HI, anthropic_use({}), anthropic_result("ok")] * 342},
     "messages has 1026 messages; at most 1024"),
    # Ollama's chat and generate
    (OLLAMA, {"options": "hot"}, "options must be an object"),
    (OLLAMA, {"options": {"num_predict": 2, "temperature": "hot"}}, "options.temperature must be a number"),
    (OLLAMA, {"options": {"num_predict": 2, "stop": 5}}, "options.stop must be a string or a list of strings"),
    (OLLAMA, {"options": {"num_predict": 2.5}}, "options.num_predict must be an integer"),
    (OLLAMA, {"messages": [*HI, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "add", "arguments": [1, 2]}}]}]},
     "messages[1].tool_calls[0].function.arguments must be a JSON object"),
    (OLLAMA, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string or a list"),
    (OLLAMA, {"messages": [{"role": "user", "content": "hi", "images": "aGk="}]},
     "messages[0].images must be a list"),
    (OLLAMA, {"think": "maybe"}, "think must be true, false"),
    (OLLAMA, {"format": 5}, 'format must be "json" or a JSON schema object'),
    (OLLAMA, {"format": "xml"}, 'format must be "json" or a JSON schema object'),
    (OLLAMA, {"keep_alive": []}, "keep_alive must be a duration"),
    (OLLAMA, {"stream": "no"}, "stream must be true or false"),
    (OLLAMA, {"tools": 5}, "tools must be a list"),
    (GENERATE, {"prompt": 5}, "prompt must be a string"),
    (GENERATE, {"system": ["be brief"]}, "system must be a string"),
    (GENERATE, {"images": ["aGk="]}, "images are not supported"),
]


def refusal(response: httpx.Response, route: str) -> str:
    """The message of a 4xx in the route's own error shape."""
    assert 400 <= response.status_code < 500, response.text
    data = response.json()
    if route.startswith("/api/"):
        assert set(data) == {"error"} and isinstance(data["error"], str), data
        return data["error"]
    if route == "/v1/messages":
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
        return data["error"]["message"]
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "code"}, data
    assert data["error"]["code"] == response.status_code
    return data["error"]["message"]


def send(url: str, route: str, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{route}", headers={**HEADERS, "Content-Type": "application/json"}, content=content,
                      timeout=60)


def no_traceback(log: Path) -> None:
    text = Path(log).read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


@pytest.mark.model
@pytest.mark.parametrize(("route", "changes", "said"), CASES, ids=[f"{r}-{s[:40]}" for r, _, s in CASES])
def test_a_field_of_the_wrong_type_is_a_400_that_names_it(server, route: str, changes: dict[str, Any],
                                                         said: str) -> None:
    """A field of the wrong type, or over a bound, is a 400 that names it by its path, in the API's error shape."""
    url, log = server
    body = {key: value for key, value in {**BASES[route], **changes}.items() if value is not None}
    response = send(url, route, body)
    assert response.status_code == 400 and said in refusal(response, route), response.text
    no_traceback(log)


def nested(route: str, text: str) -> bytes:
    """The route's base body as JSON with ``text`` (JSON itself) in place of its text field."""
    marker = "\u0000marker\u0000"
    body = json.loads(json.dumps(BASES[route]))
    *parents, last = TEXT_FIELD[route]
    holder = body
    for key in parents:
        holder = holder[key]
    holder[last] = marker
    return json.dumps(body).replace(json.dumps(marker), text).encode()


def field_name(route: str) -> str:
    *parents, last = TEXT_FIELD[route]
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in [*parents, last]).lstrip(".")


@pytest.mark.model
@pytest.mark.parametrize("route", list(BASES))
def test_deep_nesting_a_lone_surrogate_nan_and_bad_bytes_are_400s(server, route: str) -> None:
    """JSON nested past Python's recursion limit, or past 100 levels, a lone surrogate, NaN, bytes that are not UTF-8
    and a body that is not an object are each a 400 in the API's error shape."""
    url, log = server
    for depth in (200_000, 101):
        deep = send(url, route, nested(route, "[" * depth + "]" * depth))
        assert "nested more than 100 levels deep" in refusal(deep, route)
    lone = send(url, route, nested(route, '"a \\ud800 b"'))
    assert f"{field_name(route)} is not valid Unicode text" in refusal(lone, route)
    assert "not valid Unicode text" in refusal(send(url, route, json.dumps({"\ud800": 1}).encode()), route)
    assert "not valid JSON" in refusal(send(url, route, json.dumps({**BASES[route], "top_p": "NaN"}).encode()
                                            .replace(b'"NaN"', b"NaN")), route)
    assert "not valid JSON" in refusal(send(url, route, b'{"prompt": "\xff\xfe caf\xe9"}'), route)
    assert "must be a JSON object" in refusal(send(url, route, b"[1, 2]"), route)
    no_traceback(log)


@pytest.mark.model
def test_a_stop_given_as_one_string_is_one_stop(server) -> None:
    """Ollama's options.stop and Anthropic's stop_sequences given as a string are one stop, never its characters."""
    url, log = server
    # " zq" as three stops (" ", "z", "q") would end the answer at its first space: as one stop it never comes.
    ollama = send(url, GENERATE, {**BASES[GENERATE], "prompt": "Describe the sea in a sentence.",
                                  "options": {"num_predict": 12, "stop": " zq"}}).json()
    assert ollama["done_reason"] == "length" and ollama["eval_count"] == 12 and " " in ollama["response"].strip()
    anthropic = send(url, MESSAGES, {**BASES[MESSAGES], "max_tokens": 12, "stop_sequences": " zq", "messages": [
        {"role": "user", "content": "Describe the sea in a sentence."}]}).json()
    assert anthropic["stop_reason"] == "max_tokens" and anthropic["usage"]["output_tokens"] == 12
    assert " " in anthropic["content"][0]["text"].strip()
    no_traceback(log)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "text", "name", "function", "arguments", "parameters", "content", "role", "schema",
                         "json_schema", "input", "tool_calls", "include_usage", "properties"]) | st.text(max_size=6),
        inner, max_size=4),
    max_leaves=10)
"""Any JSON value, its objects keyed mostly with the formats' own field names so that the checks deep in a field
are reached too."""
FIELDS: list[tuple[str, tuple[str | int, ...]]] = [
    *[(CHAT, path) for path in [("messages",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
                                ("messages", 0, "tool_calls"), ("messages", 0, "name"), ("tools",), ("tools", 0),
                                ("tool_choice",), ("response_format",), ("stream",), ("stream_options",), ("stop",),
                                ("temperature",), ("top_p",), ("seed",), ("reasoning_effort",)]],
    *[(TEXT, path) for path in [("prompt",), ("echo",), ("stop",), ("n",), ("stream",), ("suffix",),
                                ("logprobs",)]],
    *[(MESSAGES, path) for path in [("messages",), ("messages", 0), ("messages", 0, "content"), ("system",),
                                    ("tools",), ("tool_choice",), ("stop_sequences",), ("thinking",), ("stream",),
                                    ("temperature",), ("top_k",), ("metadata",)]],
    *[(OLLAMA, path) for path in [("messages",), ("messages", 0), ("messages", 0, "content"),
                                  ("messages", 0, "tool_calls"), ("messages", 0, "images"), ("options",),
                                  ("options", "stop"), ("options", "temperature"), ("think",), ("format",),
                                  ("keep_alive",), ("tools",), ("stream",)]],
    *[(GENERATE, path) for path in [("prompt",), ("system",), ("images",), ("options", "seed"), ("format",)]],
]
"""Every field each route reads (the answer's length aside: max_tokens and num_predict stay small here)."""


def with_value(route: str, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """The route's base body with ``value`` at ``path`` (a value inside the tools: in a list of one valid tool)."""
    body = json.loads(json.dumps(BASES[route]))
    if path[0] == "tools" and len(path) > 1:
        body["tools"] = [ANTHROPIC_ADD if route == MESSAGES else ADD]
    holder = body
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return body


@pytest.mark.model
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_random_json_in_any_field_is_answered_or_refused(server, target, value) -> None:
    """Random JSON values in any field of any route are answered or refused with a 4xx in the API's shape."""
    url, log = server
    route, path = target
    response = send(url, route, with_value(route, path, value))
    if response.status_code >= 300:
        refusal(response, route)
    elif response.headers["content-type"].startswith("application/json"):
        assert isinstance(response.json(), dict)
    else:  # a stream (the value made it one): no error event in it
        assert not [line for line in response.text.splitlines()
                    if line.startswith(('{"error"', 'data: {"error"', "event: error"))], response.text


@pytest.mark.model
def test_the_server_log_holds_no_traceback_after_all_of_it(server) -> None:
    """After every refusal and random body of this module, the server answers and its log holds no traceback."""
    url, log = server
    answer = send(url, CHAT, BASES[CHAT])
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    no_traceback(log)
    assert " 400 " in Path(log).read_text()  # the refusals were logged, one line each


def test_a_bug_of_the_servers_own_is_a_500_in_the_format_and_one_log_line(caplog) -> None:
    """A bug in a handler (here a scheduler with no models behind it) is a 500 in the API's shape and one log
    line."""
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from localllm.core.options import preset
    from localllm.server.app import build_app
    from localllm.server.engine import Engine
    from localllm.server.scheduler import Scheduler

    app = build_app(Scheduler(SimpleNamespace(), Engine), preset("precise"))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=True) as client, caplog.at_level(logging.INFO, "localllm.serve"):
        openai_error = client.get("/v1/models")
        ollama_error = client.get("/api/tags")
    assert openai_error.status_code == 500 and ollama_error.status_code == 500
    assert openai_error.json()["error"]["type"] == "api_error"
    assert "the server failed: AttributeError" in refusal_500(openai_error, "/v1/models")
    assert "the server failed: AttributeError" in refusal_500(ollama_error, "/api/tags")
    lines = [record.getMessage() for record in caplog.records if record.name == "localllm.serve"]
    assert len(lines) == 2 and all(" 500 " in line and "AttributeError" in line for line in lines), lines
    assert not any(record.exc_info for record in caplog.records)


def refusal_500(response: Any, route: str) -> str:
    """The message of a 500 in the route's own error shape."""
    data = response.json()
    return data["error"] if route.startswith("/api/") else data["error"]["message"]
