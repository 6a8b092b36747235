"""OpenAI's wire format: /v1/models, /v1/chat/completions (SSE streaming, tools, response_format with a JSON
schema, reasoning_content for a reasoning model's thinking, usage, n answers, log-probabilities), the legacy
/v1/completions (raw text or token ids continued, no chat template; echo and logprobs, the shape
lm-evaluation-harness scores with) and /v1/embeddings."""

from __future__ import annotations

import base64
import codecs
import json
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from localllm.backends.base import unsupported
from localllm.core.chunks import (
    Chunk,
    FinalChunk,
    PromptChunk,
    TextChunk,
    ThinkingChunk,
    TokenLogprob,
    ToolCallChunk,
)
from localllm.core.finish import finish_of
from localllm.core.messages import Message, Role
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.wire import (
    MAX_CHOICES,
    MAX_INPUTS,
    MAX_MESSAGES,
    MAX_PROMPTS,
    MAX_TOOLS,
    MAX_TOP_LOGPROBS,
    MAX_TOTAL_TOKENS,
    bounded_int,
    each,
    flag,
    function_call,
    function_tool,
    logit_bias,
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
    token_id,
    token_ids,
    where,
)
from localllm.tasks.serving import Described

COMPLETION_MAX_TOKENS = 16
"""/v1/completions' default answer length when a request names none: OpenAI's own (and llama.cpp's server's)."""


def models(described: list[Described]) -> dict[str, Any]:
    return {"object": "list", "data": [model(entry.name, entry.modified) for entry in described]}


def model(name: str, modified: datetime | None = None) -> dict[str, Any]:
    """One served model (the SDKs' models.retrieve); ``created`` is its file's time, where it has a file here (a
    client that shows it would otherwise say 1970)."""
    return {"id": name, "object": "model", "created": int(modified.timestamp()) if modified else 0,
            "owned_by": "localllm"}


def parse(body: dict[str, Any], base: GenerationOptions) -> Request:
    """Chat's request, checked as far as it can be before its model is known (``checked_for`` does the rest)."""
    messages = each(body.get("messages"), "messages", MAX_MESSAGES, "messages", message_from, least=1)
    changes = sampling(body)
    wanted = flag(body.get("logprobs"), "logprobs", False)
    top = None if body.get("top_logprobs") is None else \
        bounded_int(body["top_logprobs"], "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and not wanted:
        raise ApiError(400, "top_logprobs needs logprobs: true")
    if wanted:
        changes["logprobs"] = top or 0
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
    request = offering(messages, options_from(base, changes), tools, tool_choice(body.get("tool_choice"), tools))
    request.n = choices_asked(body)
    return request


def choices_asked(body: dict[str, Any]) -> int:
    return 1 if body.get("n") is None else bounded_int(body["n"], "n", 1, MAX_CHOICES)


FIELDS = {"prompt_logprobs": "echo"}
"""The request field that set an option, where the two names differ."""


def checked_for(engine: Engine, request: Request) -> None:
    """What only the model's engine can tell, checked before the request waits for it (the same on both routes):
    a field its backend cannot honour is a 400 naming the field and the backend, never dropped without a word,
    and logit_bias's token ids must be in the model's vocabulary (where the backend knows it)."""
    options = request.options
    refused = unsupported(engine.loaded.backend.capabilities, options)
    if refused:
        name = FIELDS.get(refused[0], refused[0])
        raise ApiError(400, f"{name} is not supported by backend {engine.backend_name} (serve with --backend "
                            f"llama.cpp for it, or leave {name} out)")
    vocab = engine.loaded.backend.vocab_size
    if vocab is not None:
        for token, _ in options.logit_bias:
            token_id(token, where("logit_bias", str(token)), vocab)


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
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) is not None:
            changes[key] = number(body[key], key, -2.0, 2.0)  # OpenAI's range
    if body.get("logit_bias") is not None:
        changes["logit_bias"] = logit_bias(body["logit_bias"], "logit_bias")
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
    """A field that holds a text or a list of them (embeddings' input)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(item, (int, list)) for item in raw):
        raise ApiError(400, f"{field} given as token ids is not supported: send text")
    raise ApiError(400, f"{field} must be a string or a non-empty list of strings")


def _prompts(raw: Any, engine: Engine) -> list[str | list[int]]:
    """Completions' prompt: a text, a list of texts, a list of token ids (one prompt), or a list of such lists.
    Token ids are checked against the vocabulary here, by their place (``prompt[1][3]``)."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "prompt must be a string, a list of strings, a list of token ids or a list of lists "
                            "of token ids")
    if all(isinstance(item, str) for item in raw):
        return list(raw)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in raw) and \
            not all(isinstance(item, list) for item in raw):
        raise ApiError(400, "prompt must hold strings, token ids, or lists of token ids, not a mix")
    vocab = engine.loaded.backend.vocab_size
    if vocab is None or not engine.loaded.backend.capabilities.logprobs:
        raise ApiError(400, f"prompt given as token ids is not supported by backend {engine.backend_name}: send "
                            "text")
    if isinstance(raw[0], int):
        return [token_ids(raw, "prompt", vocab)]
    return [token_ids(item, where("prompt", index), vocab) for index, item in enumerate(raw)]


