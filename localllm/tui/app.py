"""`localllm` with no arguments: the chat, code, summarize, models and hardware panes around one shared model."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from functools import partial
from typing import Any, NoReturn, TypeVar

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.worker import NoActiveWorker, get_current_worker

from localllm.core.errors import LocalLLMError
from localllm.core.options import PRESETS, GenerationOptions
from localllm.core.printable import inert_text
from localllm.core.settings import Settings
from localllm.tui.events import SettingsChanged
from localllm.tui.help import HelpScreen
from localllm.tui.preferences import Preferences
from localllm.tui.shared_model import SharedModel

PANES = (
    # tab id, title, key, binding id, "module:class" (imported when the pane is first shown)
    ("chat", "Chat", "f1", "app.chat", "localllm.tui.chat:ChatPane"),
    ("code", "Code", "f2", "app.code", "localllm.tui.code:CodePane"),
    ("summarize", "Summarize", "f3", "app.summarize", "localllm.tui.summarize:SummarizePane"),
    ("models", "Models", "f4", "app.models", "localllm.tui.models:ModelsPane"),
    ("hardware", "Hardware", "f5", "app.hardware", "localllm.tui.hardware:HardwarePane"),
)


WRITING_GROUPS = frozenset({"models-pull", "models-delete"})
"""Thread workers that write files (a download, a deletion): a process ending under them waits for them."""
WRITES_WAIT_S = 30.0
"""How long the process waits for them: a pull told to stop ends after its current read."""

T = TypeVar("T")


class AppFooter(Footer):
    """The footer with Help's key first, as htop has it: the focused widget's keys come before the app's, and at 80
    columns the last of them ran off the edge (while an answer is written, or with the chat's messages focused),
    Help with them; Help is the way to every other key."""

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        keys.sort(key=lambda widget: getattr(widget, "action", None) != "help")  # stable: the rest keep their order
        yield from keys


class WorkerThreads(ThreadPoolExecutor):
    """The pool the app's thread workers run in, which knows the jobs of those that write files."""

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="localllm-worker")
        self.writes: set[Future[Any]] = set()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        try:
            group = get_current_worker().group  # a thread worker's job is submitted from the worker's own task
        except NoActiveWorker:
            group = None
        if group in WRITING_GROUPS:
            self.writes.add(future)
            future.add_done_callback(self.writes.discard)
        return future

    def wait_for_writes(self, timeout: float) -> bool:
        """True once every job that writes files has ended; False if some still run after ``timeout`` seconds."""
        return not wait(set(self.writes), timeout).not_done


def pane_class(where: str) -> Any:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


