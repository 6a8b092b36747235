"""Driving the Textual app in tests: wait for a condition, send a prompt."""

import asyncio
import time
from typing import Any

from conftest import settings_for
from textual.app import App
from textual.widgets import Footer

from localllm.hardware.report import CPUInfo, HardwareReport, LlamaCppBuild
from localllm.tui.chat import ChatPane
from localllm.tui.prompt import PromptArea
from localllm.tui.shared_model import SharedModel

GIB = 1024**3
# A fixed machine, so verdicts and reports do not depend on the machine running the tests.
TEST_MACHINE = HardwareReport(os="Linux (test machine)", cpu=CPUInfo("Test CPU", "x86_64", 4, 8, ("AVX2",)),
                              ram_total=16 * GIB, ram_available=12 * GIB,
                              llama_cpp=LlamaCppBuild(installed=True, version="0.3.0", gpu_offload=False))


async def wait_until(pilot, condition, timeout=180.0):
    """Until ``condition()``, or a failure after ``timeout`` seconds: long enough for a model's work on a loaded
    machine (several summary calls on one thread took over a minute in CI), short of a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def on_screen(app, screen_class) -> bool:
    """The app shows a screen of this class, composed: a screen is pushed first and composed at its mount, so its
    widgets are not there the moment it is the app's screen."""
    return isinstance(app.screen, screen_class) and app.screen.is_mounted


async def ask(pilot, pane: ChatPane, text: str) -> int:
    """Send ``text``; returns the number of finished turns before it (a short answer may end before we look)."""
    await wait_until(pilot, lambda: pane.session is not None)
    session = pane.session
    assert session is not None
    before = session.stats.turns
    pane.query_one("#prompt", PromptArea).insert(text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: pane.generating or session.stats.turns > before)
    return before


def record_notifications(app) -> list[tuple[str, str]]:
    """(severity, "title: message") of every notification the app shows; its own list drops them when they time
    out."""
    shown, seen = app.notify, []

    def notify(message, **kwargs):
        title = kwargs.get("title")
        seen.append((kwargs.get("severity", "information"), f"{title}: {message}" if title else str(message)))
        return shown(message, **kwargs)

    app.notify = notify
    return seen


def run(coroutine):
    return asyncio.run(coroutine)


class PaneApp(App):
    """One pane alone, with a real shared model; notifications are recorded for the assertions."""

    PANE: Any = None

    def __init__(self, settings, options, ctx=None) -> None:
        super().__init__()
        self.shared = SharedModel(settings, ctx=ctx)
        self.pane = self.PANE(settings, options, self.shared)
        self.notes: list[tuple[str, str]] = []

    def compose(self):
        yield self.pane
        yield Footer()

    def notify(self, message, *, title="", severity="information", **kwargs) -> None:
        self.notes.append((severity, f"{title}: {message}"))
        super().notify(message, title=title, severity=severity, **kwargs)

    def on_unmount(self) -> None:
        self.shared.close()  # waits for the generation the unmounted pane was told to stop


def one_thread(tmp_path):
    """Settings whose model decodes on one thread: on a small machine shared with other work, llama.cpp threads
    that wait for each other can be descheduled and a call can take a hundred times longer; one thread is steady."""
    return settings_for(tmp_path, threads=1)


def starter_introduced(settings):
    """Settings whose data folder has had the starter model's one-time note already: the first screen is the same
    on every machine (the note names a model and a speed for this machine's hardware)."""
    from localllm.tasks.models import STARTER_NOTE_MARKER

    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.paths.data_dir / STARTER_NOTE_MARKER).write_text("said\n")
    return settings
