"""Driving the Textual app in tests: wait for a condition, send a prompt."""

import asyncio
import time

from localllm.tui.chat import ChatPane
from localllm.tui.prompt import PromptArea


async def wait_until(pilot, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


async def ask(pilot, pane: ChatPane, text: str) -> int:
    """Send ``text``; returns the number of finished turns before it (a short answer may end before we look)."""
    await wait_until(pilot, lambda: pane.session is not None)
    before = pane.session.stats.turns
    pane.query_one("#prompt", PromptArea).insert(text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: pane.generating or pane.session.stats.turns > before)
    return before


def run(coroutine):
    return asyncio.run(coroutine)
