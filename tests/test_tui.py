"""The Textual app on the real bundled model, driven with Pilot: an answer streams in, Esc stops a long one, a
conversation survives a restart, and a deleted one is gone."""

import re
import time

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, on_screen, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import Confirm
from localllm.tui.sidebar import ConversationItem


@pytest.mark.usefixtures("bundled_model")
def test_an_answer_streams_in_and_is_stored_then_survives_a_restart(tmp_path):
    settings = settings_for(tmp_path)
    options = preset("precise").with_overrides(max_tokens=24)

    async def first_session():
        app = LocalLLMApp(settings, options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            before = await ask(pilot, pane, "Name a river in Europe.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > before)
            status = str(pane.query_one("#status").render())
            # What the answer cost, as Ollama's --verbose says it: the load goes with the first answer only.
            assert re.search(r"context [\d,]+/[\d,]+ · .* · answer \d+ tokens \d+/s · first [\d.]+ s · "
                             r"prompt [\d,]+ [\d,]+/s · load [\d.]+ s", status), status
            assert len(pane.query_one("#conversations").children) == 1
            before = await ask(pilot, pane, "And one in Asia?")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > before)
            status = str(pane.query_one("#status").render())
            assert re.search(r"prompt [\d,]+ \([\d,]+ cached\)", status) and "load" not in status, status

    async def second_session():
        app = LocalLLMApp(settings, options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            sidebar = pane.query_one("#conversations")
            assert len(sidebar.children) == 1
            sidebar.focus()
            await pilot.press("down", "enter")
            await wait_until(pilot, lambda: pane.conversation_id is not None)
            assert [m.role for m in pane.session.history] == ["user", "assistant"] * 2
            assert len(pane.query_one("#log").children) == 4

    run(first_session())
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    (conversation,) = store.list()
    messages = store.messages(conversation.id)
    assert [m.role for m in messages] == ["user", "assistant"] * 2
    assert messages[0].content == "Name a river in Europe." and messages[1].content.strip()
    assert messages[2].content == "And one in Asia?" and messages[3].content.strip()
    assert not messages[1].stopped and not messages[3].stopped and conversation.title == "Name a river in Europe."
    store.close()
    run(second_session())


@pytest.mark.usefixtures("bundled_model")
def test_escape_stops_a_long_answer_and_keeps_it(tmp_path):
    settings = settings_for(tmp_path)
    options = preset("precise").with_overrides(max_tokens=3000, repeat_penalty=1.0)

    async def session():
        app = LocalLLMApp(settings, options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await ask(pilot, pane, "Write a very long story about a dragon.")
            # Once tokens flow: the prompt's own evaluation cannot be interrupted, and under load it can take a while.
            await wait_until(pilot, lambda: pane._answer is not None and len(pane._answer.text) > 40)
            started = time.monotonic()
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating, timeout=30)
            # The bar is 0.5 s quiet; a loaded 2-core machine needs room. An answer not stopped would go on to its
            # 3,000 tokens, far past this bound.
            assert time.monotonic() - started < 8
            assert "stopped" in str(pane.query_one("#status").render())

    run(session())
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    (conversation,) = store.list()
    answer = store.messages(conversation.id)[-1]
    assert answer.role == "assistant" and answer.stopped and answer.content.strip()
    store.close()


@pytest.mark.usefixtures("bundled_model")
def test_a_deleted_conversation_is_gone(tmp_path):
    settings = settings_for(tmp_path)
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    doomed = store.create("Old chat")
    store.add_message(doomed.id, "user", "hello")
    store.close()

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            sidebar = pane.query_one("#conversations")
            await wait_until(pilot, lambda: len(sidebar.children) == 1)
            assert isinstance(sidebar.children[0], ConversationItem)
            sidebar.focus()
            await pilot.press("down", "delete")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            await pilot.press("n")
            await pilot.pause(0.2)
            assert len(sidebar.children) == 1, "answering no keeps the conversation"
            sidebar.focus()
            await pilot.press("delete")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            await pilot.press("y")
            await wait_until(pilot, lambda: len(sidebar.children) == 0)

    run(session())
    reopened = ConversationStore.in_data_dir(settings.paths.data_dir)
    assert reopened.list() == []
    reopened.close()


@pytest.mark.usefixtures("bundled_model")
def test_hardware_pane_reports_the_backend(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("f5")
            report = app.query_one("#hardware-report")
            await wait_until(pilot, lambda: "Backend" in report.source)
            assert "llama.cpp" in report.source and "RAM" in report.source

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_use_in_chat_from_the_models_pane_switches_the_chat_model(tmp_path):
    from localllm.tui.models import ModelsPane

    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=8))
        async with app.run_test(size=(140, 40)) as pilot:
            chat = app.query_one(ChatPane)
            await wait_until(pilot, lambda: chat.session is not None)
            first = chat.session.model
            await pilot.press("f4")
            models = app.query_one(ModelsPane)
            assert app.query_one("TabbedContent").active == "models"
            models.post_message(ModelsPane.UseModel("smollm2-135m"))
            await wait_until(pilot, lambda: chat.session is not None and chat.session.model is not first)
            assert app.query_one("TabbedContent").active == "chat"

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_quitting_mid_answer_is_quick_and_keeps_what_was_written(tmp_path):
    settings = settings_for(tmp_path)
    options = preset("precise").with_overrides(max_tokens=3000, repeat_penalty=1.0)
    timing = {}

    async def session():
        app = LocalLLMApp(settings, options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await ask(pilot, pane, "Write a very long story about a castle.")
            await wait_until(pilot, lambda: pane._answer is not None and len(pane._answer.text) > 40)
            timing["quit"] = time.monotonic()
            await pilot.press("ctrl+q")
        timing["closed"] = time.monotonic()

    run(session())
    assert timing["closed"] - timing["quit"] < 5
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    (conversation,) = store.list()
    user, answer = store.messages(conversation.id)
    assert user.content == "Write a very long story about a castle."
    assert answer.stopped and len(answer.content) > 40
    store.close()


@pytest.mark.usefixtures("bundled_model")
def test_every_pane_opens_from_its_key_and_the_palette_lists_their_actions(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path, discover=False), preset("precise"))
        async with app.run_test(size=(140, 40)) as pilot:
            for key, tab in (("f2", "code"), ("f3", "summarize"), ("f4", "models"), ("f5", "hardware"),
                             ("f1", "chat")):
                await pilot.press(key)

                def shown_and_focused(tab=tab) -> bool:  # the focus moves a message later than the tab
                    return app.query_one("TabbedContent").active == tab and app.focused is not None and (
                        app.focused is app.panes[tab] or app.panes[tab] in app.focused.ancestors)

                try:
                    await wait_until(pilot, shown_and_focused, timeout=30)
                except AssertionError:
                    shown = app.query_one("TabbedContent").active
                    raise AssertionError(f"{key}: {shown} shown, {app.focused!r} focused") from None
            titles = {command.title for command in app.get_system_commands(app.screen)}
            for wanted in ("Code: Run action", "Summarize: Summarize", "Models: Pull", "Go to Code", "Help"):
                assert wanted in titles, sorted(titles)

    run(session())


def test_a_model_that_cannot_load_is_a_notification_not_a_crash(tmp_path):
    settings = settings_for(tmp_path, model="no-such-model")

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            status = pane.query_one("#status")
            await wait_until(pilot, lambda: "error" in str(status.render()))
            assert "no-such-model" in str(status.render())
            await wait_until(pilot, lambda: any(severity == "error" for severity, _ in notes))
            pane.query_one("#prompt").insert("hello")
            await pilot.press("enter")
            assert pane.session is None and not pane.generating
            await pilot.press("f5")
            assert app.query_one("TabbedContent").active == "hardware"

    run(session())
