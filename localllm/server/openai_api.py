"""OpenAI's wire format: /v1/models and /v1/chat/completions (SSE streaming, tools, response_format with a JSON
schema, reasoning_content for a reasoning model's thinking, usage)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.messages import Message, Role
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import bounded_int, number, options_from, text_of

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


def models(engine: Engine) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "localllm"}]}


def parse(body: dict[str, Any], base: GenerationOptions) -> Request:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list")
    messages = [message_from(item) for item in raw]
    changes: dict[str, Any] = {}
    for key, field in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(key) is not None:
            changes[field] = number(body[key], key, 0.0, 5.0)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        changes["max_tokens"] = bounded_int(limit, "max_tokens", 1, 1_000_000)
    if body.get("seed") is not None:
        changes["seed"] = bounded_int(body["seed"], "seed", -(2**63), 2**63 - 1)
    stop = body.get("stop")
    if stop is not None:
        changes["stop"] = tuple([stop] if isinstance(stop, str) else [str(s) for s in stop if s])
    effort = body.get("reasoning_effort")
    if effort in ("low", "medium", "high"):
        changes["think"] = effort
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object")
        changes["json_schema"] = schema
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        changes["json_schema"] = {"type": "object"}
    tools = [tool_from(item) for item in body.get("tools") or []]
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        choice = str((choice.get("function") or {}).get("name") or "auto")
    if choice == "none":
        tools, choice = [], "auto"
    return Request(messages, options_from(base, changes), tools, str(choice))


def message_from(item: Any) -> Message:
    if not isinstance(item, dict) or item.get("role") not in ("system", "developer", "user", "assistant", "tool"):
        raise ApiError(400, "each message needs a role: system, user, assistant or tool")
    role = "system" if item["role"] == "developer" else item["role"]
    content = text_of(item.get("content"))
    if role == "tool":
        return Message("tool", content, name=str(item.get("name") or ""), call_id=str(item.get("tool_call_id") or ""))
    calls = tuple(ToolCall(str((c.get("function") or {}).get("name") or ""), arguments_of(c), id=str(c.get("id") or ""))
                  for c in item.get("tool_calls") or [] if isinstance(c, dict))
    return Message(cast(Role, role), content, tool_calls=calls)


def arguments_of(call: dict[str, Any]) -> dict[str, Any]:
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def tool_from(item: Any) -> ToolSpec:
    function = item.get("function") if isinstance(item, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ApiError(400, "each tool needs {\"type\": \"function\", \"function\": {\"name\": ...}}")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return ToolSpec(function["name"], str(function.get("description") or ""), dict(parameters))


def usage_of(final: FinalChunk | None) -> dict[str, int]:
    if final is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    usage = final.usage
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "completion_tokens_details": {"reasoning_tokens": usage.thinking_tokens}}  # type: ignore[dict-item]


def call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    data = {"id": call.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
    return {"index": index, **data} if index is not None else data


async def complete(engine: Engine, request: Request) -> dict[str, Any]:
    text, thinking, calls, final = await engine.complete(request)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if thinking:
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = [call_json(call) for call in calls]
    reason = "tool_calls" if calls else FINISH[final.finish_reason if final else "stop"]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": engine.name, "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": usage_of(final)}


async def stream(engine: Engine, chunks: AsyncIterator[Chunk], include_usage: bool) -> AsyncIterator[str]:
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield event({"role": "assistant", "content": ""})
    calls = 0
    async for chunk in chunks:
        if isinstance(chunk, TextChunk) and chunk.text:
            yield event({"content": chunk.text})
        elif isinstance(chunk, ThinkingChunk) and chunk.text:
            yield event({"reasoning_content": chunk.text})
        elif isinstance(chunk, ToolCallChunk):
            yield event({"tool_calls": [call_json(chunk.call, calls)]})
            calls += 1
        elif isinstance(chunk, FinalChunk):
            yield event({}, "tool_calls" if calls else FINISH[chunk.finish_reason])
            if include_usage:
                data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                        "choices": [], "usage": usage_of(chunk)}
                yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "code": error.status}}
