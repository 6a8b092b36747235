"""Summarize any amount of text: one call when it fits the window, otherwise map (notes per chunk) and reduce
(combine notes), recursively, with every call's prompt checked against the window. Nothing is cut."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from localllm.backends.base import Backend
from localllm.core.chunks import Response
from localllm.core.errors import ContextOverflow, GenerationError, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.chunking import Chunk, chunk_document, separator_tokens
from localllm.tasks.documents import Document

STYLES = {
    "tldr": ("a TL;DR: two or three plain sentences", 60),
    "bullets": ("a Markdown bullet list of the key points, most important first", 150),
    "executive": ("an executive summary: a one-line headline, then the key points, decisions, numbers and next "
                  "steps as short sections", 200),
    "detailed": ("a detailed summary that follows the document's structure with a short section per part", 400),
}
PART_NOTE_TOKENS = 160
"""Token budget of the notes written about one chunk (less in a window under 1,280 tokens)."""
MARGIN_TOKENS = 16
"""Slack for the few tokens two pieces can gain when their texts are joined."""


def words_to_tokens(words: int) -> int:
    return int(words * 1.6) + 32


@dataclass(frozen=True)
class CallRecord:
    kind: str
    """single, part or combine"""
    label: str
    prompt_tokens: int
    completion_tokens: int
    window: int
    seconds: float
    tokens_per_second: float | None
    text: str = ""
    """What the call wrote: a part's notes, a combined note, or the summary."""
    finish: str = "stop"
    """stop, or length: the call reached its answer-token limit and its text ends where it was cut."""


@dataclass(frozen=True)
class SummaryPlan:
    window: int
    input_tokens: int
    answer_tokens: int
    chunk_budget: int
    single: bool
    chunks: tuple[Chunk, ...]
    calls: int
    """Calls the summary will take (combine levels estimated from the note budget)."""

    def to_dict(self, documents: Sequence[Document]) -> dict:
        return {"window": self.window, "input_tokens": self.input_tokens, "answer_tokens": self.answer_tokens,
                "chunk_budget": self.chunk_budget, "single_call": self.single, "calls": self.calls,
                "chunks": [{"source": documents[c.document].name, "start": c.start, "end": c.end, "tokens": c.tokens}
                           for c in self.chunks]}


