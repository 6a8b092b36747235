"""The chat pane: conversations in a sidebar, answers streamed as Markdown, Esc to stop, regenerate, edit and
resend, a system prompt and decoding parameters per conversation, a model switcher, export, and a status bar with
the model, its speed, a context meter and a warning when earlier messages no longer fit."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from localllm.core.errors import LocalLLMError
from localllm.core.files import free_name, write_text_atomically
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.store.conversations import ConversationStore
from localllm.tasks.exchange import Exchange, conversation_title
from localllm.tui.events import SettingsChanged
from localllm.tui.inert import plain
from localllm.tui.message_log import MessageLog
from localllm.tui.params import ParameterPanel
from localllm.tui.prompt import PromptArea
from localllm.tui.shared_model import SharedModel

if TYPE_CHECKING:
    from localllm.core.chunks import Response
    from localllm.tasks.chat import ChatSession
    from localllm.tui.answer import ChatMessage, TextBuffer
from localllm.tui.activity import FooterFlag
from localllm.tui.sidebar import ConversationList

DRAIN_INTERVAL_S = 1 / 30
SHOWN_MESSAGES = 50
"""The latest messages of a conversation shown when it is opened."""
FOOTER_LIST_WIDTH = 110
"""From this width the conversation list's key is in the footer; under it, the footer's other keys would not fit."""
SAVED_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")


class ChatPane(Vertical):
    DEFAULT_CSS = """
    ChatPane #log { height: 1fr; padding: 0 1; }
    ChatPane #prompt { height: 5; }
    ChatPane #status { height: auto; max-height: 2; background: $primary-background; padding: 0 1; }
    ChatPane #params-slot { width: auto; }
    ChatPane #welcome { padding: 1 1; color: $text-muted; }
    ChatPane #params-slot.closed { display: none; }
    """
    generating = FooterFlag(False)
    """An answer is being written (Esc stops it)."""
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_conversation", "New chat", id="chat.new"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("f8", "continue_answer", "Continue", id="chat.continue", show=False),
        Binding("ctrl+g", "edit_last", "Edit last", id="chat.edit", show=False),
        Binding("ctrl+o", "toggle_parameters", "Parameters", id="chat.parameters"),
        Binding("ctrl+l", "pick_model", "Model", id="chat.model"),
        Binding("ctrl+b", "edit_system", "System prompt", id="chat.system", show=False),
        Binding("ctrl+t", "rename_conversation", "Rename chat", id="chat.rename", show=False),
        Binding("ctrl+s", "export_conversation", "Export", id="chat.export", show=False),
        Binding("ctrl+f", "search", "Search chats", id="chat.search", show=False),
        Binding("delete", "delete_conversation", "Delete chat", id="chat.delete", show=False),
        # Only in the list (check_action): elsewhere r is a letter typed, or a message's key.
        Binding("r", "toggle_one_shots", "List or hide runs", id="chat.one_shots", show=False),
        # Priority: the prompt box (a TextArea) would take F6 to select its line.
        Binding("f6", "choose_tools", "Tools", id="chat.tools", show=False, priority=True),
        # Tab never reaches the list from the prompt box (Shift+Tab goes to the messages): this key does, and back.
        # Priority: the prompt box would take F7 to select all. The second binding is the same key shown in the
        # footer, where it fits (FOOTER_LIST_WIDTH); a key that does not answer its check falls to the next one.
        Binding("f7", "focus_list('footer')", "Chats", priority=True),
        Binding("f7", "focus_list", "Chats", id="chat.list", show=False, priority=True),
    ]
    COMMANDS = {
        # action → what the command palette says
        "new_conversation": "Chat: start a new conversation",
        "regenerate": "Chat: regenerate the last answer",
        "continue_answer": "Chat: continue the last answer (cut or stopped)",
        "edit_last": "Chat: edit and resend the last prompt",
        "copy_last": "Chat: copy the last answer",
        "copy_last_code": "Chat: copy the last answer's first code block",
        "toggle_parameters": "Chat: show or hide the parameter panel",
        "pick_model": "Chat: switch the model",
        "edit_system": "Chat: set this conversation's system prompt",
        "rename_conversation": "Chat: rename this conversation",
        "export_conversation": "Chat: export this conversation to Markdown",
        "delete_conversation": "Chat: delete the highlighted conversation",
        "toggle_one_shots": "Chat: list or hide `localllm run`'s one-shots",
        "search": "Chat: search conversations",
        "stop": "Chat: stop the answer being written",
        "choose_tools": "Chat: choose the MCP tools this conversation may call",
        "focus_list": "Chat: go to the conversation list (and back to the prompt box)",
    }

    def __init__(self, settings: Settings, options: GenerationOptions, shared: SharedModel) -> None:
        super().__init__(id="chat-pane")
        self.settings = settings
        self.options = options
        self.shared = shared
        self.store = ConversationStore.in_data_dir(settings.paths.data_dir)
        self.session: ChatSession | None = None
        self.conversation_id: int | None = None
        self._stop = threading.Event()
        self._generation_done = threading.Event()
        self._showing = asyncio.Lock()
        """Held while a conversation is put on screen: its awaits (the old messages removed, the new mounted) let
        another open run in between, which left both conversations' messages in the log."""
        self._outcome: tuple[str, Response | None, LocalLLMError | None] | None = None
        self._closing = False
        self._buffer: TextBuffer | None = None
        """A TextBuffer from the generating thread to the drain timer (made on first use: see _ask)."""
        self._thinking: TextBuffer | None = None
        """The same for a reasoning model's thinking."""
        self._thought = False
        self._answer: ChatMessage | None = None
        self._exchange: Exchange | None = None
        self._starter_note: str | None = None
        """What the first screen says of the bundled starter model, the first time it runs here."""
        """The last prompt and answer in the store (tasks/exchange.py), to save into, redo or continue."""
        """Stored message ids of the last exchange (user, assistant), for regenerate and edit."""
        self._load_reported: object = None
        """The loaded model whose load time an answer's stats have said already."""
        self._last_finish: str | None = None
        """How the last answer ended (conversations.FINISH_NOTES), for continue."""
        self._started = 0.0
        self._written = False
        """Whether the answer being generated has shown text yet (until then the model reads the prompt)."""
        self._shown_progress = ""
        from localllm.tui.tools import ChatTools

        self.tools = ChatTools(settings)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "focus_list" and parameters:
            keymap = getattr(getattr(self.app, "preferences", None), "keys", None) or {}
            return self.app.size.width >= FOOTER_LIST_WIDTH and "chat.list" not in keymap
        return self.generating if action == "stop" else True

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ConversationList(self.store, id="sidebar")
            with Vertical():
                with MessageLog(id="log"):
                    yield Static(self._welcome(), id="welcome")
                yield PromptArea(id="prompt", placeholder="Type a message · Enter sends · Shift+Enter new line · "
                                                          "F9 every key")
                yield Static("loading the model…", id="status")
            # Built when first opened (Ctrl+O): a dozen widgets the start-up need not wait for.
            yield Vertical(id="params-slot", classes="closed")

    def on_mount(self) -> None:
        if self.store.problem is not None:
            self._storage_problem(self.store.problem)
        self.store.on_problem = self._storage_problem
        self.shared.on_loaded(lambda loaded: self.app.call_from_thread(self._model_ready, loaded))
        self.set_interval(DRAIN_INTERVAL_S, self._drain)
        # Loading starts after the first frame: its imports hold the interpreter for a moment.
        self.call_after_refresh(self.load_model)
        self.call_after_refresh(self._open_latest)

    async def _open_latest(self) -> None:
        """The app opens where the user left off: the conversation changed last (Ctrl+N starts a new one). The
        focus stays where it is: the user may already be in the list or typing."""
        latest = next(iter(self.store.list(one_shots=False)), None)  # a one-shot is not where a chat was left
        if latest is not None and self.conversation_id is None and not self.generating:
            await self._show_conversation(latest.id, focus=False)

    def _storage_problem(self, problem: LocalLLMError) -> None:
        self.app.notify(f"{problem.message}\n{problem.hint}" if problem.hint else problem.message,
                        title="conversations", severity="error", markup=False, timeout=30)

    # -- model -----------------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="model")
    def load_model(self, name: str | None = None) -> None:
        try:
            loaded = self.shared.switch(name, self.options.ctx) if name else self.shared.get()
        except LocalLLMError as exc:
            self.app.call_from_thread(self._status, f"error: {exc.message}")
            self.app.call_from_thread(self.app.notify, f"{exc.message}\n{exc.hint}" if exc.hint else exc.message,
                                      title="model", severity="error", markup=False, timeout=30)
            return
        if self.session is None or self.session.model is not loaded:
            self.app.call_from_thread(self._model_ready, loaded)

    def _model_ready(self, loaded) -> None:
        if self.session is not None and self.session.model is loaded:
            return
        if self.session is not None:
            history, system = self.session.history, self.session.system
        elif self.conversation_id is not None:  # opened before the model was ready: its history is in the store
            history = [Message(m.role, m.content) for m in self.store.messages(self.conversation_id)]
            system = self.store.get(self.conversation_id).system
        else:
            history, system = [], None
        from localllm.tasks.chat import ChatSession
        from localllm.tasks.named import loaded_system

        # A named model's system prompt where the conversation has none of its own
        self.session = ChatSession(loaded, self.options, system=loaded_system(loaded.ref, system), history=history)
        self._status(self._status_text())
        self._update_welcome()
        self._introduce_starter(loaded.ref)

    @work(thread=True, group="starter-note")
    def _introduce_starter(self, ref) -> None:
        """Once per data folder, the bundled starter model's first screen says what it is and what to pull (the
        catalog is read and the hardware detected off the event loop)."""
        from localllm.tasks.models import is_starter, starter_note

        if is_starter(ref):
            note = starter_note(self.settings, ref)
            if note:
                self.app.call_from_thread(self._show_starter_note, note.removeprefix("note: "))

    def _show_starter_note(self, note: str) -> None:
        self._starter_note = note
        self._update_welcome()

    def _welcome(self):
        """What an empty chat shows: what to do, the model and its speed, the main keys (as remapped)."""
        from rich.text import Text

        from localllm.tui.help import key_label

        keymap = getattr(getattr(self.app, "preferences", None), "keys", None) or {}
        keys = {b.action: key_label(b, keymap) for b in self.BINDINGS if isinstance(b, Binding)}
        loaded = self.session.model if self.session is not None else None
        text = Text()
        if loaded is None:
            text.append("Loading the model…\n", style="bold")
        else:
            text.append("Ask ", style="bold").append(plain(loaded.ref.name))
            text.append(" anything: type in the box below and press Enter.\n", style="bold")
            text.append(plain(f"{loaded.choice.name} · {loaded.plan.verdict_with_speed}\n"))
            if self._starter_note:
                note = plain(self._starter_note + "\n")
                note.stylize("italic")
                text.append(note)
        from rich.console import Group
        from rich.table import Table

        left = [("Enter", "send"), ("Shift+Enter", "new line"), (keys["stop"], "stop the answer"),
                (keys["toggle_parameters"], "parameters"), ("F1–F5", "other panes")]
        right = [(keys["new_conversation"], "new chat"), (keys["focus_list"], "conversation list"),
                 (keys["pick_model"], "switch model"), ("F9", "every key"), ("Ctrl+P", "commands")]
        grid = Table.grid(padding=(0, 1))
        for style in ("bold", "", "bold", ""):
            grid.add_column(style=style)
        for (key, does), (other, other_does) in zip(left, right, strict=True):
            grid.add_row(key, f"{does}  ", other, other_does)
        return Group(text, grid)

    def _update_welcome(self) -> None:
        for welcome in self.query("#welcome"):
            welcome.update(self._welcome())  # type: ignore[attr-defined]

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(plain(text))

    def _status_text(self, answer: str | None = None) -> str:
        """``answer``: what the last answer cost (answer_stats.compact_stats), after the model and backend."""
        if self.session is None:
            return "loading the model…"
        loaded = self.session.model
        window = loaded.plan.n_ctx
        used, left_out = self.session.context_used()
        # The meter first: a narrow terminal cuts the end of the line, and the model's name is in the switcher.
        parts = [f"context {used:,}/{window:,}", loaded.ref.name, loaded.choice.name]
        if answer:
            parts.append(answer)
        if tools := self.tools.chosen.get(self.conversation_id):
            parts.append(f"tools: {len(tools)} (F6)")
        if self.session.summary is not None:
            parts.append(f"{self.session.summarized} earlier message(s) condensed")
        if left_out:
            parts.append(f"⚠ {left_out} earlier message(s) left out to fit the window")
        return " · ".join(parts)

    def action_pick_model(self) -> None:
        if self.generating:
            return
        self.app.notify("listing models…")
        self.list_models()

    @work(thread=True, exclusive=True, group="list-models")
    def list_models(self) -> None:
        from localllm.core.units import human_size
        from localllm.hardware.detect import detect_hardware
        from localllm.tasks.models import installed_rows, name_to_load

        report = detect_hardware()
        rows = installed_rows(self.settings, report)
        choices = []
        loaded = self.shared.loaded
        for row in rows:
            size = f"{human_size(row.info.file_size)} · " if row.info else ""
            current = "● in use · " if loaded is not None and loaded.ref.path == row.ref.path else ""
            choices.append((name_to_load(row.ref, rows),
                            f"{current}{row.ref.name} · {size}{row.ref.source} · "
                            f"{row.plan.verdict_with_speed if row.plan is not None else row.verdict}",
                            row.plan is not None and row.plan.fits))
        choices += self._served_choices(report)
        from localllm.tui.dialogs import PickOne

        self.app.call_from_thread(self.app.push_screen, PickOne("Switch the model", choices), self._switch_to)

    def _served_choices(self, report) -> list[tuple[str, str, bool]]:
        """The other models of the server the current model runs on (an Ollama or OpenAI-compatible server)."""
        loaded = self.shared.loaded
        if loaded is None or loaded.served is None:
            return []
        from localllm.tasks.backends import backends_report

        status = next((s for s in backends_report(self.settings, report=report).backends
                       if s.name == loaded.choice.name), None)
        if status is None or not status.reachable:
            return []
        prefix = "ollama/" if status.name == "ollama" and self.settings.backend == "auto" else ""
        return [(f"{prefix}{model}", f"{model} · {status.where}", True) for model in status.models
                if model != loaded.served.name]

    def _switch_to(self, name: str | None) -> None:
        self.focus_prompt()
        if name:
            self.session = None
            self._status(f"loading {name}…")
            self.load_model(name)
            self.app.post_message(SettingsChanged(model=name))

    def on_parameter_panel_applied(self, event: ParameterPanel.Applied) -> None:
        self.options = event.options
        if self.session is not None:
            self.session.options = event.options
        saved = {name: getattr(event.options, name) for name in SAVED_OPTIONS}
        self.app.post_message(SettingsChanged(preset=event.preset, ctx=event.options.ctx, options=saved))
        if event.ctx_changed and self.shared.loaded is not None:
            self.session = None
            self._status("loading the model with the new context size…")
            self.load_model(self.shared.name or self.settings.model)
        self.app.notify("parameters applied")
        self.focus_prompt()

    async def action_toggle_parameters(self) -> None:
        slot = self.query_one("#params-slot")
        if not slot.children:
            await slot.mount(ParameterPanel(self.options, self.settings.preset, id="params"))
        elif not slot.has_class("closed"):
            panel = self.query_one(ParameterPanel)
            # Values typed and not yet applied are applied as the panel closes; a wrong one keeps it open, marked.
            if panel.changed() and not panel.apply():
                return
        slot.toggle_class("closed")
        self.query_one(ParameterPanel).set_class(not slot.has_class("closed"), "open")
        if slot.has_class("closed"):
            self.focus_prompt()

    async def on_parameter_panel_close_requested(self, event: ParameterPanel.CloseRequested) -> None:
        if not self.query_one("#params-slot").has_class("closed"):
            await self.action_toggle_parameters()

    # -- tools -----------------------------------------------------------------------------------------------------
    def action_choose_tools(self) -> None:
        if not self.tools.up_to_date and self.tools.path.exists():
            self.app.notify(f"starting the MCP servers in {self.tools.path}…", markup=False)
        self.start_tools()

    @work(thread=True, exclusive=True, group="tools")
    def start_tools(self) -> None:
        self.tools.start()
        self.app.call_from_thread(self._offer_tools)

    def _offer_tools(self) -> None:
        from localllm.tui.tools import ToolsScreen

        conversation = self.conversation_id

        def chosen(answer: tuple[list[str], bool] | None) -> None:
            if answer is not None:
                self.tools.chosen[conversation], self.tools.required[conversation] = answer
                if conversation is not None:
                    self.store.set_tools(conversation, *answer)
                if self.session is not None:  # the meter counts the tools from now on, not from the next answer
                    self.session.tools = self.tools.loop(conversation, self._approve)
                self._status(self._status_text())
            self.focus_prompt()

        self.app.push_screen(ToolsScreen(self.tools, self.tools.chosen.get(conversation, []),
                                         self.tools.required.get(conversation, False)), chosen)

    def _approve(self, call) -> bool:
        """From the generation's thread: may this call run? Asked in a dialog unless always allowed here."""
        from localllm.tui.tools import ask_from_thread

        allowed = self.tools.always.setdefault(self.conversation_id, set())
        if call.qualified in allowed:
            return True
        answer = ask_from_thread(self.app, call, self._stop)
        if answer == "always":
            allowed.add(call.qualified)
        return answer in ("yes", "always")

    async def _show_tool(self, chunk) -> None:
        from localllm.tui.tools import tool_line

        if self._answer is not None:
            await self._answer.tool_line(tool_line(chunk))

    # -- conversations ---------------------------------------------------------------------------------------------
    @property
    def sidebar(self) -> ConversationList:
        return self.query_one(ConversationList)

    @on(ConversationList.Opened)
    async def open_conversation(self, event: ConversationList.Opened) -> None:
        await self._show_conversation(event.conversation_id)

    async def _show_conversation(self, conversation_id: int, focus: bool = True) -> None:
        """Show a stored conversation and make it the one continued; ``focus``: typing goes to the prompt box. One
        at a time: a second waits for the first, then replaces it."""
        async with self._showing:
            await self._show_conversation_now(conversation_id, focus)

    async def _show_conversation_now(self, conversation_id: int, focus: bool) -> None:
        if self.generating:
            return
        self.conversation_id = conversation_id
        self.sidebar.show(self.conversation_id)
        conversation = self.store.get(self.conversation_id)
        self.tools.restore(conversation.id, conversation.tools)
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        history, stored = [], self.store.messages(self.conversation_id)
        from localllm.tui.answer import ChatMessage

        # A long conversation shows its latest messages: thousands of Markdown widgets would take minutes to
        # mount. The whole of it stays in the history (and in an export).
        hidden = max(0, len(stored) - SHOWN_MESSAGES)
        shown: list[Widget] = [ChatMessage(message.role, message.content, self._finish_note(message.finish))
                               for message in stored[hidden:]]
        if hidden:
            shown.insert(0, Static(plain(f"… {hidden:,} earlier messages are not shown here (Ctrl+S exports the "
                                         "whole conversation)"), classes="hidden-messages"))
        await log.mount_all(shown)
        history = [Message(message.role, message.content) for message in stored]
        self._exchange = Exchange(self.store, conversation.id, stored[-2].id, stored[-1].id) \
            if len(stored) >= 2 and stored[-1].role == "assistant" else None
        self._last_finish = stored[-1].finish if self._exchange is not None else None
        if self.session is not None:
            self.session.history = history
            self.session.system = conversation.system
            self.session.dropped = 0
        self._status(self._status_text())
        log.scroll_end(animate=False)
        if focus:
            self.focus_prompt()

    def focus_prompt(self) -> None:
        """Typing goes into the prompt box after every dialog, panel and choice that took the focus."""
        self.query_one("#prompt", PromptArea).focus()

    async def action_new_conversation(self) -> None:
        if self.generating:  # right after Esc the answer is still ending: a new chat waits for it, not ignored
            self._request_stop()
            await asyncio.to_thread(self._generation_done.wait, 10)
            while self.generating:
                await asyncio.sleep(0.02)
        self.conversation_id = None
        self._exchange = None
        self.sidebar.show(None)
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        await log.mount(Static(self._welcome(), id="welcome"))
        if self.session is not None:
            self.session.reset()
            self.session.system = None
        self.query_one("#prompt", PromptArea).focus()
        self._status(self._status_text())

    def action_delete_conversation(self) -> None:
        target = self.sidebar.highlighted_id
        if self.generating or target is None:
            return
        title = self.store.get(target).title

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            self.store.delete(target)
            if target == self.conversation_id:
                await self.action_new_conversation()
            self.sidebar.refresh_list()
            self.app.notify(f"deleted {title!r}")

        from localllm.tui.dialogs import Confirm

        self.app.push_screen(Confirm(f"Delete the conversation {title!r}?"), answered)

    def action_rename_conversation(self) -> None:
        target = self.conversation_id or self.sidebar.highlighted_id
        if target is None:
            self.app.notify("no conversation to rename yet", severity="warning")
            return

        def answered(title: str | None) -> None:
            if title and title.strip():
                self.store.rename(target, title.strip())
                self.sidebar.refresh_list()

        from localllm.tui.dialogs import AskText

        self.app.push_screen(AskText("New title:", self.store.get(target).title, accept="Rename"), answered)

    def action_edit_system(self) -> None:
        current = self.session.system if self.session else None

        def answered(text: str | None) -> None:
            if text is None:
                return
            system = text.strip() or None
            if self.session is not None:
                self.session.system = system
            if self.conversation_id is not None:
                self.store.set_system(self.conversation_id, system)
            self.app.notify("system prompt set" if system else "system prompt cleared")

        from localllm.tui.dialogs import AskLongText

        self.app.push_screen(AskLongText("System prompt for this conversation:", current or ""), answered)

    def action_export_conversation(self) -> None:
        if self.conversation_id is None:
            self.app.notify("nothing to export yet", severity="warning")
            return
        from localllm.tui.dialogs import AskText

        conversation_id = self.conversation_id
        # Into the data folder, not the folder the app was started from (which the user may never look in again);
        # the dialog shows the whole path, and a relative one typed there is taken inside the same folder.
        exports = self.settings.paths.data_dir / "exports"
        name = f"{self.store.get(conversation_id).title[:40].strip() or 'conversation'}.md"
        name = "".join(c if c.isalnum() or c in "-_. " else "_" for c in name)
        default = free_name(exports / name)

        def answered(path: str | None) -> None:
            if not path or not path.strip():
                return
            target = Path(path.strip()).expanduser()
            target = (target if target.is_absolute() else exports / target).resolve()
            if target.exists():  # never over a file: the dialog comes back with the next free name
                free = free_name(target)
                self.app.notify(f"{target.name} exists and was left as it was", severity="warning", markup=False)
                self.app.push_screen(AskText("Export to Markdown file:", str(free), accept="Export"), answered)
                return
            try:
                write_text_atomically(target, self.store.export_markdown(conversation_id))
            except LocalLLMError as exc:
                self.app.notify(f"{exc.message}; {exc.hint}", severity="error", markup=False)
                return
            self.app.notify(f"exported to {target}", title="exported", markup=False, timeout=10)

        self.app.push_screen(AskText("Export to Markdown file (change the path to put it elsewhere):", str(default),
                                     accept="Export"), answered)

    def action_toggle_one_shots(self) -> None:
        from localllm.tui.help import key_label

        binding = next(b for b in self.BINDINGS if isinstance(b, Binding) and b.id == "chat.one_shots")
        self.sidebar.toggle_key = key_label(binding, getattr(getattr(self.app, "preferences", None), "keys", {}))
        self.sidebar.toggle_one_shots()

    def action_search(self) -> None:
        self._call_list()
        self.query_one("#search").focus()

    def action_focus_list(self, _shown_in: str = "") -> None:
        sidebar = self.sidebar
        if sidebar.has_focus_within:
            self.focus_prompt()
            return
        self._call_list()
        view = sidebar.list_view
        if not view.children:  # nothing listed yet: the search box is the list's only stop
            self.query_one("#search").focus()
            return
        if sidebar.current_id is not None:  # the open conversation highlighted: Enter reopens where the user is
            view.index = next((i for i, item in enumerate(view.children)
                               if getattr(item, "conversation_id", None) == sidebar.current_id), view.index)
        view.focus()

    def _call_list(self) -> None:
        """Under 70 columns the list is hidden for the chat's width: called by its key, it shows until the focus
        leaves it."""
        self.sidebar.add_class("-called")

    def on_descendant_focus(self, event) -> None:
        sidebar = self.sidebar
        if sidebar.has_class("-called") and sidebar not in event.widget.ancestors_with_self:
            sidebar.remove_class("-called")

    def _messages_in_log(self) -> list[ChatMessage]:
        from localllm.tui.answer import ChatMessage

        return list(self.query_one("#log", VerticalScroll).query_children(ChatMessage))

    def _last_answer(self) -> ChatMessage | None:
        answers = [m for m in self._messages_in_log() if m.role == "assistant"]
        return answers[-1] if answers else None

    def action_copy_last(self) -> None:
        if (answer := self._last_answer()) is not None:
            answer.action_copy()

    def action_copy_last_code(self) -> None:
        if (answer := self._last_answer()) is not None:
            answer.action_copy_code()

    # -- generation ------------------------------------------------------------------------------------------------
    @on(PromptArea.Submitted)
    async def send(self, event: PromptArea.Submitted) -> None:
        if self.session is None:
            self.app.notify("the model is still loading", severity="warning")
            return
        if self.generating:
            self.app.notify("an answer is being written: Esc stops it", severity="warning")
            return
        self.query_one("#prompt", PromptArea).clear()
        await self._ask(event.text.strip())

    async def _ask(self, text: str) -> None:
        assert self.session is not None, "a prompt is only taken once the model is ready"
        if self.conversation_id is None:
            conversation = self.store.create(conversation_title(text), model=self.session.model.ref.name,
                                             system=self.session.system, origin="app")
            self.conversation_id = conversation.id
            self.sidebar.show(conversation.id)
            self.tools.move(None, conversation.id)
            if conversation.id in self.tools.chosen:
                self.store.set_tools(conversation.id, self.tools.chosen[conversation.id],
                                     self.tools.required.get(conversation.id, False))
        else:
            self.store.continued_in(self.conversation_id, "app")
        # Saved before the answer starts and updated as it streams: a crash or a kill keeps the prompt and what
        # was written of the answer (marked stopped until it ends).
        self._exchange = Exchange.begin(self.store, self.conversation_id, text)
        log = self.query_one("#log", VerticalScroll)
        from localllm.tui.answer import ChatMessage, TextBuffer

        if self._buffer is None:
            self._buffer, self._thinking = TextBuffer(), TextBuffer()
        self._answer = ChatMessage("assistant")
        await log.query("#welcome").remove()
        await log.mount_all([ChatMessage("user", text), self._answer])
        log.scroll_end(animate=False)
        self._start_generation()
        self.generate(text)

    def _start_generation(self) -> None:
        self.generating = True
        self._stop.clear()
        self._generation_done.clear()
        self._started, self._written, self._thought = time.monotonic(), False, False
        if self.session is not None:
            self.session.prompt_tokens = 0  # counted again for this prompt in the generating thread
            self.session.tools = self.tools.loop(self.conversation_id, self._approve)  # this conversation's choice
        self._show_progress()

    def _show_progress(self) -> None:
        """The phase (the prompt's size once counted) with a spinner; redrawn only when its text changes."""
        from localllm.tui.activity import activity_line

        if self._written:
            text = activity_line(self._started, "writing the answer")
        elif self._thought:
            text = activity_line(self._started, "thinking")
        else:
            tokens = self.session.prompt_tokens if self.session is not None else 0
            text = activity_line(self._started, f"reading the prompt ({tokens:,} tokens)" if tokens else
                                 "reading the prompt")
        if text != self._shown_progress:
            self._shown_progress = text
            self._status(text)

    def action_stop(self) -> None:
        if self.generating:
            self._request_stop()

    def _request_stop(self) -> None:
        """The answer ends at once, even while the prompt is still being read; what was written is kept."""
        self._stop.set()
        if self.session is not None:
            self.session.interrupt()

    async def _forget_last_exchange(self) -> str | None:
        """Remove the last prompt and answer from the log, the history and the store; return the prompt."""
        if self.generating or self.session is None or len(self.session.history) < 2 or self._exchange is None:
            self.app.notify("there is no finished answer to redo", severity="warning")
            return None
        prompt = self.session.history[-2].content
        del self.session.history[-2:]
        self._exchange.forget()
        self._exchange, self._last_finish = None, None
        for widget in self._messages_in_log()[-2:]:
            await widget.remove()
        self._status(self._status_text())  # the meter without the exchange; its answer's cost went with it
        return prompt

    async def action_regenerate(self) -> None:
        prompt = await self._forget_last_exchange()
        if prompt is not None:
            await self._ask(prompt)

    async def action_edit_last(self) -> None:
        box = self.query_one("#prompt", PromptArea)
        if box.text.strip():
            self.app.notify("the prompt box holds a message not yet sent: send or clear it first, so it is not "
                            "replaced", severity="warning")
            return
        prompt = await self._forget_last_exchange()
        if prompt is not None:
            box = self.query_one("#prompt", PromptArea)
            box.clear()
            box.insert(prompt)
            box.focus()

    async def action_continue_answer(self) -> None:
        answer = next(reversed(self._messages_in_log()), None)
        if (self.generating or self.session is None or answer is None or answer.role != "assistant"
                or self._exchange is None or self._last_finish not in ("length", "stopped")):
            self.app.notify("there is no cut or stopped answer to continue", severity="warning")
            return
        from localllm.tui.answer import TextBuffer

        if self._buffer is None:
            self._buffer, self._thinking = TextBuffer(), TextBuffer()
        self._answer = answer
        await answer.mark(None)
        self._start_generation()
        self.generate(answer.text, continuing=True)

    @work(thread=True, exclusive=True, group="generation")
    def generate(self, text: str, continuing: bool = False) -> None:
        """The answer to ``text``; with ``continuing``, more of the last answer, whose text so far is ``text``."""
        response = None
        error = None
        session, buffer = self.session, self._buffer
        assert session is not None and buffer is not None, "_ask made both"
        try:
            from localllm.tui.answer import pump

            with self.shared.use():
                response = session.continue_answer() if continuing else session.send(text)
                if self._stop.is_set():  # Esc before the backend started: its interrupt was reset by the start
                    session.interrupt()
                pump(response, buffer, self._stop, skip=len(text) if continuing else 0, thinking=self._thinking,
                     on_tool=lambda chunk: self.app.call_from_thread(self._show_tool,  # type: ignore[arg-type]
                                                                     chunk))  # a coroutine function: as _finish
        except LocalLLMError as exc:
            error = exc
        self._outcome = (text, response, error)
        self._generation_done.set()
        if not self._closing:
            self.app.call_from_thread(self._finish, text, response, error, continuing)  # type: ignore[arg-type]  # a coroutine function: textual's hints solve it to Never

    async def _drain(self) -> None:
        answer, exchange = self._answer, self._exchange  # the answer may end while this awaits
        if answer is not None and self._buffer is not None:
            text = self._buffer.take()
            thought = self._thinking.take() if self._thinking is not None else ""
            if thought:
                self._thought = True
                await answer.append_thinking(thought)
            if self.generating:
                self._written = self._written or bool(text)
                self._show_progress()
            if text:
                await answer.append(text)  # the anchored log follows it unless the user scrolled up
                if exchange is not None and self.generating:
                    exchange.progress(answer.text)

    async def _finish(self, text: str, response, error, continuing: bool = False) -> None:
        if self._closing:
            return
        await self._drain()
        answer, self._answer = self._answer, None
        assert answer is not None, "_ask mounted it"
        self.generating = False
        if error is not None:
            self._status(self._status_text())  # the progress line ends with the attempt
            if continuing:  # the answer stays as it was
                await answer.mark(self._finish_note(self._last_finish))
                self.app.notify(f"{error.message}\n{error.hint}" if error.hint else error.message,
                                title="not continued", severity="error", markup=False)
                return
            await self._refuse(text, answer, error)
            return
        full = response.partial_text if response is not None else ""
        finish = self._finish_kind(response)
        self._last_finish = finish
        self._save_answer(response)
        if self.session is not None and self.session.condensed:
            messages, freed = self.session.condensed
            self.app.notify(f"{messages} earlier message(s) were condensed into a summary so the conversation fits "
                            f"the window ({freed:,} tokens freed); the whole conversation stays here and in exports",
                            title="condensed", timeout=10)
        if self.conversation_id is not None:
            self.sidebar.touched(self.conversation_id)
        cost = None
        if response is not None and response.final is not None:
            from localllm.tasks.answer_stats import compact_stats

            loaded = self.session.model if self.session is not None else None
            # The load time goes with the first answer after a load (Ollama repeats a near-zero one each time).
            load_s = loaded.load_s if loaded is not None and loaded is not self._load_reported else None
            self._load_reported = loaded
            cost = compact_stats(response.final, load_s, finish=finish == "stop")
        # Said before the awaits below: the answer is over once generating is False.
        self._status(self._status_text(cost) + {"stopped": " · stopped", "length": " · cut at the token limit",
                                                "window": " · cut: the window is full"}.get(finish, ""))
        await answer.finish(full)
        await answer.mark(self._finish_note(finish))

    def _finish_kind(self, response) -> str:
        """stop, length (the answer's token limit), window (the context filled up) or stopped."""
        from localllm.core.finish import finish_of

        limit = self.session.options.max_tokens if self.session is not None else None
        return finish_of(response.final if response is not None else None, limit).stored

    @staticmethod
    def _finish_note(finish: str | None) -> str | None:
        from localllm.store.conversations import FINISH_NOTES

        note = FINISH_NOTES.get(finish or "")
        if note is None:
            return None
        if finish == "window":
            return f"✂ {note}: start a new chat, or raise the context in the parameters (Ctrl+O)"
        return f"{'✂' if finish == 'length' else '■'} {note} · F8 continues"

    async def _refuse(self, text: str, answer, error: LocalLLMError) -> None:
        """A prompt that got no answer: an over-long one leaves no trace in the log (the text goes back to the box
        and the message says by how much it is over); another failure stays in the log as what happened."""
        from localllm.core.errors import ContextOverflow

        if isinstance(error, ContextOverflow) and error.window:
            log_messages = self._messages_in_log()
            for widget in log_messages[-2:]:
                await widget.remove()
            self.app.notify(f"this message is {error.prompt_tokens:,} tokens, over the {error.window:,}-token "
                            "window (with room kept for the answer)\nshorten it, raise the context in the "
                            "parameters (Ctrl+O), or summarize it in the Summarize pane (F3)",
                            title="not sent", severity="error", markup=False, timeout=15)
        else:
            await answer.finish(f"*{error.message}*")
            self.app.notify(error.hint or error.message, title="error", severity="error", markup=False)
        self._unsave_failed_exchange(text)

    def _save_answer(self, response, shown: str = "") -> None:
        """The answer's end into the store, as the CLI records one; ``shown``: what the log shows of it, when there
        is no response."""
        if self._exchange is not None and self.session is not None:
            self._exchange.end(response, model=self.session.model.ref.name, backend=self.session.model.choice.name,
                               options=self.session.options, shown=shown)

    def _unsave_failed_exchange(self, text: str) -> None:
        """A prompt that got no answer (refused, or the backend failed) leaves the store as it was, and its text
        goes back into an empty prompt box to be sent again."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None and exchange.undo():
            self.conversation_id = None
            self.sidebar.current_id = None
            self.sidebar.refresh_list()  # the conversation made for this prompt is gone from the list too
        box = self.query_one("#prompt", PromptArea)
        if not box.text.strip():
            box.insert(text)

    def on_unmount(self) -> None:
        # Quitting mid-answer: the generation ends at its next token and what it wrote is kept, as Esc would.
        self._closing = True
        self._request_stop()
        if self.generating:
            response = None
            if self._generation_done.wait(timeout=5) and self._outcome is not None:
                _text, response, _error = self._outcome
            self._save_answer(response, self._answer.text if self._answer else "")
        self.store.close()
        self.tools.close()

