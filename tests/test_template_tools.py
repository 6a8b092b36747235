"""Tools through a GGUF chat template's own format (llama.cpp in-process): the bundled model's weights under three
chat templates written for these tests, one per family of tool-call syntax, each offering the tools its own way.
The model's reply is held by the family's grammar to a valid call, which is parsed back and run; its result goes
back through the same template."""

import json
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import settings_for
from helpers.gguf_files import copy_with_template

from localllm.backends.template_tools import HERMES, LLAMA3, MISTRAL, calls_from_reply, tool_format
from localllm.core.chunks import FinalChunk, TextChunk, Timings, ToolCallChunk, ToolResultChunk, Usage
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.core.tools import ToolSpec
from localllm.tasks.loading import load_model
from localllm.tasks.tools.calling import ToolLoop
from localllm.tasks.tools.mcp_config import ServerEntry
from localllm.tasks.tools.mcp_servers import McpServers

TEMPLATES = Path(__file__).parent / "data" / "templates"
FAMILIES = {"tool-call-tags": HERMES, "tool-calls-list": MISTRAL, "tool-json-parameters": LLAMA3}
TIME = ServerEntry("time", sys.executable, ("-m", "mcp_server_time"))
ECHO = ToolSpec("echo", "Repeat a text", {"type": "object", "properties": {"text": {"type": "string"},
                                                                           "times": {"type": "integer"}},
                                          "required": ["text", "times"]})


