"""Anthropic's Messages format: /v1/messages (streaming events, tool use, thinking blocks, the stop sequence that
ended an answer), /v1/messages/count_tokens, and /v1/models in Anthropic's shape (for a client that sends the
anthropic-version header), so clients written for it run on a local model."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.finish import finish_of
from localllm.core.messages import Message, Role
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.ollama_api import iso, now
from localllm.server.wire import (
    MAX_MESSAGES,
    MAX_TOOLS,
    bounded_int,
    each,
    flag,
    listed,
    messages_count,
    name_of,
    named_choice,
    number,
    obj,
    offering,
    one_of,
    options_from,
    shown,
    stops,
    string,
    tool_spec,
    where,
)
from localllm.tasks.serving import Described

STOP_REASONS = {"tool_call": "tool_use", "length": "max_tokens", "window": "max_tokens", "stop_string": "stop_sequence"}
"""Anthropic's stop_reason for each way an answer ends (core.finish); any other is end_turn."""


def stop_of(final: FinalChunk | None, calls: int) -> dict[str, str | None]:
    """stop_reason and stop_sequence: which of the request's stop sequences ended the answer, where one did."""
    finish = finish_of(final, tool_calls=bool(calls))
    return {"stop_reason": STOP_REASONS.get(finish.kind, "end_turn"), "stop_sequence": finish.stop}


def parse(body: dict[str, Any], base: GenerationOptions, counting: bool = False) -> Request:
    """A /v1/messages request; ``counting``: a /v1/messages/count_tokens one, checked alike but for max_tokens,
    which it need not give (nothing is generated)."""
    raw = listed(body.get("messages"), "messages", MAX_MESSAGES, "messages", least=1)
    if body.get("max_tokens") is None and not counting:
        raise ApiError(400, "max_tokens is required")
    messages = [message for index, item in enumerate(raw) for message in messages_from(item, where("messages", index))]
    messages_count(len(messages))  # each tool result is a message of its own
    system = body.get("system")
    system_text = "" if system is None else system if isinstance(system, str) else blocks_text(system, "system")
    if system_text:
        messages.insert(0, Message("system", system_text))
    changes: dict[str, Any] = {}
    if body.get("max_tokens") is not None:
        changes["max_tokens"] = bounded_int(body["max_tokens"], "max_tokens", 1, 1_000_000)
    if body.get("temperature") is not None:
        changes["temperature"] = number(body["temperature"], "temperature", 0.0, 1.0)
    if body.get("top_p") is not None:
        changes["top_p"] = number(body["top_p"], "top_p", 0.0, 1.0)
    if body.get("top_k") is not None:
        changes["top_k"] = bounded_int(body["top_k"], "top_k", 0, 1_000_000)
    if body.get("stop_sequences") is not None:
        changes["stop"] = stops(body["stop_sequences"], "stop_sequences")
    if body.get("thinking") is not None:
        thinking = obj(body["thinking"], "thinking")
        kind = string(thinking.get("type"), "thinking.type")
        if thinking.get("budget_tokens") is not None:  # the answer's max_tokens bounds the thinking here
            bounded_int(thinking["budget_tokens"], "thinking.budget_tokens", 0, 1_000_000)
        changes["think"] = {"enabled": "on", "disabled": "off"}.get(kind)  # another type leaves it to the model
    tools = each(body.get("tools"), "tools", MAX_TOOLS, "tools", tool_from)
    return offering(messages, options_from(base, changes), tools, tool_choice(body.get("tool_choice"), tools))


async def count_tokens(engine: Engine, request: Request) -> dict[str, int]:
    """/v1/messages/count_tokens: the tokens the request's prompt takes (system prompt, messages and tools as the
    chat template renders them)."""
    return {"input_tokens": await engine.count_prompt_tokens(request)}


def model_info(model: Described) -> dict[str, Any]:
    """A served model as Anthropic's /v1/models describes one: the window it answers in (loaded, the one it runs
    with; else the one it would load with, a named model's ctx among them) bounds both the prompt and the answer, as
    a longer prompt is refused; its time is the model file's (as Ollama's tags give it)."""
    window = model.window or int(getattr(model.info, "context_length", 0) or 0)
    info: dict[str, Any] = {"type": "model", "id": model.name, "display_name": model.name,
                            "created_at": iso(model.modified) if model.modified else now(), "lifecycle": "active"}
    if window:
        info["max_input_tokens"] = info["max_tokens"] = window
    return info


