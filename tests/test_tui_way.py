"""The app keeps the user's way: an opened range keeps the file's line numbers, F7 reaches the conversation list and
comes back, the first screen says what to do, notices keep off the prompt box and the status bar, dialogs wrap their
text, and the models pane's columns fit 80 and 120 columns without cutting a verdict. With snapshots of the first
screen and the models pane at 80x24 and 140x45."""

import pytest
from conftest import settings_for
from helpers.tui_helpers import TEST_MACHINE, PaneApp, on_screen, one_thread, run, starter_introduced, wait_until
from textual.app import App
from textual.widgets import DataTable, Input, ListView

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.code import CodePane
from localllm.tui.dialogs import Confirm
from localllm.tui.help import HelpScreen
from localllm.tui.models import (
    CATALOG_COLUMNS,
    CATALOG_STEPS,
    INSTALLED_COLUMNS,
    INSTALLED_STEPS,
    ModelsPane,
    fit_columns,
)
from localllm.tui.prompt import PromptArea

BUGGY = "".join(f"value_{n} = {n}\n" for n in range(1, 9))


class CodeApp(PaneApp):
    PANE = CodePane


def test_an_opened_range_keeps_the_files_line_numbers(tmp_path):
    (tmp_path / "buggy.py").write_text(BUGGY)

    async def session():
        app = CodeApp(one_thread(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            box = app.pane.query_one("#code-path", Input)
            box.value = f"{tmp_path / 'buggy.py'}:3-5"
            box.focus()
            await pilot.press("enter")
            await pilot.pause()
            editor = app.pane.query_one("#code-editor")
            assert editor.text == "value_3 = 3\nvalue_4 = 4\nvalue_5 = 5\n"
            assert editor.line_number_start == 3
            gutter = [editor.render_line(y).text.split("value")[0].strip() for y in range(3)]
            assert gutter == ["3", "4", "5"]
            # The whole file again: numbered from 1.
            box.value = str(tmp_path / "buggy.py")
            box.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert editor.line_number_start == 1

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_f7_goes_to_the_conversation_list_and_back_and_the_help_screen_says_so(tmp_path):
    settings = starter_introduced(settings_for(tmp_path, discover=False))
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    store.create("First")
    store.create("Second")
    store.close()

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            prompt = pane.query_one("#prompt", PromptArea)
            await wait_until(pilot, lambda: pane.conversation_id is not None)
            assert app.focused is prompt
            await pilot.press("f7")
            view = pane.query_one("#conversations", ListView)
            assert app.focused is view
            await pilot.press("down", "enter")  # the list works from the keyboard: the other conversation opens
            await wait_until(pilot, lambda: pane.store.get(pane.conversation_id).title == "First")
            await pilot.press("f7")
            await pilot.press("f7")
            assert app.focused is prompt
            # In the footer where it fits.
            footer_keys = [b.key for _, b, enabled, *_ in app.screen.active_bindings.values() if b.show and enabled]
            assert "f7" in footer_keys
            await pilot.press("f9")
            await wait_until(pilot, lambda: on_screen(app, HelpScreen))
            assert "| F7 | Chats | `chat.list` |" in app.screen.text
            await pilot.press("escape")

        # Under 70 columns the list is hidden for the chat's width: F7 shows it while it has the focus.
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(64, 24)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.conversation_id is not None)
            sidebar = pane.sidebar
            assert not sidebar.display or sidebar.region.width == 0
            await pilot.press("f7")
            await pilot.pause()
            assert app.focused is pane.query_one("#conversations") and sidebar.region.width > 0
            await pilot.press("f7")
            await pilot.pause()
            assert app.focused is pane.query_one("#prompt") and sidebar.region.width == 0

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_the_first_screen_says_what_to_do_and_notices_keep_off_the_prompt_box(tmp_path):
    settings = settings_for(tmp_path, discover=False)  # a first run: the starter model is introduced

    async def session():
        app = LocalLLMApp(settings, preset("precise"))
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            await pilot.pause()
            prompt = pane.query_one("#prompt", PromptArea)
            assert "Enter sends" in str(prompt.placeholder)
            welcome = pane.query_one("#welcome")
            text = "\n".join(welcome.render_line(y).text for y in range(welcome.region.height))
            assert pane.session.model.ref.name in text and "tokens/s" in text
            await wait_until(pilot, lambda: pane._starter_note is not None)
            await pilot.pause()
            text = "\n".join(welcome.render_line(y).text for y in range(welcome.region.height))
            assert "tiny starter model" in " ".join(text.split()) and "localllm pull" in " ".join(text.split())
            for key in ("Enter", "Ctrl+N", "F7", "Ctrl+L", "F9"):
                assert key in text
            app.notify("a notice that must not hide the prompt box", timeout=30)
            await pilot.pause(0.3)
            from textual.widgets._toast import ToastRack

            rack = app.screen.query_one(ToastRack)
            await wait_until(pilot, lambda: bool(rack.query("Toast")) and rack.query_one("Toast").region.height > 0)
            toast = rack.query_one("Toast").region
            assert not toast.overlaps(prompt.region) and not toast.overlaps(pane.query_one("#status").region)
            # The welcome gives way to the conversation.
            prompt.insert("Hello")
            await pilot.press("enter")
            await wait_until(pilot, lambda: not pane.query("#welcome"))
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: bool(pane.query("#welcome")))

    run(session())


