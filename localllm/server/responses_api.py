"""OpenAI's Responses API, POST /v1/responses: what newer OpenAI SDKs and agents call by default. The conversation
comes as input items (messages, the client's function calls and their outputs), the answer as output items (a
message of output_text, function calls, the model's reasoning), streamed as numbered semantic events.

The server keeps no state: a field that would need it (previous_response_id, store: true, conversation, a stored
prompt, background) is a 400 that says so, and the client sends the whole conversation each time. The fields are
read by the same helpers as chat/completions', and tools take the same path (the engine's Request(tools=...))."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.finish import finish_of
from localllm.core.messages import Message, Role
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server import openai_api
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import (
    MAX_MESSAGES,
    MAX_TOOLS,
    arguments,
    bounded_int,
    each,
    flag,
    listed,
    messages_count,
    name_of,
    named_choice,
    obj,
    offering,
    one_of,
    options_from,
    schema,
    shown,
    string,
    text_of,
    tool_spec,
    where,
)

NO_STATE = "the server keeps no state: send the whole conversation in input"
STATEFUL = {"previous_response_id": NO_STATE, "conversation": NO_STATE,
            "prompt": "stored prompts live on OpenAI's side: send the text in instructions and input"}
"""Fields that ask the server to fetch what it would have kept: any value but null is refused."""
IGNORED = ("user", "safety_identifier", "prompt_cache_key", "service_tier")
"""Strings about who asks and how OpenAI bills and caches: checked, with nothing here to do."""
FIELDS = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
                    "tool_choice", "parallel_tool_calls", "text", "reasoning", "stream", "stream_options", "store",
                    "metadata", "include", "truncation", "top_logprobs", "background", *STATEFUL, *IGNORED})
"""The fields a request may give: any other is a 400 that names it (a field this server does not know would
otherwise be ignored without a word, and the client would believe it had effect)."""
EFFORTS = {"none": "off", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
"""reasoning.effort as a thinking setting (GenerationOptions.think): the levels a backend has are low to high."""
MAX_METADATA = 16
"""Keys metadata may have (OpenAI's limit); it is only echoed back."""


@dataclass
class Parsed:
    request: Request
    stream: bool
    echo: dict[str, Any] = field(default_factory=dict)
    """What the response object repeats of the request (instructions, tools, text format, sampling, metadata)."""


def parse(body: dict[str, Any], base: GenerationOptions) -> Parsed:
    for key in body:
        if key not in FIELDS:
            raise ApiError(400, f"{where('', key)} is not a field this server's /v1/responses takes")
    for key, why in STATEFUL.items():
        if body.get(key) is not None:
            raise ApiError(400, f"{key} is not supported: {why}")
    if flag(body.get("store"), "store", False):
        raise ApiError(400, f"store: true is not supported: {NO_STATE} (send store: false)")
    if flag(body.get("background"), "background", False):
        raise ApiError(400, "background: true is not supported: a background response is kept to be polled, and "
                            "the server keeps no state (leave it out)")
    string(body.get("model"), "model", default="")
    for key in IGNORED:
        string(body.get(key), key, default="")
    instructions = string(body.get("instructions"), "instructions", default="")
    messages = conversation(body.get("input"))
    if instructions:
        messages.insert(0, Message("system", instructions))
    messages_count(len(messages))
    changes = openai_api.sampling(body)  # temperature and top_p, in OpenAI's ranges (the other keys are refused above)
    if body.get("max_output_tokens") is not None:
        changes["max_tokens"] = bounded_int(body["max_output_tokens"], "max_output_tokens", 1, 1_000_000)
    if body.get("reasoning") is not None:
        reasoning = obj(body["reasoning"], "reasoning")
        if reasoning.get("effort") is not None:
            changes["think"] = EFFORTS[one_of(reasoning["effort"], "reasoning.effort", tuple(EFFORTS))]
        for key in ("summary", "generate_summary"):  # no summary is made: the reasoning itself is given
            string(reasoning.get(key), where("reasoning", key), default="")
    text_format = text_config(body.get("text"), changes)
    tools = each(body.get("tools"), "tools", MAX_TOOLS, "tools", tool_from)
    choice = tool_choice(body.get("tool_choice"), tools)
    parallel = flag(body.get("parallel_tool_calls"), "parallel_tool_calls", True)
    metadata = metadata_of(body.get("metadata"))
    includes(body.get("include"))
    truncation = "disabled" if body.get("truncation") is None else \
        one_of(body["truncation"], "truncation", ("auto", "disabled"))  # either way never cut: over the window is a 400
    if body.get("top_logprobs") is not None and bounded_int(body["top_logprobs"], "top_logprobs", 0, 20):
        raise ApiError(400, "top_logprobs are not supported: leave top_logprobs out")
    if body.get("stream_options") is not None:
        flag(obj(body["stream_options"], "stream_options").get("include_obfuscation"),
             "stream_options.include_obfuscation", False)  # nothing is obfuscated here
    options = options_from(base, changes)
    echo = {"instructions": instructions or None, "max_output_tokens": changes.get("max_tokens"),
            "temperature": options.temperature, "top_p": options.top_p, "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto", "parallel_tool_calls": parallel,
            "text": {"format": text_format}, "metadata": metadata, "truncation": truncation,
            "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
            "store": False, "previous_response_id": None, "background": False, "service_tier": "default",
            "user": body.get("user")}
    return Parsed(offering(messages, options, tools, choice), flag(body.get("stream"), "stream", False), echo)


def conversation(raw: Any) -> list[Message]:
    """The input: a string (one user message), or a list of items: messages (user, assistant, system, developer),
    the assistant's function calls (``function_call``) and their results (``function_call_output``)."""
    if isinstance(raw, str):
        return [Message("user", raw)]
    if raw is None or not isinstance(raw, list):
        raise ApiError(400, "input must be a string or a non-empty list of items")
    messages: list[Message] = []
    called: dict[str, str] = {}  # each call's function by its call_id: a template may want the name with the result
    for index, item in enumerate(listed(raw, "input", MAX_MESSAGES, "items", least=1)):
        at = where("input", index)
        entry = obj(item, at)
        kind = entry.get("type", "message")  # an easy input message ({"role", "content"}) has no type
        if kind == "message":
            role = one_of(entry.get("role"), where(at, "role"), ("user", "assistant", "system", "developer"))
            text = text_of(entry.get("content"), where(at, "content"), ("input_text", "output_text"))
            messages.append(Message(cast(Role, "system" if role == "developer" else role), text))
        elif kind == "function_call":
            call = ToolCall(name_of(entry.get("name"), where(at, "name")),
                            arguments(entry.get("arguments"), where(at, "arguments")),
                            id=name_of(entry.get("call_id"), where(at, "call_id")))
            called[call.id] = call.name
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":  # the same turn: its text, or the calls before it
                messages[-1] = replace(last, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            call_id = name_of(entry.get("call_id"), where(at, "call_id"))
            output = entry.get("output")
            if not isinstance(output, (str, list)):
                raise ApiError(400, f"{where(at, 'output')} must be a string or a list of text parts")
            text = output if isinstance(output, str) else text_of(output, where(at, "output"), ("input_text",))
            messages.append(Message("tool", text, name=called.get(call_id), call_id=call_id))
        elif kind == "reasoning":
            continue  # a model's reasoning is never sent back to it (as chat/completions' and Anthropic's)
        elif kind == "item_reference":
            raise ApiError(400, f"{at}: an item_reference names an item the server would have kept; {NO_STATE}")
        else:
            raise ApiError(400, f"{at}: items of type {shown(kind)} are not supported: send messages, "
                                "function_call and function_call_output items")
    return messages


def text_config(value: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """``text``: its format ({"type": "text" | "json_object" | "json_schema", ...}) as the answer's JSON schema in
    ``changes``; the format as the response object repeats it."""
    if value is None:
        return {"type": "text"}
    text = obj(value, "text")
    if text.get("verbosity") is not None:  # a hint for OpenAI's models: a small local model has no such switch
        one_of(text["verbosity"], "text.verbosity", ("low", "medium", "high"))
    if text.get("format") is None:
        return {"type": "text"}
    fmt = obj(text["format"], "text.format")
    kind = one_of(fmt.get("type"), "text.format.type", ("text", "json_object", "json_schema"))
    if kind == "json_schema":
        changes["json_schema"] = schema(fmt.get("schema"), "text.format.schema")
        string(fmt.get("name"), "text.format.name", default="")
        string(fmt.get("description"), "text.format.description", default="")
        flag(fmt.get("strict"), "text.format.strict", False)  # the grammar holds the answer to the schema anyway
    elif kind == "json_object":
        changes["json_schema"] = {"type": "object"}
    return fmt


def tool_from(item: Any, name: str) -> ToolSpec:
    """A function tool in the Responses shape: {"type": "function", "name", "description", "parameters"}."""
    tool = obj(item, name)
    if tool.get("type") != "function":  # OpenAI's own tools (web search, files, code) run on its side
        raise ApiError(400, f"{where(name, 'type')} must be \"function\", not {shown(tool.get('type'))}: only "
                            "function tools, which the client runs, are served here")
    flag(tool.get("strict"), where(name, "strict"), True)  # the call is constrained to the schema either way
    return tool_spec(tool, name, "parameters")


def tool_choice(value: Any, tools: list[ToolSpec]) -> str:
    """"none", "auto", "required", or {"type": "function", "name": ...}: the engine's choice."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        return one_of(value, "tool_choice", ("none", "auto", "required"))
    choice = obj(value, "tool_choice")
    one_of(choice.get("type"), "tool_choice.type", ("function",))
    return named_choice(name_of(choice.get("name"), "tool_choice.name"), tools, "tool_choice")


def metadata_of(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    metadata = obj(value, "metadata")
    if len(metadata) > MAX_METADATA:
        raise ApiError(400, f"metadata has {len(metadata)} keys; at most {MAX_METADATA} may be sent")
    for key, item in metadata.items():
        string(item, where("metadata", key))
    return metadata


def includes(value: Any) -> None:
    """``include``: extra data to put in the answer. Logprobs are refused (none are computed); the rest (OpenAI's
    hosted tools' results, encrypted reasoning) has nothing here to include."""
    for index, item in enumerate(listed(value, "include", 64, "entries") if value is not None else []):
        if string(item, where("include", index)) == "message.output_text.logprobs":
            raise ApiError(400, f"{where('include', index)}: logprobs are not supported: leave it out")


# -- the answer -----------------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_of(final: FinalChunk | None) -> dict[str, Any]:
    usage = final.usage if final is not None else None
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": usage.cached_tokens if usage else 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": usage.thinking_tokens if usage else 0},
            "total_tokens": prompt + completion}


def ending(final: FinalChunk | None, calls: int) -> tuple[str, dict[str, str] | None, dict[str, str] | None]:
    """(status, incomplete_details, error) for how the answer ended. A full window is reported as the token limit
    too: the Responses API has no other reason for an answer cut short."""
    finish = finish_of(final, tool_calls=bool(calls))
    if finish.cut:
        return "incomplete", {"reason": "max_output_tokens"}, None
    if finish.kind == "error":
        return "failed", None, {"code": "server_error", "message": "the model stopped with an error"}
    if finish.kind == "stopped":
        return "cancelled", None, None
    return "completed", None, None


def message_item(text: str, status: str, ident: str | None = None) -> dict[str, Any]:
    return {"id": ident or new_id("msg"), "type": "message", "status": status, "role": "assistant",
            "content": [text_part(text)] if status != "in_progress" else []}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(text: str, status: str, ident: str | None = None) -> dict[str, Any]:
    """The model's thinking, as its own words (reasoning_text), with no summary made of it."""
    return {"id": ident or new_id("rs"), "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []}


def call_item(call: ToolCall) -> dict[str, Any]:
    return {"id": new_id("fc"), "type": "function_call", "status": "completed", "call_id": call.id or new_id("call"),
            "name": call.name, "arguments": json.dumps(call.arguments)}


def response_object(engine: Engine, parsed: Parsed, ident: str, created: int, output: list[dict[str, Any]],
                    final: FinalChunk | None, calls: int, ended: bool = True) -> dict[str, Any]:
    """The Response object; ``ended``: False while it is streamed (in progress, no usage yet)."""
    status, incomplete, error = ending(final, calls) if ended else ("in_progress", None, None)
    return {"id": ident, "object": "response", "created_at": created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": error,
            "incomplete_details": incomplete, "model": engine.name, "output": output,
            "usage": usage_of(final) if ended else None, **parsed.echo}


async def complete(engine: Engine, parsed: Parsed) -> dict[str, Any]:
    ident, created = new_id("resp"), int(time.time())
    text, thinking, calls, final = await engine.complete(parsed.request)
    status = ending(final, len(calls))[0]
    output = [reasoning_item(thinking, "completed")] if thinking else []
    if text or not calls:  # an empty answer is still a message (its text ""), as OpenAI's is
        output.append(message_item(text, "incomplete" if status == "incomplete" else "completed"))
    output.extend(call_item(call) for call in calls)
    return response_object(engine, parsed, ident, created, output, final, len(calls))


class Events:
    """One streamed response's server-sent events, in the order OpenAI's SDK stream helpers check: the response
    created and in progress, then each output item added, its content part added, its deltas, its text done, its
    part done and the item done before the next item starts, and last the response completed (or incomplete, when
    cut at max_output_tokens, or failed). Every event carries the next sequence_number, the error that ends a
    failed stream included: this object is also the stream's error format (``stream_error``)."""

    def __init__(self, engine: Engine, parsed: Parsed) -> None:
        self.engine, self.parsed = engine, parsed
        self.ident, self.created = new_id("resp"), int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        """Every item added so far (each replaced by its finished form when it is done)."""
        self.calls = 0

    def sse(self, kind: str, data: dict[str, Any]) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(event)}\n\n"

    def response(self, final: FinalChunk | None = None, ended: bool = False) -> dict[str, Any]:
        return response_object(self.engine, self.parsed, self.ident, self.created, list(self.output), final,
                               self.calls, ended)

    async def stream(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[str]:
        yield self.sse("response.created", {"response": self.response()})
        yield self.sse("response.in_progress", {"response": self.response()})
        open_item: _Open | None = None
        final = None
        async for chunk in chunks:
            if isinstance(chunk, (TextChunk, ThinkingChunk)) and chunk.text:
                kind = "message" if isinstance(chunk, TextChunk) else "reasoning"
                if open_item is None or open_item.kind != kind:
                    if open_item is not None:
                        for event in self.close(open_item, "completed"):
                            yield event
                    open_item = _Open(kind, len(self.output), new_id("msg" if kind == "message" else "rs"))
                    for event in self.start(open_item):
                        yield event
                open_item.texts.append(chunk.text)
                yield self.sse("response.output_text.delta" if kind == "message" else "response.reasoning_text.delta",
                               {**open_item.where(), "delta": chunk.text,
                                **({"logprobs": []} if kind == "message" else {})})
            elif isinstance(chunk, ToolCallChunk):
                if open_item is not None:
                    for event in self.close(open_item, "completed"):
                        yield event
                    open_item = None
                for event in self.call(chunk.call):
                    yield event
            elif isinstance(chunk, FinalChunk):
                final = chunk
        status = ending(final, self.calls)[0]
        item_status = "incomplete" if status == "incomplete" else "completed"
        if open_item is not None:
            for event in self.close(open_item, item_status):
                yield event
        if not self.calls and not any(item["type"] == "message" for item in self.output):
            empty = _Open("message", len(self.output), new_id("msg"))  # no text: an empty message, as OpenAI's
            for event in [*self.start(empty), *self.close(empty, item_status)]:
                yield event
        # The last event says how the response ended: OpenAI's streams have no other end for a cancelled one.
        terminal = {"completed": "response.completed", "failed": "response.failed"}.get(status, "response.incomplete")
        yield self.sse(terminal, {"response": self.response(final, ended=True)})

    def start(self, item: _Open) -> list[str]:
        added = message_item("", "in_progress", item.ident) if item.kind == "message" else \
            reasoning_item("", "in_progress", item.ident)
        self.output.append(added)
        part = text_part("") if item.kind == "message" else {"type": "reasoning_text", "text": ""}
        return [self.sse("response.output_item.added", {"output_index": item.index, "item": added}),
                self.sse("response.content_part.added", {**item.where(), "part": part})]

    def close(self, item: _Open, status: str) -> list[str]:
        text = "".join(item.texts)
        if item.kind == "message":
            done = message_item(text, status, item.ident)
            events = [self.sse("response.output_text.done", {**item.where(), "text": text, "logprobs": []}),
                      self.sse("response.content_part.done", {**item.where(), "part": text_part(text)})]
        else:
            done = reasoning_item(text, status, item.ident)
            events = [self.sse("response.reasoning_text.done", {**item.where(), "text": text}),
                      self.sse("response.content_part.done", {**item.where(), "part": done["content"][0]})]
        self.output[item.index] = done
        return [*events, self.sse("response.output_item.done", {"output_index": item.index, "item": done})]

    def call(self, call: ToolCall) -> list[str]:
        """A function call, whole: the engine hands over a call once its arguments are complete."""
        index, done = len(self.output), call_item(call)
        added = {**done, "status": "in_progress", "arguments": ""}
        self.output.append(done)
        self.calls += 1
        at = {"item_id": done["id"], "output_index": index}
        return [self.sse("response.output_item.added", {"output_index": index, "item": added}),
                self.sse("response.function_call_arguments.delta", {**at, "delta": done["arguments"]}),
                self.sse("response.function_call_arguments.done", {**at, "name": call.name,
                                                                   "arguments": done["arguments"]}),
                self.sse("response.output_item.done", {"output_index": index, "item": done})]

    def stream_error(self, error: ApiError) -> str:
        """A failure after the stream began: the response failed, with the items so far and the error."""
        response = self.response()
        response.update(status="failed", error={"code": "server_error" if error.status >= 500 else "invalid_prompt",
                                                "message": error.message})
        return self.sse("response.failed", {"response": response})


@dataclass
class _Open:
    """The output item being streamed: a message or the model's reasoning, one content part of text each."""

    kind: str
    index: int
    ident: str
    texts: list[str] = field(default_factory=list)

    def where(self) -> dict[str, Any]:
        return {"item_id": self.ident, "output_index": self.index, "content_index": 0}
