"""The code pane: an editor, an action (explain, fix, convert, document, test, generate), the answer streamed as
Markdown, and its first code block saved to a new file. The prompts are the ones `localllm code` sends."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Select, Static, TextArea

from localllm.core.chunks import Response
from localllm.core.errors import ContextOverflow, LocalLLMError, UsageError
from localllm.core.files import free_name
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import code
from localllm.tasks.code import build_request, check_inputs
from localllm.tui.activity import FooterFlag
from localllm.tui.answer import StreamingAnswer, TextBuffer, pump
from localllm.tui.shared_model import SharedModel

ACTIONS = {
    "explain": ("Explain", ""),
    "fix": ("Fix", "the error message or traceback"),
    "convert": ("Convert", "the language to convert to, e.g. JavaScript"),
    "doc": ("Document", ""),
    "test": ("Write tests", ""),
    "gen": ("Generate", "what the code should do (in the editor's language, Python when no file is open)"),
}
ANSWER_PLACEHOLDER = "*The answer appears here.*"
FLUSH_SECONDS = 0.05
"""How often the streamed text is drained into the answer."""


def suggested_path(source: Path | None, action: str, detail: str) -> Path | None:
    """A new file's name for the answer's code, next to the source; None for explain, which writes no code."""
    if action == "explain":
        return None
    folder = source.parent if source is not None else Path.cwd()
    suffix = source.suffix if source is not None else ".py"
    stem = source.stem if source is not None else "generated"
    if action == "convert":
        wanted = code.language_for(name=detail.strip()).name if detail.strip() else ""
        suffix = next((ext for ext, entry in code.LANGUAGES.items() if entry[0] == wanted), ".txt")
        name = f"{stem}{suffix}"
    else:
        name = {"fix": f"{stem}_fixed{suffix}", "doc": f"{stem}_documented{suffix}", "test": f"test_{stem}{suffix}",
                "gen": f"{stem}{suffix}"}[action]
    return free_name(folder / name)


class CodePane(Vertical):
    DEFAULT_CSS = """
    CodePane Horizontal { height: auto; }
    CodePane #code-main { height: 1fr; }
    CodePane #code-editor { width: 1fr; }
    CodePane #code-answer { width: 1fr; border-left: solid $primary-background; padding: 0 1; }
    CodePane #code-path, CodePane #code-save-path { width: 1fr; }
    CodePane #code-action { width: 22; }
    CodePane #code-detail { width: 1fr; height: 4; }
    CodePane #code-status { height: 1; background: $primary-background; padding: 0 1; }
    """
    generating = FooterFlag(False)
    """An answer is being written (Esc stops it)."""
    BINDINGS = [
        Binding("ctrl+r", "run", "Run action", id="code.run"),
        Binding("ctrl+o", "open", "Open file", id="code.open"),
        Binding("ctrl+s", "save", "Save code", id="code.save"),
        # Priority: in the editor, Esc would first only leave the editor, and a second one stop the answer.
        Binding("escape", "stop", "Stop", id="code.stop", priority=True),
        Binding("escape", "leave_editor", "Leave the editor", show=False, priority=True),
    ]

    def __init__(self, settings: Settings, options: GenerationOptions, shared: SharedModel) -> None:
        super().__init__(id="code-pane")
        self.settings = settings
        self.options = options
        self.shared = shared
        self.path: Path | None = None
        self.source: code.CodeSource | None = None
        self.answer = ""
        self._stop = threading.Event()
        self._backend: Any = None
        """The backend while it answers here, to interrupt it from the event loop."""
        self._activity = ("", 0.0)
        self._shown_activity = ""
        self._written = False
        self._details: dict[str, str] = {}
        """What was typed by each action (a traceback for fix, a language for convert), kept apart."""
        self._action = "explain"
        self._suggested = ""
        """The save name last filled in here; replaced by the next answer's, unlike a name the user typed."""
        self._log: Any = None
        """The conversation log (tasks/conversation_log.py), opened at the first action: each action is recorded
        as a one-shot conversation of its own."""
        self._exchange: Any = None
        """The action being recorded (tasks/exchange.py), None where nothing is recorded."""
        self._model = ("", "")
        """The model and backend answering the action being run, for its record."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.generating
        if action == "leave_editor":  # what Esc does in an editor when nothing runs
            return not self.generating and isinstance(self.app.focused, TextArea)
        return True

    def action_leave_editor(self) -> None:
        self.query_one("#code-action", Select).focus()

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Input(placeholder="file to open (FILE or FILE:START-END), Enter opens it", id="code-path")
            yield Button("Open", id="code-open")
        with Horizontal(id="code-main"):
            yield TextArea.code_editor("", id="code-editor", placeholder="open a file, or type code here")
            with VerticalScroll(id="code-answer"):
                yield StreamingAnswer(ANSWER_PLACEHOLDER, id="code-result")
        with Horizontal():
            yield Select([(label, name) for name, (label, _) in ACTIONS.items()], value="explain", allow_blank=False,
                         id="code-action")
            yield TextArea("", id="code-detail", placeholder="(explain needs nothing more)")
            yield Button("Run", id="code-run", variant="primary")
        with Horizontal():
            yield Input(placeholder="new file for the answer's code block (an existing file is never overwritten)",
                        id="code-save-path")
            yield Button("Save", id="code-save")
        yield Static("open a file and choose an action", id="code-status")

    def palette_commands(self) -> list[SystemCommand]:
        """The pane's actions for the command palette."""
        return [SystemCommand("Code: run action", "Run the chosen action on the editor's code", self.action_run),
                SystemCommand("Code: open file", "Open the file named in the path box", self.action_open),
                SystemCommand("Code: save code", "Save the answer's first code block to a new file",
                              self.action_save),
                SystemCommand("Code: stop", "Stop the answer being written", self.action_stop)]

    def _status(self, text: str) -> None:
        self.query_one("#code-status", Static).update(text)

    def _error(self, exc: LocalLLMError) -> None:
        self.app.notify(f"{exc.message}\n{exc.hint}" if exc.hint else exc.message, title="error", severity="error",
                        markup=False)

    # -- files -----------------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#code-path")
    @on(Button.Pressed, "#code-open")
    def action_open(self) -> None:
        box = self.query_one("#code-path", Input)
        spec = box.value.strip()
        if not spec:
            box.focus()
            return
        try:
            source = code.read_code(os.path.expanduser(spec))
        except LocalLLMError as exc:
            self._error(exc)
            return
        editor = self.query_one("#code-editor", TextArea)
        fence = code.language_for(str(source.path)).fence
        editor.language = fence if fence in editor.available_languages else None
        editor.load_text(source.text)
        # A range keeps the file's own numbers: a traceback beside it names those lines, not 1, 2, 3.
        editor.line_number_start = source.start_line
        self.path, self.source = source.path, source
        self._status(f"{source.what} · {code.language_for(str(source.path)).name}")
        editor.focus()

    def _current_source(self) -> code.CodeSource | None:
        """The editor's text, which the user may have changed since opening the file."""
        text = self.query_one("#code-editor", TextArea).text
        if not text.strip():
            return None
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if self.source is not None and text == self.source.text:
            return self.source
        start = self.source.start_line if self.source is not None else 1
        total = max(self.source.total_lines if self.source is not None else 0, start + lines - 1)
        return code.CodeSource(self.path or Path("untitled.py"), text, start, start + lines - 1, total)

    @on(Select.Changed, "#code-action")
    def _action_chosen(self, event: Select.Changed) -> None:
        action = str(event.value)
        box = self.query_one("#code-detail", TextArea)
        typed_for_nothing = not ACTIONS[self._action][1] and box.text.strip()
        if not typed_for_nothing:
            self._details[self._action] = box.text
            box.load_text(self._details.get(action, ""))  # a traceback typed for fix is no language for convert
        # else: text typed while an action that takes none was chosen (a traceback pasted first) is for the next
        self._action = action
        detail = ACTIONS[action][1]
        box.placeholder = detail or f"({action} needs nothing more)"

    # -- running ---------------------------------------------------------------------------------------------------
    @on(Button.Pressed, "#code-run")
    async def action_run(self) -> None:
        if self.generating:
            self.app.notify("an answer is being written: Esc stops it", severity="warning")
            return
        action = str(self.query_one("#code-action", Select).value)
        detail = self.query_one("#code-detail", TextArea).text
        source = self._current_source()
        try:
            check_inputs(action, source, detail)
        except LocalLLMError as exc:
            self._error(exc)
            return
        result = self.query_one("#code-result", StreamingAnswer)
        self.generating = True
        self.answer = ""
        self._stop.clear()
        self._activity = (f"{ACTIONS[action][0]}: waiting for the model", time.monotonic())
        self._written = False
        self._show_activity()
        self.query_one("#code-answer", VerticalScroll).focus()
        await result.reset()
        # The worker only fills a buffer that a timer drains: waiting on the event loop from the worker would slow
        # decoding.
        self._buffer, self._thinking = TextBuffer(), TextBuffer()
        self._drain_timer = self.set_interval(FLUSH_SECONDS, self._drain)
        self.generate(action, source, detail, result)

    def _show_activity(self) -> None:
        from localllm.tui.activity import activity_line

        what, started = self._activity
        line = activity_line(started, f"{what.split(':')[0]}: writing the answer" if self._written else what)
        if line != self._shown_activity:
            self._shown_activity = line
            self._status(line)

    def _reading(self, what: str) -> None:
        self._activity = (what, time.monotonic())

    async def _drain(self) -> None:
        text = self._buffer.take()
        if thought := self._thinking.take():  # a reasoning model's, shown apart above the answer
            await self.query_one("#code-result", StreamingAnswer).append_thinking(thought)
        if self.generating and not self._stop.is_set():
            self._written = self._written or bool(text)
            self._show_activity()
        if text:
            answer = self.query_one("#code-result", StreamingAnswer)
            await answer.append(text)
            if self._exchange is not None:
                self._log.progress(self._exchange, answer.text)

    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()
            self._status("stopping…")
            if self._backend is not None:  # ends the answer at once, even while its prompt is read
                self._backend.interrupt()

    @work(thread=True, exclusive=True, group="code")
    def generate(self, action: str, source: code.CodeSource | None, detail: str, result: StreamingAnswer) -> None:
        response, request, error = None, None, None
        try:
            with self.shared.use() as loaded:
                request = build_request(self.settings, loaded.backend, self.options, action, source, detail)
                self._backend = loaded.backend
                self._model = (loaded.ref.name, loaded.choice.name)
                self.app.call_from_thread(self._begin_record, request)
                self.app.call_from_thread(self._reading, f"{ACTIONS[action][0]}: reading {request.sent}")
                response = Response(loaded.backend.chat(request.messages, request.options))
                if self._stop.is_set():  # Esc before the backend started: its interrupt was reset by the start
                    loaded.backend.interrupt()
                pump(response, self._buffer, self._stop, thinking=self._thinking)
        except LocalLLMError as exc:
            error = exc
        finally:
            self._backend = None
        self.app.call_from_thread(self._finish, action, detail, result, response, request,  # type: ignore[arg-type]
                                  error)  # a coroutine function: textual's hints solve it to Never

    async def _finish(self, action: str, detail: str, result: StreamingAnswer, response, request, error) -> None:
        from localllm.core.finish import finish_of
        from localllm.store.conversations import FINISH_NOTES

        self._drain_timer.stop()
        await self._drain()
        if isinstance(error, ContextOverflow):  # the command line's hint names flags; here, where to click
            error = ContextOverflow(error.message, hint="open a line range (FILE:START-END), or raise the context "
                                    "in the chat's parameters (Ctrl+O in the Chat pane)")
        exchange, self._exchange = self._exchange, None
        if error is not None:
            if self._log is not None:  # asked and not answered: no trace, as in the chat
                self._log.undo(exchange)
            await result.finish(f"*{error.message}*")
            self._status(f"error: {error.message}")
            self._error(error)
            self.generating = False
            return
        await result.finish(response.partial_text)  # one final render, so code fences look right after streaming
        if self._log is not None:
            model, backend = self._model
            self._log.end(exchange, response, model=model, backend=backend, options=request.options)
        self.answer = response.partial_text
        final = response.final
        parts = [f"{ACTIONS[action][0]}: sent {request.sent}"]
        if final is not None and final.finish_reason != "cancelled":
            parts.append(f"{final.usage.prompt_tokens:,} tokens in, {final.usage.completion_tokens:,} out")
            if final.tokens_per_second:
                parts.append(f"{final.tokens_per_second:.0f} tokens/s")
        ended = finish_of(final, request.options.max_tokens if request is not None else None).stored
        if ended == "stopped":
            parts.append("stopped")
            await result.mark(f"■ {FINISH_NOTES['stopped']}")
        elif ended in ("length", "window"):
            parts.append("cut at the token limit" if ended == "length" else "cut: the window is full")
            await result.mark(f"✂ {FINISH_NOTES[ended]}: open fewer lines (FILE:START-END) for an answer "
                              "that fits")
        self._status(" · ".join(parts))
        self.generating = False
        save_box = self.query_one("#code-save-path", Input)
        if not save_box.value.strip() or save_box.value == self._suggested:  # never a name the user typed
            try:
                suggestion = suggested_path(self.path, action, detail)
            except LocalLLMError:
                suggestion = None
            has_code = suggestion is not None and code.first_code_block(self.answer) is not None
            save_box.value = self._suggested = str(suggestion) if has_code else ""

    def on_unmount(self) -> None:
        self._stop.set()  # a worker still generating ends at its next token
        if self._log is not None:
            self._log.close()

    # -- the record ------------------------------------------------------------------------------------------------
    def _begin_record(self, request: code.CodeRequest) -> None:
        """The action and its answer go to the conversation store as a one-shot, as `localllm code` records them
        (`localllm logs` lists it; the chat's list shows it with R, and opening it there goes on as a chat)."""
        from localllm.tasks.conversation_log import ConversationLog

        if self._log is None:
            self._log = ConversationLog(self.settings, origin="code", unrecorded=self._not_recorded)
        self._log.forget()  # each action a conversation of its own
        self._exchange = self._log.begin(request.prompt, model=self._model[0], system=None, title=request.title)

    def _not_recorded(self, problem) -> None:
        self.app.notify(f"the code actions are not recorded: {problem.cause}"
                        + (f"\n{problem.hint}" if problem.hint else ""), title="conversations",
                        severity="warning", markup=False, timeout=15)

    # -- saving ----------------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#code-save-path")
    @on(Button.Pressed, "#code-save")
    def action_save(self) -> None:
        box = self.query_one("#code-save-path", Input)
        if self.generating:
            self.app.notify("the answer is still being written", severity="warning")
            return
        if not self.answer:
            self._error(LocalLLMError("there is no answer to save yet", hint="run an action first"))
            return
        if not box.value.strip():
            self._error(UsageError("name a new file to save the code to", hint="type a path in the save box"))
            box.focus()
            return
        wanted = Path(box.value.strip()).expanduser()
        if wanted.exists():  # the app never replaces a file: it offers the next free name instead
            free = free_name(wanted)
            box.value = self._suggested = str(free)
            self.app.notify(f"{wanted} exists and was left as it was; Save again to write {free.name}, or type "
                            "another name", title="not saved", severity="warning", markup=False)
            return
        try:
            written = code.write_code(self.answer, box.value.strip(), force=False)
        except LocalLLMError as exc:
            self._error(exc)
            return
        self.app.notify(f"wrote the code block to {written} (it was not run)", title="saved")
        self._status(f"saved {written}")
