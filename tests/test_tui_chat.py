"""The chat pane's tools on the real bundled model: regenerate, edit and resend, rename, search, a system prompt,
the parameter panel (saved to the config file), the model switcher, export, copy, remapped keys, the help screen and
the command palette's entries."""

import asyncio
import tomllib

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, on_screen, record_notifications, run, wait_until

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import AskLongText, AskText, PickOne
from localllm.tui.help import HelpScreen
from localllm.tui.params import ParameterPanel
from localllm.tui.prompt import PromptArea

SHORT = preset("precise").with_overrides(max_tokens=12)


async def answered(pilot, pane: ChatPane, text: str) -> None:
    before = await ask(pilot, pane, text)
    await wait_until(pilot, lambda: not pane.generating and pane.session is not None
                     and pane.session.stats.turns > before)


def stored_messages(settings):
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    try:
        return {c.title: [(m.role, m.content) for m in store.messages(c.id)] for c in store.list()}
    finally:
        store.close()


@pytest.mark.usefixtures("bundled_model")
def test_regenerate_replaces_the_last_answer_and_edit_puts_the_prompt_back(tmp_path):
    settings = settings_for(tmp_path)
    options = preset("creative").with_overrides(max_tokens=12, seed=1)

    async def session():
        app = LocalLLMApp(settings, options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await answered(pilot, pane, "Say a colour.")
            turns = pane.session.stats.turns
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            assert [m.role for m in pane.session.history] == ["user", "assistant"]
            assert len(pane.query_one("#log").children) == 2
            assert pane.session.model.backend is not None
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: pane.query_one("#prompt", PromptArea).text == "Say a colour.")
            assert pane.session.history == [] and len(pane.query_one("#log").children) == 0

    run(session())
    assert stored_messages(settings) == {"Say a colour.": []}


@pytest.mark.usefixtures("bundled_model")
def test_rename_search_system_prompt_and_export(tmp_path, monkeypatch):
    settings = settings_for(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            await pilot.press("ctrl+b")
            await wait_until(pilot, lambda: on_screen(app, AskLongText))
            app.screen.query_one("#answer").insert("Answer in French.")
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: pane.session.system == "Answer in French.")
            await answered(pilot, pane, "Hello there")
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            app.screen.query_one("#answer").value = "Greetings"
            await pilot.press("enter")
            sidebar = pane.query_one("#conversations")
            await wait_until(pilot, lambda: "Greetings" in str(sidebar.children[0].query_one("Label").render()))
            pane.store.create("Something else")
            await pilot.press("ctrl+f")
            await pilot.press(*"greet")
            await wait_until(pilot, lambda: len(sidebar.children) == 1)
            notes = record_notifications(app)
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            # The dialog offers the data folder's exports/ by its whole path, never the folder the app started in.
            assert app.screen.query_one("#answer").value == str(exports / "Greetings.md")
            await pilot.press("enter")
            await wait_until(pilot, lambda: (exports / "Greetings.md").exists())
            assert ("information", f"exported: exported to {exports.resolve() / 'Greetings.md'}") in notes
            # A relative name goes into the same folder.
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            app.screen.query_one("#answer").value = "chat.md"
            await pilot.press("enter")
            await wait_until(pilot, lambda: (exports / "chat.md").exists())
            # Exporting again to the same name leaves that file alone and offers the next free name.
            (exports / "chat.md").write_text("mine")
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            app.screen.query_one("#answer").value = "chat.md"
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, AskText)
                             and app.screen.query_one("#answer").value.endswith("chat_2.md"))
            await pilot.press("enter")
            await wait_until(pilot, lambda: (exports / "chat_2.md").exists())

    exports = settings.paths.data_dir / "exports"
    run(session())
    assert not (tmp_path / "chat.md").exists()
    assert (exports / "chat.md").read_text() == "mine"
    assert (exports / "chat_2.md").read_text().startswith("# Greetings")
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    (greetings,) = store.list("Greetings")
    assert greetings.system == "Answer in French."
    exported = store.export_markdown(greetings.id)
    assert exported.startswith("# Greetings") and "Hello there" in exported and "Answer in French." in exported
    store.close()


