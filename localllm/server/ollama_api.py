"""Ollama's wire format: /api/version, /api/tags, /api/show, /api/chat and /api/generate (NDJSON streaming, tools,
format, think), /api/embed and the older /api/embeddings, so Ollama's clients (its library, oterm, Open WebUI) work
unchanged. Unlike Ollama, a prompt or a text to embed over the window is refused with a 400 rather than cut. The
model management routes (create, copy, delete, pull, push, blobs) are model_api.py's."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from localllm import __version__
from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, ToolCallChunk
from localllm.core.finish import finish_of
from localllm.core.messages import Message, Role
from localllm.core.model import NamedDefaults
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall
from localllm.core.units import FOREVER, parameter_count
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.scheduler import Slot
from localllm.server.wire import (
    MAX_INPUTS,
    MAX_MESSAGES,
    MAX_TOOLS,
    bounded_int,
    each,
    flag,
    function_call,
    function_tool,
    number,
    obj,
    one_of,
    options_from,
    schema,
    stops,
    string,
    text_of,
    where,
)
from localllm.tasks.serving import Described

OPTION_FIELDS = {"temperature": ("temperature", 0.0, 5.0), "top_p": ("top_p", 0.0, 1.0),
                 "min_p": ("min_p", 0.0, 1.0), "repeat_penalty": ("repeat_penalty", 0.0, 10.0)}


def now() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


OLLAMA_VERSION = "0.9.0"
"""The Ollama version whose API this one matches: create from uploaded files (0.5.5), structured outputs (0.5) and
thinking (0.9). Neither oterm nor the ollama library gates a feature on the version (they read /api/show's
capabilities); a client that compares versions sees one that has what is implemented here."""


def version() -> dict[str, str]:
    return {"version": f"{OLLAMA_VERSION}-localllm-{__version__}"}


def details(info: Any, named: NamedDefaults | None = None) -> dict[str, Any]:
    """Family, parameter size and quantization, from a model's metadata (empty where unknown); a named model's
    parent is what it is built on."""
    parameters = int(getattr(info, "parameters", 0) or 0)
    label = getattr(info, "size_label", None) or (parameter_count(parameters) if parameters else "")
    family = str(getattr(info, "architecture", "") or "")
    return {"parent_model": named.base if named is not None else "", "format": "gguf", "family": family,
            "families": [family] if family else None, "parameter_size": str(label or ""),
            "quantization_level": str(getattr(info, "quant", "") or "")}


def named_fields(named: NamedDefaults) -> dict[str, Any]:
    """/api/show's system, parameters (Ollama's "name value" lines) and modelfile for a named model."""
    from localllm.store.named import ollama_parameters

    lines, modelfile = [], [f"# Modelfile of the named model, built on {named.base}", f"FROM {named.base}"]
    for key, value in ollama_parameters(dict(named.parameters)).items():
        for one in value if isinstance(value, list) else [value]:
            shown = json.dumps(one) if isinstance(one, str) else str(one)
            lines.append(f"{key:<30} {shown}")
            modelfile.append(f"PARAMETER {key} {shown}")
    if named.system:
        modelfile.append(f'SYSTEM """{named.system}"""')
    fields: dict[str, Any] = {"parameters": "\n".join(lines), "modelfile": "\n".join(modelfile) + "\n"}
    if named.system:
        fields["system"] = named.system
    if named.license:
        fields["license"] = named.license
    return fields


STAYS_LOADED = "2318-01-01T00:00:00Z"
"""/api/ps's expires_at for a model kept until the server stops (Ollama's clients say "Forever" for such a date)."""


def _digest(described: Described | None) -> str:
    return f"sha256:{described.digest}" if described and described.digest else ""


def tags(described: list[Described]) -> dict[str, Any]:
    """Every served model, with its file's size and time (a server backend's models have no file here)."""
    models = []
    for model in described:
        modified = iso(model.modified) if model.modified else now()
        models.append({"name": model.name, "model": model.name, "modified_at": modified, "size": model.size,
                       "digest": _digest(model), "details": details(model.info, model.named)})
    return {"models": models}


def ps(slots: list[Slot]) -> dict[str, Any]:
    """The models loaded now (oterm asks after each answer, for the window it fits a long chat into): sizes are
    the load plan's, weights, cache and compute together (a runner's: all its slots' caches, and what its process
    holds beyond the plan, read from its resident set), and the part of them on the GPU; a model in use expires
    its keep-alive after its last request ends."""
    models = []
    for slot in slots:
        engine = slot.engine
        memory = engine.loaded.plan.memory
        if slot.keep_alive == FOREVER:
            expires = STAYS_LOADED
        else:
            moment = slot.expires_at if slot.expires_at is not None else time.time() + slot.keep_alive
            expires = iso(datetime.fromtimestamp(moment, UTC))
        size = memory.total + int(getattr(engine.loaded, "overhead", 0))
        models.append({"name": engine.name, "model": engine.name, "size": size, "size_vram": memory.gpu,
                       "digest": "", "details": details(engine.loaded.info), "expires_at": expires,
                       "context_length": engine.window})
    return {"models": models}


THINKING_MARKS = ("<think>", "enable_thinking", "reasoning_content")
"""What a chat template that handles a model's thinking mentions."""
PARAMETER_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "repeat_penalty": "repeat_penalty", "seed": "seed", "max_tokens": "num_predict"}


