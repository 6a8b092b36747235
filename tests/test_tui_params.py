"""The parameter panel (Ctrl+O in the chat): on a narrow terminal it takes the conversation list's place, so the
chat keeps its width; a value that breaks its option's rules is marked in its field, with what is wrong under it,
and is not applied."""

import pytest
from conftest import settings_for
from helpers.tui_helpers import record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.params import ParameterPanel, field_problem


def chat_width_with_the_panel(tmp_path, width: int) -> tuple[int, int, bool, bool]:
    """The chat log's width with the panel closed, then open; whether the conversation list shows with it open,
    and again once it is closed."""

    async def session():
        app = LocalLLMApp(settings_for(tmp_path, discover=False), preset("precise"))
        async with app.run_test(size=(width, 40)) as pilot:
            pane = app.query_one(ChatPane)
            log = pane.query_one("#log")
            await pilot.pause(0.2)
            closed = log.size.width
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: pane.query(ParameterPanel) and pane.query_one(ParameterPanel).region.width)
            await pilot.pause(0.2)
            opened, list_shown = log.size.width, pane.sidebar.display
            await pilot.press("ctrl+o")
            await pilot.pause(0.2)
            return closed, opened, list_shown, pane.sidebar.display

    return run(session())


@pytest.mark.usefixtures("bundled_model")
def test_the_open_panel_leaves_the_chat_its_width_on_narrow_terminals(tmp_path):
    closed, opened, list_shown, list_back = chat_width_with_the_panel(tmp_path / "80", 80)
    assert opened >= 45, f"the chat is {opened} columns wide at 80 with the panel open"
    assert not list_shown and list_back, "the list gives its place while the panel is open, and comes back"
    assert closed - opened <= 12
    # Wide terminals have room for both.
    _, opened_wide, list_shown_wide, _ = chat_width_with_the_panel(tmp_path / "140", 140)
    assert list_shown_wide and opened_wide >= 70


@pytest.mark.usefixtures("bundled_model")
def test_an_invalid_value_is_marked_in_its_field_and_not_applied(tmp_path):
    settings = settings_for(tmp_path, discover=False)

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 50)) as pilot:
            pane = app.query_one(ChatPane)
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: bool(pane.query(ParameterPanel)))
            panel = pane.query_one(ParameterPanel)
            original = pane.options
            seed = panel.query_one("#param-seed")
            seed.focus()
            await pilot.press(*"abc")
            await pilot.pause(0.1)
            problem = panel.query_one("#param-seed-problem")
            marked = (seed.has_class("-invalid"), problem.display, str(problem.render()))
            temperature = panel.query_one("#param-temperature")
            temperature.focus()
            temperature.value = "9"
            await pilot.press("enter")  # apply
            await pilot.pause(0.1)
            refused = (temperature.has_class("-invalid"), pane.options is original, panel.options is original,
                       [text for severity, text in notes if severity == "error"], app.focused)
            seed.value = "7"
            temperature.value = "0.4"
            await pilot.pause(0.1)
            cleared = (seed.has_class("-invalid"), problem.display)
            await pilot.click("#param-apply")
            await wait_until(pilot, lambda: pane.options is not original)
            return marked, refused, cleared, pane.options, notes

    marked, refused, cleared, options, notes = run(session())
    assert marked == (True, True, "needs an integer, got 'abc'; for example: 42")
    invalid, chat_unchanged, panel_unchanged, errors, focused = refused
    assert invalid and chat_unchanged and panel_unchanged
    assert errors and "not applied" in errors[-1] and "seed" in errors[-1] and "temperature" in errors[-1]
    assert focused is not None and focused.id == "param-temperature"
    assert cleared == (False, False)
    assert options.seed == 7 and options.temperature == 0.4
    assert ("information", "parameters applied") in notes


def test_the_field_messages_speak_of_the_field_not_the_command_line():
    from localllm.core.errors import UsageError

    error = UsageError("option temperature=9 is out of range", hint="use a value from 0 to 5")
    assert field_problem("temperature", error) == "9 is out of range; use a value from 0 to 5"
    error = UsageError("option top_k needs an integer, got '1.5'", hint="for example: -o top_k=40")
    assert field_problem("top_k", error) == "needs an integer, got '1.5'; for example: 40"


@pytest.mark.usefixtures("bundled_model")
def test_closing_the_panel_applies_what_was_typed_and_a_cleared_context_goes_back_to_automatic(tmp_path):
    settings = settings_for(tmp_path, discover=False)

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(ctx=512))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 50)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            first_window = pane.session.model.backend.context_window
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: bool(pane.query(ParameterPanel)))
            panel = pane.query_one(ParameterPanel)
            top_k = panel.query_one("#param-top_k")
            top_k.focus()
            top_k.value = "7"
            await pilot.press("ctrl+o")  # closed without Apply: what was typed is applied, not dropped
            await pilot.pause(0.1)
            by_ctrl_o = (pane.options.top_k, panel.display, app.focused.id if app.focused else None)

            await pilot.press("ctrl+o")
            await pilot.pause(0.1)
            seed = panel.query_one("#param-seed")
            seed.focus()
            seed.value = "abc"
            await pilot.press("escape")  # a wrong value keeps the panel open, with the field focused
            await pilot.pause(0.1)
            kept_open = (panel.display, app.focused is seed, pane.options.seed)
            seed.value = ""
            ctx = panel.query_one("#param-ctx")
            ctx.focus()
            ctx.value = ""  # back to the automatic size: the model is loaded again with it
            await pilot.press("escape")
            await pilot.pause(0.1)
            by_escape = (panel.display, app.focused.id if app.focused else None, pane.options.ctx)
            await wait_until(pilot, lambda: pane.session is not None
                             and pane.session.model.backend.context_window != first_window)
            second_window = pane.session.model.backend.context_window

            await pilot.press("ctrl+o")
            await pilot.pause(0.1)
            temperature = panel.query_one("#param-temperature")
            temperature.focus()
            temperature.value = "0.3"
            await pilot.press("enter")  # applied; typing goes on in the prompt box, the panel stays open
            await pilot.pause(0.1)
            by_enter = (pane.options.temperature, panel.display, app.focused.id if app.focused else None)
            return first_window, by_ctrl_o, kept_open, by_escape, second_window, by_enter, notes

    first_window, by_ctrl_o, kept_open, by_escape, second_window, by_enter, notes = run(session())
    assert first_window == 512
    assert by_ctrl_o == (7, False, "prompt")
    assert kept_open == (True, True, None)
    assert by_escape == (False, "prompt", None)
    assert second_window > 512, "the automatic size is the model's own (8,192 for the bundled one)"
    assert by_enter == (0.3, True, "prompt")
    assert [text for _, text in notes].count("parameters applied") == 3
