"""Typing goes where the user expects, on the real bundled model: into the prompt box after a conversation is
opened from the list and after the parameter panel or the model switcher closes; the help screen scrolls with PgDn
at once; the status bar says an answer is being prepared instead of the last one's end; Ctrl+G never replaces a
draft; Ctrl+N right after Esc starts the new chat instead of being ignored."""

import re

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, on_screen, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.tui.activity import SPINNER
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import PickOne
from localllm.tui.help import HelpScreen
from localllm.tui.prompt import PromptArea

SHORT = preset("precise").with_overrides(max_tokens=8)


@pytest.mark.usefixtures("bundled_model")
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
            await wait_until(pilot, lambda: on_screen(app, PickOne))
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, PickOne))
            await pilot.pause()
            focus["switcher closed"] = app.focused is box
            return focus

    assert run(session()) == {"opened": True, "parameters closed": True, "switcher closed": True}


@pytest.mark.usefixtures("bundled_model")
def test_the_help_screen_scrolls_with_page_down_at_once(tmp_path):
    async def session():
        app = LocalLLMApp(settings_for(tmp_path), SHORT)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("f9")
            await wait_until(pilot, lambda: on_screen(app, HelpScreen))
            await pilot.pause()
            scroll = app.screen.query_one("#help-scroll")
            await pilot.press("pagedown")
            await pilot.pause()
            return scroll.scroll_y

    assert run(session()) > 0


@pytest.mark.usefixtures("bundled_model")
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
            await wait_until(pilot, lambda: not pane.generating and not pane._messages_in_log(), timeout=60)
            # Long enough that reading it spans several frames of the status bar.
            before = len(statuses)
            turns = await ask(pilot, pane, "Summarize this: " + "The river flows past the old mill. " * 120)
            # Stopped once this prompt's count is shown: an Esc that landed first (a loaded machine can start the
            # generating thread late) would stop it before it counted.
            await wait_until(pilot, lambda: any("tokens)" in text for text in statuses[before:]))
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            box = pane.query_one("#prompt", PromptArea)
            box.insert("my unsent draft")
            await pilot.press("ctrl+g")
            await pilot.pause()
            return statuses, box.text, notes

    statuses, box, notes = run(session())
    # A spinner and the phase while the answer is prepared (with the prompt's size once counted), then written.
    phases = [text[2:].split("…")[0] for text in statuses if text[:1] in SPINNER]
    assert phases[0] == "reading the prompt", statuses
    counted = [int(m.group(1)) for phase in phases if (m := re.fullmatch(r"reading the prompt \(([\d,]+) tokens\)",
                                                                           phase.replace(",", "")))]
    assert max(counted) > 900, statuses  # the long prompt, counted while it is read
    assert "writing the answer" in phases, statuses
    assert all(text.endswith("s (Esc stops)") for text in statuses if text[:1] in SPINNER), statuses
    assert box == "my unsent draft"
    assert any("not yet sent" in text for _, text in notes)


