"""`localllm serve`'s Anthropic token counts and model list, and OpenAI's Responses API (/v1/responses), through the
official `anthropic` and `openai` clients against the real process on loopback with the bundled model: counts that
are the prompt the answer reads, models in each client's own shape, plain and streamed responses with their
events in the order the SDK's stream helper checks, a function tool's round trip, a JSON schema, the model's
reasoning, and a 400 naming the field for what the server cannot do or a value of the wrong type."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import test_serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import ADD, KEY, SCHEMA

MODEL = "smollm2-135m"
"""The bundled model, as serve names it: a request must name a served model."""

server = test_serve.server  # a `localllm serve` process of this module's own, started as test_serve's is
HEADERS = {"Authorization": f"Bearer {KEY}"}
ASK = "What is 2 plus 3?"
ANTHROPIC_ADD = {"name": "add", "description": ADD["description"], "input_schema": ADD["parameters"]}
RESPONSES_ADD = {"type": "function", **ADD}
SHOTS = [turn for question, thought, answer in [("Name a colour.", "A colour. Red is one.", "Red."),
                                                ("Name a fruit.", "A fruit. Apple is one.", "Apple."),
                                                ("Name an animal.", "An animal. Cat is one.", "Cat.")]
         for turn in ({"role": "user", "content": question},
                      {"role": "assistant", "content": f"<think>{thought}</think>\n{answer}"})]
"""Earlier turns that thought aloud first: the small model follows them, and its <think> block is reasoning."""


def anthropic_client(url: str):
    import anthropic

    return anthropic.Anthropic(base_url=url, api_key=KEY)


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)


def no_traceback(log: Path) -> None:
    text = Path(log).read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


def until_free(url: str, left: float) -> None:
    """Returns once the model takes a request: with no waiting room, a busy one refuses it at once with a 503."""
    while (answer := httpx.post(f"{url}/v1/chat/completions", headers=HEADERS, timeout=60, json={
            "model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})).status_code == 503:
        # Quiet, a second or so; the answer left behind would take minutes (3,000 tokens).
        assert time.monotonic() - left < 30, "the answer of the client that left was never stopped"
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text


# -- Anthropic ------------------------------------------------------------------------------------------------------
def test_anthropic_count_tokens_is_the_prompt_the_answer_reads(server):
    """count_tokens counts the system prompt, the messages and the tools as the chat template renders them: the
    same number the answer to that request reports as its input."""
    import anthropic

    url, log = server
    client = anthropic_client(url)
    asked: dict[str, Any] = {"model": MODEL, "system": "You add numbers.",
                             "messages": [{"role": "user", "content": ASK}]}
    plain = client.messages.count_tokens(**asked).input_tokens
    assert plain == client.messages.create(max_tokens=1, **asked).usage.input_tokens
    with_tools = {**asked, "tools": [ANTHROPIC_ADD], "tool_choice": {"type": "tool", "name": "add"}}
    counted = client.messages.count_tokens(**with_tools).input_tokens
    assert counted > plain  # the tool's schema is in the prompt
    assert counted == client.messages.create(max_tokens=1, **with_tools).usage.input_tokens
    # Counting does not wait for the answers being generated (the server's two slots busy and no waiting room: a
    # request that waited for the model would be a 503), and reading the vocabulary beside the decoding changes
    # neither.
    story = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
    with client.messages.stream(model=MODEL, max_tokens=3000, messages=story) as stream, \
            client.messages.stream(model=MODEL, max_tokens=3000, messages=story) as other:
        for each in (stream, other):
            next(text for text in each.text_stream if text)
        assert client.messages.count_tokens(**with_tools).input_tokens == counted
        assert httpx.post(f"{url}/v1/messages", headers=HEADERS, json={
            "model": MODEL, "max_tokens": 1, "messages": story}).status_code == 503  # the model is busy indeed
    until_free(url, time.monotonic())  # the story stopped with its stream: the next tests find the model free
    with pytest.raises(anthropic.BadRequestError) as refused:  # checked as /v1/messages checks it
        client.messages.count_tokens(model=MODEL, messages=[{"role": "system", "content": "x"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages[0].role must be one of" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert any("POST /v1/messages/count_tokens 200" in line for line in Path(log).read_text().splitlines())


def test_the_anthropic_client_lists_models_in_its_shape_and_openais_in_its_own(server):
    """GET /v1/models answers Anthropic's client (it sends anthropic-version) in Anthropic's shape, and OpenAI's
    in OpenAI's; a model not served is a 404 in each one's error shape."""
    import anthropic

    url, _ = server
    client = anthropic_client(url)
    page = client.models.list()
    (info,) = page.data
    assert (info.type, info.id, info.display_name) == ("model", "smollm2-135m", "smollm2-135m")
    assert page.has_more is False and page.first_id == page.last_id == "smollm2-135m"
    window = httpx.post(f"{url}/api/show", headers=HEADERS, json={"model": "smollm2-135m"}).json()["model_info"][
        "general.context_length"]
    assert info.max_input_tokens == window and info.created_at.year >= 2024  # the model file's time
    assert [model.id for model in client.models.list()] == ["smollm2-135m"]  # the SDK's pagination stops there
    assert client.models.list(after_id="smollm2-135m").data == []
    assert client.models.retrieve("smollm2-135m").display_name == "smollm2-135m"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("claude-sonnet-4-5")
    assert missing.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
        "type": "not_found_error", "message": "model 'claude-sonnet-4-5' is not served here; served: "
                                              "smollm2-135m, smollm2-135m:q4_1"}}
    with pytest.raises(anthropic.BadRequestError, match="limit must be an integer from 1 to 1000"):
        client.models.list(limit=0)
    assert [model.id for model in openai_client(url).models.list()] == ["smollm2-135m"]
    assert httpx.get(f"{url}/v1/models", headers=HEADERS).json()["object"] == "list"


# -- OpenAI's Responses API -----------------------------------------------------------------------------------------
def test_a_response_is_text_with_its_usage_and_says_when_it_was_cut(server):
    import openai

    url, _ = server
    client = openai_client(url)
    cut = client.responses.create(model="smollm2-135m", input="Name a colour.", max_output_tokens=8)
    assert cut.object == "response" and cut.id.startswith("resp_") and cut.model == "smollm2-135m"
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    (message,) = cut.output
    assert message.type == "message" and message.status == "incomplete" and message.content[0].type == "output_text"
    assert cut.output_text.strip() and cut.usage.output_tokens == 8
    assert cut.usage.total_tokens == cut.usage.input_tokens + 8
    whole = client.responses.create(model=MODEL, instructions="Be brief.", input="Say hi.", max_output_tokens=60)
    assert whole.status == "completed" and whole.incomplete_details is None and whole.output_text.strip()
    assert whole.instructions == "Be brief." and whole.max_output_tokens == 60
    # The instructions are the system prompt: the prompt is the one chat/completions reads for the same turn.
    chat = client.chat.completions.create(model=MODEL, max_tokens=1, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}])
    assert whole.usage.input_tokens == chat.usage.prompt_tokens
    as_items = client.responses.create(model=MODEL, max_output_tokens=1, input=[
        {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}])
    assert as_items.usage.input_tokens == chat.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=whole.id)
    assert refused.value.body == {  # type: ignore[comparison-overlap]
        "message": "previous_response_id is not supported: the server keeps no state: send the whole conversation "
                   "in input", "type": "invalid_request_error", "code": 400}


def test_a_streamed_response_sends_its_events_in_the_order_the_sdk_checks(server):
    """The SDK's stream helper accumulates the events and checks their order (an item added before its content, done
    before the response completes); the deltas make the final text, numbered without a gap."""
    url, _ = server
    client = openai_client(url)
    with client.responses.stream(model=MODEL, instructions="Be brief.", input="Say hi.", max_output_tokens=60) \
            as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.status == "completed" and final.output_text == "".join(deltas) and final.output_text.strip()
    assert events[0].response.status == "in_progress" and final.usage.output_tokens > 0
    cut = list(client.responses.create(model=MODEL, input="Name a colour.", max_output_tokens=5, stream=True))
    assert cut[-1].type == "response.incomplete"  # OpenAI's last event for an answer cut at max_output_tokens
    assert cut[-1].response.incomplete_details.reason == "max_output_tokens"
    assert cut[-1].response.output[0].status == "incomplete" and cut[-1].response.usage.output_tokens == 5


def test_a_function_tool_is_called_streamed_and_its_result_sent_back(server):
    """A function tool (the Responses shape) with tool_choice forcing it is a function_call item whose arguments fit
    its schema; streamed, its arguments come in their events; the call and its output sent back as input items make
    the prompt chat/completions makes of the same conversation."""
    url, _ = server
    client = openai_client(url)
    called = client.responses.create(model=MODEL, input=ASK, tools=[RESPONSES_ADD], max_output_tokens=60,
                                     tool_choice={"type": "function", "name": "add"})
    (call,) = called.output
    assert call.type == "function_call" and call.name == "add" and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), ADD["parameters"])
    assert called.status == "completed" and called.output_text == "" and called.tools[0].name == "add"
    with client.responses.stream(model=MODEL, input=ASK, tools=[RESPONSES_ADD], tool_choice="required",
                                 max_output_tokens=60) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (streamed,) = final.output
    (arguments,) = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert streamed.type == "function_call" and arguments.arguments == streamed.arguments
    assert "response.function_call_arguments.delta" in [event.type for event in events]
    answered = client.responses.create(model=MODEL, tools=[RESPONSES_ADD], max_output_tokens=1, input=[
        {"role": "user", "content": ASK}, *[item.model_dump(exclude_none=True) for item in called.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "5"}])
    chat = client.chat.completions.create(model=MODEL, max_tokens=1, tools=[{"type": "function", "function": ADD}],
                                          messages=[{"role": "user", "content": ASK},
                                                    {"role": "assistant", "content": None, "tool_calls": [
                                                        {"id": call.call_id, "type": "function", "function": {
                                                            "name": "add", "arguments": call.arguments}}]},
                                                    {"role": "tool", "tool_call_id": call.call_id, "content": "5"}])
    assert answered.usage.input_tokens == chat.usage.prompt_tokens


def test_a_response_follows_a_json_schema_or_json_mode(server):
    from pydantic import BaseModel

    class Colour(BaseModel):
        colour: str
        count: int

    url, _ = server
    client = openai_client(url)
    structured = client.responses.create(
        model=MODEL, input="One colour and how many letters it has.", max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "colour", "schema": SCHEMA}})
    jsonschema.validate(json.loads(structured.output_text), SCHEMA)
    parsed = client.responses.parse(model=MODEL, input="One colour and how many letters it has.", text_format=Colour,
                                    max_output_tokens=60)
    assert isinstance(parsed.output_parsed, Colour) and parsed.text.format.type == "json_schema"
    mode = client.responses.create(model=MODEL, input="Reply with a JSON object holding one colour.",
                                   text={"format": {"type": "json_object"}}, max_output_tokens=60)
    assert mode.status == "completed" and isinstance(json.loads(mode.output_text), dict)


def test_the_models_reasoning_is_a_reasoning_item_streamed_or_not_and_never_sent_back(server):
    url, _ = server
    client = openai_client(url)
    asked = [*SHOTS, {"role": "user", "content": "Name a tree."}]
    thought = client.responses.create(model=MODEL, input=asked, max_output_tokens=30)
    reasoning, message = thought.output
    assert reasoning.type == "reasoning" and reasoning.content[0].type == "reasoning_text"
    assert reasoning.content[0].text.strip() and "<think>" not in thought.output_text
    assert thought.output_text.strip() and thought.usage.output_tokens_details.reasoning_tokens > 0
    with client.responses.stream(model=MODEL, input=asked, max_output_tokens=30) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.reasoning_text.done") \
        < kinds.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == reasoning.content[0].text
    follow = [{"role": "user", "content": "And another?"}]
    sent_back = client.responses.create(model=MODEL, max_output_tokens=1, input=[
        *asked, *[item.model_dump(exclude_none=True) for item in thought.output], *follow])
    without = client.responses.create(model=MODEL, max_output_tokens=1, input=[
        *asked, message.model_dump(exclude_none=True), *follow])
    assert sent_back.usage.input_tokens == without.usage.input_tokens


RESPONSES = "/v1/responses"
BASE: dict[str, Any] = {"model": MODEL, "input": "Hi", "max_output_tokens": 2}
CALL = {"type": "function_call", "name": "add", "arguments": '{"a": 1}', "call_id": "c1"}
REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"previous_response_id": "resp_1"}, "previous_response_id is not supported: the server keeps no state"),
    ({"store": True}, "store: true is not supported: the server keeps no state"),
    ({"conversation": "conv_1"}, "conversation is not supported: the server keeps no state"),
    ({"background": True}, "background: true is not supported"),
    ({"background": "yes"}, "background must be true or false"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt is not supported: stored prompts live on OpenAI's side"),
    ({"foo": 1}, "foo is not a field this server's /v1/responses takes"),
    ({"seed": 1}, "seed is not a field this server's /v1/responses takes"),
    ({"input": None}, "input must be a string or a non-empty list of items"),
    ({"input": []}, "input must be a non-empty list"),
    ({"input": [5]}, "input[0] must be an object"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role must be one of"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     'input[0].content[0]: parts of type "input_image" are not supported'),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
     "input[0].content[0].text must be a string"),
    ({"input": [{**CALL, "arguments": "[1]"}]}, "input[0].arguments must be a JSON object"),
    ({"input": [{**CALL, "call_id": None}]}, "input[0].call_id must be a string"),
    ({"input": [{**CALL, "name": ""}]}, "input[0].name must not be empty"),
    ({"input": [CALL, {"type": "function_call_output", "call_id": "c1", "output": 5}]},
     "input[1].output must be a string or a list of text parts"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]: an item_reference names an item"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, 'input[0]: items of type "web_search_call"'),
    ({"input": [{"role": "user", "content": "Hi"}] * 1025}, "input has 1025 items; at most 1024"),
    ({"instructions": ["Be brief."]}, "instructions must be a string"),
    ({"max_output_tokens": "8"}, "max_output_tokens must be an integer"),
    ({"temperature": 3}, "temperature must be a number from 0 to 2"),
    ({"top_p": -1}, "top_p must be a number from 0 to 1"),
    ({"tools": [{"type": "web_search"}]}, 'tools[0].type must be "function", not "web_search"'),
    ({"tools": [{"type": "function", "function": ADD}]}, "tools[0].name must be a string"),
    ({"tools": [{**RESPONSES_ADD, "parameters": "integers"}]}, "tools[0].parameters must be a JSON schema object"),
    ({"tools": [RESPONSES_ADD] * 129}, "tools has 129 tools; at most 128"),
    ({"tools": [RESPONSES_ADD], "tool_choice": {"type": "function", "name": "mul"}},
     'tool_choice names the tool "mul", which is not among the tools'),
    ({"tool_choice": "sometimes"}, "tool_choice must be one of"),
    ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice.type must be one of"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type must be one of"),
    ({"text": {"format": {"type": "json_schema", "schema": "x"}}}, "text.format.schema must be a JSON schema"),
    ({"text": "json"}, "text must be an object"),
    ({"stream": "yes"}, "stream must be true or false"),
    ({"reasoning": {"effort": "max"}}, "reasoning.effort must be one of"),
    ({"metadata": {"a": 1}}, "metadata.a must be a string"),
    ({"top_logprobs": 3}, "top_logprobs are not supported"),
    ({"include": ["message.output_text.logprobs"]}, "include[0]: logprobs are not supported"),
    ({"truncation": "sometimes"}, "truncation must be one of"),
]


def refusal(response: httpx.Response) -> str:
    """The message of a 4xx in OpenAI's error shape."""
    assert 400 <= response.status_code < 500, response.text
    data = response.json()
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "code"}, data
    assert data["error"]["code"] == response.status_code
    return str(data["error"]["message"])


