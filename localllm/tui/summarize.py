"""The summarize pane: files or pasted text, a style and a length, the chunk plan before anything is generated,
progress call by call, and the summary as Markdown to save or copy. The work is `localllm summarize`'s Summarizer."""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Button, Input, ProgressBar, Select, Static, TextArea

from localllm.core.errors import LocalLLMError, UsageError
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks.documents import Document
from localllm.tasks.summarize import STYLES
from localllm.tui.activity import FooterFlag
from localllm.tui.answer import StreamingAnswer, TextBuffer
from localllm.tui.shared_model import SharedModel

STYLE_LABELS = {"tldr": "TL;DR", "bullets": "Bullet points", "executive": "Executive summary", "detailed": "Detailed"}
PASTED = "pasted text"
RESULT_PLACEHOLDER = "*The summary appears here.*"
DRAIN_SECONDS = 1 / 20
"""How often the summary being written is drained into the result."""
PLAN_DELAY = 0.6
"""Seconds of quiet typing in the paste box before the plan is counted again."""
READING_SHARE = 0.9
"""Of a call's step on the progress bar, the part its prompt's reading fills (the bar moves as the pieces are
read); the rest comes when the call ends. Reading is most of a long prompt's call on a CPU, and writing a
summary's few hundred tokens gives no finer measure of its own."""


class Stopped(Exception):
    """Raised in the worker when the user asked to stop."""


class StoppableBackend:
    """The loaded backend, whose answers end at the next token once ``stop`` is set; the Summarizer's calls then
    end with ``Stopped``. Everything else is the backend's own."""

    def __init__(self, backend, stop: threading.Event) -> None:
        self._backend = backend
        self._stop = stop

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def chat(self, messages, options):
        chunks = self._backend.chat(messages, options)
        if self._stop.is_set():  # asked before this call began: the backend's start reset its interrupt
            self._backend.interrupt()

        def until_stopped():
            try:
                for chunk in chunks:
                    if self._stop.is_set():
                        raise Stopped
                    yield chunk
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

        return until_stopped()


def words_hint(style: str) -> str:
    return f"words (about {STYLES[style][1]})"


def describe_plan(plan, documents: list[Document]) -> str:
    what = f"{plan.input_tokens:,} tokens in {len(documents)} source(s) · window {plan.window:,} · " \
           f"answer up to {plan.answer_tokens:,} tokens · "
    if plan.single:
        return what + "1 call: it all fits the window"
    return what + (f"{len(plan.chunks):,} chunks of at most {plan.chunk_budget:,} tokens, then combining: "
                   f"{plan.calls:,} calls")