def parse_completion(body: dict[str, Any], base: GenerationOptions, engine: Engine) -> tuple[list[Request], bool]:
    """/v1/completions: one request per prompt (``n`` answers each), and whether to echo the prompt. At most
    MAX_PROMPTS prompts, asking for at most MAX_TOTAL_TOKENS tokens together (each answer's max_tokens counted at
    most as the window, the longest answer the model can give). ``logprobs`` N: each token's log-probability and
    the N likeliest alternatives; with ``echo``, the prompt's tokens' too."""
    prompts = _prompts(body.get("prompt"), engine)
    if not all(prompts):  # nothing to continue: a model without a start token would be handed no tokens at all
        raise ApiError(400, "prompt must not be empty (nor hold empty strings)")
    if len(prompts) > MAX_PROMPTS:
        raise ApiError(400, f"prompt has {len(prompts)} prompts; at most {MAX_PROMPTS} may be sent in one request")
    if body.get("suffix"):
        raise ApiError(400, "suffix (text to fill in before) is not supported: send the prompt alone")
    n = choices_asked(body)
    if body.get("best_of") is not None and bounded_int(body["best_of"], "best_of", 1, MAX_CHOICES) != n:
        raise ApiError(400, "best_of must equal n: answers are not ranked on the server (ask for n answers with "
                            "logprobs and rank them yourself)")
    changes = sampling(body)
    limit = body.get("max_tokens")
    # 0: no answer, only the prompt (echoed, and scored with logprobs): how a prompt's likelihood is asked for.
    changes["max_tokens"] = COMPLETION_MAX_TOKENS if limit is None else bounded_int(limit, "max_tokens", 0,
                                                                                    1_000_000)
    total = len(prompts) * n * min(changes["max_tokens"], engine.window)
    if total > MAX_TOTAL_TOKENS:
        raise ApiError(400, f"{len(prompts) * n} answers of up to {changes['max_tokens']} tokens each ask for up "
                            f"to {total} tokens; at most {MAX_TOTAL_TOKENS} may be asked for in one request")
    echo = flag(body.get("echo"), "echo", False)
    logprobs = None if body.get("logprobs") is None else \
        bounded_int(body["logprobs"], "logprobs", 0, MAX_TOP_LOGPROBS)
    changes["logprobs"] = logprobs
    as_ids = not isinstance(prompts[0], str)
    if (echo and logprobs is not None) or (as_ids and (echo or logprobs is not None)):
        # The prompt's tokens come back from the backend: scored for echo, and the text of a prompt sent as
        # token ids (echoed, or where the answer's text_offset counts from).
        changes["prompt_logprobs"] = logprobs or 0
    options = options_from(base, {**changes, "json_schema": None, "answer_prefix": None})
    requests = [Request([], options, prompt=prompt, n=n) for prompt in prompts]
    checked_for(engine, requests[0])  # the options are the same for every prompt
    return requests, echo


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


