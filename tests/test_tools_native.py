"""Native tool calls, the servers' own tools field, with real servers: llama-cpp-python's OpenAI-compatible server
(its chatml-function-calling format answers OpenAI's tools and tool_choice) and the Ollama stand-in (Ollama's
/api/chat tools wire format). The calls come back as the servers send them, the results go back as tool messages
that refer to their call, and the answer streams as usual."""

import pytest
from helpers.backend_servers import start_llama_server
from test_backend_ollama import connected

from localllm.backends.openai_compat import OpenAICompatBackend, openai_message
from localllm.core.chunks import TextChunk, ToolCallChunk, ToolResultChunk
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.core.tools import ToolCall, ToolResult, ToolSpec
from localllm.tasks.tools.calling import ToolLoop

ADD = ToolSpec("add", "Add two integers", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                              "b": {"type": "integer"}},
                                           "required": ["a", "b"]})
QUESTION = [Message("user", "What is 2 plus 3? Use the tool.")]


def adder(ran: list):
    def run(call: ToolCall) -> ToolResult:
        ran.append(call)
        return ToolResult(call, str(call.arguments["a"] + call.arguments["b"]))
    return run


def collect(loop: ToolLoop, backend, max_tokens: int = 40):
    chunks = list(loop.chat(backend, QUESTION, preset("precise").with_overrides(max_tokens=max_tokens)))
    return ([c.call for c in chunks if isinstance(c, ToolCallChunk)],
            [c.result for c in chunks if isinstance(c, ToolResultChunk)],
            "".join(c.text for c in chunks if isinstance(c, TextChunk)))


@pytest.fixture(scope="module")
def function_calling_server(bundled_model):
    server = start_llama_server(bundled_model, chat_format="chatml-function-calling")
    yield server
    server.stop()


def test_an_openai_compatible_servers_own_tool_call_runs_and_its_result_goes_back(function_calling_server):
    backend = OpenAICompatBackend(base_url=f"{function_calling_server.url}/v1")
    backend.connect("smollm2-135m")
    ran: list[ToolCall] = []
    loop = ToolLoop([ADD], adder(ran), approve=lambda call: True, choice="add", chain_limit=1)
    with backend:
        calls, results, answer = collect(loop, backend)
    (call,) = calls
    assert call.name == "add" and call.id and isinstance(call.arguments["a"], int)
    assert ran == [call] and results[0].ran and not results[0].is_error
    # Native: no instruction in the prompt; the second request carries the call and its result by id.
    assert [m.role for m in loop.prompts[0]] == ["user"]
    assistant, tool = loop.prompts[1][-2:]
    assert assistant.tool_calls == (call,) and tool == Message("tool", results[0].content, name="add", call_id=call.id)
    assert openai_message(tool) == {"role": "tool", "tool_call_id": call.id, "content": results[0].content}
    assert answer.strip()


def test_ollamas_tool_calls_wire_format(ollama_standin):
    ollama_standin.post("/_control", {"call_tools": True})
    ran: list[ToolCall] = []
    try:
        with connected(ollama_standin.url) as backend:
            calls, results, answer = collect(ToolLoop([ADD], adder(ran), approve=lambda call: True), backend)
            requests = [r["body"] for r in ollama_standin.get("/_requests") if "body" in r
                        and r.get("path") == "/api/chat"][-2:]
            # Ollama cannot force a call: "required" is constrained in the prompt instead, with no tools field.
            forced = ToolLoop([ADD], adder(ran), approve=lambda call: True, choice="required", chain_limit=1)
            collect(forced, backend, max_tokens=30)
            forced_body = [r["body"] for r in ollama_standin.get("/_requests") if "body" in r
                           and r.get("path") == "/api/chat"][-2]
    finally:
        ollama_standin.post("/_control", {})
    first, second = requests
    assert first["tools"] == [{"type": "function", "function": {"name": "add", "description": "Add two integers",
                                                                "parameters": ADD.parameters}}]
    (call,) = calls
    assert call.name == "add" and set(call.arguments) == {"a", "b"} and ran[0] == call
    assert second["messages"][-2]["tool_calls"] == [{"function": {"name": "add", "arguments": call.arguments}}]
    assert second["messages"][-1] == {"role": "tool", "content": results[0].content, "tool_name": "add"}
    assert answer.strip()
    assert not forced_body.get("tools") and isinstance(forced_body.get("format"), dict)
