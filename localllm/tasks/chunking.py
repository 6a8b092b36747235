"""Split a document at its structure and pack the pieces into chunks that fit a token budget.

Pieces are spans (start, end) into the document's text: paragraphs and headings for prose, top-level definitions
for code, rows for tables. A piece larger than the budget is split at sentences, then lines, then words.
Token counts come from the model's own tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from localllm.tasks.documents import Document

TokenCounter = Callable[[str], int]

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_HEADING = re.compile(r"^(#{1,6} |\S.*\n(?:=+|-+)[ \t]*$)", re.MULTILINE)
_CODE_DEFINITION = re.compile(
    r"^(?:@|def |async def |class |function |async function |export |func |fn |pub |impl |struct |enum |trait |"
    r"interface |type |public |private |protected |static |const |let |var |module |package |sub |#include )")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_LINE_END = re.compile(r"\n")
_SPACES = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    heading: bool = False


@dataclass(frozen=True)
class Chunk:
    document: int
    """Index of the document in the task's input list."""
    start: int
    end: int
    tokens: int


def _paragraphs(text: str, start: int, end: int) -> Iterator[Piece]:
    """Paragraphs of text[start:end], found in place (a large input is never copied)."""
    position = start
    for match in _BLANK_LINES.finditer(text, start, end):
        if not _blank(text, position, match.start()):
            yield Piece(position, match.start())
        position = match.end()
    if not _blank(text, position, end):
        yield Piece(position, end)


def _blank(text: str, start: int, end: int) -> bool:
    return _NON_SPACE.search(text, start, end) is None


def prose_pieces(text: str) -> Iterator[Piece]:
    """Paragraphs; a Markdown heading starts a piece of its own, marked so packing prefers to start a chunk there."""
    headings = [m.start() for m in _HEADING.finditer(text)]
    bounds = sorted({0, *headings, len(text)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        first = True
        for piece in _paragraphs(text, start, end):
            yield Piece(piece.start, piece.end, heading=first and start in headings)
            first = False


def code_pieces(text: str) -> Iterator[Piece]:
    """Top-level definitions: a new piece starts at an unindented definition line or after a blank line."""
    start = 0
    position = 0
    previous_blank = previous_decorator = False
    for line in text.splitlines(keepends=True):
        unindented = bool(line[:1].strip())
        new_definition = unindented and (_CODE_DEFINITION.match(line) or previous_blank)
        if position > start and new_definition and not previous_decorator:
            if text[start:position].strip():
                yield Piece(start, position)
            start = position
        if line.strip():
            previous_decorator = line.startswith("@")
        previous_blank = not line.strip()
        position += len(line)
    if text[start:].strip():
        yield Piece(start, len(text))


def row_pieces(text: str) -> Iterator[Piece]:
    position = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            yield Piece(position, position + len(line.rstrip("\n")))
        position += len(line)


def pieces_of(document: Document) -> Iterator[Piece]:
    if document.kind == "code":
        return code_pieces(document.text)
    if document.kind == "rows":
        return row_pieces(document.text)
    return prose_pieces(document.text)


def _interior_cuts(body: str) -> list[int]:
    """Cut points strictly inside ``body``: at sentence ends, else line ends, else spaces, else every quarter."""
    for pattern in (_SENTENCE_END, _LINE_END, _SPACES):
        cuts = [m.end() for m in pattern.finditer(body) if 0 < m.end() < len(body)]
        if cuts:
            return cuts
    step = max(len(body) // 4, 1)
    return list(range(step, len(body), step))


def _split_span(text: str, start: int, end: int, budget: int, count: TokenCounter) -> Iterator[tuple[int, int, int]]:
    """Split an oversized span into parts of at most ``budget`` tokens, each recursion on a strictly smaller span."""
    body = text[start:end]
    bounds = [0, *_interior_cuts(body), len(body)]
    part_start, part_tokens = 0, 0
    for left, right in zip(bounds, bounds[1:], strict=False):
        tokens = count(body[left:right])
        if tokens > budget and right - left > 1:
            if part_tokens:
                yield start + part_start, start + left, part_tokens
            yield from _split_span(text, start + left, start + right, budget, count)
            part_start, part_tokens = right, 0
        elif part_tokens and part_tokens + tokens > budget:
            yield start + part_start, start + left, part_tokens
            part_start, part_tokens = left, tokens
        else:
            part_tokens += tokens
    if part_tokens:
        yield start + part_start, end, part_tokens


def _counted_pieces(document: Document, budget: int, count: TokenCounter) -> list[tuple[Piece, int]]:
    """Every piece with its token count; pieces over the budget are split first. Spans only: no text is kept."""
    counted = []
    for piece in pieces_of(document):
        tokens = count(document.text[piece.start:piece.end])
        if tokens <= budget:
            counted.append((piece, tokens))
            continue
        for part_start, part_end, part_tokens in _split_span(document.text, piece.start, piece.end, budget, count):
            counted.append((Piece(part_start, part_end), part_tokens))
    return counted


def separator_tokens(count: TokenCounter) -> int:
    """What a blank line between two pieces adds once they are joined. Counted alone, "\n\n" is one token; between
    words, some tokenizers (SmolLM2's) spell it as two, and a chunk of many short pieces then comes out longer than
    its pieces' counts added."""
    return max(count("\n\n"), count("Word.\n\nWord.") - 2 * count("Word."))


def chunk_document(document: Document, index: int, budget: int, count: TokenCounter) -> list[Chunk]:
    """Pack whole pieces into chunks of at most ``budget`` tokens, balanced: as few chunks as the budget allows,
    each near the same size (a greedy fill would leave a tiny last chunk). Counts are the tokenizer's count of each
    piece; the caller still checks each final prompt, since joined pieces can tokenize a little differently."""
    counted = _counted_pieces(document, budget, count)
    if not counted:
        return []
    separator = separator_tokens(count)
    total = sum(tokens for _, tokens in counted) + separator * (len(counted) - 1)
    target = min(budget, -(-total // -(-total // budget)))
    chunks: list[Chunk] = []
    start: int | None = None
    end = 0
    tokens = 0
    for piece, piece_tokens in counted:
        joined = tokens + separator + piece_tokens if start is not None else piece_tokens
        # A chunk closes at the target size (never over the budget); at a heading once three quarters full, so
        # sections stay together.
        if start is not None and (joined > budget or tokens >= target or
                                  (piece.heading and tokens > target * 3 // 4)):
            chunks.append(Chunk(index, start, end, tokens))
            start, joined = None, piece_tokens
        if start is None:
            start = piece.start
        end = piece.end
        tokens = joined
    assert start is not None, "counted is not empty"
    chunks.append(Chunk(index, start, end, tokens))
    return chunks