def usage_of(finals: Sequence[FinalChunk | None]) -> dict[str, int]:
    """The usage of one prompt's answers: its prompt counted once, every answer's tokens."""
    present = [final.usage for final in finals if final is not None]
    if not present:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    prompt = present[0].prompt_tokens
    completion = sum(usage.completion_tokens for usage in present)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": sum(usage.thinking_tokens  # type: ignore[dict-item]
                                                                  for usage in present)}}


def call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    data = {"id": call.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
    return {"index": index, **data} if index is not None else data


# -- log-probabilities ----------------------------------------------------------------------------------------------
UNLIKELY = -9999.0
"""OpenAI's log-probability for a token too unlikely to put a number on (JSON has no -Infinity)."""


def logprob_value(value: float) -> float:
    return value if math.isfinite(value) and value > UNLIKELY else UNLIKELY


def piece_text(piece: bytes) -> str:
    """A token's text; a token that holds part of a multi-byte character shows those bytes as escapes (its
    ``bytes`` field has them as they are), as `localllm tokenize` shows them."""
    return piece.decode("utf-8", errors="backslashreplace")


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's shape: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}."""
    def one(piece: bytes, value: float) -> dict[str, Any]:
        return {"token": piece_text(piece), "logprob": logprob_value(value), "bytes": list(piece)}

    return {"content": [{**one(entry.piece, entry.logprob if entry.logprob is not None else UNLIKELY),
                         "top_logprobs": [one(alt.piece, alt.logprob) for alt in entry.top]}
                        for entry in entries], "refusal": None}


class LegacyLogprobs:
    """The legacy completions' shape, {tokens, token_logprobs, top_logprobs, text_offset}, built a part at a time
    (a stream's events). ``text_offset``: where each token's text starts, in characters, counted from the start of
    the prompt's text as OpenAI counts them (with echo, that is the start of the choice's text). A prompt's first
    token has no log-probability (null) and no alternatives (null); every other token's alternatives include
    itself, so that a client can tell whether it was the likeliest (lm-evaluation-harness's is_greedy)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def part(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens: list[str] = []
        values: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        for entry in entries:
            text = piece_text(entry.piece)
            tokens.append(text)
            offsets.append(self.offset)
            # Characters as the text shows them: a character split over two tokens counts where it completes.
            self.offset += len(self._decoder.decode(entry.piece))
            if entry.logprob is None:
                values.append(None)
                tops.append(None)
                continue
            values.append(logprob_value(entry.logprob))
            top = {piece_text(alt.piece): logprob_value(alt.logprob) for alt in entry.top}
            top.setdefault(text, logprob_value(entry.logprob))
            tops.append(top)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


# -- answers --------------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """One answer of a request's n, gathered."""

    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt: tuple[TokenLogprob, ...] | None = None
    final: FinalChunk | None = None


async def answers(engine: Engine, request: Request) -> list[Answer]:
    """The request's answers, whole: each ends at its FinalChunk."""
    gathered = [Answer()]
    async for chunk in engine.stream(request):
        answer = gathered[-1]
        if isinstance(chunk, TextChunk):
            answer.text.append(chunk.text)
            answer.logprobs.extend(chunk.logprobs)
        elif isinstance(chunk, ThinkingChunk):
            answer.thinking.append(chunk.text)
        elif isinstance(chunk, ToolCallChunk):
            answer.calls.append(chunk.call)
        elif isinstance(chunk, PromptChunk):
            answer.prompt = chunk.tokens
        elif isinstance(chunk, FinalChunk):
            answer.final = chunk
            gathered.append(Answer())
    if len(gathered) > 1 and gathered[-1] == Answer():
        gathered.pop()  # nothing came after the last answer's end
    return gathered


async def complete(engine: Engine, request: Request) -> dict[str, Any]:
    choices = []
    results = await answers(engine, request)
    for index, answer in enumerate(results):
        text = "".join(answer.text)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not answer.calls else None}
        if answer.thinking:
            message["reasoning_content"] = "".join(answer.thinking)
        if answer.calls:
            message["tool_calls"] = [call_json(call) for call in answer.calls]
        choices.append({"index": index, "message": message,
                        "logprobs": chat_logprobs(answer.logprobs) if request.options.logprobs is not None
                        else None,
                        "finish_reason": "tool_calls" if answer.calls else finish_of(answer.final).reason})
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": engine.name, "choices": choices, "usage": usage_of([answer.final for answer in results]),
            **engine_timings([answer.final for answer in results])}


