"""`localllm serve`'s Anthropic token counts and model list, through the official `anthropic` and `openai` clients
against the real process on loopback with the bundled model: counts that are the prompt the answer reads, and models
in each client's own shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import test_serve
from test_serve import ADD, KEY

server = test_serve.server  # a `localllm serve` process of this module's own, started as test_serve's is
HEADERS = {"Authorization": f"Bearer {KEY}"}
ASK = "What is 2 plus 3?"
ANTHROPIC_ADD = {"name": "add", "description": ADD["description"], "input_schema": ADD["parameters"]}


def anthropic_client(url: str):
    import anthropic

    return anthropic.Anthropic(base_url=url, api_key=KEY)


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)


def no_traceback(log: Path) -> None:
    text = Path(log).read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


# -- Anthropic ------------------------------------------------------------------------------------------------------
def test_anthropic_count_tokens_is_the_prompt_the_answer_reads(server):
    """count_tokens counts the system prompt, the messages and the tools as the chat template renders them: the
    same number the answer to that request reports as its input."""
    import anthropic

    url, log = server
    client = anthropic_client(url)
    asked: dict[str, Any] = {"model": "m", "system": "You add numbers.",
                             "messages": [{"role": "user", "content": ASK}]}
    plain = client.messages.count_tokens(**asked).input_tokens
    assert plain == client.messages.create(max_tokens=1, **asked).usage.input_tokens
    with_tools = {**asked, "tools": [ANTHROPIC_ADD], "tool_choice": {"type": "tool", "name": "add"}}
    counted = client.messages.count_tokens(**with_tools).input_tokens
    assert counted > plain  # the tool's schema is in the prompt
    assert counted == client.messages.create(max_tokens=1, **with_tools).usage.input_tokens
    with pytest.raises(anthropic.BadRequestError) as refused:  # checked as /v1/messages checks it
        client.messages.count_tokens(model="m", messages=[{"role": "system", "content": "x"}])
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
        "type": "not_found_error", "message": "the model 'claude-sonnet-4-5' is not served here; served: "
                                              "smollm2-135m"}}
    with pytest.raises(anthropic.BadRequestError, match="limit must be an integer from 1 to 1000"):
        client.models.list(limit=0)
    assert [model.id for model in openai_client(url).models.list()] == ["smollm2-135m"]
    assert httpx.get(f"{url}/v1/models", headers=HEADERS).json()["object"] == "list"
