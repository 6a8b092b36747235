"""Narrow terminals and the footer, on the real bundled model: under 100 columns the conversation list narrows and
under 70 it gives its place to the chat, the context meter leads the status bar so it is never the part cut off,
and Esc (stop) is offered in the footer only while an answer is written."""

from conftest import settings_for
from tui_helpers import ask, run, wait_until

from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane


def layout_at(tmp_path, width: int):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), preset("precise").with_overrides(max_tokens=8))
        async with app.run_test(size=(width, 24)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            await pilot.pause()
            sidebar = pane.sidebar
            return (sidebar.display and sidebar.size.width, pane.query_one("#log").size.width,
                    str(pane.query_one("#status").render()))

    return run(session())


def test_the_sidebar_gives_way_on_narrow_terminals(tmp_path):
    wide, narrow, very_narrow = (layout_at(tmp_path / str(width), width) for width in (120, 80, 60))
    assert wide[0] == 27 and narrow[0] == 19 and very_narrow[0] is False  # the width inside the border
    assert very_narrow[1] >= 55  # the chat has the width
    assert all(status.startswith("context 0/") for _, _, status in (wide, narrow, very_narrow))


def test_esc_is_offered_only_while_an_answer_is_written(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 30)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            idle = "escape" in app.active_bindings
            await ask(pilot, pane, "Write a long story about a dragon.")
            await wait_until(pilot, lambda: pane.generating)
            writing = "escape" in app.active_bindings and app.active_bindings["escape"].binding.action == "stop"
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.pause()
            return idle, writing, "escape" in app.active_bindings

    idle, writing, after = run(session())
    assert (idle, writing, after) == (False, True, False)
