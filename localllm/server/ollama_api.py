"""Ollama's wire format: /api/version, /api/tags, /api/show, /api/chat and /api/generate (NDJSON streaming, tools,
format, think), /api/embed and the older /api/embeddings, so Ollama's clients (its library, oterm, Open WebUI) work
unchanged. Unlike Ollama, a prompt or a text to embed over the window is refused with a 400 rather than cut."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from localllm import __version__
from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import bounded_int, number, options_from, text_of

OPTION_FIELDS = {"temperature": ("temperature", 0.0, 5.0), "top_p": ("top_p", 0.0, 1.0),
                 "min_p": ("min_p", 0.0, 1.0), "repeat_penalty": ("repeat_penalty", 0.0, 10.0)}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def version() -> dict[str, str]:
    return {"version": f"0.6.5-localllm-{__version__}"}


def details(engine: Engine) -> dict[str, Any]:
    info = engine.loaded.info
    return {"format": "gguf", "family": str(getattr(info, "architecture", "") or ""),
            "parameter_size": "", "quantization_level": str(getattr(info, "quant", "") or "")}


def tags(engine: Engine) -> dict[str, Any]:
    return {"models": [{"name": engine.name, "model": engine.name, "modified_at": now(), "size": 0,
                        "digest": "", "details": details(engine)}]}


def show(engine: Engine) -> dict[str, Any]:
    capabilities = ["completion", "tools"] + (["embedding"] if engine.loaded.backend.capabilities.embeddings else [])
    return {"details": details(engine), "model_info": {"general.context_length": engine.window},
            "capabilities": capabilities, "modified_at": now()}


def parse(body: dict[str, Any], base: GenerationOptions, *, chat: bool) -> Request:
    if chat:
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "messages must be a non-empty list")
        messages = [message_from(item) for item in raw]
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string")
        messages = ([Message("system", str(body["system"]))] if body.get("system") else []) + \
            [Message("user", prompt)]
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "options must be an object")
    changes: dict[str, Any] = {}
    for key, (field, low, high) in OPTION_FIELDS.items():
        if options.get(key) is not None:
            changes[field] = number(options[key], key, low, high)
    if options.get("top_k") is not None:
        changes["top_k"] = bounded_int(options["top_k"], "top_k", 0, 1_000_000)
    if options.get("num_predict") is not None and options["num_predict"] != -1:
        changes["max_tokens"] = bounded_int(options["num_predict"], "num_predict", 1, 1_000_000)
    if options.get("seed") is not None:
        changes["seed"] = bounded_int(options["seed"], "seed", -(2**63), 2**63 - 1)
    if options.get("stop"):
        changes["stop"] = tuple(str(s) for s in options["stop"] if s)
    think = body.get("think")
    if think is not None:
        changes["think"] = {True: "on", False: "off"}.get(think, think) \
            if think in (True, False, "low", "medium", "high") else None
    fmt = body.get("format")
    if isinstance(fmt, dict):
        changes["json_schema"] = fmt
    elif fmt == "json":
        changes["json_schema"] = {"type": "object"}
    tools = [tool_from(item) for item in body.get("tools") or []] if chat else []
    return Request(messages, options_from(base, changes), tools)


def message_from(item: Any) -> Message:
    if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant", "tool"):
        raise ApiError(400, "each message needs a role: system, user, assistant or tool")
    if item.get("images"):
        raise ApiError(400, "images are not supported: send text")
    content = text_of(item.get("content"))
    if item["role"] == "tool":
        return Message("tool", content, name=str(item.get("tool_name") or item.get("name") or ""))
    calls = tuple(ToolCall(str((c.get("function") or {}).get("name") or ""),
                           dict((c.get("function") or {}).get("arguments") or {}))
                  for c in item.get("tool_calls") or [] if isinstance(c, dict))
    return Message(item["role"], content, tool_calls=calls)


def tool_from(item: Any) -> ToolSpec:
    function = item.get("function") if isinstance(item, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ApiError(400, "each tool needs {\"type\": \"function\", \"function\": {\"name\": ...}}")
    return ToolSpec(function["name"], str(function.get("description") or ""),
                    dict(function.get("parameters") or {"type": "object", "properties": {}}))


def final_fields(final: FinalChunk | None, started: float) -> dict[str, Any]:
    total = int((time.monotonic() - started) * 1e9)
    if final is None:
        return {"done": True, "done_reason": "stop", "total_duration": total}
    timings = final.timings
    first = timings.first_token_s or 0.0
    return {"done": True, "done_reason": "length" if final.finish_reason == "length" else "stop",
            "total_duration": total, "load_duration": 0, "prompt_eval_count": final.usage.prompt_tokens,
            "prompt_eval_duration": int(first * 1e9), "eval_count": final.usage.completion_tokens,
            "eval_duration": int(timings.decode_s * 1e9)}


def part(engine: Engine, chat: bool, text: str = "", thinking: str = "", calls: list[ToolCall] | None = None
         ) -> dict[str, Any]:
    data: dict[str, Any] = {"model": engine.name, "created_at": now(), "done": False}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        data["message"] = message
    else:
        data["response"] = text
        if thinking:
            data["thinking"] = thinking
    return data


async def complete(engine: Engine, request: Request, chat: bool) -> dict[str, Any]:
    started = time.monotonic()
    text, thinking, calls, final = await engine.complete(request)
    return {**part(engine, chat, text, thinking, calls), **final_fields(final, started)}


async def stream(engine: Engine, chunks: AsyncIterator[Chunk], chat: bool) -> AsyncIterator[str]:
    started = time.monotonic()
    async for chunk in chunks:
        if isinstance(chunk, TextChunk) and chunk.text:
            yield json.dumps(part(engine, chat, chunk.text)) + "\n"
        elif isinstance(chunk, ThinkingChunk) and chunk.text:
            yield json.dumps(part(engine, chat, thinking=chunk.text)) + "\n"
        elif isinstance(chunk, ToolCallChunk):
            yield json.dumps(part(engine, chat, calls=[chunk.call])) + "\n"
        elif isinstance(chunk, FinalChunk):
            yield json.dumps({**part(engine, chat), **final_fields(chunk, started)}) + "\n"


def embed_texts(body: dict[str, Any], legacy: bool) -> list[str]:
    """The texts of /api/embed (``input``: a string or a list of them) or of /api/embeddings (``prompt``)."""
    if legacy:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string")
        return [prompt] if prompt else []
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw] if raw else []
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        texts = raw
    else:
        raise ApiError(400, "input must be a string or a list of strings")
    if not all(texts):
        raise ApiError(400, "input must not contain empty strings")
    if body.get("dimensions") is not None:
        raise ApiError(400, "dimensions cannot be changed for this model's vectors: leave it out")
    return texts


async def embed(engine: Engine, body: dict[str, Any], legacy: bool) -> dict[str, Any]:
    """Ollama answers an empty input with no vectors (clients send one to load the model); so does this."""
    started = time.monotonic()
    texts = embed_texts(body, legacy)
    engine.check_embeddings()
    vectors, tokens = await engine.embed(texts) if texts else ([], 0)
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    return {"model": engine.name, "embeddings": vectors, "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0, "prompt_eval_count": tokens}


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": error.message}
