"""`localllm` with no arguments: chat and hardware panes (code, summarize and models panes come next)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tui.chat import ChatPane
from localllm.tui.hardware import HardwarePane


class LocalLLMApp(App):
    TITLE = "localllm"
    AUTO_FOCUS = "#prompt"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f1", "show_tab('chat')", "Chat", id="app.chat"),
        Binding("f5", "show_tab('hardware')", "Hardware", id="app.hardware"),
    ]

    def __init__(self, settings: Settings, options: GenerationOptions, model: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.options = options
        self.model_name = model

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="chat"):
            with TabPane("Chat", id="chat"):
                yield ChatPane(self.settings, self.options, self.model_name)
            with TabPane("Hardware", id="hardware"):
                yield HardwarePane(self.settings)
        yield Footer()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