def parameters_text(options: GenerationOptions) -> str:
    """The server's default options as Ollama's show writes a Modelfile's PARAMETER lines: one ``name value`` a
    line."""
    lines = []
    for field, name in PARAMETER_NAMES.items():
        value = getattr(options, field, None)
        if value is not None:
            lines.append(f"{name:<16}{value}")
    lines += [f'{"stop":<16}"{stop}"' for stop in getattr(options, "stop", ()) or ()]
    return "\n".join(lines)


def show(engine: Engine | None, described: Described | None, options: GenerationOptions) -> dict[str, Any]:
    """A model's details, loaded (``engine``) or not: the window it runs with, else the one it was trained on; the
    server's default parameters; its chat template (a Jinja template: localllm renders it, where Ollama's are Go
    templates); and what it can do."""
    info = engine.loaded.info if engine is not None else described.info if described else None
    window = engine.window if engine is not None else int(getattr(info, "context_length", 0) or 0)
    embeddings = engine.loaded.backend.capabilities.embeddings if engine is not None else info is not None
    template = str(getattr(info, "chat_template", "") or "")
    capabilities = ["completion", "tools"]  # tools on every model: the reply is constrained to a call where needed
    if engine is not None and engine.loaded.backend.fills_in_middle():
        capabilities.append("insert")
    if any(mark in template for mark in THINKING_MARKS):
        capabilities.append("thinking")
    if embeddings:
        capabilities.append("embedding")
    model_info: dict[str, Any] = {"general.context_length": window}
    architecture = str(getattr(info, "architecture", "") or "")
    if architecture:
        model_info["general.architecture"] = architecture
        model_info[f"{architecture}.context_length"] = window
        parameters = int(getattr(info, "parameters", 0) or 0)
        if parameters:
            model_info["general.parameter_count"] = parameters
    modified = described.modified if described and described.modified else None
    named = described.named if described is not None else engine.loaded.ref.named if engine is not None else None
    shown = {"details": details(info, named), "model_info": model_info, "capabilities": capabilities,
             "parameters": parameters_text(options), "template": template, "license": "",
             "modified_at": iso(modified) if modified else now()}
    return {**shown, **named_fields(named)} if named is not None else shown


def loads_only(body: dict[str, Any], chat: bool) -> bool:
    """Ollama's load and unload idiom: a request with nothing to answer (no prompt, or an empty message list)."""
    if chat:
        return body.get("messages") is None or body.get("messages") == []
    return body.get("prompt") in (None, "") and not body.get("suffix")


def loaded_reply(name: str, chat: bool, reason: str) -> dict[str, Any]:
    reply: dict[str, Any] = {"model": name, "created_at": now(), "done": True, "done_reason": reason}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    return reply


def parse(body: dict[str, Any], base: GenerationOptions, *, chat: bool) -> Request:
    if chat:
        messages = each(body.get("messages"), "messages", MAX_MESSAGES, "messages", message_from, least=1)
    else:
        prompt = string(body.get("prompt"), "prompt", default="")
        system = string(body.get("system"), "system", default="")
        no_images(body.get("images"), "images")
        messages = ([Message("system", system)] if system else []) + [Message("user", prompt)]
        suffix = string(body.get("suffix"), "suffix", default="") or None
        raw = flag(body.get("raw"), "raw", False)
    options = {} if body.get("options") is None else obj(body["options"], "options")
    changes: dict[str, Any] = {}
    for key, (field, low, high) in OPTION_FIELDS.items():
        if options.get(key) is not None:
            changes[field] = number(options[key], f"options.{key}", low, high)
    if options.get("top_k") is not None:
        changes["top_k"] = bounded_int(options["top_k"], "options.top_k", 0, 1_000_000)
    if options.get("num_predict") is not None and options["num_predict"] != -1:
        changes["max_tokens"] = bounded_int(options["num_predict"], "options.num_predict", 1, 1_000_000)
    if options.get("seed") is not None:
        changes["seed"] = bounded_int(options["seed"], "options.seed", -(2**63), 2**63 - 1)
    if options.get("stop") is not None:
        changes["stop"] = stops(options["stop"], "options.stop")
    think = body.get("think")
    if think is not None:
        if not (isinstance(think, bool) or think in ("low", "medium", "high")):
            raise ApiError(400, 'think must be true, false, "low", "medium" or "high"')
        changes["think"] = {True: "on", False: "off"}.get(think, think)
    fmt = body.get("format")
    if isinstance(fmt, dict):
        changes["json_schema"] = schema(fmt, "format")
    elif fmt == "json":
        changes["json_schema"] = {"type": "object"}
    elif fmt not in (None, ""):
        raise ApiError(400, 'format must be "json" or a JSON schema object')
    tools = each(body.get("tools"), "tools", MAX_TOOLS, "tools", function_tool) if chat else []
    if not chat and (suffix is not None or raw):
        # The prompt as it is: no template (raw), or around the cursor with the model's FIM tokens (suffix)
        return Request([], options_from(base, changes), prompt=prompt, suffix=suffix)
    return Request(messages, options_from(base, changes), tools)