class SummarizePane(Vertical):
    DEFAULT_CSS = """
    SummarizePane Horizontal { height: auto; }
    SummarizePane #sum-paths, SummarizePane #sum-save-path { width: 1fr; }
    SummarizePane #sum-style { width: 26; }
    SummarizePane #sum-words { width: 26; }
    SummarizePane #sum-main { height: 1fr; }
    SummarizePane #sum-text { width: 1fr; }
    SummarizePane #sum-answer { width: 1fr; border-left: solid $primary-background; padding: 0 1; }
    SummarizePane #sum-files, SummarizePane #sum-plan, SummarizePane #sum-progress-text { height: auto; padding: 0 1; }
    SummarizePane #sum-progress-row { display: none; }
    SummarizePane.running #sum-progress-row { display: block; }
    SummarizePane #sum-progress { width: auto; padding: 0 1; }
    SummarizePane #sum-status { height: 1; background: $primary-background; padding: 0 1; }
    """
    running = FooterFlag(False)
    """A summary is being written (Esc stops it)."""
    BINDINGS = [
        Binding("ctrl+r", "run", "Summarize", id="summarize.run"),
        Binding("ctrl+o", "open", "Open files", id="summarize.open"),
        Binding("ctrl+s", "save", "Save", id="summarize.save"),
        Binding("ctrl+l", "copy", "Copy", id="summarize.copy"),
        Binding("escape", "stop", "Stop", id="summarize.stop"),
    ]

    def __init__(self, settings: Settings, options: GenerationOptions, shared: SharedModel) -> None:
        super().__init__(id="summarize-pane")
        self.settings = settings
        self.options = options
        self.shared = shared
        self.files: list[Document] = []
        self.plan = None
        self.calls_done = 0
        self.summary = ""
        self.part_notes: list[tuple[str, str]] = []
        """(label, notes) of each part finished in the summary being written."""
        self._stop = threading.Event()
        self._stoppable: StoppableBackend | None = None
        self._activity = ("", 0.0)
        """What the model is doing now, and since when (monotonic)."""
        self._shown_activity = ""
        self._streamed = False
        self._plan_timer: Timer | None = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.running if action == "stop" else True

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Input(placeholder="files to summarize (txt, md, html, pdf, csv, jsonl), Enter adds them",
                        id="sum-paths")
            yield Button("Add", id="sum-add")
            yield Button("Clear", id="sum-clear")
        yield Static("no files; paste text on the left, or add files", id="sum-files")
        with Horizontal():
            yield Select([(STYLE_LABELS.get(name, name), name) for name in STYLES], value="bullets",
                         allow_blank=False, id="sum-style")
            yield Input(placeholder=words_hint("bullets"), type="integer", id="sum-words")
            yield Button("Summarize", id="sum-run", variant="primary")
        yield Static("plan: nothing to summarize yet", id="sum-plan")
        with Horizontal(id="sum-progress-row"):
            yield ProgressBar(total=1, show_eta=False, id="sum-progress")
            yield Static("", id="sum-progress-text")
        with Horizontal(id="sum-main"):
            yield TextArea("", id="sum-text", placeholder="paste text to summarize here")
            with VerticalScroll(id="sum-answer"):
                yield StreamingAnswer(RESULT_PLACEHOLDER, id="sum-result")
        with Horizontal():
            yield Input(placeholder="new file for the summary (an existing file is never overwritten)",
                        id="sum-save-path")
            yield Button("Save", id="sum-save")
            yield Button("Copy", id="sum-copy")
        yield Static("add files or paste text, choose a style, then summarize", id="sum-status")

    def palette_commands(self) -> list[SystemCommand]:
        """The pane's actions for the command palette."""
        return [SystemCommand("Summarize: run", "Summarize the files and pasted text", self.action_run),
                SystemCommand("Summarize: add files", "Add the files named in the path box", self.action_open),
                SystemCommand("Summarize: save", "Save the summary to a new file", self.action_save),
                SystemCommand("Summarize: copy", "Copy the summary to the clipboard", self.action_copy),
                SystemCommand("Summarize: stop", "Stop the summary being written", self.action_stop)]

    def _error(self, exc: LocalLLMError) -> None:
        self.app.notify(f"{exc.message}\n{exc.hint}" if exc.hint else exc.message, title="error", severity="error")

    def _show(self, widget_id: str, text: str) -> None:
        self.query_one(widget_id, Static).update(text)

    # -- inputs ----------------------------------------------------------------------------------------------------
    def documents(self) -> list[Document]:
        text = self.query_one("#sum-text", TextArea).text
        return self.files + ([Document(PASTED, "text", text)] if text.strip() else [])

    def words(self) -> int | None:
        value = self.query_one("#sum-words", Input).value.strip()
        if not value:
            return None
        try:
            words = int(value)
        except ValueError:
            raise UsageError(f"{value!r} is not a number of words", hint="type a whole number") from None
        if words < 10:
            raise UsageError(f"{value} words is too few", hint="ask for at least 10 words, or leave it empty")
        return words

    @on(Input.Submitted, "#sum-paths")
    @on(Button.Pressed, "#sum-add")
    def action_open(self) -> None:
        box = self.query_one("#sum-paths", Input)
        try:
            paths = shlex.split(box.value)
        except ValueError as exc:
            self._error(UsageError(f"cannot read the paths: {exc}", hint="quote paths that hold spaces"))
            return
        if not paths:
            box.focus()
            return
        self._show("#sum-files", f"reading {len(paths)} file(s)…")
        self.read_files(paths)

    @work(thread=True, exclusive=True, group="summarize-read")
    def read_files(self, paths: list[str]) -> None:
        """A long PDF takes a while to turn into text: read off the event loop, so the app stays responsive."""
        from localllm.tasks.documents import read_document

        try:
            added = [read_document(str(Path(path).expanduser())) for path in paths]
        except LocalLLMError as exc:
            self.app.call_from_thread(self._error, exc)
            self.app.call_from_thread(self._files_changed)
            return
        self.app.call_from_thread(self._files_read, added)

    def _files_read(self, added: list[Document]) -> None:
        self.files.extend(added)
        for warning in (w for document in added for w in document.warnings):
            self.app.notify(warning, severity="warning")
        self.query_one("#sum-paths", Input).value = ""
        self._files_changed()

    @on(Button.Pressed, "#sum-clear")
    async def clear_files(self) -> None:
        """The files and the summary made of them go (the pasted text stays: it is cleared as any text is)."""
        if self.running:
            self.app.notify("a summary is being written: Esc stops it, then Clear clears it", severity="warning")
            return
        self.files.clear()
        self.summary = ""
        self.part_notes = []
        await self.query_one("#sum-result", StreamingAnswer).reset(RESULT_PLACEHOLDER)
        self._show("#sum-status", "add files or paste text, choose a style, then summarize")
        self._files_changed()

    def _files_changed(self) -> None:
        names = ", ".join(f"{d.name} ({d.kind})" for d in self.files)
        self._show("#sum-files", f"files: {names}" if names else "no files; paste text on the left, or add files")
        self.refresh_plan()

    @on(TextArea.Changed, "#sum-text")
    def _text_changed(self) -> None:
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.set_timer(PLAN_DELAY, self.refresh_plan)

    @on(Select.Changed, "#sum-style")
    def _style_changed(self, event: Select.Changed) -> None:
        self.query_one("#sum-words", Input).placeholder = words_hint(str(event.value))
        self._settings_changed()

    @on(Input.Changed, "#sum-words")
    def _settings_changed(self) -> None:
        if self.is_mounted and (self.files or self.query_one("#sum-text", TextArea).text.strip()):
            self.refresh_plan()

    # -- the plan --------------------------------------------------------------------------------------------------
    def refresh_plan(self) -> None:
        documents = self.documents()
        self.plan = None
        if not documents:
            self._show("#sum-plan", "plan: nothing to summarize yet")
            return
        try:
            words = self.words()
        except LocalLLMError as exc:
            self._show("#sum-plan", f"plan: {exc.message}")
            return
        self._show("#sum-plan", "plan: counting tokens…")
        self.make_plan(documents, str(self.query_one("#sum-style", Select).value), words)

    def _summarizer(self, backend, style: str, words: int | None, **hooks):
        from localllm.tasks.summarize import Summarizer

        return Summarizer(self.settings, backend, self.options, style=style, words=words, **hooks)

    @work(thread=True, exclusive=True, group="summarize-plan")
    def make_plan(self, documents: list[Document], style: str, words: int | None) -> None:
        try:
            with self.shared.use() as loaded:
                plan = self._summarizer(loaded.backend, style, words).plan(documents)
        except LocalLLMError as exc:
            self.app.call_from_thread(self._show, "#sum-plan", f"plan: {exc.message}")
            return
        self.app.call_from_thread(self._plan_ready, plan, documents)

    def _plan_ready(self, plan, documents: list[Document]) -> None:
        if documents != self.documents():
            return  # the inputs changed while counting; a newer plan is on its way
        self.plan = plan
        self._show("#sum-plan", "plan: " + describe_plan(plan, documents))

    # -- running ---------------------------------------------------------------------------------------------------
    @on(Button.Pressed, "#sum-run")
    async def action_run(self) -> None:
        if self.running:
            self.app.notify("a summary is being written: Esc stops it", severity="warning")
            return
        documents = self.documents()
        try:
            if not documents:
                raise UsageError("nothing to summarize", hint="add files, or paste text on the left")
            words = self.words()
        except LocalLLMError as exc:
            self._error(exc)
            return
        self.running = True
        self.summary = ""
        self.calls_done = 0
        self.part_notes = []
        self._stop.clear()
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self.add_class("running")
        self._show("#sum-status", "summarizing…")
        self.query_one("#sum-progress", ProgressBar).update(total=None, progress=0)
        self._activity = ("waiting for the model", time.monotonic())
        self._shown_activity = ""
        self._show_activity()
        # The summary streams in as its last call writes it: the worker fills a buffer that a timer drains.
        self._buffer = TextBuffer()
        self._streamed = False
        await self.query_one("#sum-result", StreamingAnswer).reset(RESULT_PLACEHOLDER)  # the last summary is gone
        self._drain_timer = self.set_interval(DRAIN_SECONDS, self._drain)
        self.summarize(documents, str(self.query_one("#sum-style", Select).value), words)

    def _show_activity(self) -> None:
        """What the model is doing, with a spinner and the call's seconds so far: a part's prompt can take a minute
        to read, with nothing else on screen moving."""
        from localllm.tui.activity import activity_line

        what, started = self._activity
        if self._stop.is_set():
            return  # "stopping…" stays until the worker ends
        line = activity_line(started, "writing the summary" if self._streamed else what)
        if line != self._shown_activity:
            self._shown_activity = line
            self._show("#sum-progress-text", line)

    def _call_started(self, label: str, prompt_tokens: int) -> None:
        reading = f"reading {prompt_tokens:,} tokens"
        self._activity = (reading if label == "all" else f"{label}: {reading}", time.monotonic())

    def _prompt_read(self, label: str, read: int, to_read: int) -> None:
        """A piece of the call's prompt was read: the bar moves within the call's step, and the line says how far."""
        if not self.running or to_read <= 0:
            return
        bar = self.query_one("#sum-progress", ProgressBar)
        if bar.total is not None:
            bar.update(progress=min(self.calls_done + READING_SHARE * read / to_read, bar.total))
        reading = f"reading {to_read:,} tokens, {read:,} read"
        self._activity = (reading if label == "all" else f"{label}: {reading}", self._activity[1])
        self._show_activity()

    async def _drain(self) -> None:
        text = self._buffer.take()
        if self.running:
            self._show_activity()
        if not text:
            return
        result = self.query_one("#sum-result", StreamingAnswer)
        if not self._streamed:
            self._streamed = True
            await result.reset()
        await result.append(text)

    def action_stop(self) -> None:
        if self.running:
            self._stop.set()
            if self._stoppable is not None:  # ends the call at once, even while it reads its prompt
                self._stoppable.interrupt()
            self._show("#sum-progress-text", "stopping…")

    @work(thread=True, exclusive=True, group="summarize")
    def summarize(self, documents: list[Document], style: str, words: int | None) -> None:
        def on_call(record) -> None:
            self.app.call_from_thread(self._call_done, record)

        def call_started(label: str, prompt_tokens: int) -> None:
            self.app.call_from_thread(self._call_started, label, prompt_tokens)

        def prompt_read(label: str, read: int, to_read: int) -> None:
            self.app.call_from_thread(self._prompt_read, label, read, to_read)

        result, error = None, None
        try:
            with self.shared.use() as loaded:
                backend = self._stoppable = StoppableBackend(loaded.backend, self._stop)
                if self._stop.is_set():
                    raise Stopped
                summarizer = self._summarizer(backend, style, words, on_call=on_call, on_call_start=call_started,
                                              on_prompt_read=prompt_read, on_text=self._buffer.put)
                plan = summarizer.plan(documents)
                self.app.call_from_thread(self._run_started, plan, documents)
                result = summarizer.run(documents)
        except (LocalLLMError, Stopped) as exc:
            error = exc
        finally:
            self._stoppable = None
        self.app.call_from_thread(self._finish, result, error)  # type: ignore[arg-type]  # a coroutine function: textual's hints solve it to Never

    def _run_started(self, plan, documents: list[Document]) -> None:
        self.plan = plan
        self._show("#sum-plan", "plan: " + describe_plan(plan, documents))
        self.query_one("#sum-progress", ProgressBar).update(total=plan.calls, progress=0)

    def _call_done(self, record) -> None:
        self.calls_done += 1
        if record.kind == "part":
            self.part_notes.append((record.label, record.text))
        bar = self.query_one("#sum-progress", ProgressBar)
        # The plan estimates how many combining calls there will be; a bar never runs past its total.
        bar.update(total=max(bar.total or 0, self.calls_done), progress=self.calls_done)

    async def _finish(self, result, error) -> None:
        from localllm.store.conversations import FINISH_NOTES

        self._drain_timer.stop()
        await self._drain()
        self.remove_class("running")
        shown = self.query_one("#sum-result", StreamingAnswer)
        if isinstance(error, Stopped):
            if self.part_notes:  # the finished parts' notes are kept: they are a summary of what they cover
                kept = "\n\n".join(f"**Notes on {label}**\n\n{text}" for label, text in self.part_notes)
                total = len(self.plan.chunks) if self.plan is not None else len(self.part_notes)
                self.summary = kept
                await shown.reset(kept)
                await shown.mark(f"■ stopped before the summary: these are the notes on {len(self.part_notes)} of "
                                 f"{total} parts")
                self._show("#sum-status", f"stopped: no summary, but the notes on {len(self.part_notes)} of "
                                          f"{total} parts are kept below (Ctrl+S saves them)")
            elif self._streamed:  # the summary was being written: what there is of it stays, marked unfinished
                await shown.finish()
                self.summary = shown.text
                await shown.mark(f"■ {FINISH_NOTES['stopped']}")
                self._show("#sum-status", "stopped: the summary so far is kept below (Ctrl+S saves it)")
            else:
                self._show("#sum-status", f"stopped; nothing was summarized ({self.calls_done} call(s) had "
                                          "finished)")
        elif error is not None:
            self._show("#sum-status", f"error: {error.message}")
            self._error(error)
        else:
            await shown.finish(result.summary)
            self.summary = result.summary
            rates = [c.tokens_per_second for c in result.calls if c.tokens_per_second]
            speed = f" · {sum(rates) / len(rates):.0f} tokens/s" if rates else ""
            cut = " · cut at the token limit" if result.cut else ""
            if result.cut:
                await shown.mark(f"✂ {FINISH_NOTES['length']} ({result.plan.answer_tokens:,} tokens): more words "
                                 "in the words field give it more room")
            self._show("#sum-status", f"done: {len(result.calls):,} call(s), {result.tokens_in:,} tokens in, "
                                      f"{result.tokens_out:,} out, window {result.plan.window:,}{speed}{cut}")
        self.running = False

    def on_unmount(self) -> None:
        self._stop.set()  # a worker still generating ends at its next token

    # -- saving ----------------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#sum-save-path")
    @on(Button.Pressed, "#sum-save")
    def action_save(self) -> None:
        box = self.query_one("#sum-save-path", Input)
        try:
            if not self.summary:
                raise LocalLLMError("there is no summary to save yet", hint="summarize first")
            if not box.value.strip():
                box.focus()
                raise UsageError("name a new file to save the summary to", hint="type a path in the save box")
            target = Path(box.value.strip()).expanduser()
            if target.exists():
                raise UsageError(f"{target} exists; it was left as it was", hint="choose a new path")
            from localllm.core.files import write_text_atomically

            write_text_atomically(target, self.summary.rstrip("\n") + "\n")
        except LocalLLMError as exc:
            self._error(exc)
            return
        except OSError as exc:
            self._error(LocalLLMError(f"cannot write {box.value.strip()}: {exc.strerror}", hint="check the folder"))
            return
        self.app.notify(f"wrote the summary to {target}", title="saved")
        self._show("#sum-status", f"saved {target}")

    @on(Button.Pressed, "#sum-copy")
    def action_copy(self) -> None:
        if not self.summary:
            self._error(LocalLLMError("there is no summary to copy yet", hint="summarize first"))
            return
        self.app.copy_to_clipboard(self.summary)
        self.app.notify("the summary is on the clipboard", title="copied")