def engine_timings(finals: Sequence[FinalChunk | None]) -> dict[str, Any]:
    """llama.cpp's own timings, as llama.cpp's server reports them beside the usage (``timings``: the prompt tokens
    read and the tokens decoded, their milliseconds and rates; ``cache_n`` the prompt tokens its cache held), for
    clients written for it; nothing where the backend has no such counters."""
    measured = [final.timings.engine for final in finals if final is not None and final.timings.engine is not None]
    if not measured:
        return {}
    prompt_n, decoded = sum(m.prompt_evaluated for m in measured), sum(m.decoded for m in measured)
    prompt_ms, predicted_ms = sum(m.prompt_eval_s for m in measured) * 1000, sum(m.eval_s for m in measured) * 1000
    prompt_tokens = sum(final.usage.prompt_tokens for final in finals if final is not None)
    return {"timings": {
        "cache_n": max(0, prompt_tokens - prompt_n), "prompt_n": prompt_n, "prompt_ms": round(prompt_ms, 3),
        "prompt_per_second": round(prompt_n * 1000 / prompt_ms, 3) if prompt_ms > 0 else None,
        "predicted_n": decoded, "predicted_ms": round(predicted_ms, 3),
        "predicted_per_second": round(decoded * 1000 / predicted_ms, 3) if predicted_ms > 0 else None}}


