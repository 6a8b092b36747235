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
from localllm.core.finish import finish_of
from localllm.core.messages import Message, Role
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import (
    MAX_INPUTS,
    MAX_MESSAGES,
    MAX_PROMPTS,
    MAX_TOOLS,
    MAX_TOTAL_TOKENS,
    bounded_int,
    each,
    flag,
    function_call,
    function_tool,
    name_of,
    named_choice,
    number,
    obj,
    offering,
    one_of,
    options_from,
    schema,
    stops,
    string,
    text_of,
    where,
)

COMPLETION_MAX_TOKENS = 16
"""/v1/completions' default answer length when a request names none: OpenAI's own (and llama.cpp's server's)."""


def models(names: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model(name) for name in names]}


def model(name: str) -> dict[str, Any]:
    """One served model (the SDKs' models.retrieve)."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "localllm"}


def parse(body: dict[str, Any], base: GenerationOptions) -> Request:
    messages = each(body.get("messages"), "messages", MAX_MESSAGES, "messages", message_from, least=1)
    changes = sampling(body)
    limit_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if body.get(limit_key) is not None:
        changes["max_tokens"] = bounded_int(body[limit_key], limit_key, 1, 1_000_000)
    effort = string(body.get("reasoning_effort"), "reasoning_effort", default="")
    if effort in ("low", "medium", "high"):
        changes["think"] = effort
    fmt = body.get("response_format")
    if fmt is not None:
        kind = one_of(obj(fmt, "response_format").get("type"), "response_format.type",
                      ("text", "json_object", "json_schema"))
        if kind == "json_schema":
            wrapper = obj(fmt.get("json_schema"), "response_format.json_schema")
            changes["json_schema"] = schema(wrapper.get("schema"), "response_format.json_schema.schema")
        elif kind == "json_object":
            changes["json_schema"] = {"type": "object"}
    tools = each(body.get("tools"), "tools", MAX_TOOLS, "tools", function_tool)
    return offering(messages, options_from(base, changes), tools, tool_choice(body.get("tool_choice"), tools))


def tool_choice(value: Any, tools: list[ToolSpec]) -> str:
    """"none", "auto", "required", or {"type": "function", "function": {"name": ...}}: the tool's name."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        return one_of(value, "tool_choice", ("none", "auto", "required"))
    function = obj(obj(value, "tool_choice").get("function"), "tool_choice.function")
    return named_choice(name_of(function.get("name"), "tool_choice.function.name"), tools, "tool_choice")


def streamed(body: dict[str, Any]) -> bool:
    return flag(body.get("stream"), "stream", False)


def include_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed answer ends with a usage event (``stream_options.include_usage``)."""
    stream_options = body.get("stream_options")
    if stream_options is None:
        return False
    return flag(obj(stream_options, "stream_options").get("include_usage"), "stream_options.include_usage", False)


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields chat and text completions share, checked, as GenerationOptions changes."""
    changes: dict[str, Any] = {}
    if body.get("temperature") is not None:
        changes["temperature"] = number(body["temperature"], "temperature", 0.0, 2.0)  # OpenAI's own range
    if body.get("top_p") is not None:
        changes["top_p"] = number(body["top_p"], "top_p", 0.0, 1.0)
    if body.get("seed") is not None:
        changes["seed"] = bounded_int(body["seed"], "seed", -(2**63), 2**63 - 1)
    if body.get("stop") is not None:
        changes["stop"] = stops(body["stop"], "stop")
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


def parse_completion(body: dict[str, Any], base: GenerationOptions, window: int | None = None
                     ) -> tuple[list[Request], bool]:
    """/v1/completions: one request per prompt (a string, or a list of them), and whether to echo the prompt.
    At most MAX_PROMPTS prompts, asking for at most MAX_TOTAL_TOKENS tokens together (each prompt's max_tokens
    counted at most as ``window``, the longest answer the model can give)."""
    prompts = _texts(body.get("prompt"), "prompt")
    if not all(prompts):  # nothing to continue: a model without a start token would be handed no tokens at all
        raise ApiError(400, "prompt must not be empty (nor hold empty strings)")
    if len(prompts) > MAX_PROMPTS:
        raise ApiError(400, f"prompt has {len(prompts)} prompts; at most {MAX_PROMPTS} may be sent in one request")
    if body.get("suffix"):
        raise ApiError(400, "suffix (text to fill in before) is not supported: send the prompt alone")
    if body.get("logprobs") is not None:
        raise ApiError(400, "logprobs are not supported: leave logprobs out")
    for key in ("n", "best_of"):
        if body.get(key) is not None and (type(body[key]) is not int or body[key] != 1):
            raise ApiError(400, f"{key} must be 1: one completion per prompt (send a list of prompts for more)")
    changes = sampling(body)
    limit = body.get("max_tokens")
    changes["max_tokens"] = COMPLETION_MAX_TOKENS if limit is None else bounded_int(limit, "max_tokens", 1,
                                                                                    1_000_000)
    total = len(prompts) * min(changes["max_tokens"], window or changes["max_tokens"])
    if total > MAX_TOTAL_TOKENS:
        raise ApiError(400, f"{len(prompts)} prompts of up to {changes['max_tokens']} tokens each ask for up to "
                            f"{total} tokens; at most {MAX_TOTAL_TOKENS} may be asked for in one request")
    echo = flag(body.get("echo"), "echo", False)
    options = options_from(base, {**changes, "json_schema": None, "answer_prefix": None})
    return [Request([], options, prompt=text) for text in prompts], echo


ROLES = ("system", "developer", "user", "assistant", "tool")


def message_from(item: Any, name: str) -> Message:
    message = obj(item, name)
    role = one_of(message.get("role"), where(name, "role"), ROLES)
    content = text_of(message.get("content"), where(name, "content"))
    if role == "tool":
        return Message("tool", content, name=string(message.get("name"), where(name, "name"), default=""),
                       call_id=string(message.get("tool_call_id"), where(name, "tool_call_id"), default=""))
    string(message.get("name"), where(name, "name"), default="")  # a participant's name: checked, not used
    calls = each(message.get("tool_calls"), where(name, "tool_calls"), MAX_TOOLS, "tool calls", function_call)
    return Message(cast(Role, "system" if role == "developer" else role), content, tool_calls=tuple(calls))


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
    reason = "tool_calls" if calls else finish_of(final).reason
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
            yield event({}, "tool_calls" if calls else finish_of(chunk).reason)
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
                        "finish_reason": finish_of(final).reason})
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
            yield stream_error(error)
            return
        finals.append(final)
        yield event(index, "", finish_of(final).reason)
    if include_usage:
        data = {"id": ident, "object": "text_completion", "created": created, "model": engine.name, "choices": [],
                "usage": total_usage(finals)}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def parse_embeddings(body: dict[str, Any]) -> tuple[list[str], str, int | None]:
    """/v1/embeddings: (the texts, "float" or "base64", the dimensions asked for, if any)."""
    texts = _texts(body.get("input"), "input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"input has {len(texts)} texts; at most {MAX_INPUTS} may be sent in one request")
    if not all(texts):
        raise ApiError(400, "input must not contain empty strings")
    encoding = "float" if body.get("encoding_format") is None else \
        one_of(body["encoding_format"], "encoding_format", ("float", "base64"))
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


def stream_error(error: ApiError) -> str:
    """An error after a stream began, as an event (its status line was sent already)."""
    return f"data: {json.dumps(error_body(error))}\n\n"
