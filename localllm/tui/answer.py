"""An answer that grows as Markdown while it streams, at a cost that stays linear in its length.

Two things make a naive stream slow: a ``call_from_thread`` round trip per token (~9 ms here, more than a small
model needs to produce the token), and one Markdown widget whose layout is redone over all its blocks on every
append, which turns a long answer quadratic. So the generating thread only appends to a buffer (``TextBuffer``),
the event loop drains it a few dozen times a second, and the answer is cut into several Markdown widgets at
paragraph breaks outside code fences, so each append re-parses and re-lays-out only the last part.
Each part is driven by ``Markdown.append`` directly, the primitive ``MarkdownStream`` uses: the drain timer already
coalesces fragments, which is what ``MarkdownStream`` adds.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

from textual.containers import Vertical
from textual.widgets import Markdown

FENCE = re.compile(r"\s{0,3}(```|~~~)")


def answer_markdown(text: str = "", **kwargs) -> Markdown:
    """Markdown for a model's text: HTML in it is shown as typed (``<div>``), not taken as markup that Textual
    then drops."""
    from markdown_it import MarkdownIt

    return Markdown(text, parser_factory=lambda: MarkdownIt("gfm-like", {"html": False}), **kwargs)


class TextBuffer:
    """Text handed from the generating thread to the event loop without blocking the thread."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def put(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)

    def take(self) -> str:
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
        return text


def pump(response, buffer: TextBuffer, stop: threading.Event, skip: int = 0,
         thinking: TextBuffer | None = None, on_tool=None) -> None:
    """In a worker thread: feed ``response``'s text into ``buffer`` (and a reasoning model's thinking into
    ``thinking``) until it ends, or until ``stop`` is set, which closes it (decoding stops and the partial answer
    stays in the response). The first ``skip`` characters are already on screen (an answer being continued starts
    with its own text so far). ``on_tool`` gets each tool call and result as it comes."""
    from localllm.core.chunks import TextChunk, ThinkingChunk, ToolCallChunk, ToolResultChunk

    for chunk in response:
        if stop.is_set():
            response.close()
            return
        if isinstance(chunk, ThinkingChunk) and thinking is not None:
            thinking.put(chunk.text)
        elif isinstance(chunk, (ToolCallChunk, ToolResultChunk)) and on_tool is not None:
            on_tool(chunk)
        elif isinstance(chunk, TextChunk) and chunk.text:
            text = chunk.text[skip:]
            skip = max(0, skip - len(chunk.text))
            if text:
                buffer.put(text)


def is_fence(line: str) -> bool:
    return bool(FENCE.match(line))


def scan_lines(pending: str, in_fence: bool) -> tuple[list[int], bool, int]:
    """Walk the complete lines of ``pending`` (text since the last line start).

    Returns the end offsets of blank lines outside code fences (where a part may end), the fence state after the
    last complete line, and the offset where the unfinished last line starts.
    """
    breaks: list[int] = []
    offset = 0
    while (newline := pending.find("\n", offset)) != -1:
        line = pending[offset:newline]
        if is_fence(line):
            in_fence = not in_fence
        elif not line.strip() and not in_fence:
            breaks.append(newline + 1)
        offset = newline + 1
    return breaks, in_fence, offset


