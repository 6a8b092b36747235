"""A reasoning model's thinking, told apart from its answer in a stream of text.

DeepSeek-R1, Qwen3 and SmolLM3 write ``<think>…</think>`` before the answer (some chat templates open the block in
the prompt, so the text starts inside it and only the closing tag comes); others write ``<thinking>…</thinking>``
or ``<reasoning>…</reasoning>``. Servers that separate it themselves (Ollama's ``thinking``, an OpenAI-compatible
``reasoning_content``) give ``ThinkingChunk`` directly. Only a block at the start of the answer is thinking: a tag
later in an answer (an answer about HTML, say) is the answer's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk, TokenLogprob

OPENING_TAGS = ("<think>", "<thinking>", "<reasoning>")
LONGEST_TAG = max(len(tag) for tag in OPENING_TAGS) + 1


def closing(tag: str) -> str:
    return "</" + tag[1:]


def split_thinking(chunks: Iterator[Chunk], opened: str | None = None) -> Iterator[Chunk]:
    """``chunks`` with a leading thinking block's text as ThinkingChunk (tags dropped) and the rest as TextChunk.
    ``opened``: the tag the prompt already opened (the template ends with ``<think>``), so the stream starts inside
    the block. Text is held back only while it could still be the start of a tag, a few characters at most. The
    answer's text keeps the log-probabilities of its tokens (TextChunk.logprobs); the thinking's are dropped, as
    OpenAI reports none for reasoning."""
    state = "inside" if opened else "start"
    close = closing(opened) if opened else ""
    held = ""
    tokens: tuple[TokenLogprob, ...] = ()
    """The log-probabilities of the tokens ``held`` came from."""

    def answer(text: str) -> TextChunk:
        nonlocal tokens
        chunk, tokens = TextChunk(text, tokens), ()
        return chunk

    def thinking(text: str) -> ThinkingChunk:
        nonlocal tokens
        tokens = ()
        return ThinkingChunk(text)

    thought = 0
    """Pieces of the stream that were thinking: the thinking's tokens, for the stats."""
    try:
        for chunk in chunks:
            if not isinstance(chunk, TextChunk):
                if held:  # the stream ends (or a server's own thinking comes): what was held is what it is
                    yield thinking(held) if state == "inside" else answer(held)
                    held = ""
                if isinstance(chunk, ThinkingChunk):
                    thought += 1
                elif isinstance(chunk, FinalChunk) and thought:
                    usage = replace(chunk.usage, thinking_tokens=min(thought, chunk.usage.completion_tokens))
                    chunk = replace(chunk, usage=usage)
                yield chunk
                continue
            held += chunk.text
            tokens += chunk.logprobs
            before = state
            while held:
                if state == "start":
                    stripped = held.lstrip()
                    tag = next((t for t in OPENING_TAGS if stripped.startswith(t)), None)
                    if tag is not None:
                        state, close, held = "inside", closing(tag), stripped[len(tag):]
                        continue
                    if any(t.startswith(stripped) for t in OPENING_TAGS) and len(stripped) < LONGEST_TAG:
                        break  # "<thi": wait for more
                    state = "answer"
                if state == "inside":
                    end = held.find(close)
                    if end >= 0:
                        if end:
                            yield thinking(held[:end])
                        state, held = "after", held[end + len(close):]
                        continue
                    keep = _partial_suffix(held, close)
                    if len(held) > keep:
                        yield thinking(held[:len(held) - keep])
                        held = held[len(held) - keep:]
                    break
                if state == "after":  # the blank line between the thinking and the answer is no part of either
                    held = held.lstrip()
                    if not held:
                        break
                    state = "answer"
                yield answer(held)
                held = ""
            thought += before == "inside" or (before == "start" and state in ("inside", "after"))
        if held:
            yield thinking(held) if state == "inside" else answer(held)
    finally:
        close_stream = getattr(chunks, "close", None)
        if close_stream is not None:
            close_stream()


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def opened_in(prompt: str) -> str | None:
    """The thinking tag a rendered prompt ends with (a template that starts the model inside its thinking)."""
    end = prompt.rstrip()
    return next((tag for tag in OPENING_TAGS if end.endswith(tag)), None)


def no_switch_note(backend: object, what: str) -> None:
    """Said once per backend: --think / --no-think asked for a switch this model or backend does not have."""
    if getattr(backend, "_think_noted", False):
        return
    import logging

    backend._think_noted = True  # type: ignore[attr-defined]  # a flag on whichever backend asked
    logging.getLogger("localllm").warning(
        f"note: {what} has no thinking switch; --think / --no-think (-o think) change nothing here")
