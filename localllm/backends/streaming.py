"""Pieces the server and binding backends share: conservative token estimates, stop strings, answer prefixes.

A backend that cannot run the model's own tokenizer here still has to keep every prompt inside the window, and a
summary must never be cut without a word. So its counts are estimates that err high: they may waste a little of the
window, never overflow it. Where the server reports the real prompt size afterwards, the estimate learns from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from localllm.core.chunks import Stopwatch, TextChunk, ThinkingChunk
from localllm.core.messages import Message

# ASCII words, single digits, whitespace runs, and any other single character.
_PIECES = re.compile(r"[A-Za-z]+|\d|\s+|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens ``text`` takes in a BPE or SentencePiece vocabulary.

    Counted pessimistically: a word costs one token per three letters (common words are one token), every digit,
    punctuation mark and whitespace run costs one (many tokenizers split numbers digit by digit), and a non-ASCII
    character costs one token per UTF-8 byte after its first (byte-fallback vocabularies spell rare ones in bytes).
    """
    count = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        first = piece[0]
        if first.isascii() and first.isalpha():
            count += -(-len(piece) // 3)
        elif first.isspace():
            count += max(1, piece.count("\n"))
        elif first.isascii():
            count += 1
        else:
            count += max(1, len(first.encode("utf-8")) - 1)
    return count


class PromptEstimate:
    """Chat prompt sizes from per-text counts plus the chat template's overhead.

    The overhead starts generous (a template's role markers, and a default system prompt some templates insert) and
    only grows: whenever the server reports a prompt larger than estimated, the difference is added for later.
    """

    def __init__(self, count_text: Callable[[str], int], base: int = 32, per_message: int = 8) -> None:
        self.count_text = count_text
        self.base = base
        self.per_message = per_message
        self.learned = 0

    def count(self, messages: Sequence[Message]) -> int:
        return self.with_overhead(sum(self.count_text(m.content) for m in messages), len(messages))

    def with_overhead(self, text_tokens: int, messages: int) -> int:
        return text_tokens + self.base + self.per_message * messages + self.learned

    def learn(self, estimated: int, reported: int | None) -> None:
        if reported is not None and reported > estimated:
            self.learned += reported - estimated


class StopScanner:
    """Finds stop strings in streamed text, holding back only what could still become one; ``matched`` names the
    one that was reached (the earliest, the longest where two start at once), for the answer to report."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show now, whether a stop string was reached)."""
        self.pending += text
        hits = [(index, -len(stop), stop) for stop in self.stops if (index := self.pending.find(stop)) >= 0]
        if hits:
            index, _, self.matched = min(hits)
            shown, self.pending = self.pending[:index], ""
            return shown, True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        cut = len(self.pending) - hold
        shown, self.pending = self.pending[:cut], self.pending[cut:]
        return shown, False

    def flush(self) -> str:
        shown, self.pending = self.pending, ""
        return shown


def without_repeated_prefix(pieces: Iterator[str | ThinkingChunk], prefix: str | None
                            ) -> Iterator[str | ThinkingChunk]:
    """Servers cannot always continue a given answer start; the caller shows ``prefix`` itself and asks for a
    normal answer. Models then often begin with the same text (an opening code fence): drop that repeat once.
    Thinking the server separated itself passes as it is."""
    if not prefix:
        yield from pieces
        return
    held: str | None = ""
    for piece in pieces:
        if held is None or isinstance(piece, ThinkingChunk):
            yield piece
            continue
        held += piece
        if held.startswith(prefix):
            rest, held = held[len(prefix):], None
            if rest:
                yield rest
        elif not prefix.startswith(held):
            yield held
            held = None
    if held:
        yield held


def answer_chunks(pieces: Iterator[str | ThinkingChunk], prefix: str | None, watch: Stopwatch
                  ) -> Iterator[TextChunk | ThinkingChunk]:
    """A server's text pieces as the answer's chunks: ``prefix`` first (shown by us, see
    ``without_repeated_prefix``), then the pieces with its repeat dropped, each timed by ``watch``; thinking the
    server sent apart (``reasoning_content``, Ollama's ``thinking``) as ThinkingChunk."""
    if prefix:
        yield TextChunk(prefix)
    for piece in without_repeated_prefix(pieces, prefix):
        watch.mark_token()
        yield piece if isinstance(piece, ThinkingChunk) else TextChunk(piece)
