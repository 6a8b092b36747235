"""Narrow terminals and the footer, on the real bundled model: under 100 columns the conversation list narrows and
under 70 it gives its place to the chat, the context meter leads the status bar so it is never the part cut off,
Esc (stop) is offered in the footer only while an answer is written, and at 120 columns every key the footer
shows, in each pane, fits."""

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, run, wait_until
from textual.widgets import Footer, TabbedContent

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


@pytest.mark.usefixtures("bundled_model")
def test_the_sidebar_gives_way_on_narrow_terminals(tmp_path):
    wide, narrow, very_narrow = (layout_at(tmp_path / str(width), width) for width in (120, 80, 60))
    assert wide[0] == 27 and narrow[0] == 19 and very_narrow[0] is False  # the width inside the border
    assert very_narrow[1] >= 55  # the chat has the width
    assert all(status.startswith("context 0/") for _, _, status in (wide, narrow, very_narrow))


@pytest.mark.usefixtures("bundled_model")
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


def footer_keys(app) -> tuple[int, list[tuple[str, int, int]]]:
    """The footer's content width, and each key it shows: its text, its left and right columns on the screen."""
    footer = app.query_one(Footer)
    keys = [(f"{key.key_display} {key.description}", key.region.x, key.region.right)
            for key in footer.query("FooterKey")]
    return footer.virtual_size.width, keys


@pytest.mark.usefixtures("bundled_model")
def test_every_key_the_footer_shows_fits_at_120_columns(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), preset("precise"))
        shown = {}
        async with app.run_test(size=(120, 30)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            for key, tab in (("f2", "code"), ("f3", "summarize"), ("f4", "models"), ("f5", "hardware"),
                             ("f1", "chat")):
                await pilot.press(key)
                await wait_until(pilot, lambda tab=tab: app.query_one(TabbedContent).active == tab)
                await pilot.pause(0.3)
                shown[tab] = footer_keys(app)
            await ask(pilot, pane, "Write a long story about a dragon.")
            await wait_until(pilot, lambda: pane.generating)
            await pilot.pause(0.3)
            shown["chat, writing"] = footer_keys(app)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating)
            help_groups = dict(app.all_bindings())
        return shown, help_groups

    shown, help_groups = run(session())
    for where, (width, keys) in shown.items():
        assert width <= 120, f"{where}: the footer is {width} columns wide: {[text for text, *_ in keys]}"
        for text, left, right in keys:
            assert 0 <= left and right <= 120, f"{where}: {text!r} is cut ({left}–{right})"
        texts = [text for text, *_ in keys]
        assert "^q Quit" in texts and "f9 Help" in texts, f"{where}: {texts}"
    assert "esc Stop" in [text for text, *_ in shown["chat, writing"][1]]
    # The pane keys left the footer, not the app: the help screen lists them.
    assert not any(text.startswith("f2 ") for text, *_ in shown["chat"][1])
    assert {binding.key for binding in help_groups["Everywhere"]} >= {"f1", "f2", "f3", "f4", "f5", "f9", "ctrl+q"}
