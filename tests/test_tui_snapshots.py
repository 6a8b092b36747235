"""SVG snapshots of the chat pane (a stored conversation, the real bundled model loaded; and one whose answers were
stopped and cut, with a message refused as too long, at 80x24 and 140x45), the hardware pane (a fixed machine, so the
picture does not depend on where the tests run) and the help screen. Update them on purpose with
`python -m pytest tests/test_tui_snapshots.py --snapshot-update`."""

import pytest
from conftest import settings_for
from helpers.tui_helpers import TEST_MACHINE, on_screen, starter_introduced, wait_until
from textual.app import App

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.hardware import HardwarePane
from localllm.tui.help import HelpScreen
from localllm.tui.prompt import PromptArea


def stored_conversation(settings) -> None:
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    store.create("An older chat")
    chat = store.create("Rivers")
    store.add_message(chat.id, "user", "Name two rivers in Europe, with a line of Python that prints them.")
    store.add_message(chat.id, "assistant", "The **Danube** and the **Rhine**.\n\n```python\n"
                                            "print(['Danube', 'Rhine'])\n```\n")
    store.close()
    import sqlite3

    # The list shows when each conversation last changed: a fixed day long ago draws the same in every run.
    with sqlite3.connect(settings.paths.data_dir / "conversations.db") as db:
        db.execute("UPDATE conversations SET created = ?, updated = ?",
                   ("2020-01-05T12:00:00+00:00", "2020-01-05T12:00:00+00:00"))


@pytest.mark.usefixtures("bundled_model")
def test_snapshot_of_the_chat_pane(tmp_path, snap_compare):
    settings = starter_introduced(settings_for(tmp_path, discover=False))
    stored_conversation(settings)
    app = LocalLLMApp(settings, preset("precise"))

    async def open_it(pilot):
        pane = app.query_one(ChatPane)
        await wait_until(pilot, lambda: pane.session is not None)
        # The app opens the conversation changed last.
        await wait_until(pilot, lambda: len(pane.query_one("#log").children) == 2)
        prompt = pane.query_one("#prompt")
        prompt.cursor_blink = False  # a blinking cursor would draw differently run to run
        prompt.focus()
        # TextArea caches its lines under a key that leaves the cursor out when it does not blink: a line drawn
        # before the box had the focus stayed drawn without the cursor now and then. Drawn afresh, it has it.
        prompt.notify_style_update()
        # On a CPU where llama.cpp's self-check answers only with the safe setting (AMX), the load is announced in
        # a notification: the picture is of the conversation, the same on every machine.
        app.clear_notifications()
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(120, 36), run_before=open_it)


def ended_conversation(settings) -> None:
    """One answer stopped by the user, one cut at its token limit, each with the mark it is stored with."""
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    chat = store.create("Endings")
    store.add_message(chat.id, "user", "Tell me about the Danube.")
    stopped = store.add_message(chat.id, "assistant", "", stopped=True)
    store.update_message(stopped.id, "The Danube rises in the Black Forest and", stopped=True, finish="stopped")
    store.add_message(chat.id, "user", "List the countries it flows through.")
    cut = store.add_message(chat.id, "assistant", "")
    store.update_message(cut.id, "1. Germany\n2. Austria\n3. Slovakia\n4. Hun", stopped=False, finish="length")
    store.close()
    import sqlite3

    with sqlite3.connect(settings.paths.data_dir / "conversations.db") as db:
        db.execute("UPDATE conversations SET created = ?, updated = ?",
                   ("2020-01-05T12:00:00+00:00", "2020-01-05T12:00:00+00:00"))


@pytest.mark.parametrize("size", [(80, 24), (140, 45)], ids=["80x24", "140x45"])
@pytest.mark.usefixtures("bundled_model")
def test_snapshot_of_a_stopped_a_cut_answer_and_a_refused_message(tmp_path, snap_compare, size):
    settings = starter_introduced(settings_for(tmp_path, discover=False, ctx=512))
    ended_conversation(settings)
    app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=8))

    async def refuse(pilot):
        pane = app.query_one(ChatPane)
        await wait_until(pilot, lambda: pane.session is not None)
        await wait_until(pilot, lambda: len(pane.query_one("#log").children) == 4)
        app.clear_notifications()  # a self-check announcement (an AMX CPU) would differ from machine to machine
        prompt = pane.query_one("#prompt", PromptArea)
        prompt.cursor_blink = False
        prompt.focus()
        prompt.insert("The river flows past the old mill. " * 80)  # over the 512-token window
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(n.title == "not sent" for n in app._notifications))
        await wait_until(pilot, lambda: not pane.generating)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=refuse)


class HardwareApp(App):
    def compose(self):
        yield HardwarePane(self.settings, report=TEST_MACHINE)


def test_snapshot_of_the_hardware_pane(tmp_path, snap_compare):
    app = HardwareApp()
    app.settings = starter_introduced(settings_for(tmp_path, discover=False))

    async def detected(pilot):
        report = app.query_one("#hardware-report")
        await wait_until(pilot, lambda: "Backend" in report.source)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 30), run_before=detected)


@pytest.mark.usefixtures("bundled_model")
def test_snapshot_of_the_help_screen(tmp_path, snap_compare):
    app = LocalLLMApp(starter_introduced(settings_for(tmp_path, discover=False)), preset("precise"))

    async def help_open(pilot):
        # The status bar shows under the help: it says "context 0/…" once the model has loaded, which a loaded
        # machine takes longer to do than drawing the help.
        pane = app.query_one(ChatPane)
        await wait_until(pilot, lambda: pane.session is not None)
        app.clear_notifications()  # a self-check announcement (an AMX CPU) would differ from machine to machine
        await pilot.press("f9")
        await wait_until(pilot, lambda: on_screen(app, HelpScreen))
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(120, 40), run_before=help_open)