def models(served: list[Described], query: Mapping[str, str]) -> dict[str, Any]:
    """/v1/models in Anthropic's shape: a page of the served models, ``limit`` long (default 20), after
    ``after_id`` or before ``before_id`` (a cursor names a served model)."""
    limit = query.get("limit", "20")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 1000):
        raise ApiError(400, "limit must be an integer from 1 to 1000")
    ids = [model.name for model in served]
    start, end = 0, len(ids)
    for key in ("after_id", "before_id"):
        cursor = query.get(key)
        if cursor is None:
            continue
        if cursor not in ids:
            raise ApiError(400, f"{key}: the model {cursor[:80]!r} is not served here")
        if key == "after_id":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    page = served[start:end]
    chosen = page[-int(limit):] if query.get("before_id") is not None and query.get("after_id") is None \
        else page[:int(limit)]
    data = [model_info(model) for model in chosen]
    return {"data": data, "has_more": len(chosen) < len(page), "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def tool_choice(value: Any, tools: list[ToolSpec]) -> str:
    """{"type": "auto" | "any" | "tool" | "none"} (with "name" for "tool"), as the engine's choice."""
    if value is None:
        return "auto"
    choice = obj(value, "tool_choice")
    kind = one_of(choice.get("type"), "tool_choice.type", ("auto", "any", "tool", "none"))
    flag(choice.get("disable_parallel_tool_use"), "tool_choice.disable_parallel_tool_use", False)
    if kind == "tool":
        return named_choice(name_of(choice.get("name"), "tool_choice.name"), tools, "tool_choice")
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def streamed(body: dict[str, Any]) -> bool:
    return flag(body.get("stream"), "stream", False)


def blocks_text(blocks: Any, name: str) -> str:
    """The text of a list of text blocks (a system prompt's, a tool result's); other blocks are refused."""
    if not isinstance(blocks, list):
        raise ApiError(400, f"{name} must be a string or a list of text blocks")
    texts = []
    for index, block in enumerate(blocks):
        kind = obj(block, where(name, index)).get("type")
        if kind != "text":
            raise ApiError(400, f"{where(name, index)}: blocks of type {shown(kind)} are not supported: "
                                "send text")
        texts.append(string(block.get("text"), where(where(name, index), "text")))
    return "".join(texts)


def messages_from(item: Any, name: str) -> list[Message]:
    """One Anthropic message: text, or tool_use blocks (the assistant's calls), or tool_result blocks (each a tool
    message of its own)."""
    message = obj(item, name)
    role = cast(Role, one_of(message.get("role"), where(name, "role"), ("user", "assistant")))
    content = message.get("content")
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list):
        raise ApiError(400, f"{where(name, 'content')} must be a string or a list of blocks")
    texts, calls, results = [], [], []
    for index, raw in enumerate(content):
        at = where(where(name, "content"), index)
        block = obj(raw, at)
        kind = block.get("type")
        if kind == "text":
            texts.append(string(block.get("text"), where(at, "text")))
        elif kind == "tool_use":
            calls.append(ToolCall(name_of(block.get("name"), where(at, "name")),
                                  obj(block.get("input", {}), where(at, "input")),
                                  id=string(block.get("id"), where(at, "id"), default="")))
        elif kind == "tool_result":
            result = block.get("content")
            text = result if isinstance(result, str) else "" if result is None else \
                blocks_text(result, where(at, "content"))
            flag(block.get("is_error"), where(at, "is_error"), False)
            results.append(Message("tool", text, call_id=string(block.get("tool_use_id"), where(at, "tool_use_id"),
                                                                default="")))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # thinking is never sent back to the model
        else:
            raise ApiError(400, f"{at}: blocks of type {shown(kind)} are not supported: send text")
    out = [Message(role, "".join(texts), tool_calls=tuple(calls))] if texts or calls else []
    return out + results


def tool_from(item: Any, name: str) -> ToolSpec:
    return tool_spec(item, name, "input_schema")


def usage_of(final: FinalChunk | None) -> dict[str, int]:
    if final is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": final.usage.prompt_tokens, "output_tokens": final.usage.completion_tokens}


def tool_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id or f"toolu_{uuid.uuid4().hex[:24]}", "name": call.name,
            "input": call.arguments}


async def complete(engine: Engine, request: Request) -> dict[str, Any]:
    text, thinking, calls, final = await engine.complete(request)
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    content.extend(tool_block(call) for call in calls)
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": engine.name,
            "content": content, **stop_of(final, len(calls)), "usage": usage_of(final)}


def sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


async def stream(engine: Engine, chunks: AsyncIterator[Chunk]) -> AsyncIterator[str]:
    yield sse("message_start", {"message": {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message",
                                            "role": "assistant", "model": engine.name, "content": [],
                                            "stop_reason": None, "stop_sequence": None,
                                            "usage": {"input_tokens": 0, "output_tokens": 0}}})
    index, open_kind, calls = -1, None, 0
    async for chunk in chunks:
        if isinstance(chunk, (TextChunk, ThinkingChunk)) and chunk.text:
            kind = "text" if isinstance(chunk, TextChunk) else "thinking"
            if open_kind != kind:
                if open_kind is not None:
                    yield sse("content_block_stop", {"index": index})
                index, open_kind = index + 1, kind
                start = {"type": "text", "text": ""} if kind == "text" else \
                    {"type": "thinking", "thinking": "", "signature": ""}
                yield sse("content_block_start", {"index": index, "content_block": start})
            delta = {"type": "text_delta", "text": chunk.text} if kind == "text" else \
                {"type": "thinking_delta", "thinking": chunk.text}
            yield sse("content_block_delta", {"index": index, "delta": delta})
        elif isinstance(chunk, ToolCallChunk):
            if open_kind is not None:
                yield sse("content_block_stop", {"index": index})
                open_kind = None
            index += 1
            calls += 1
            block = tool_block(chunk.call)
            yield sse("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            yield sse("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
            yield sse("content_block_stop", {"index": index})
        elif isinstance(chunk, FinalChunk):
            if open_kind is not None:
                yield sse("content_block_stop", {"index": index})
                open_kind = None
            yield sse("message_delta", {"delta": stop_of(chunk, calls), "usage": usage_of(chunk)})
    yield sse("message_stop", {})


ERROR_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                         "request_too_large", "rate_limit_error", "api_error", "overloaded_error"})
"""The error types Anthropic's API has: another kind of the server's (a prompt over the window, a backend without
the feature) is told as the one of these its status means."""


def error_body(error: ApiError) -> dict[str, Any]:
    kind = error.kind if error.kind in ERROR_TYPES else "invalid_request_error" if error.status < 500 else "api_error"
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def stream_error(error: ApiError) -> str:
    """An error after a stream began, as Anthropic's streams report one: an ``error`` event."""
    return f"event: error\ndata: {json.dumps(error_body(error))}\n\n"