class StreamingAnswer(Vertical):
    """A model's answer as it streams, in every pane: Markdown parts stacked vertically (only the last one grows),
    and under them, where the answer did not end normally, a line saying how it ended (cut, stopped)."""

    DEFAULT_CSS = """
    StreamingAnswer { height: auto; }
    StreamingAnswer > Markdown { margin: 0; }
    StreamingAnswer > Static.finish { color: $warning; padding: 0 0 1 0; }
    StreamingAnswer > Static.tool { color: $text-muted; }
    StreamingAnswer > Collapsible.thinking { margin: 0; padding: 0; border: none; background: transparent; }
    StreamingAnswer .thinking-text { color: $text-muted; text-style: italic; }
    """
    PART_SIZE = 1500
    """Characters after which the growing part is closed at the next paragraph break outside a code fence."""

    def __init__(self, text: str = "", note: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._note = note
        """How the answer ended, where not normally (cut, stopped): a line under it."""
        self._initial = text
        self._parts: list[str] = []
        self._live = answer_markdown(text)
        self._live_text = text
        """The growing part's text; the whole text until composed, so a message not yet composed reads right."""
        self._in_fence = False
        self._line_start = 0
        """Offset in the growing part where its unfinished last line starts; lines before it are scanned."""
        self._order = asyncio.Lock()
        """Appends awaited from two places (the drain timer, the end of the answer) must not interleave."""
        self._thinking: Any = None
        """The thinking block (a Collapsible), made when a reasoning model's thinking first arrives."""
        self._thinking_text = ""

    def compose(self):
        self._live_text = ""
        self._track(self._initial)
        yield self._live
        if self._note:
            yield self._note_line(self._note)

    @staticmethod
    def _note_line(note: str):
        from textual.widgets import Static

        from localllm.tui.inert import plain

        return Static(plain(note), classes="finish")

    async def mark(self, note: str | None) -> None:
        """Say (or stop saying) under the answer how it ended."""
        await self.query("Static.finish").remove()
        self._note = note
        if note:
            await self.mount(self._note_line(note))

    async def tool_line(self, line: str) -> None:
        """A tool call or its result, above the answer's text (the answer comes after the calls)."""
        from textual.widgets import Static

        from localllm.tui.inert import plain

        await self.mount(Static(plain(line), classes="tool"), before=self._live)

    async def reset(self, text: str = "") -> None:
        """Start a new answer in this place: what was shown goes, and ``text`` (a placeholder) is shown instead."""
        await self.mark(None)
        await self.finish(text)

    @property
    def text(self) -> str:
        return "".join(self._parts) + self._live_text

    async def append(self, text: str) -> None:
        """Add streamed text, in the order of the calls. Call on the event loop."""
        if not text:
            return
        async with self._order:
            await self._append(text)

    async def _append(self, text: str) -> None:
        if len(self._live_text) + len(text) > self.PART_SIZE:
            pending = self._live_text[self._line_start:]
            breaks, _, _ = scan_lines(pending + text, self._in_fence)
            cuts = [end - len(pending) for end in breaks if end > len(pending)]
            if cuts:
                await self._write(text[:cuts[-1]])
                await self._new_part()
                text = text[cuts[-1]:]
        await self._write(text)

    def _track(self, text: str) -> None:
        self._live_text += text
        _, self._in_fence, consumed = scan_lines(self._live_text[self._line_start:], self._in_fence)
        self._line_start += consumed

    async def _write(self, text: str) -> None:
        if text:
            self._fold_thinking()
            self._track(text)
            await self._live.append(text)

    async def _new_part(self) -> None:
        await self.query("Static.finish").remove()  # a continued answer grows below its old end
        self._parts.append(self._live_text)
        self._live_text, self._line_start = "", 0
        self._live = answer_markdown()
        await self.mount(self._live)

    async def finish(self, full_text: str | None = None) -> None:
        """Render the last part once more from its whole text, so code fences and lists end up right.

        ``full_text`` replaces everything (an error message, or a stored answer) when given.
        """
        async with self._order:
            await self._finish(full_text)

    async def _finish(self, full_text: str | None) -> None:
        if full_text is not None and full_text != self.text:
            # Only the text's parts are replaced: a label above them, the thinking and the end's line stay.
            notes = self.query_children("Static.finish")
            await self.query_children(Markdown).remove()
            self._parts, self._in_fence, self._line_start, self._live_text = [], False, 0, ""
            self._track(full_text)
            self._live = answer_markdown(full_text)
            await self.mount(self._live, before=notes.first() if notes else None)
            return
        await self._live.update(self._live_text)

    # -- a reasoning model's thinking ------------------------------------------------------------------------------
    @property
    def thinking(self) -> str:
        return self._thinking_text

    async def append_thinking(self, text: str) -> None:
        """A reasoning model's thinking, apart from the answer: a block above it, open while the thinking streams
        and folded once the answer starts (Enter or a click on its title opens it again)."""
        if not text:
            return
        async with self._order:
            from textual.widgets import Collapsible, Static

            from localllm.tui.inert import plain

            if self._thinking is None:
                self._thinking = Collapsible(Static("", classes="thinking-text"), title="Thinking…", collapsed=False,
                                             classes="thinking")
                await self.mount(self._thinking, before=self._live)
            self._thinking_text += text
            self._thinking.query_one(".thinking-text", Static).update(plain(self._thinking_text))

    def _fold_thinking(self) -> None:
        if self._thinking is not None and self._thinking.title == "Thinking…":
            self._thinking.collapsed = True
            self._thinking.title = f"Thought for {len(self._thinking_text.split()):,} words"

    def toggle_thinking(self) -> bool:
        """Open or fold the thinking block; False when the answer has none."""
        if self._thinking is None:
            return False
        self._thinking.collapsed = not self._thinking.collapsed
        return True


class ChatMessage(StreamingAnswer):
    """One message in the chat log, under a label saying whose turn it is. The log, not each message, takes the
    focus: Tab does not walk through every message (see MessageLog)."""

    DEFAULT_CSS = """
    ChatMessage { padding: 0 1; border-left: thick $background; }
    ChatMessage.user { background: $primary-muted; margin: 1 0 0 0; }
    ChatMessage.assistant { margin: 1 0 0 0; }
    ChatMessage > Static.who { text-style: bold; padding: 1 0 0 0; }
    ChatMessage.user > Static.who { color: $accent; }
    ChatMessage.assistant > Static.who { color: $success; }
    ChatMessage > Static.typed { padding: 0 0 1 0; }
    ChatMessage.-selected { border-left: thick $accent; }
    """
    LABELS = {"user": "You", "assistant": "Assistant"}

    def __init__(self, role: str, text: str = "", note: str | None = None) -> None:
        super().__init__(text, note, classes=role)
        self.role = role

    def compose(self):
        from textual.widgets import Static

        yield Static(self.LABELS.get(self.role, self.role), classes="who", markup=False)
        if self.role != "user":
            yield from super().compose()
            return
        # The user's own words, exactly as typed: not Markdown (a `*` or a `#` would change them), not markup.
        from localllm.tui.inert import plain

        self._live_text = self._initial
        yield Static(plain(self._initial), classes="typed")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.app.notify("message copied")

    def action_copy_code(self) -> None:
        from localllm.tasks.code import first_code_block

        code = first_code_block(self.text)
        if code is None:
            self.app.notify("this message has no code block", severity="warning")
            return
        self.app.copy_to_clipboard(code)
        self.app.notify("code block copied")