@pytest.mark.usefixtures("bundled_model")
def test_the_list_marks_the_open_chat_dates_each_and_its_search_clears(tmp_path):
    from datetime import datetime, timedelta

    from localllm.tui.sidebar import ConversationItem, when

    now = datetime(2026, 12, 2, 15, 30).astimezone()
    assert when((now - timedelta(hours=1)).isoformat(), now) == "14:30"
    assert when((now - timedelta(days=3)).isoformat(), now) == "Nov 29"
    assert when((now - timedelta(days=400)).isoformat(), now) == "2025-10-28"
    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, "Name a river in France, please, and tell me about it.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            search = pane.query_one("#search")
            search.focus()
            search.value = "no such words"
            await pilot.pause()
            hidden = len(pane.sidebar.list_view.children)
            await pilot.press("escape")
            await pilot.pause()
            after_escape = (search.value, len(pane.sidebar.list_view.children))
            search.value = "no such words"
            await pilot.pause()
            await pilot.press("ctrl+n")
            turns = await ask(pilot, pane, "Name a mountain.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()
            items = list(pane.sidebar.list_view.query(ConversationItem))
            current = [item for item in items if item.has_class("-current")]
            return hidden, after_escape, search.value, len(items), current[0].conversation_id, pane.conversation_id

    hidden, after_escape, search_after_new, listed, current, open_id = run(session())
    assert hidden == 0 and after_escape == ("", 1)
    assert search_after_new == "" and listed == 2  # the new chat is not hidden by the old search
    assert current == open_id


@pytest.mark.usefixtures("bundled_model")
def test_the_app_opens_the_last_chat_and_tab_passes_its_messages_in_one_stop(tmp_path):
    from localllm.store.conversations import ConversationStore
    from localllm.tui.answer import ChatMessage

    settings = settings_for(tmp_path)
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    store.create("An older chat")
    latest = store.create("Rivers")
    for number in range(1, 4):
        store.add_message(latest.id, "user", f"Question {number}?")
        padding = "".join(f"- point {line}\n" for line in range(12))  # more than a screen: it opens at its end
        store.add_message(latest.id, "assistant", f"Answer {number}, with code:\n\n{padding}\n```python\n"
                                                  f"print({number})\n```")
    messages_stored = [m.content for m in store.messages(latest.id)]
    store.close()

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: len(pane._messages_in_log()) == 6)  # opened without a key pressed
            opened = pane.conversation_id
            await wait_until(pilot, lambda: pane.session is not None)
            log = pane.query_one("#log")
            # Laid out, then scrolled to its end: waited for, as a loaded machine lays out later than a fixed pause.
            await wait_until(pilot, lambda: 0 < log.max_scroll_y == log.scroll_y, timeout=30)
            at_end = (log.max_scroll_y, log.scroll_y)
            # Opened before the model was ready or after: the answer will see the whole conversation.
            assert [m.content for m in pane.session.history][-2:] == ["Question 3?", messages_stored[-1]]
            chain = app.screen.focus_chain
            messages = pane._messages_in_log()
            labels = [str(m.query_one("Static.who").render()) for m in messages]
            backgrounds = {m.role: m.styles.background for m in messages}
            await pilot.press("shift+tab")  # from the prompt box, one step back: the log
            in_log = app.focused
            await pilot.press("up", "c")  # the last message is picked first: one up is "Question 3?"
            copied = app.clipboard
            await pilot.press("k")  # that message has no code block: said so, nothing copied
            await pilot.press("down", "k")
            code = app.clipboard
            await pilot.press("tab")
            return opened, at_end, chain, labels, backgrounds, in_log, copied, code, app.focused

    opened, at_end, chain, labels, backgrounds, in_log, copied, code, back = run(session())
    assert opened == latest.id
    most, scrolled = at_end
    assert most > 0 and scrolled == most, "the conversation opens at its last message"
    assert not any(isinstance(widget, ChatMessage) for widget in chain)
    assert [widget.id for widget in chain].count("log") == 1
    assert labels == ["You", "Assistant"] * 3
    assert backgrounds["user"] != backgrounds["assistant"]
    assert in_log is not None and in_log.id == "log"
    assert copied == "Question 3?"
    assert code == "print(3)"
    assert isinstance(back, PromptArea)


@pytest.mark.usefixtures("bundled_model")
def test_the_log_follows_a_growing_answer_until_the_user_scrolls_up(tmp_path):
    settings = settings_for(tmp_path, threads=1)

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=400))
        async with app.run_test(size=(100, 24)) as pilot:
            pane = app.query_one(ChatPane)
            log = pane.query_one("#log")
            await ask(pilot, pane, "Write a long story about a lighthouse keeper, in ten paragraphs.")
            await wait_until(pilot, lambda: log.max_scroll_y > 5 or not pane.generating)
            following = (log.max_scroll_y, log.scroll_y)
            log.scroll_home(animate=False)  # the user scrolls up to read
            grown_from = log.max_scroll_y
            await wait_until(pilot, lambda: log.max_scroll_y > grown_from + 3 or not pane.generating)
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.pause(0.2)
            return following, grown_from, log.max_scroll_y, log.scroll_y

    following, grown_from, grown_to, kept = run(session())
    most, scrolled = following
    assert most > 5 and scrolled == most, "while the user has not scrolled, the end of the answer is in view"
    assert grown_to > grown_from, "the answer went on growing after the user scrolled up"
    assert kept == 0, "the user, scrolled up, is not pulled back down as the answer grows or ends"


def test_a_chat_opened_while_another_is_still_shown_shows_only_its_own_messages(tmp_path):
    """Opening a conversation takes awaits (the old messages removed, the new ones mounted): one opened while the
    app still shows another (the one it opens at start, on a slow machine) must not interleave with it and leave
    both conversations' messages in the log. On the scripted backend: what is checked is the log, not the model."""
    import asyncio

    from helpers.scripted_backend import scripted_model

    from localllm.store.conversations import ConversationStore
    from localllm.tui.shared_model import SharedModel

    settings = settings_for(tmp_path, discover=False)
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    chats = []
    for name in ("Rivers", "Mountains"):
        chat = store.create(name)
        store.add_message(chat.id, "user", f"About {name.lower()}?")
        store.add_message(chat.id, "assistant", f"{name} are long." if name == "Rivers" else f"{name} are high.")
        chats.append(chat)
    store.close()

    async def session():
        app = LocalLLMApp(settings, SHORT, shared=SharedModel(settings, loaded=scripted_model(["Hi."])))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None and len(pane._messages_in_log()) == 2)
            await asyncio.gather(*(pane._show_conversation(chat.id) for chat in chats))  # one after the other
            await pilot.pause()
            return pane.conversation_id, [message.text for message in pane._messages_in_log()]

    shown, texts = run(session())
    assert shown == chats[-1].id and texts == ["About mountains?", "Mountains are high."]