def send(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{RESPONSES}", headers=HEADERS, json=body, timeout=60)


@pytest.mark.parametrize(("changes", "said"), REFUSALS, ids=[said[:40] for _, said in REFUSALS])
def test_what_needs_state_or_is_not_served_and_a_wrong_value_are_400s_naming_the_field(server, changes, said):
    url, log = server
    body = {key: value for key, value in {**BASE, **changes}.items() if value is not None}
    response = send(url, body)
    assert response.status_code == 400 and said in refusal(response), response.text
    no_traceback(log)


def test_the_fields_a_client_sends_as_a_matter_of_course_are_taken(server):
    """What agents send with every request and means nothing here (stateless, no billing) is taken, not refused."""
    url, _ = server
    body = {**BASE, "store": False, "include": ["reasoning.encrypted_content"], "parallel_tool_calls": False,
            "truncation": "auto", "reasoning": {"effort": "low", "summary": "auto"}, "prompt_cache_key": "k",
            "metadata": {"who": "test"}, "user": "u", "service_tier": "auto", "text": {"verbosity": "low"},
            "stream_options": {"include_obfuscation": False}, "previous_response_id": None, "top_logprobs": 0,
            "background": False}
    response = send(url, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["metadata"] == {"who": "test"} and answer["parallel_tool_calls"] is False
    assert answer["store"] is False and answer["output"][0]["type"] == "message"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "role", "content", "text", "name", "arguments", "call_id", "output", "parameters",
                         "format", "schema", "effort"]) | st.text(max_size=6), inner, max_size=4),
    max_leaves=10)