@dataclass
class SummaryResult:
    summary: str
    plan: SummaryPlan
    calls: list[CallRecord] = field(default_factory=list)
    part_notes: list[str] = field(default_factory=list)

    @property
    def cut(self) -> bool:
        """The summary (the last call's answer) reached its token limit: it ends mid-thought."""
        return bool(self.calls) and self.calls[-1].finish == "length"

    @property
    def tokens_in(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(c.completion_tokens for c in self.calls)


ProgressCallback = Callable[[str], None]
CallCallback = Callable[[CallRecord], None]


class Summarizer:
    def __init__(self, settings: Settings, backend: Backend, options: GenerationOptions, *, style: str = "bullets",
                 words: int | None = None, progress: ProgressCallback | None = None,
                 window: int | None = None, on_call: CallCallback | None = None,
                 on_text: Callable[[str], None] | None = None,
                 on_call_start: Callable[[str, int], None] | None = None,
                 on_prompt_read: Callable[[str, int, int], None] | None = None) -> None:
        """``window`` defaults to the loaded model's; `--plan` passes the planned one with only a tokenizer loaded.
        ``on_call`` receives each finished call's record, for a progress bar that counts calls. ``on_text``
        receives the summary itself as it is written (the text of the last call only, not the notes).
        ``on_call_start`` receives each call's label and prompt tokens as it starts, for a sign of life while a long
        prompt is read. ``on_prompt_read`` receives a call's label, the prompt tokens read so far and those it
        reads in all, as the backend reads them, where it can tell (llama.cpp: after each ``n_batch`` piece)."""
        if style not in STYLES:
            raise UsageError(f"unknown style {style!r}", hint=f"styles: {', '.join(STYLES)}")
        if words is not None and words < 10:
            raise UsageError(f"--words {words} is too few", hint="ask for at least 10 words")
        self.settings = settings
        self.backend = backend
        self.options = options
        self.style = style
        self.words = words or STYLES[style][1]
        self.progress = progress or (lambda message: None)
        self.window = window or backend.context_window
        self.on_call = on_call
        self.on_text = on_text
        self.on_call_start = on_call_start
        self.on_prompt_read = on_prompt_read
        # Notes shrink with a small window, so that several of them and a merged answer still fit one combine call.
        self.note_tokens = min(PART_NOTE_TOKENS, max(32, self.window // 8))

    # -- prompts ---------------------------------------------------------------------------------------------------
    def _values(self, source: str) -> dict[str, object]:
        description, _ = STYLES[self.style]
        return {"style": description, "length": f"about {self.words} words", "source": source}

    def single_messages(self, text: str, source: str) -> list[Message]:
        return [Message("user", prompts.render("summarize", self.settings, document=text, **self._values(source)))]

    def part_messages(self, text: str, source: str, part: int, parts: int) -> list[Message]:
        return [Message("user", prompts.render("summarize-part", self.settings, document=text, part=part,
                                               parts=parts, part_words=self.note_tokens * 2 // 3,
                                               **self._values(source)))]

    def combine_messages(self, notes: str, source: str) -> list[Message]:
        return [Message("user", prompts.render("summarize-combine", self.settings, document=notes,
                                               **self._values(source)))]

    # -- planning --------------------------------------------------------------------------------------------------
    def plan(self, documents: Sequence[Document]) -> SummaryPlan:
        source = _sources(documents)
        answer = self.options.max_tokens or words_to_tokens(self.words)
        count = self.backend.count_tokens
        separator = separator_tokens(count)
        single_overhead = self.backend.count_prompt_tokens(self.single_messages("", source))
        room = self.window - single_overhead - answer - MARGIN_TOKENS
        # A text can hold more tokens than bytes only in odd cases; below ~6 bytes a token per window it is worth
        # counting whole. Larger inputs are counted piece by piece as they are chunked, never in one call.
        if sum(len(d.text) for d in documents) <= max(room, 0) * 6:
            input_tokens = sum(count(d.text) for d in documents) + separator * (len(documents) - 1)
            if input_tokens <= room:
                return SummaryPlan(self.window, input_tokens, answer, room, True, (), 1)
        overhead = self.backend.count_prompt_tokens(self.part_messages("", source, 99, 99))
        budget = self.window - overhead - self.note_tokens - MARGIN_TOKENS
        if budget < 64:
            raise ContextOverflow(f"the {self.window}-token window leaves no room for a document chunk",
                                  hint="raise the window with -o ctx=N", window=self.window)
        chunks = tuple(chunk for index, document in enumerate(documents)
                       for chunk in chunk_document(document, index, budget, count))
        input_tokens = sum(chunk.tokens for chunk in chunks)
        return SummaryPlan(self.window, input_tokens, answer, budget, False, chunks,
                           len(chunks) + self._combine_calls(len(chunks), source, answer))

    def _combine_calls(self, notes: int, source: str, answer: int) -> int:
        overhead = self.backend.count_prompt_tokens(self.combine_messages("", source))
        per_call = max((self.window - overhead - answer - MARGIN_TOKENS) // (self.note_tokens + 4), 2)
        calls = 0
        while notes > 1:
            groups = math.ceil(notes / per_call)
            calls += groups
            notes = groups
        return max(calls, 1)

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, documents: Sequence[Document]) -> SummaryResult:
        plan = self.plan(documents)
        result = SummaryResult("", plan)
        source = _sources(documents)
        if plan.single:
            text = "\n\n".join(d.text.strip() for d in documents)
            self.progress(f"summarizing {plan.input_tokens:,} tokens in one call")
            result.summary = self._call(self.single_messages(text, source), plan.answer_tokens, "single", "all",
                                        result, final=True)
            return result
        notes = []
        for number, chunk in enumerate(plan.chunks, start=1):
            text = documents[chunk.document].text[chunk.start:chunk.end].strip()
            messages = self.part_messages(text, documents[chunk.document].name, number, len(plan.chunks))
            label = f"part {number} of {len(plan.chunks)}"
            notes.append(self._call(messages, self.note_tokens, "part", label, result,
                                    least=max(16, self.note_tokens // 2)))
        result.part_notes = list(notes)
        result.summary = self._combine(notes, source, plan.answer_tokens, result, level=1)
        return result

    def _combine(self, notes: list[str], source: str, answer: int, result: SummaryResult, level: int) -> str:
        messages = self.combine_messages(_notes_text(notes), source)
        if self.backend.count_prompt_tokens(messages) + answer + MARGIN_TOKENS <= self.window or len(notes) == 1:
            return self._call(messages, answer, "combine", f"combine level {level}", result, final=True)
        # Too many notes for one call: combine them in groups that fit, then combine the results.
        groups: list[list[str]] = [[]]
        for note in notes:
            trial = groups[-1] + [note]
            fits = self.backend.count_prompt_tokens(self.combine_messages(_notes_text(trial), source)) \
                + self.note_tokens * 2 + MARGIN_TOKENS <= self.window
            if fits or not groups[-1]:
                groups[-1] = trial
            else:
                groups.append([note])
        if len(groups) == len(notes):
            raise ContextOverflow(f"the {self.window}-token window cannot hold two notes and their merged answer",
                                  hint="raise the window with -o ctx=N", window=self.window)
        merged = [self._call(self.combine_messages(_notes_text(group), source), self.note_tokens * 2, "combine",
                             f"combine level {level}, group {i} of {len(groups)}", result)
                  for i, group in enumerate(groups, start=1)]
        return self._combine(merged, source, answer, result, level + 1)

    def _call(self, messages: list[Message], max_tokens: int, kind: str, label: str, result: SummaryResult, *,
              final: bool = False, least: int | None = None) -> str:
        """``least``: the fewest answer tokens the call may be given when its prompt came out longer than planned
        (a chunk's pieces, counted one by one, can tokenize a few tokens longer once joined)."""
        prompt_tokens = self.backend.count_prompt_tokens(messages)
        if least is not None and prompt_tokens + max_tokens > self.window:
            max_tokens = max(least, self.window - prompt_tokens)
        if prompt_tokens + max_tokens > self.window:
            raise ContextOverflow(f"{label}: the prompt has {prompt_tokens} tokens, over the {self.window}-token "
                                  "window with the answer's room", hint="raise -o ctx=N",
                                  prompt_tokens=prompt_tokens, window=self.window)
        options = self.options.with_overrides(max_tokens=max_tokens)
        if self.on_call_start is not None:
            self.on_call_start(label, prompt_tokens)
        reading = contextlib.nullcontext() if self.on_prompt_read is None else \
            self.backend.prompt_progress(functools.partial(self.on_prompt_read, label))
        with reading:
            response = Response(self.backend.chat(messages, options))
            if final and self.on_text is not None:
                for piece in response.text_chunks():
                    self.on_text(piece)
            text = response.text().strip()
        end = response.final
        if end is None:  # the stream was closed before the backend's report: nothing to record as finished
            raise GenerationError(f"{label}: the answer ended without the backend's report",
                                  hint="try again; if it persists, run with --debug")
        record = CallRecord(kind, label, end.usage.prompt_tokens, end.usage.completion_tokens, self.window,
                            end.timings.total_s, end.tokens_per_second, text,
                            "length" if end.finish_reason == "length" else "stop")
        result.calls.append(record)
        if self.on_call is not None:
            self.on_call(record)
        rate = f", {record.tokens_per_second:.0f} tokens/s" if record.tokens_per_second else ""
        self.progress(f"{label}: {record.prompt_tokens:,} tokens in, {record.completion_tokens:,} out{rate}")
        return text


def _notes_text(notes: Sequence[str]) -> str:
    return "\n\n".join(f"Notes on part {i}:\n{note.strip()}" for i, note in enumerate(notes, start=1))


def _sources(documents: Sequence[Document]) -> str:
    names = [d.name for d in documents]
    return names[0] if len(names) == 1 else f"{len(names)} files: {', '.join(names)}"


def result_to_dict(result: SummaryResult, documents: Sequence[Document]) -> dict:
    return {
        "summary": result.summary,
        "plan": result.plan.to_dict(documents),
        "calls": [asdict(call) for call in result.calls],
        "part_notes": result.part_notes,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "cut": result.cut,
    }
