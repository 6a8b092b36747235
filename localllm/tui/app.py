"""`localllm` with no arguments: the chat, code, summarize, models and hardware panes around one shared model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import partial

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from localllm.core.options import PRESETS, GenerationOptions
from localllm.core.settings import Settings
from localllm.tui.chat import ChatPane
from localllm.tui.events import SettingsChanged, UseModel
from localllm.tui.hardware import HardwarePane
from localllm.tui.help import HelpScreen
from localllm.tui.preferences import Preferences
from localllm.tui.shared_model import SharedModel

PANES = (
    # tab id, title, key, binding id
    ("chat", "Chat", "f1", "app.chat"),
    ("hardware", "Hardware", "f5", "app.hardware"),
)


class LocalLLMApp(App):
    TITLE = "localllm"
    AUTO_FOCUS = "#prompt"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        *[Binding(key, f"show_tab('{tab}')", title, id=binding_id) for tab, title, key, binding_id in PANES],
        Binding("f9", "help", "Help", id="app.help"),
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

    def compose(self) -> ComposeResult:
        self.panes = {
            "chat": ChatPane(self.settings, self.options, self.shared),
            "hardware": HardwarePane(self.settings),
        }
        yield Header()
        with TabbedContent(initial="chat"):
            for tab, title, _, _ in PANES:
                with TabPane(title, id=tab):
                    yield self.panes[tab]
        yield Footer()

    def on_mount(self) -> None:
        prefs = self.preferences
        if prefs.theme and prefs.theme in self.available_themes:
            self.theme = prefs.theme
        if prefs.keys:
            self.set_keymap(prefs.keys)
        for problem in prefs.problems:
            self.notify(problem, title="config", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, lambda theme: self.preferences.save(theme=theme.name))

    def on_unmount(self) -> None:
        self.shared.close()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.all_bindings(), self.preferences.keys))

    def all_bindings(self) -> list[tuple[str, list[Binding]]]:
        """Every binding with an id, grouped by where it works, for the help screen."""
        from localllm.tui.answer import ChatMessage

        groups = [("Everywhere", [b for b in self.BINDINGS if isinstance(b, Binding) and b.id])]
        for tab, title, _, _ in PANES:
            groups.append((title, [b for b in self.panes[tab].BINDINGS if isinstance(b, Binding) and b.id]))

        groups.append(("A focused chat message", [b for b in ChatMessage.BINDINGS if isinstance(b, Binding)]))
        return groups

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tab, title, _, _ in PANES:
            yield SystemCommand(f"Go to {title}", f"Show the {title.lower()} pane", partial(self.action_show_tab, tab))
        yield SystemCommand("Help", "Keys and what each pane does", self.action_help)
        for tab, title, _, _ in PANES:
            pane = self.panes[tab]
            for action, text in pane_commands(pane, title).items():
                yield SystemCommand(text, f"{title} pane", partial(self._run_in_pane, tab, action))

    async def _run_in_pane(self, tab: str, action: str) -> None:
        self.action_show_tab(tab)
        await self.panes[tab].run_action(action)

    def on_settings_changed(self, event: SettingsChanged) -> None:
        self.preferences.save(**event.values)

    def on_use_model(self, event: UseModel) -> None:
        self.action_show_tab("chat")
        self.query_one(ChatPane).load_model(event.name)
        self.preferences.save(model=event.name)


def pane_commands(pane, title: str) -> dict[str, str]:
    """A palette entry for each action of a pane: its own wording where it gives one, else its key's label."""
    commands = {}
    for binding in pane.BINDINGS:
        if isinstance(binding, Binding) and binding.description:
            commands[binding.action] = f"{title}: {binding.description}"
    commands.update(getattr(pane, "COMMANDS", {}))
    return commands
