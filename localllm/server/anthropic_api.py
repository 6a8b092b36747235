"""Anthropic's Messages format: /v1/messages (streaming events, tool use, thinking blocks), so clients written for
it run on a local model."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import bounded_int, number, options_from

STOP = {"stop": "end_turn", "length": "max_tokens", "cancelled": "end_turn", "error": "end_turn"}


def parse(body: dict[str, Any], base: GenerationOptions) -> Request:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list")
    if body.get("max_tokens") is None:
        raise ApiError(400, "max_tokens is required")
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message("system", system if isinstance(system, str) else blocks_text(system)))
    for item in raw:
        messages.extend(messages_from(item))
    changes: dict[str, Any] = {"max_tokens": bounded_int(body["max_tokens"], "max_tokens", 1, 1_000_000)}
    if body.get("temperature") is not None:
        changes["temperature"] = number(body["temperature"], "temperature", 0.0, 1.0)
    if body.get("top_p") is not None:
        changes["top_p"] = number(body["top_p"], "top_p", 0.0, 1.0)
    if body.get("top_k") is not None:
        changes["top_k"] = bounded_int(body["top_k"], "top_k", 0, 1_000_000)
    if body.get("stop_sequences"):
        changes["stop"] = tuple(str(s) for s in body["stop_sequences"] if s)
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        changes["think"] = "on" if thinking.get("type") == "enabled" else "off"
    tools = [tool_from(item) for item in body.get("tools") or []]
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    picked = {"auto": "auto", "any": "required", "tool": str(choice.get("name") if isinstance(choice, dict) else "")}
    if kind == "none":
        tools = []
    return Request(messages, options_from(base, changes), tools, picked.get(str(kind), "auto"))


def blocks_text(blocks: Any) -> str:
    if not isinstance(blocks, list):
        raise ApiError(400, "system must be a string or a list of text blocks")
    return "".join(str(block.get("text") or "") for block in blocks if isinstance(block, dict)
                   and block.get("type") == "text")


def messages_from(item: Any) -> list[Message]:
    """One Anthropic message: text, or tool_use blocks (the assistant's calls), or tool_result blocks (each a tool
    message of its own)."""
    if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
        raise ApiError(400, "each message needs a role: user or assistant")
    content = item.get("content")
    if isinstance(content, str):
        return [Message(item["role"], content)]
    if not isinstance(content, list):
        raise ApiError(400, "a message's content must be a string or a list of blocks")
    texts, calls, results = [], [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append(ToolCall(str(block.get("name") or ""), dict(block.get("input") or {}),
                                  id=str(block.get("id") or "")))
        elif kind == "tool_result":
            result = block.get("content")
            text = result if isinstance(result, str) else blocks_text(result or [])
            results.append(Message("tool", text, call_id=str(block.get("tool_use_id") or "")))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # thinking is never sent back to the model
        else:
            raise ApiError(400, f"content blocks of type {kind!r} are not supported: send text")
    out = [Message(item["role"], "".join(texts), tool_calls=tuple(calls))] if texts or calls else []
    return out + results


def tool_from(item: Any) -> ToolSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ApiError(400, "each tool needs a name and an input_schema")
    return ToolSpec(item["name"], str(item.get("description") or ""),
                    dict(item.get("input_schema") or {"type": "object", "properties": {}}))


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
            "content": content, "stop_reason": "tool_use" if calls else STOP[final.finish_reason if final else "stop"],
            "stop_sequence": None, "usage": usage_of(final)}


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
            yield sse("message_delta", {"delta": {"stop_reason": "tool_use" if calls else STOP[chunk.finish_reason],
                                                  "stop_sequence": None}, "usage": usage_of(chunk)})
    yield sse("message_stop", {})


def error_body(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.kind, "message": error.message}}