"""Any JSON value, its objects keyed mostly with the Responses API's own field names, so that the checks deep in a
field are reached too."""
FIELDS: list[tuple[str | int, ...]] = [
    ("input",), ("input", 0), ("input", 0, "content"), ("input", 0, "role"), ("input", 1), ("input", 1, "arguments"),
    ("input", 2, "output"), ("instructions",), ("tools",), ("tools", 0), ("tools", 0, "parameters"), ("tool_choice",),
    ("text",), ("text", "format"), ("reasoning",), ("metadata",), ("include",), ("truncation",), ("temperature",),
    ("top_p",), ("stream",), ("store",), ("previous_response_id",), ("parallel_tool_calls",), ("stream_options",)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_random_json_in_any_field_is_answered_or_refused(server, path, value):
    """Random JSON values in any field are answered, or refused with a 4xx in OpenAI's shape; never a 500."""
    url, _ = server
    body: dict[str, Any] = {**BASE, "tools": [RESPONSES_ADD], "text": {"format": {"type": "text"}}, "input": [
        {"role": "user", "content": ASK}, CALL, {"type": "function_call_output", "call_id": "c1", "output": "5"}]}
    body = json.loads(json.dumps(body))
    holder: Any = body
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    response = send(url, body)
    if response.status_code >= 300:
        refusal(response)
    elif response.headers["content-type"].startswith("application/json"):
        assert response.json()["object"] == "response"
    else:  # a stream (the value made it one): it ended as a response does, not with a failure
        ends = [line for line in response.text.splitlines() if line.startswith("event: response.")][-1:]
        assert ends in (["event: response.completed"], ["event: response.incomplete"]), response.text[-2000:]


def test_a_client_that_leaves_a_stream_stops_its_answer(server):
    """A client that closes its stream stops the model (the server, with no waiting room, takes the next request
    at once instead of answering 503), and the log says it went away."""
    url, log = server
    story = "Write a very long story about a lighthouse keeper."
    with openai_client(url).responses.stream(model=MODEL, input=story, max_output_tokens=3000) as stream:
        next(event for event in stream if event.type == "response.output_text.delta")
    left = time.monotonic()
    until_free(url, left)
    went_away = "POST /v1/responses 200"
    while not any(went_away in line and "(streamed; the client went away)" in line
                  for line in Path(log).read_text().splitlines()):  # written as the stream is closed
        assert time.monotonic() - left < 30, Path(log).read_text()[-2000:]
        time.sleep(0.05)


def test_the_log_holds_no_traceback_and_the_root_lists_the_new_routes(server):
    url, log = server
    routes = httpx.get(f"{url}/", headers=HEADERS).json()["routes"]
    assert "POST /v1/responses" in routes and "POST /v1/messages/count_tokens" in routes
    no_traceback(log)
