"""The tool-calling loop, the same on every backend.

The model is offered the tools in an instruction, and its reply is constrained to JSON that is either an answer,
``{"answer": "..."}``, or a call, ``{"tool": NAME, "arguments": {...}}`` whose arguments follow the tool's schema:
a grammar on llama.cpp, the server's structured output on Ollama and OpenAI-compatible servers. So even a small
model's call is well formed, and its arguments are checked against the schema again before anything runs. A call
is shown, asked about (``approve``), run, and its result goes back to the model as a ``tool`` message; the loop
goes on until the model answers or the chain limit is reached, when only an answer is allowed.

The answer is streamed as it is written: the text of the JSON string is decoded as it arrives (AnswerField).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from localllm.core.chunks import (
    Chunk,
    FinalChunk,
    Response,
    Stopwatch,
    TextChunk,
    ThinkingChunk,
    ToolCallChunk,
    ToolResultChunk,
    Usage,
)
from localllm.core.errors import UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolResult, ToolSpec, function_specs

logger = logging.getLogger("localllm")
DEFAULT_CHAIN_LIMIT = 5
"""Calls in a row before the model must answer (as simonw/llm's --chain-limit)."""
MAX_RESULT_CHARS = 8000
"""A tool's result is cut to this before it goes back to the model (the cut is said in the text)."""
DECLINED = "the user did not allow this call; answer without it, or say what you would need"

Runner = Callable[[ToolCall], ToolResult]
Approver = Callable[[ToolCall], bool]


def decision_schema(tools: Sequence[ToolSpec], *, answer: bool, only: str | None = None) -> dict[str, Any]:
    """The JSON the model may reply with: a call of one of ``tools`` (of ``only``, when given), and an answer when
    ``answer``."""
    choices: list[dict[str, Any]] = [
        {"type": "object", "properties": {"tool": {"const": tool.name}, "arguments": tool.parameters},
         "required": ["tool", "arguments"]}
        for tool in tools if only is None or tool.name == only]
    if answer:
        choices.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
    return choices[0] if len(choices) == 1 else {"anyOf": choices}


def tool_instruction(tools: Sequence[ToolSpec]) -> str:
    """How the model is told about the tools (in the system prompt): the format it must reply in, then each tool."""
    lines = ["You can call tools. To call one, reply with only a JSON object "
             '{"tool": "NAME", "arguments": {...}}; you then get its result and may call another tool or answer. '
             'To answer, reply with only {"answer": "your answer"}. Call a tool when the question needs what it '
             "gives; otherwise answer.", "", "Tools:"]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description.strip() or '(no description)'}")
        lines.append(f"  arguments (JSON schema): {json.dumps(tool.parameters, separators=(',', ':'))}")
    return "\n".join(lines)


