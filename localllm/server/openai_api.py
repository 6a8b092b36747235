"""OpenAI's wire format: /v1/models, /v1/chat/completions (SSE streaming, tools, response_format with a JSON
schema, reasoning_content for a reasoning model's thinking, usage), the legacy /v1/completions (raw text continued,
no chat template) and /v1/embeddings."""

from __future__ import annotations

import base64
import json
import struct
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
COMPLETION_MAX_TOKENS = 16
"""/v1/completions' default answer length when a request names none: OpenAI's own (and llama.cpp's server's)."""
MAX_INPUTS = 2048
"""Texts one embeddings request may carry (OpenAI's limit)."""


def models(engine: Engine) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "localllm"}]}


def parse(body: dict[str, Any], base: GenerationOptions) -> Request:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list")
    messages = [message_from(item) for item in raw]
    changes = sampling(body)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        changes["max_tokens"] = bounded_int(limit, "max_tokens", 1, 1_000_000)
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


def include_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed answer ends with a usage event (``stream_options.include_usage``)."""
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError(400, "stream_options must be an object")
    return bool((stream_options or {}).get("include_usage"))


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields chat and text completions share, checked, as GenerationOptions changes."""
    changes: dict[str, Any] = {}
    if body.get("temperature") is not None:
        changes["temperature"] = number(body["temperature"], "temperature", 0.0, 2.0)  # OpenAI's own range
    if body.get("top_p") is not None:
        changes["top_p"] = number(body["top_p"], "top_p", 0.0, 1.0)
    if body.get("seed") is not None:
        changes["seed"] = bounded_int(body["seed"], "seed", -(2**63), 2**63 - 1)
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, "stop must be a string or a list of strings")
        changes["stop"] = tuple(s for s in stop if s)
    return changes


def _texts(raw: Any, field: str) -> list[str]:
    """A field that holds a text or a list of them (completions' prompt, embeddings' input)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(item, (int, list)) for item in raw):
        raise ApiError(400, f"{field} given as token ids is not supported: send text")
    raise ApiError(400, f"{field} must be a string or a non-empty list of strings")


def parse_completion(body: dict[str, Any], base: GenerationOptions) -> tuple[list[Request], bool]:
    """/v1/completions: one request per prompt (a string, or a list of them), and whether to echo the prompt."""
    prompts = _texts(body.get("prompt"), "prompt")
    if body.get("suffix"):
        raise ApiError(400, "suffix (text to fill in before) is not supported: send the prompt alone")
    if body.get("logprobs") is not None:
        raise ApiError(400, "logprobs are not supported: leave logprobs out")
    for key in ("n", "best_of"):
        if body.get(key) not in (None, 1):
            raise ApiError(400, f"{key} must be 1: one completion per prompt (send a list of prompts for more)")
    changes = sampling(body)
    limit = body.get("max_tokens")
    changes["max_tokens"] = COMPLETION_MAX_TOKENS if limit is None else bounded_int(limit, "max_tokens", 1,
                                                                                    1_000_000)
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise ApiError(400, "echo must be true or false")
    options = options_from(base, {**changes, "json_schema": None, "answer_prefix": None})
    return [Request([], options, prompt=text) for text in prompts], echo


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


async def complete_text(engine: Engine, requests: list[Request], echo: bool) -> dict[str, Any]:
    choices, finals = [], []
    for index, request in enumerate(requests):
        text, _, _, final = await engine.complete(request)
        finals.append(final)
        choices.append({"text": (request.prompt or "") + text if echo else text, "index": index, "logprobs": None,
                        "finish_reason": FINISH[final.finish_reason if final else "stop"]})
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": engine.name, "choices": choices, "usage": total_usage(finals)}


def total_usage(finals: list[FinalChunk | None]) -> dict[str, int]:
    usages = [usage_of(final) for final in finals]
    return {key: sum(usage[key] for usage in usages) for key in ("prompt_tokens", "completion_tokens",
                                                                 "total_tokens")}


async def stream_text(engine: Engine, first: AsyncIterator[Chunk], requests: list[Request], echo: bool,
                      include_usage: bool) -> AsyncIterator[str]:
    """SSE for /v1/completions: each prompt's text in turn under its choice index. ``first`` is the first
    prompt's stream, already started (its errors were HTTP errors); a later prompt's error ends the stream with
    an error event, as OpenAI's streams report one."""
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def event(index: int, text: str, finish: str | None = None) -> str:
        data = {"id": ident, "object": "text_completion", "created": created, "model": engine.name,
                "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n"

    finals: list[FinalChunk | None] = []
    for index, request in enumerate(requests):
        chunks = first if index == 0 else engine.stream(request)
        if echo and request.prompt:
            yield event(index, request.prompt)
        final = None
        try:
            async for chunk in chunks:
                if isinstance(chunk, TextChunk) and chunk.text:
                    yield event(index, chunk.text)
                elif isinstance(chunk, FinalChunk):
                    final = chunk
        except ApiError as error:
            yield f"data: {json.dumps(error_body(error))}\n\n"
            return
        finals.append(final)
        yield event(index, "", FINISH[final.finish_reason if final else "stop"])
    if include_usage:
        data = {"id": ident, "object": "text_completion", "created": created, "model": engine.name, "choices": [],
                "usage": total_usage(finals)}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def parse_embeddings(body: dict[str, Any]) -> tuple[list[str], str, int | None]:
    """/v1/embeddings: (the texts, "float" or "base64", the dimensions asked for, if any)."""
    texts = _texts(body.get("input"), "input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"input has {len(texts)} texts; at most {MAX_INPUTS} may be sent at once")
    if not all(texts):
        raise ApiError(400, "input must not contain empty strings")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be \"float\" or \"base64\"")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        dimensions = bounded_int(dimensions, "dimensions", 1, 1_000_000)
    return texts, encoding, dimensions


async def embeddings(engine: Engine, texts: list[str], encoding: str, dimensions: int | None) -> dict[str, Any]:
    vectors, tokens = await engine.embed(texts)
    size = len(vectors[0]) if vectors else 0
    if dimensions is not None and dimensions != size:
        raise ApiError(400, f"{engine.name}'s vectors have {size} dimensions; dimensions cannot change that "
                            "(leave it out)")

    def encoded(vector: list[float]) -> list[float] | str:
        if encoding == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

    return {"object": "list", "model": engine.name,
            "data": [{"object": "embedding", "index": index, "embedding": encoded(vector)}
                     for index, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "code": error.status}}