class LocalLLMApp(App):
    TITLE = "localllm"
    AUTO_FOCUS = "#prompt"
    # Narrow terminals: the conversation list shrinks under 100 columns and gives its place to the chat under 70,
    # and to the parameter panel while that is open (params.OPEN_CLASS); the chat keeps the width.
    HORIZONTAL_BREAKPOINTS = [(0, "-very-narrow"), (70, "-narrow"), (100, "-wide")]
    # Notices come in at the top right, under the tabs: at the bottom (Textual's place) they covered the prompt box
    # and the status bar, where the user types and reads how the model is doing.
    CSS = """
    .-narrow ConversationList { width: 20; }
    .-very-narrow ConversationList { display: none; }
    .-very-narrow ConversationList.-called { display: block; width: 24; }
    .-narrow.-parameters-open ConversationList { display: none; }
    .-very-narrow ParameterPanel { width: 26; }
    ToastRack { dock: top; align: right top; margin-top: 3; }
    """
    # The footer shows the keys of the pane in use, Quit and Help; the pane keys (F1–F5) stay out of it, as the tabs
    # name the panes, and with them the footer ran past 120 columns. Every key is on the help screen (F9) and in
    # the command palette.
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        *[Binding(key, f"show_tab('{tab}')", title, id=binding_id, show=False)
          for tab, title, key, binding_id, _ in PANES],
        Binding("f9", "help", "Help", id="app.help"),
        # Textual's own palette key, declared here so that the help screen lists it and [keys] can remap it.
        Binding("ctrl+p", "command_palette", "palette", id="app.palette", show=False, priority=True,
                tooltip="Command palette: every action by name"),
    ]

    def __init__(self, settings: Settings, options: GenerationOptions, model: str | None = None, *,
                 shared: SharedModel | None = None, preferences: Preferences | None = None) -> None:
        super().__init__()
        self.preferences = preferences or Preferences.load(settings.paths.config_file)
        prefs = self.preferences
        if prefs.preset and prefs.preset != settings.preset:
            settings = settings.with_overrides(preset=prefs.preset)
            options = replace(PRESETS[prefs.preset], max_tokens=options.max_tokens, ctx=options.ctx)
        options = replace(options, **prefs.options)
        if prefs.ctx and options.ctx is None:
            options = replace(options, ctx=prefs.ctx)
        self.settings = settings
        self.options = options
        self.shared = shared or SharedModel(settings, model or prefs.model, options.ctx)
        self._threads: WorkerThreads | None = None

    def run(self, **kwargs: Any) -> Any:
        """Runs the app on an event loop of its own, whose thread workers run in a pool this app holds, and
        returns as soon as the app has ended. asyncio.run would first wait for every thread worker still at
        work (a model load, a hardware probe, the model listing), so Ctrl+Q took as long as they did: seconds.
        Their results are no longer wanted; ``end_process`` waits only for the workers that write files."""
        loop = asyncio.new_event_loop()
        self._threads = WorkerThreads()
        loop.set_default_executor(self._threads)
        asyncio.set_event_loop(loop)
        try:
            return super().run(loop=loop, **kwargs)
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()  # shuts the pool down without waiting for its threads

    def wait_for_writes(self, timeout: float = WRITES_WAIT_S) -> bool:
        """After ``run``: waits up to ``timeout`` seconds for the thread workers that write files (WRITING_GROUPS)
        and are still at work; True once none is."""
        return self._threads is None or self._threads.wait_for_writes(timeout)

    def make_pane(self, tab: str):
        where = next(where for tab_id, *_, where in PANES if tab_id == tab)
        if tab in ("chat", "code", "summarize"):
            return pane_class(where)(self.settings, self.options, self.shared)
        return pane_class(where)(self.settings)

    def compose(self) -> ComposeResult:
        # Only the chat pane is built at start; the others (and their workers: hardware detection, model listing)
        # are built the first time they are shown, so the app is ready for input sooner.
        self.panes = {"chat": self.make_pane("chat")}
        yield Header()
        with TabbedContent(initial="chat"):
            for tab, title, *_ in PANES:
                with TabPane(title, id=tab):
                    if tab in self.panes:
                        yield self.panes[tab]
        yield AppFooter()

    def on_resize(self, event: events.Resize) -> None:
        # Below 100 columns the footer's keys are drawn without padding, so every key of the chat pane still fits.
        self.query_one(Footer).compact = event.size.width < 100
        self.refresh_bindings()  # some keys are in the footer only where it has room for them

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id
        if tab is not None and tab not in self.panes:
            # A tab clicked before its pane exists: while the pane is empty, focus falls back to the chat pane,
            # which would switch the tab back; so build the pane, then show it again.
            await self.ensure_pane(tab)
            await self.action_show_tab(tab)

    async def ensure_pane(self, tab: str):
        if tab not in self.panes:
            self.panes[tab] = self.make_pane(tab)
            await self.query_one(f"TabPane#{tab}", TabPane).mount(self.panes[tab])
        return self.panes[tab]

    def on_mount(self) -> None:
        prefs = self.preferences
        if prefs.theme and prefs.theme in self.available_themes:
            self.theme = prefs.theme
        if prefs.keys:
            self.set_keymap(prefs.keys)
        for problem in prefs.problems:
            self.notify(problem, title="config", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, lambda theme: self.save_preferences(theme=theme.name))

        self._notices = NoticeHandler(self)
        logging.getLogger("localllm").addHandler(self._notices)

    def on_unmount(self) -> None:
        logging.getLogger("localllm").removeHandler(self._notices)
        self.shared.close()

    async def action_show_tab(self, tab: str) -> None:
        await self.ensure_pane(tab)
        self.query_one(TabbedContent).active = tab
        self._focus_pane(tab)
        # Again once the switch is drawn: on a busy machine the focus could be moved while the old pane was hidden
        # (left on a widget no longer shown, the keys typed next went nowhere visible).
        self.call_after_refresh(self._focus_pane, tab)

    def _focus_pane(self, tab: str) -> None:
        """The pane's input takes the focus, unless something in the pane has it."""
        pane = self.panes.get(tab)
        if pane is None or self.query_one(TabbedContent).active != tab or (
                self.focused is not None and (self.focused is pane or pane in self.focused.ancestors)):
            return
        first = pane.query("#prompt") if tab == "chat" else [pane, *pane.query("*")]
        target = next((widget for widget in first if widget.focusable), None)
        if target is not None:
            target.focus()

    def watch_app_focus(self, focus: bool) -> None:
        # In a browser (localllm web) the app starts without the focus and gets it at the first click, when Textual
        # gives it back to what had it at the last blur: nothing, and keys then went nowhere. The pane's input
        # takes it instead (a click on a widget that takes focus itself moves it there afterwards).
        if focus and len(self.screen_stack) == 1 and self.screen.focused is None:
            tabs = self.query(TabbedContent)
            if tabs and tabs.first().active:
                self._focus_pane(tabs.first().active)  # now: the keys typed after the click come next

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.all_bindings(), self.preferences.keys))

    def all_bindings(self) -> list[tuple[str, list[Binding]]]:
        """Every binding with an id, grouped by where it works, for the help screen."""
        from localllm.tui.message_log import MessageLog

        groups = [("Everywhere", [b for b in self.BINDINGS if isinstance(b, Binding) and b.id])]
        for _, title, _, _, where in PANES:
            groups.append((title, [b for b in pane_class(where).BINDINGS if isinstance(b, Binding) and b.id]))

        groups.append(("The chat's messages (Shift+Tab from the prompt box)",
                       [b for b in MessageLog.BINDINGS if isinstance(b, Binding) and b.id]))
        return groups

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tab, title, *_ in PANES:
            yield SystemCommand(f"Go to {title}", f"Show the {title.lower()} pane", partial(self.action_show_tab, tab))
        yield SystemCommand("Help", "Keys and what each pane does", self.action_help)
        for tab, title, _, _, where in PANES:
            for action, text in pane_commands(pane_class(where), title).items():
                yield SystemCommand(text, f"{title} pane", partial(self._run_in_pane, tab, action))

    async def _run_in_pane(self, tab: str, action: str) -> None:
        await self.action_show_tab(tab)
        pane = self.panes[tab]
        await pane.run_action(action)

    def notify(self, message: str, *, title: str = "", **kwargs) -> None:  # type: ignore[override]
        """Every notification's text inert: error messages carry what servers and model files said, and a toast
        is no place for their escape sequences."""
        super().notify(inert_text(message), title=inert_text(title), **kwargs)

    def save_preferences(self, **values) -> None:
        """Into the config file; a file that cannot be written is said, and the session goes on with the values."""
        try:
            self.preferences.save(**values)
        except LocalLLMError as exc:
            self.notify(f"{exc.message}\n{exc.hint}" if exc.hint else exc.message, title="config not saved",
                        severity="error", markup=False, timeout=15)

    def on_settings_changed(self, event: SettingsChanged) -> None:
        self.save_preferences(**event.values)

    async def on_models_pane_use_model(self, event) -> None:
        await self.action_show_tab("chat")
        self.panes["chat"].load_model(event.name)
        self.save_preferences(model=event.name)


