"""How an answer ends is shown, stored and acted on, on the real bundled model: an answer cut at its token limit
is marked in the message and the status bar, stored as cut, and F8 continues it from its last word; a stopped
answer is marked, and still marked after the app restarts; an over-long message is refused before it is added:
the text stays in the box, no conversation is left behind, and the message says by how much it is over."""

import threading

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.core.settings import Tuned
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.prompt import PromptArea
from localllm.tui.sidebar import ConversationItem

STORY = "Write a long story about a dragon who learns to bake bread."


def stored(settings):
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    try:
        return [(m.role, m.content, m.finish) for c in store.list() for m in store.messages(c.id)]
    finally:
        store.close()


def finish_line(pane: ChatPane) -> str:
    lines = pane.query("ChatMessage Static.finish")
    return str(lines.last().render()) if lines else ""


@pytest.mark.usefixtures("bundled_model")
def test_a_cut_answer_is_marked_stored_and_continued(tmp_path):
    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=8))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, STORY)
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()
            cut = (finish_line(pane), str(pane.query_one("#status").render()), pane.session.history[-1].content)
            await pilot.press("f8")
            try:
                await wait_until(pilot, lambda: not pane.generating and len(pane.session.history[-1].content) > len(
                    cut[2]))
            except AssertionError:
                raise AssertionError(f"not continued; the app said {notes}; focus on {app.focused!r}") from None
            await pilot.pause()
            return cut, finish_line(pane), pane.session.history[-1].content, pane._messages_in_log()[-1].text

    (line, status, first), again, continued, shown = run(session())
    assert line == "✂ cut: the answer reached its token limit · F8 continues"
    assert "cut at the token limit" in status
    assert continued.startswith(first) and len(continued) > len(first) and shown == continued
    assert again.startswith("✂ cut")  # the continuation had 8 tokens too
    assert stored(settings) == [("user", STORY, None), ("assistant", continued, "length")]


@pytest.mark.usefixtures("bundled_model")
def test_a_stopped_answer_is_marked_and_stays_marked_after_a_restart(tmp_path):
    settings = settings_for(tmp_path)

    async def first_session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await ask(pilot, pane, STORY)
            await wait_until(pilot, lambda: len(pane._messages_in_log()[-1].text) > 20)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.pause()
            return finish_line(pane)

    async def second_session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            conversation = pane.store.list()[0]
            pane.sidebar.post_message(pane.sidebar.Opened(conversation.id))
            await wait_until(pilot, lambda: len(pane._messages_in_log()) == 2)
            await pilot.pause()
            return finish_line(pane)

    assert run(first_session()) == "■ stopped before the end · F8 continues"
    assert stored(settings)[-1][2] == "stopped"
    assert run(second_session()) == "■ stopped before the end · F8 continues"


@pytest.mark.usefixtures("bundled_model")
def test_an_over_long_message_is_refused_and_kept_in_the_box(tmp_path):
    settings = settings_for(tmp_path, ctx=512)
    pasted = "The quick brown fox jumps over the lazy dog. " * 300

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=8))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            pane.query_one("#prompt", PromptArea).insert(pasted)
            await pilot.press("enter")
            await wait_until(pilot, lambda: any(title == "error" for title, _ in notes))
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.pause()
            listed = len(pane.sidebar.query(ConversationItem))
            return notes, pane.query_one("#prompt", PromptArea).text, len(pane._messages_in_log()), listed

    notes, box, logged, listed = run(session())
    assert box == pasted.strip() and logged == 0
    assert listed == 0, "the conversation made for the refused message is not left in the list"
    assert stored(settings) == []
    message = next(text for severity, text in notes if severity == "error")
    assert message.startswith("not sent: this message is ") and "over the 512-token window" in message
    assert "Ctrl+O" in message and "-o ctx" not in message


@pytest.mark.usefixtures("bundled_model")
def test_esc_while_a_long_prompt_is_read_stops_at_once(tmp_path):
    import time

    # One batch for the whole prompt (~1,800 tokens, over ten seconds to read here): a stop that waited for the
    # batch to end, instead of aborting it, would take all of that.
    settings = settings_for(tmp_path, tuned=Tuned(batch=2048))
    long_prompt = "Summarize this: " + "The river flows past the old mill. " * 220

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=8))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, long_prompt)
            await wait_until(pilot, lambda: "reading the prompt (" in str(pane.query_one("#status").render()))
            pressed = time.monotonic()
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating)
            stopped_after = time.monotonic() - pressed
            written = pane._messages_in_log()[-1].text
            await pilot.pause()
            note = finish_line(pane)
            await pilot.press("ctrl+n")  # a new chat: the long prompt is not read a second time
            await ask(pilot, pane, "Name a colour.")  # the model answers the next message as before
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns + 1)
            return stopped_after, written, note, pane._messages_in_log()[-1].text

    stopped_after, written, note, next_answer = run(session())
    assert written == "" and note == "■ stopped before the end · F8 continues"  # no token was written
    assert stopped_after < 5, stopped_after  # generous for a loaded machine: the whole read takes far longer
    # The stopped exchange is kept; the new chat's (listed first) was answered.
    assert [(role, finish) for role, _, finish in stored(settings)][2:] == [("user", None), ("assistant", "stopped")]
    assert next_answer


def test_a_reasoning_models_thinking_is_shown_apart_and_never_sent_back(tmp_path):
    # The scripted backend: text as a reasoning model writes it, through the same thinking split as every backend.
    from helpers.scripted_backend import scripted_model

    from localllm.tui.shared_model import SharedModel

    tokens = ["<think>", "\nThe user", " wants", " a colour", ".\n", "</think>", "\n\n", "Blue", "."]
    settings = settings_for(tmp_path)
    # The thinking ends only once the test has looked at it: with a pace alone, a loaded machine's app could take
    # the thinking and its end in one go, and never show it open.
    looked = threading.Event()

    async def session():
        shared = SharedModel(settings, loaded=scripted_model(tokens, delay_s=0.05, hold=(tokens.index("</think>"),
                                                                                         looked)))
        app = LocalLLMApp(settings, preset("precise"), shared=shared)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            statuses: list[str] = []
            shown = pane._status
            pane._status = lambda text: (statuses.append(text), shown(text))
            turns = await ask(pilot, pane, "Pick a colour.")
            answer = pane._messages_in_log()[-1]
            try:
                await wait_until(pilot, lambda: "colour" in answer.thinking and ".\n" in answer.thinking)
                await wait_until(pilot, lambda: any("thinking…" in status for status in statuses))
                block = answer.query_one("Collapsible")
                open_while_thinking = not block.collapsed
            finally:
                looked.set()
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()
            return (open_while_thinking, block.collapsed, answer.text, answer.thinking,
                    [m.content for m in pane.session.history], statuses)

    open_while_thinking, folded, text, thinking, history, statuses = run(session())
    assert open_while_thinking and folded
    assert text == "Blue." and thinking == "\nThe user wants a colour.\n"
    assert history == ["Pick a colour.", "Blue."]  # the thinking is not sent back in later turns
    assert stored(settings) == [("user", "Pick a colour.", None), ("assistant", "Blue.", "stop")]
    assert any("thinking…" in status for status in statuses), statuses
