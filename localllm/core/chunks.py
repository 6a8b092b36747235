"""Streaming output: an iterator of typed chunks, wrapped in a Response that records what happened.

A backend's ``chat`` yields ``TextChunk`` pieces (``ThinkingChunk`` pieces first, for a reasoning model's thinking)
and then exactly one ``FinalChunk``. An answer that calls tools (localllm.tasks.tools) also carries a
``ToolCallChunk`` for each call the model makes and a ``ToolResultChunk`` for what the call returned. Closing the
iterator (or the Response) stops decoding: that is how Ctrl-C, Esc in the TUI and a stop button cancel a generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from localllm.core.tools import ToolCall, ToolResult

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class Alternative:
    """A token the model could have put at a place, with its log-probability there."""

    id: int
    piece: bytes
    """The token's text as bytes: a token can hold part of a multi-byte character."""
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A token of a prompt or an answer with its log-probability under the model (natural log, the model's own
    distribution: before temperature, penalties and biases) and the likeliest tokens at its place."""

    id: int
    piece: bytes
    logprob: float | None
    """None for a prompt's first token, which nothing before it predicts."""
    top: tuple[Alternative, ...] = ()
    """The likeliest tokens at this place, likeliest first (as many as were asked for)."""


@dataclass(frozen=True)
class TextChunk:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens this piece of text came from, where log-probabilities were asked for (``options.logprobs``)."""


@dataclass(frozen=True)
class ThinkingChunk:
    """A reasoning model's thinking before its answer: shown apart, never sent back to the model."""

    text: str


@dataclass(frozen=True)
class ToolCallChunk:
    """The model asks to call a tool (before it runs: it may still be refused)."""

    call: ToolCall


@dataclass(frozen=True)
class ToolResultChunk:
    """What a tool call returned, or why it did not run."""

    result: ToolResult


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int = 0
    """Of the completion tokens, those a reasoning model spent thinking (counted as the stream arrives: one piece
    is one token for llama.cpp, about one for a server)."""
    cached_tokens: int = 0
    """Of the prompt tokens, those llama.cpp did not read again: the start the last prompt shared with this one
    (the conversation so far), still in its cache."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class EngineTimings:
    """What the inference engine measured itself (llama.cpp's performance counters): the prompt tokens it read (not
    those its cache held) and the tokens it decoded, and the seconds each took."""

    prompt_evaluated: int
    prompt_eval_s: float
    decoded: int
    eval_s: float


@dataclass(frozen=True)
class Timings:
    """Seconds measured around the backend call; ``first_token_s`` is the time to the first text chunk."""

    first_token_s: float | None
    total_s: float
    decode_s: float
    engine: EngineTimings | None = None
    """The engine's own counts and times, where the backend has them."""

    def tokens_per_second(self, completion_tokens: int) -> float | None:
        # The first token's time is prompt processing; decode speed counts the tokens after it.
        if completion_tokens < 2 or self.decode_s <= 0:
            return None
        return (completion_tokens - 1) / self.decode_s


@dataclass(frozen=True)
class FinalChunk:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    stop_sequence: str | None = None
    """The stop string (of the request's) that ended the answer, where the backend can tell which."""
    end_logprob: TokenLogprob | None = None
    """The end token the model ended with, where log-probabilities were asked for: no part of the text, but a token
    generated (OpenAI's legacy completions list it, and lm-evaluation-harness counts on the entry being there)."""

    @property
    def tokens_per_second(self) -> float | None:
        return self.timings.tokens_per_second(self.usage.completion_tokens)


@dataclass(frozen=True)
class PromptChunk:
    """A raw prompt's tokens with their log-probabilities, before the answer's first chunk, where they were asked
    for (``options.prompt_logprobs``): what serve's /v1/completions echoes, and what scoring a text reads."""

    tokens: tuple[TokenLogprob, ...]


Chunk = TextChunk | ThinkingChunk | ToolCallChunk | ToolResultChunk | FinalChunk | PromptChunk


@dataclass
class Stopwatch:
    """Measures a generation: call ``mark_token`` on every text chunk, ``timings`` at the end."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None

    def mark_token(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def timings(self) -> Timings:
        end = time.perf_counter()
        first_token_s = None if self.first is None else self.first - self.started
        decode_s = 0.0 if self.first is None else end - self.first
        return Timings(first_token_s=first_token_s, total_s=end - self.started, decode_s=decode_s)


class Response:
    """A streamed answer: iterate it for chunks, or call ``text()`` to drain it.

    After the stream ends, ``final`` holds the backend's FinalChunk (finish reason, token counts, timings).
    ``close()`` stops decoding and keeps what was generated so far.
    """

    def __init__(self, chunks: Iterator[Chunk], on_done: Callable[[Response], None] | None = None) -> None:
        self._chunks = chunks
        self._parts: list[str] = []
        self._thinking: list[str] = []
        self._on_done = on_done
        self.final: FinalChunk | None = None
        self.tool_results: list[ToolResult] = []
        """The tool calls made on the way to this answer, with what each returned."""

    def __iter__(self) -> Iterator[Chunk]:
        try:
            for chunk in self._chunks:
                if isinstance(chunk, FinalChunk):
                    self.final = chunk
                elif isinstance(chunk, ThinkingChunk):
                    self._thinking.append(chunk.text)
                elif isinstance(chunk, ToolResultChunk):
                    self.tool_results.append(chunk.result)
                elif isinstance(chunk, TextChunk):
                    self._parts.append(chunk.text)
                yield chunk
        finally:
            self._done()

    def _done(self) -> None:
        # Runs once, whether the stream ended, failed or was stopped: a chat records the (partial) answer here.
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            on_done(self)

    def text_chunks(self) -> Iterator[str]:
        for chunk in self:
            if isinstance(chunk, TextChunk):
                yield chunk.text

    def text(self) -> str:
        for _ in self:
            pass
        return self.partial_text

    @property
    def partial_text(self) -> str:
        """The answer so far, without the thinking."""
        return "".join(self._parts)

    @property
    def thinking(self) -> str:
        return "".join(self._thinking)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._done()