def with_instruction(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[Message]:
    instruction = tool_instruction(tools)
    if messages and messages[0].role == "system":
        return [Message("system", f"{messages[0].content}\n\n{instruction}"), *messages[1:]]
    return [Message("system", instruction), *messages]


def check_choice(choice: str, tools: Sequence[ToolSpec]) -> None:
    if choice in ("auto", "required") or any(tool.name == choice for tool in tools):
        return
    raise UsageError(f"--tool-choice {choice!r} names no chosen tool",
                     hint="use auto, required, or one of: " + ", ".join(tool.name for tool in tools))


@dataclass
class ToolLoop:
    """Answers with tools: ``run`` calls a tool, ``approve`` asks the user first (True: run it)."""

    tools: Sequence[ToolSpec]
    run: Runner
    approve: Approver
    chain_limit: int = DEFAULT_CHAIN_LIMIT
    choice: str = "auto"
    """"auto" (the model decides), "required" (the first reply must call a tool), or a tool's name (that tool)."""
    prompts: list[list[Message]] = field(default_factory=list)
    """What each step sent to the model, in order (the tool results included)."""

    def __post_init__(self) -> None:
        by_qualified = {tool.qualified: tool.name for tool in self.tools}
        self.choice = by_qualified.get(self.choice, self.choice)  # SERVER.TOOL, as the listings name it
        check_choice(self.choice, self.tools)
        names = [tool.name for tool in self.tools]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UsageError(f"two chosen servers offer a tool named {twice[0]!r}",
                             hint="choose one of them with -T SERVER.TOOL")

    def prompt_overhead(self, backend, messages: Sequence[Message]) -> int:
        """Tokens the tools add to a prompt of ``messages`` (their instruction, or their schemas as the backend
        sends them), so the context meter and the fitting of the history count what is really sent."""
        plain = backend.count_prompt_tokens(messages)
        if not uses_native_tools(backend, self.choice):
            return max(0, backend.count_prompt_tokens(with_instruction(messages, self.tools)) - plain)
        if getattr(backend, "tool_format", None) is not None:  # llama.cpp: the chat template renders them
            return max(0, backend.count_prompt_tokens(messages, self.tools) - plain)
        return backend.count_tokens(json.dumps(function_specs(self.tools)))  # a server's own rendering: an estimate

    def chat(self, backend, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        if uses_native_tools(backend, self.choice):
            return self._native(backend, messages, options)
        return self._constrained(backend, messages, options)

    def _native(self, backend, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        """A server's own tools field: the answer streams as usual, and the calls come as the server parsed them
        (their arguments are checked against the schema here all the same)."""
        watch = Stopwatch()
        tally = UsageTally()
        sent = list(messages)
        by_name = {tool.name: tool for tool in self.tools}
        made: list[ToolCall] = []
        for step in range(self.chain_limit + 1):
            may_call = step < self.chain_limit and not (len(made) >= 2 and same_call(made[-1], made[-2]))
            choice = self.choice if step == 0 else "auto"
            self.prompts.append(list(sent))
            if may_call:
                response = Response(backend.chat(sent, options, tools=self.tools, tool_choice=choice))
            else:
                response = Response(backend.chat(sent, options))
            calls: list[ToolCall] = []
            try:
                for chunk in response:
                    if isinstance(chunk, (TextChunk, ThinkingChunk)):
                        if isinstance(chunk, TextChunk) and chunk.text:
                            watch.mark_token()
                        yield chunk
                    elif isinstance(chunk, ToolCallChunk):
                        tool = by_name.get(chunk.call.name)
                        calls.append(ToolCall(chunk.call.name, chunk.call.arguments, tool.server if tool else "",
                                              chunk.call.id or f"call_{step}_{len(calls)}"))
            finally:
                response.close()
            final = response.final
            usage = tally.add(final)
            if final is None or final.finish_reason in ("cancelled", "error") or not calls:
                yield FinalChunk(final.finish_reason if final else "cancelled", usage, watch.timings())
                return
            sent.append(Message("assistant", response.partial_text, tool_calls=tuple(calls)))
            for call in calls:
                yield ToolCallChunk(call)
                result = self._result_once(call, made, by_name.get(call.name))
                yield ToolResultChunk(result)
                sent.append(Message("tool", result.content, name=call.name, call_id=call.id))

    def _constrained(self, backend, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        watch = Stopwatch()
        tally = UsageTally()
        sent = with_instruction(messages, self.tools)
        by_name = {tool.name: tool for tool in self.tools}
        made: list[ToolCall] = []
        for step in range(self.chain_limit + 1):
            forced = step == 0 and self.choice != "auto"
            # A model that repeats a call it has the result of (small ones do) is asked for its answer instead.
            may_call = step < self.chain_limit and not (len(made) >= 2 and same_call(made[-1], made[-2]))
            schema = decision_schema(self.tools if may_call else [], answer=not forced,
                                     only=self.choice if forced and self.choice != "required" else None)
            self.prompts.append(list(sent))
            response = Response(backend.chat(sent, options.with_overrides(json_schema=schema)))
            field_reader = AnswerField()
            for chunk in answer_text(response, field_reader):
                if isinstance(chunk, TextChunk):
                    watch.mark_token()
                yield chunk
            final = response.final
            usage = tally.add(final)
            if final is None or final.finish_reason in ("cancelled", "error"):
                yield FinalChunk(final.finish_reason if final else "cancelled", usage, watch.timings())
                return
            decision = parse_decision(response.partial_text)
            if decision is None and re.match(r'\s*\{\s*"(tool|arguments)"', response.partial_text):
                logger.warning("note: the model's tool call was cut at its token limit before it was whole, so "
                               "nothing ran; raise -o max_tokens")
                yield FinalChunk(final.finish_reason, usage, watch.timings())
                return
            if decision is None or "tool" not in decision:
                if decision is None and not field_reader.started:  # not JSON (a backend without a schema)
                    yield TextChunk(response.partial_text)
                elif decision is not None and not field_reader.started:
                    yield TextChunk(str(decision.get("answer", "")))
                yield FinalChunk(final.finish_reason, usage, watch.timings())
                return
            call = ToolCall(str(decision["tool"]), dict(decision.get("arguments") or {}),
                            by_name[decision["tool"]].server if decision["tool"] in by_name else "")
            yield ToolCallChunk(call)
            result = self._result_once(call, made, by_name.get(call.name))
            yield ToolResultChunk(result)
            sent = [*sent, Message("assistant", json.dumps({"tool": call.name, "arguments": call.arguments})),
                    Message("tool", result.content, name=call.name)]

    def _result_once(self, call: ToolCall, made: list[ToolCall], tool: ToolSpec | None) -> ToolResult:
        """The call's result; a call repeated with the same arguments is not run again (small models loop)."""
        repeated = any(same_call(call, earlier) for earlier in made)
        made.append(call)
        if repeated:
            return ToolResult(call, "this call was made already; its result is above: answer now", is_error=True,
                              ran=False)
        return self._result(call, tool)

    def _result(self, call: ToolCall, tool: ToolSpec | None) -> ToolResult:
        if tool is None:
            return ToolResult(call, f"there is no tool named {call.name!r}", is_error=True, ran=False)
        problem = argument_problem(call.arguments, tool.parameters)
        if problem:
            return ToolResult(call, f"the arguments do not fit the tool's schema: {problem}", is_error=True,
                              ran=False)
        if not self.approve(call):
            return ToolResult(call, DECLINED, is_error=True, ran=False)
        started = time.monotonic()
        result = self.run(call)
        content = result.content
        if len(content) > MAX_RESULT_CHARS:
            content = content[:MAX_RESULT_CHARS] + f"\n[… cut: the result had {len(result.content):,} characters]"
        return ToolResult(call, content, result.is_error, result.seconds or time.monotonic() - started)


def offer_tools(backend, messages: Sequence[Message], options: GenerationOptions, tools: Sequence[ToolSpec],
                choice: str = "auto") -> Iterator[Chunk]:
    """One answer that may instead be tool calls, for a caller that runs them itself (a client of `localllm
    serve`): the backend's own tools field where it has one, else the constrained reply of this module. The stream
    ends as a backend's does, with the calls (ToolCallChunk) just before the FinalChunk."""
    if uses_native_tools(backend, choice):
        yield from backend.chat(messages, options, tools=tools, tool_choice=choice)
        return
    forced = choice != "auto"
    schema = decision_schema(tools, answer=not forced, only=choice if choice not in ("auto", "required") else None)
    sent = with_instruction(constrained_history(messages), tools)
    response = Response(backend.chat(sent, options.with_overrides(json_schema=schema)))
    field_reader = AnswerField()
    yield from answer_text(response, field_reader)
    final = response.final
    if final is None:
        return
    decision = parse_decision(response.partial_text)
    if decision is not None and "tool" in decision:
        import uuid

        yield ToolCallChunk(ToolCall(str(decision["tool"]), dict(decision.get("arguments") or {}),
                                     id=f"call_{uuid.uuid4().hex[:24]}"))
    elif not field_reader.started:
        yield TextChunk(str(decision.get("answer", "")) if decision is not None else response.partial_text)
    yield final


def offered_prompt_tokens(backend, messages: Sequence[Message], tools: Sequence[ToolSpec],
                          choice: str = "auto") -> int:
    """Tokens the prompt of ``offer_tools`` takes, tools included as they are offered: in the
    chat template where the backend renders them, in the instruction where the reply is constrained."""
    if not tools:
        return int(backend.count_prompt_tokens(messages))
    if not uses_native_tools(backend, choice):
        return int(backend.count_prompt_tokens(with_instruction(constrained_history(messages), tools)))
    if getattr(backend, "tool_format", None) is not None:  # llama.cpp: the chat template renders them
        return int(backend.count_prompt_tokens(messages, tools))
    # A server's own rendering of its tools field is not known here: their JSON is the estimate.
    return int(backend.count_prompt_tokens(messages) + backend.count_tokens(json.dumps(function_specs(tools))))


def uses_native_tools(backend, choice: str) -> bool:
    """Whether the backend's own tools field serves this choice (a required call needs its tool_choice)."""
    capabilities = getattr(backend, "capabilities", None)
    return bool(capabilities is not None and capabilities.native_tools
                and (choice == "auto" or capabilities.tool_choice))


def answer_text(response: Response, field_reader: AnswerField) -> Iterator[Chunk]:
    """A constrained reply's thinking as it comes, and the text of its answer field decoded out of the JSON."""
    try:
        for chunk in response:
            if isinstance(chunk, ThinkingChunk):
                yield chunk
            elif isinstance(chunk, TextChunk) and (text := field_reader.feed(chunk.text)):
                yield TextChunk(text)
    finally:
        response.close()


def constrained_history(messages: Sequence[Message]) -> list[Message]:
    """A conversation with native tool calls in it, as the constrained replies write them: a call is the
    assistant's JSON, its result a ``tool`` message."""
    out: list[Message] = []
    for message in messages:
        if message.tool_calls:
            out.extend(Message("assistant", json.dumps({"tool": call.name, "arguments": call.arguments}))
                       for call in message.tool_calls)
        else:
            out.append(message)
    return out


@dataclass
class UsageTally:
    """The tokens of every step of one answer, added up."""

    prompt: int = 0
    completion: int = 0
    thinking: int = 0

    def add(self, final: FinalChunk | None) -> Usage:
        if final is not None:
            self.prompt += final.usage.prompt_tokens
            self.completion += final.usage.completion_tokens
            self.thinking += final.usage.thinking_tokens
        return Usage(self.prompt, self.completion, self.thinking)


def same_call(one: ToolCall, other: ToolCall) -> bool:
    return one.name == other.name and one.arguments == other.arguments


def argument_problem(arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    import jsonschema

    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as exc:
        return exc.message
    except jsonschema.SchemaError:  # a server's schema that is itself broken: the server will judge the arguments
        return None
    return None


def parse_decision(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and ("answer" in value or "tool" in value) else None


_ANSWER_START = re.compile(r'\s*\{\s*"answer"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class AnswerField:
    """The text of ``{"answer": "..."}`` as the JSON arrives, so an answer streams even though it is JSON. Written
    here because a JSON parser needs the whole document; this decodes one string field, escapes included."""

    def __init__(self) -> None:
        self._raw = ""
        self._at = -1
        """Where the string's unread text starts in ``_raw``; -1 until the opening is seen."""
        self._done = False

    @property
    def started(self) -> bool:
        return self._at >= 0

    def feed(self, text: str) -> str:
        self._raw += text
        if self._done:
            return ""
        if self._at < 0:
            match = _ANSWER_START.match(self._raw)
            if match is None:
                return ""
            self._at = match.end()
        out, raw, index = [], self._raw, self._at
        while index < len(raw):
            char = raw[index]
            if char == '"':
                self._done = True
                break
            if char != "\\":
                out.append(char)
                index += 1
                continue
            if index + 1 >= len(raw):
                break  # the escape's second half has not arrived yet
            code = raw[index + 1]
            if code == "u":
                if index + 6 > len(raw):
                    break
                unit = int(raw[index + 2:index + 6], 16)
                if 0xD800 <= unit < 0xDC00:  # a surrogate pair: wait for its second half
                    if index + 12 > len(raw):
                        break
                    low = int(raw[index + 8:index + 12], 16)
                    out.append(chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
                    index += 12
                    continue
                out.append(chr(unit))
                index += 6
                continue
            out.append(_ESCAPES.get(code, code))
            index += 2
        self._at = index
        return "".join(out)