def streamed(body: dict[str, Any]) -> bool:
    return flag(body.get("stream"), "stream", True)  # Ollama streams unless told not to


def no_images(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, list):
        raise ApiError(400, f"{name} must be a list")
    if value:
        raise ApiError(400, "images are not supported: send text")


def message_from(item: Any, name: str) -> Message:
    message = obj(item, name)
    role = one_of(message.get("role"), where(name, "role"), ("system", "user", "assistant", "tool"))
    no_images(message.get("images"), where(name, "images"))
    content = text_of(message.get("content"), where(name, "content"))
    if role == "tool":
        tool = message.get("tool_name") if message.get("tool_name") is not None else message.get("name")
        return Message("tool", content, name=string(tool, where(name, "tool_name"), default=""))
    calls = each(message.get("tool_calls"), where(name, "tool_calls"), MAX_TOOLS, "tool calls", function_call)
    return Message(cast(Role, role), content, tool_calls=tuple(calls))


@dataclass(frozen=True)
class Clock:
    """When the request arrived (time.monotonic()) and the seconds its model took to load for it."""

    started: float
    load_s: float = 0.0


def final_fields(final: FinalChunk | None, clock: Clock) -> dict[str, Any]:
    """Ollama's counts and durations (nanoseconds). They add up as Ollama's do: the total, from the request's
    arrival to now, holds the load, the prompt's reading (to the first token) and the rest of the answer."""
    total = int((time.monotonic() - clock.started) * 1e9)
    load = int(clock.load_s * 1e9)
    if final is None:
        return {"done": True, "done_reason": "stop", "total_duration": total, "load_duration": load}
    timings = final.timings
    first = timings.first_token_s if timings.first_token_s is not None else timings.total_s
    prompt_s, eval_s = first, max(0.0, timings.total_s - first)
    if timings.engine is not None:  # llama.cpp's own measures of the same two parts
        prompt_s, eval_s = timings.engine.prompt_eval_s, timings.engine.eval_s
    return {"done": True, "done_reason": finish_of(final).reason,
            "total_duration": total, "load_duration": load, "prompt_eval_count": final.usage.prompt_tokens,
            "prompt_eval_duration": int(prompt_s * 1e9), "eval_count": final.usage.completion_tokens,
            "eval_duration": int(eval_s * 1e9)}


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


async def complete(engine: Engine, request: Request, chat: bool, clock: Clock) -> dict[str, Any]:
    text, thinking, calls, final = await engine.complete(request)
    return {**part(engine, chat, text, thinking, calls), **final_fields(final, clock)}


async def stream(engine: Engine, chunks: AsyncIterator[Chunk], chat: bool, clock: Clock) -> AsyncIterator[str]:
    async for chunk in chunks:
        if isinstance(chunk, TextChunk) and chunk.text:
            yield json.dumps(part(engine, chat, chunk.text)) + "\n"
        elif isinstance(chunk, ThinkingChunk) and chunk.text:
            yield json.dumps(part(engine, chat, thinking=chunk.text)) + "\n"
        elif isinstance(chunk, ToolCallChunk):
            yield json.dumps(part(engine, chat, calls=[chunk.call])) + "\n"
        elif isinstance(chunk, FinalChunk):
            yield json.dumps({**part(engine, chat), **final_fields(chunk, clock)}) + "\n"


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
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"input has {len(texts)} texts; at most {MAX_INPUTS} may be sent in one request")
    if not all(texts):
        raise ApiError(400, "input must not contain empty strings")
    if body.get("dimensions") is not None:
        raise ApiError(400, "dimensions cannot be changed for this model's vectors: leave it out")
    return texts


async def embed(engine: Engine, body: dict[str, Any], legacy: bool, clock: Clock) -> dict[str, Any]:
    """Ollama answers an empty input with no vectors (clients send one to load the model); so does this."""
    texts = embed_texts(body, legacy)
    engine.check_embeddings()
    vectors, tokens = await engine.embed(texts) if texts else ([], 0)
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    total = int((time.monotonic() - clock.started) * 1e9)
    return {"model": engine.name, "embeddings": vectors, "total_duration": total,
            "load_duration": int(clock.load_s * 1e9), "prompt_eval_count": tokens}


def error_body(error: ApiError) -> dict[str, Any]:
    return {"error": error.message}


def stream_error(error: ApiError) -> str:
    """An error after a stream began, as a line of its own (Ollama's streams report one so)."""
    return json.dumps(error_body(error)) + "\n"