class DialogApp(App):
    def on_mount(self) -> None:
        self.push_screen(Confirm("smollm2-135m needs about 430 MiB of memory and this machine has 40 MiB available.\n"
                                 "Use a smaller quant, or free memory first.\n\nPull smollm2-135m:q8_0 anyway? It is "
                                 "downloaded and installed; loading it is refused while it does not fit.",
                                 yes="Pull anyway", no="Cancel"))


@pytest.mark.parametrize("width", [80, 120])
def test_a_dialog_wraps_its_text_inside_the_terminal(width):
    async def session():
        app = DialogApp()
        async with app.run_test(size=(width, 30)) as pilot:
            await pilot.pause()
            label = app.screen.query_one("#confirm-question")
            box = label.parent
            assert box.region.right <= width and label.region.right <= box.region.right
            shown = " ".join(label.render_line(y).text.strip() for y in range(label.region.height))
            assert shown.endswith("while it does not fit.")

    run(session())


def test_the_models_columns_fit_80_and_120_columns_and_keep_the_verdict():
    installed = [("qwen2.5-coder-14b-instruct-q4_k_m", "8.37 GiB", "Q4_K_M", "will not fit · base model",
                  "~0.6 tok/s", "ollama (/usr/share/ollama/.ollama/models)")]
    catalog = [("qwen2.5-coder-14b-instruct", "q4_k_m", "14.77B", "~8.37 GiB", "will not fit", "~0.6 tok/s",
                "installed")]
    for room in (78, 89):
        for labels, rows, steps in ((INSTALLED_COLUMNS, installed, INSTALLED_STEPS),
                                    (CATALOG_COLUMNS, catalog, CATALOG_STEPS)):
            kept = dict(fit_columns(labels, rows, room, steps))
            assert sum(width + 2 for width in kept.values()) <= room
            verdict, speed = labels.index("VERDICT"), labels.index("EST. SPEED")
            assert kept[verdict] >= len(rows[0][verdict]) and kept[speed] >= len(rows[0][speed])


class ModelsApp(App):
    def __init__(self, settings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self):
        yield ModelsPane(self.settings, report=TEST_MACHINE)


@pytest.mark.parametrize("size", [(80, 24), (140, 45)], ids=["80x24", "140x45"])
def test_models_tables_fit_their_room(tmp_path, size):
    async def session():
        app = ModelsApp(settings_for(tmp_path, discover=False))
        async with app.run_test(size=size) as pilot:
            table = app.query_one("#catalog", DataTable)
            await wait_until(pilot, lambda: table.row_count > 0)
            await pilot.pause()
            for table in app.query(DataTable):
                assert table.virtual_size.width <= table.scrollable_content_region.width

    run(session())


@pytest.mark.parametrize("size", [(80, 24), (140, 45)], ids=["80x24", "140x45"])
@pytest.mark.usefixtures("bundled_model")
def test_snapshot_of_the_first_screen(tmp_path, snap_compare, size):
    app = LocalLLMApp(starter_introduced(settings_for(tmp_path, discover=False)), preset("precise"))

    async def ready(pilot):
        pane = app.query_one(ChatPane)
        await wait_until(pilot, lambda: pane.session is not None)
        prompt = pane.query_one("#prompt", PromptArea)
        prompt.cursor_blink = False
        prompt.notify_style_update()
        app.clear_notifications()  # a self-check announcement (an AMX CPU) would differ from machine to machine
        # The speed is an estimate from this machine's memory: the picture keeps a fixed one.
        welcome = pane.query_one("#welcome")
        loaded = pane.session.model
        from dataclasses import replace

        pane.session.model = replace(loaded, plan=replace(loaded.plan, decode_tokens_per_s=50.0, n_threads=2))
        welcome.update(pane._welcome())
        pane.session.model = loaded
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", [(80, 24), (140, 45)], ids=["80x24", "140x45"])
def test_snapshot_of_the_models_pane(tmp_path, snap_compare, size):
    app = ModelsApp(settings_for(tmp_path, discover=False))

    async def listed(pilot):
        await wait_until(pilot, lambda: app.query_one("#catalog", DataTable).row_count > 0)
        app.query_one("#catalog", DataTable).focus()  # a catalog row's details: an installed one names a local path
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=listed)