async def stream(engine: Engine, chunks: AsyncIterator[Chunk], include_usage: bool) -> AsyncIterator[str]:
    """SSE for chat: each of the n answers in turn under its choice index, each opened by its role."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(index: int, delta: dict[str, Any], finish: str | None = None,
              logprobs: Sequence[TokenLogprob] = ()) -> str:
        choice = {"index": index, "delta": delta, "logprobs": chat_logprobs(logprobs) if logprobs else None,
                  "finish_reason": finish}
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                "choices": [choice]}
        return f"data: {json.dumps(data)}\n\n"

    index, calls, opened = 0, 0, False
    finals: list[FinalChunk | None] = []
    async for chunk in chunks:
        if not opened:
            yield event(index, {"role": "assistant", "content": ""})
            opened = True
        if isinstance(chunk, TextChunk) and chunk.text:
            yield event(index, {"content": chunk.text}, logprobs=chunk.logprobs)
        elif isinstance(chunk, ThinkingChunk) and chunk.text:
            yield event(index, {"reasoning_content": chunk.text})
        elif isinstance(chunk, ToolCallChunk):
            yield event(index, {"tool_calls": [call_json(chunk.call, calls)]})
            calls += 1
        elif isinstance(chunk, FinalChunk):
            yield event(index, {}, "tool_calls" if calls else finish_of(chunk).reason)
            finals.append(chunk)
            index, calls, opened = index + 1, 0, False
    if include_usage:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": engine.name,
                "choices": [], "usage": usage_of(finals), **engine_timings(finals)}
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


def prompt_text(request: Request, scored: Sequence[TokenLogprob] | None) -> str:
    """The prompt as text: as sent, or (token ids) as its tokens spell it."""
    if isinstance(request.prompt, str):
        return request.prompt
    return b"".join(entry.piece for entry in scored or ()).decode("utf-8", errors="replace")


def text_choice(request: Request, answer: Answer, scored: Sequence[TokenLogprob] | None, echo: bool,
                index: int) -> dict[str, Any]:
    before = prompt_text(request, scored)
    logprobs = None
    if request.options.logprobs is not None:
        legacy = LegacyLogprobs(0 if echo else len(before))
        # A generated end token is listed too, as OpenAI's legacy completions list theirs: lm-evaluation-harness
        # reads token_logprobs[ctxlen:-1], counting on the last entry being the token generated.
        end = [answer.final.end_logprob] if answer.final is not None and answer.final.end_logprob is not None else []
        logprobs = legacy.part([*(scored or ()), *answer.logprobs, *end] if echo else [*answer.logprobs, *end])
    text = "".join(answer.text)
    return {"text": before + text if echo else text, "index": index, "logprobs": logprobs,
            "finish_reason": finish_of(answer.final).reason}


async def complete_text(engine: Engine, requests: list[Request], echo: bool) -> dict[str, Any]:
    """Each prompt's n answers in turn: prompt i's answer k is choice i × n + k, as OpenAI orders them."""
    choices, usages = [], []
    for number_, request in enumerate(requests):
        results = await answers(engine, request)
        scored = results[0].prompt if results else None  # the engine scores a prompt once, for its first answer
        choices += [text_choice(request, answer, scored, echo, number_ * request.n + index)
                    for index, answer in enumerate(results)]
        usages.append(usage_of([answer.final for answer in results]))
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": engine.name, "choices": choices, "usage": total_usage(usages)}


def total_usage(usages: list[dict[str, int]]) -> dict[str, int]:
    return {key: sum(usage[key] for usage in usages) for key in ("prompt_tokens", "completion_tokens",
                                                                 "total_tokens")}


async def stream_text(engine: Engine, first: AsyncIterator[Chunk], requests: list[Request], echo: bool,
                      include_usage: bool) -> AsyncIterator[str]:
    """SSE for /v1/completions: each prompt's answers in turn under their choice index. ``first`` is the first
    prompt's stream, already started (its errors were HTTP errors); a later prompt's error ends the stream with
    an error event, as OpenAI's streams report one."""
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def event(index: int, text: str, finish: str | None = None, logprobs: dict[str, Any] | None = None) -> str:
        data = {"id": ident, "object": "text_completion", "created": created, "model": engine.name,
                "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n"

    usages = []
    for number_, request in enumerate(requests):
        chunks = first if number_ == 0 else engine.stream(request)
        wanted = request.options.logprobs is not None
        scored: tuple[TokenLogprob, ...] | None = None
        legacy: LegacyLogprobs | None = None
        answer, finals = 0, []
        try:
            async for chunk in chunks:
                index = number_ * request.n + answer
                if isinstance(chunk, PromptChunk):
                    scored = chunk.tokens
                    continue
                if legacy is None:  # the answer's first chunk: the prompt comes first, where it is echoed
                    before = prompt_text(request, scored)
                    legacy = LegacyLogprobs(0 if echo else len(before))
                    if echo:
                        yield event(index, before, logprobs=legacy.part(scored or ()) if wanted else None)
                if isinstance(chunk, TextChunk) and chunk.text:
                    yield event(index, chunk.text, logprobs=legacy.part(chunk.logprobs) if wanted else None)
                elif isinstance(chunk, FinalChunk):
                    finals.append(chunk)
                    yield event(index, "", finish_of(chunk).reason)
                    answer, legacy = answer + 1, None
        except ApiError as error:
            yield stream_error(error)
            return
        usages.append(usage_of(finals))
    if include_usage:
        data = {"id": ident, "object": "text_completion", "created": created, "model": engine.name, "choices": [],
                "usage": total_usage(usages)}
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