def end_process(app: LocalLLMApp, code: int = 0) -> NoReturn:
    """Ends the process once ``app`` has run, without the interpreter's teardown.

    By then the conversations are saved and closed (the chat pane closes its store as it unmounts) and the model
    is freed, or left to the process where a load or a generation still runs. A normal exit would join each
    thread worker still at work, a model load for seconds, and then take down the modules and the objects of a
    process holding a model, another half second; a worker that writes files is waited for (``wait_for_writes``).
    """
    app.wait_for_writes()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a terminal already gone
            pass
    os._exit(code)


class NoticeHandler(logging.Handler):
    """What the lower layers tell the user while they work (the "localllm" logger's warnings: the llama.cpp
    self-check's verdict, a model without a chat template) as notifications; ``notify`` is safe from any thread."""

    def __init__(self, app: App) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        self.app.notify(record.getMessage(), severity="warning", timeout=20, markup=False)


def pane_commands(pane, title: str) -> dict[str, str]:
    """A palette entry for each action of a pane: its own wording where it gives one, else its key's label."""
    commands = {}
    for binding in pane.BINDINGS:
        # An action with arguments is a key's variant (one shown in the footer only where it fits), not a command.
        if isinstance(binding, Binding) and binding.description and "(" not in binding.action:
            commands[binding.action] = f"{title}: {binding.description}"
    commands.update(getattr(pane, "COMMANDS", {}))
    return commands
