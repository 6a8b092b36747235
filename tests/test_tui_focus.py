"""Typing goes where the user expects, on the real bundled model: into the prompt box after a conversation is
opened from the list and after the parameter panel or the model switcher closes; the help screen scrolls with PgDn
at once; the status bar says an answer is being prepared instead of the last one's end; Ctrl+G never replaces a
draft; Ctrl+N right after Esc starts the new chat instead of being ignored."""

from conftest import settings_for
from tui_helpers import ask, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import PickOne
from localllm.tui.help import HelpScreen
from localllm.tui.prompt import PromptArea

SHORT = preset("precise").with_overrides(max_tokens=8)


def test_focus_returns_to_the_prompt_box(tmp_path):
    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, "Hello")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            box = pane.query_one("#prompt", PromptArea)
            focus = {}
            pane.sidebar.list_view.focus()
            await pilot.pause()
            pane.sidebar.post_message(pane.sidebar.Opened(pane.conversation_id))
            await wait_until(pilot, lambda: app.focused is box)
            focus["opened"] = app.focused is box
            await pilot.press("ctrl+o")
            await pilot.pause()
            app.query_one("#params").query("Input").first().focus()
            await pilot.press("ctrl+o")
            await pilot.pause()
            focus["parameters closed"] = app.focused is box
            await pilot.press("ctrl+l")
            await wait_until(pilot, lambda: isinstance(app.screen, PickOne))
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, PickOne))
            await pilot.pause()
            focus["switcher closed"] = app.focused is box
            return focus

    assert run(session()) == {"opened": True, "parameters closed": True, "switcher closed": True}


def test_the_help_screen_scrolls_with_page_down_at_once(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), SHORT)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("f9")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
            await pilot.pause()
            scroll = app.screen.query_one("#help-scroll")
            await pilot.press("pagedown")
            await pilot.pause()
            return scroll.scroll_y

    assert run(session()) > 0


def test_status_draft_and_new_chat_while_an_answer_ends(tmp_path):
    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            statuses: list[str] = []
            shown = pane._status
            pane._status = lambda text: (statuses.append(text), shown(text))  # every status, however brief
            await ask(pilot, pane, "Write a long story about a dragon.")
            await wait_until(pilot, lambda: len(pane._messages_in_log()[-1].text) > 10)
            await pilot.press("escape")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: not pane.generating and not pane._messages_in_log(), timeout=20)
            turns = await ask(pilot, pane, "Write a short poem.")
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            box = pane.query_one("#prompt", PromptArea)
            box.insert("my unsent draft")
            await pilot.press("ctrl+g")
            await pilot.pause()
            return statuses, box.text, notes

    statuses, box, notes = run(session())
    assert statuses[:2] == ["reading the prompt…", "writing the answer… (Esc stops)"], statuses
    assert box == "my unsent draft"
    assert any("not yet sent" in text for _, text in notes)