@pytest.mark.usefixtures("bundled_model")
def test_parameters_apply_to_the_session_and_persist_in_the_config_file(tmp_path):
    settings = settings_for(tmp_path)
    config = settings.paths.config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("# my settings\nthreads = 2\n")

    async def first():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(140, 50)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            await pilot.press("ctrl+o")
            panel = pane.query_one(ParameterPanel)
            assert panel.has_class("open")
            panel.query_one("#param-temperature").value = "0.3"
            panel.query_one("#param-top_k").value = "7"
            panel.query_one("#param-max_tokens").value = "9"
            panel.query_one("#param-seed").value = "not a number"
            panel.apply()
            await pilot.pause(0.1)
            assert pane.session.options.temperature == 0.0, "a bad value applies nothing"
            panel.query_one("#param-seed").value = "5"
            panel.apply()
            await wait_until(pilot, lambda: pane.session.options.top_k == 7)
            assert pane.session.options.temperature == 0.3 and pane.session.options.max_tokens == 9
            assert pane.session.options.seed == 5
            await wait_until(pilot, lambda: "options" in tomllib.loads(config.read_text()).get("tui", {}))

    run(first())
    text = config.read_text()
    assert text.startswith("# my settings\nthreads = 2\n"), "the user's own lines are kept"
    saved = tomllib.loads(text)["tui"]["options"]
    assert saved["temperature"] == 0.3 and saved["top_k"] == 7 and saved["seed"] == 5

    async def second():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(140, 50)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            assert pane.session.options.top_k == 7 and pane.session.options.temperature == 0.3

    run(second())


@pytest.mark.usefixtures("bundled_model")
def test_the_model_switcher_lists_models_with_their_verdict_and_loads_the_choice(tmp_path):
    settings = settings_for(tmp_path)

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            first = pane.session.model
            await pilot.press("ctrl+l")
            await wait_until(pilot, lambda: isinstance(app.screen, PickOne) and bool(app.screen.query("#choices")))
            options = app.screen.query_one("#choices")
            labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
            assert any("smollm2-135m" in label and "CPU only" in label for label in labels), labels
            assert [label for label in labels if label.startswith("● in use · ")] == [
                label for label in labels if "smollm2-135m" in label and "package" in label]
            options.focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: pane.session is not None and pane.session.model is not first)
            assert app.shared.loaded is pane.session.model
            await answered(pilot, pane, "Hi")
            assert tomllib.loads(settings.paths.config_file.read_text())["tui"]["model"]

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_keys_remapped_in_the_config_file_work_and_show_in_help_and_the_palette(tmp_path):
    settings = settings_for(tmp_path)
    settings.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    settings.paths.config_file.write_text('[keys]\n"chat.parameters" = "f8"\n"app.nothing" = "f7"\n'
                                          '[tui]\ncolour = "blue"\n')

    async def session():
        app = LocalLLMApp(settings, SHORT)
        notes = record_notifications(app)
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            assert any("colour" in message for _, message in notes), "a bad entry is reported"
            await pilot.press("f8")
            assert pane.query_one(ParameterPanel).has_class("open")
            await pilot.press("f9")
            await wait_until(pilot, lambda: on_screen(app, HelpScreen))
            help_text = app.screen.text
            assert "| F8 | Parameters | `chat.parameters` |" in help_text
            assert "`chat.regenerate`" in help_text and "`app.quit`" in help_text
            await pilot.press("escape")
            titles = [command.title for command in app.get_system_commands(app.screen)]
            for wanted in ("Chat: regenerate the last answer", "Chat: export this conversation to Markdown",
                           "Go to Hardware", "Help"):
                assert wanted in titles, titles

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_a_message_and_its_code_block_can_be_copied(tmp_path):
    settings = settings_for(tmp_path)
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    chat = store.create("Code")
    store.add_message(chat.id, "user", "A loop, please")
    store.add_message(chat.id, "assistant", "Here:\n\n```python\nfor i in range(3):\n    print(i)\n```\n")
    store.close()

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: len(pane.query_one("#log").children) == 2)  # opened at start
            pane.query_one("#log").focus()  # the last message, the answer, is picked first
            await pilot.press("k")
            assert app.clipboard.rstrip() == "for i in range(3):\n    print(i)"
            await pilot.press("c")
            assert app.clipboard.startswith("Here:")

    run(session())


@pytest.mark.usefixtures("bundled_model")
def test_two_app_instances_writing_the_same_database_keep_both_conversations(tmp_path):
    settings = settings_for(tmp_path)

    async def one_app(question: str) -> None:
        app = LocalLLMApp(settings, SHORT)
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            for turn in range(2):
                try:
                    await answered(pilot, pane, f"{question} ({turn})")
                except AssertionError as failure:
                    raise AssertionError(f"turn {turn} of {question!r}: {failure}; the app said {notes}; focus on "
                                         f"{app.focused!r}") from None

    async def both():
        await asyncio.gather(one_app("Name a fruit"), one_app("Name a tree"))

    run(both())
    saved = stored_messages(settings)
    assert sorted(saved) == ["Name a fruit (0)", "Name a tree (0)"]
    for title, messages in saved.items():
        assert [role for role, _ in messages] == ["user", "assistant"] * 2
        assert messages[2][1] == title.replace("(0)", "(1)")
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()