@pytest.fixture(scope="module")
def family_models(bundled_model, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tool-templates")
    return {name: copy_with_template(bundled_model, folder / f"{name}.gguf", (TEMPLATES / f"{name}.jinja").read_text())
            for name in FAMILIES}


def test_each_family_is_recognised_from_its_template_and_others_are_not():
    for name, family in FAMILIES.items():
        assert tool_format((TEMPLATES / f"{name}.jinja").read_text()) is family
    assert tool_format("{% for m in messages %}<tool_call>{% endfor %}") is None  # never reads tools
    assert tool_format("{% if tools %}{{ tools | tojson }}{% endif %}") is None  # an unknown syntax


def test_replies_are_parsed_into_calls_and_a_cut_call_is_not_a_call():
    assert HERMES.parse('<tool_call>\n{"name": "echo", "arguments": {"text": "a"}}\n</tool_call>\n'
                        '<tool_call>{"name": "echo", "arguments": {"text": "b"}}</tool_call>') == [
        ("echo", {"text": "a"}), ("echo", {"text": "b"})]
    assert MISTRAL.parse('[TOOL_CALLS][{"name": "echo", "arguments": {"text": "a"}}]') == [("echo", {"text": "a"})]
    assert LLAMA3.parse(' {"name": "echo", "parameters": {"text": "a"}}') == [("echo", {"text": "a"})]
    assert HERMES.parse('<tool_call>\n{"name": "echo", "argu') is None
    assert LLAMA3.parse('{"name": 3}') is None
    assert HERMES.calling("\n<tool") is None and HERMES.calling("<tool_call>") is True
    assert HERMES.calling("The time") is False and LLAMA3.calling(" {") is True


def test_a_plain_answer_streams_and_a_cut_call_comes_out_as_its_text(caplog):
    final = FinalChunk("stop", Usage(1, 3), Timings(None, 0.0, 0.0))
    plain = list(calls_from_reply(iter([TextChunk("It"), TextChunk(" is"), final]), HERMES))
    assert plain == [TextChunk("It"), TextChunk(" is"), final]  # passed on as it came, not held to the end
    ended = FinalChunk("length", Usage(1, 3), Timings(None, 0.0, 0.0))
    cut = list(calls_from_reply(iter([TextChunk("<tool_call>\n{\"na"), ended]), HERMES))
    assert cut[0] == TextChunk("<tool_call>\n{\"na") and not any(isinstance(c, ToolCallChunk) for c in cut)
    assert "cut before it was whole" in caplog.text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_forced_call_in_the_templates_own_format_fits_the_schema(family, family_models, tmp_path):
    ran = []

    def run(call):
        ran.append(call)
        from localllm.core.tools import ToolResult

        return ToolResult(call, "echoed")

    with load_model(settings_for(tmp_path), str(family_models[family])) as loaded:
        backend = loaded.backend
        assert backend.capabilities.native_tools and backend.tool_format is FAMILIES[family]
        loop = ToolLoop([ECHO], run, approve=lambda call: True, choice="echo", chain_limit=1)
        chunks = list(loop.chat(backend, [Message("user", "Repeat 'hello' twice.")],
                                preset("precise").with_overrides(max_tokens=60)))
        (call,) = [chunk.call for chunk in chunks if isinstance(chunk, ToolCallChunk)]
        jsonschema.validate(call.arguments, ECHO.parameters)
        assert ran == [call] and call.id.startswith("call_")
        # The second step's prompt, rendered by the same template, holds the call in its family's syntax and the
        # result as the template writes a tool message.
        second, _ = backend._render(loop.prompts[1], None, None, [ECHO])
    arguments = json.dumps(call.arguments)
    assert {"tool-call-tags": f'<tool_call>\n{{"name": "echo", "arguments": {arguments}}}\n</tool_call>',
            "tool-calls-list": f'[TOOL_CALLS][{{"name": "echo", "arguments": {arguments}}}]',
            "tool-json-parameters": f'{{"name": "echo", "parameters": {arguments}}}'}[family] in second.prompt
    assert {"tool-call-tags": "<tool_response>\nechoed\n</tool_response>",
            "tool-calls-list": '[TOOL_RESULTS]{"content": "echoed"}[/TOOL_RESULTS]',
            "tool-json-parameters": "<|im_start|>ipython\nechoed<|im_end|>"}[family] in second.prompt


def test_the_real_time_server_is_called_through_the_template_and_its_result_reaches_the_next_prompt(
        family_models, tmp_path):
    # A minute to start: a loaded machine can take many seconds to import the MCP SDK.
    with McpServers([TIME], start_timeout=60) as servers, \
            load_model(settings_for(tmp_path), str(family_models["tool-call-tags"])) as loaded:
        (status,) = servers.start()
        assert status.started, status.error
        tools = servers.select(["time.get_current_time"])
        loop = ToolLoop(tools, servers.call, approve=lambda call: True, choice="required", chain_limit=1)
        chunks = list(loop.chat(loaded.backend, [Message("user", "What time is it in UTC?")],
                                preset("precise").with_overrides(max_tokens=80)))
    calls = [chunk.call for chunk in chunks if isinstance(chunk, ToolCallChunk)]
    results = [chunk.result for chunk in chunks if isinstance(chunk, ToolResultChunk)]
    call, result = calls[0], results[0]  # the family's syntax allows several calls in one reply
    assert call.server == "time" and result.ran
    jsonschema.validate(call.arguments, tools[0].parameters)
    assert '"datetime"' in result.content or "Invalid timezone" in result.content, result.content
    # The next prompt: the reply's calls, then a tool message per call that names the call it answers.
    sent = loop.prompts[1]
    assert sent[-len(calls) - 1].tool_calls == tuple(calls)
    assert sent[-len(calls)] == Message("tool", result.content, name="get_current_time", call_id=call.id)


def test_every_family_grammar_parses_for_each_choice_and_thinking(family_models, tmp_path):
    from localllm.backends.grammars import GrammarRefused

    with load_model(settings_for(tmp_path), str(family_models["tool-call-tags"])) as loaded:
        gate = loaded.backend._grammar_gate()
        for family in FAMILIES.values():
            for choice in ("auto", "required", "echo"):
                for thinking in (None, "tag", "open"):  # llama.cpp parses each (it refuses a broken one)
                    gate.for_text(family.grammar([ECHO], choice, thinking=thinking))
        with pytest.raises(GrammarRefused, match="could not parse"):
            gate.for_text("root ::= undefined-rule")


def test_the_tools_rendered_by_the_template_are_counted_in_each_prompt(family_models, tmp_path):
    from localllm.core.tools import ToolResult
    from localllm.tasks.chat import ChatSession

    with load_model(settings_for(tmp_path), str(family_models["tool-call-tags"])) as loaded:
        session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=20))
        loop = ToolLoop([ECHO], lambda call: ToolResult(call, "echoed"), approve=lambda call: True)
        session.tools = loop
        session.send("Say hi.").text()
        sent = loaded.backend.count_prompt_tokens(loop.prompts[0], [ECHO])
        assert sent > loaded.backend.count_prompt_tokens(loop.prompts[0]) + 50  # the schemas in <tools>
        assert session.prompt_tokens == sent
