"""The code pane on the real bundled model, driven with Pilot: open a file, run an action, save the answer's code
to a new file and never over an existing one; bad paths become notifications."""

import asyncio
import re
import time
from pathlib import Path

import pytest
from conftest import settings_for
from helpers.tui_helpers import PaneApp, one_thread, wait_until
from textual.widgets import Input, Select, TextArea

from localllm.core.errors import UsageError
from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tasks import code
from localllm.tasks.code import build_request
from localllm.tui.answer import StreamingAnswer
from localllm.tui.code import CodePane, suggested_path
from localllm.tui.shared_model import SharedModel

BUGGY = '''def total(items):
    """The sum of the items' prices."""
    return sum(item.price for item in item)
'''
ERROR = '''Traceback (most recent call last):
  File "cart.py", line 3, in total
    return sum(item.price for item in item)
NameError: name 'item' is not defined
'''


class CodeApp(PaneApp):
    PANE = CodePane


async def open_file(pilot, pane: CodePane, path: str) -> None:
    box = pane.query_one("#code-path", Input)
    box.value = path
    box.focus()
    await pilot.press("enter")
    await pilot.pause()


@pytest.mark.usefixtures("bundled_model")
def test_fix_streams_an_answer_that_saves_to_a_new_file_only(tmp_path):
    source = tmp_path / "cart.py"
    source.write_text(BUGGY)
    taken = tmp_path / "taken.py"
    taken.write_text("# keep me\n")
    options = preset("precise").with_overrides(max_tokens=48)

    async def session():
        app = CodeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await open_file(pilot, pane, str(source))
            editor = pane.query_one("#code-editor", TextArea)
            assert editor.text == BUGGY and editor.language == "python"
            pane.query_one("#code-action", Select).value = "fix"
            await pilot.pause()  # the choice is taken, as a user's would be, before typing
            pane.query_one("#code-detail", TextArea).load_text(ERROR)
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.generating and pane.answer)
            assert pane.answer.startswith("```python\n")
            assert pane.query_one("#code-result", StreamingAnswer).text == pane.answer
            status = str(pane.query_one("#code-status").render())
            assert "all of cart.py, 3 lines" in status and "tokens in" in status
            suggestion = pane.query_one("#code-save-path", Input).value
            assert suggestion == str(tmp_path / "cart_fixed.py")
            # Recorded as `localllm code` records it: a one-shot, the prompt with the code, the answer as shown.
            store = ConversationStore.in_data_dir(pane.settings.paths.data_dir)
            (recorded,) = store.list()
            assert (recorded.origin, recorded.title) == ("code", "code fix: all of cart.py, 3 lines")
            prompt, answer = store.messages(recorded.id)
            assert BUGGY.strip() in prompt.content and ERROR.strip().splitlines()[-1] in prompt.content
            assert answer.content == pane.answer and answer.finish in ("stop", "length")
            store.close()

            await pilot.press("ctrl+s")
            await pilot.pause()
            written = tmp_path / "cart_fixed.py"
            assert written.read_text().strip() and "```" not in written.read_text()
            assert ("information", f"saved: wrote the code block to {written} (it was not run)") in app.notes

            pane.query_one("#code-save-path", Input).value = str(taken)
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert taken.read_text() == "# keep me\n"
            assert app.notes[-1][0] == "warning" and "exists and was left as it was" in app.notes[-1][1]
            assert "--force" not in app.notes[-1][1]
            assert pane.query_one("#code-save-path", Input).value == str(tmp_path / "taken_2.py")
            assert source.read_text() == BUGGY

    asyncio.run(session())


@pytest.mark.usefixtures("bundled_model")
def test_generate_needs_no_file_and_explain_streams_markdown(tmp_path):
    options = preset("precise").with_overrides(max_tokens=32)

    async def session():
        app = CodeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#code-action", Select).value = "gen"
            await pilot.pause()  # the choice is taken, as a user's would be, before typing
            pane.query_one("#code-detail", TextArea).load_text("a function that reverses a string")
            await pilot.click("#code-run")
            await wait_until(pilot, lambda: not pane.generating and pane.answer)
            assert pane.answer.startswith("```python\n")

            pane.query_one("#code-editor", TextArea).load_text("print(sum(range(10)))\n")
            pane.query_one("#code-action", Select).value = "explain"
            await pilot.pause()  # the choice is taken, as a user's would be, before typing
            generated = pane.answer
            await pilot.click("#code-run")
            await wait_until(pilot, lambda: not pane.generating and pane.answer != generated)
            assert pane.answer.strip()
            assert "Explain: sent all of untitled.py" in str(pane.query_one("#code-status").render())

    asyncio.run(session())


def test_a_missing_file_or_missing_input_is_a_notification(tmp_path):
    async def session():
        app = CodeApp(one_thread(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await open_file(pilot, pane, str(tmp_path / "nowhere.py"))
            assert app.notes[-1][0] == "error" and "no such file" in app.notes[-1][1]
            assert pane.query_one("#code-editor", TextArea).text == ""

            pane.query_one("#code-action", Select).value = "fix"
            await pilot.pause()  # the choice is taken, as a user's would be, before typing
            await pilot.press("ctrl+r")
            assert "fix needs code" in app.notes[-1][1] and not pane.generating

            pane.query_one("#code-editor", TextArea).load_text("x = 1 / 0\n")
            await pilot.press("ctrl+r")
            assert "fix needs the error" in app.notes[-1][1] and not pane.generating

            await pilot.press("ctrl+s")
            assert "no answer to save" in app.notes[-1][1]

    asyncio.run(session())


def test_requests_are_the_cli_prompts_with_a_prefilled_fence_except_explain(loaded, tmp_path):
    settings = settings_for(tmp_path)
    source = code.CodeSource(Path("cart.py"), BUGGY, 1, 3, 3)
    options = preset("precise")
    explain = build_request(settings, loaded.backend, options, "explain", source, "")
    assert explain.options.answer_prefix is None and explain.options.max_tokens == code.ANSWER_TOKENS
    assert explain.messages == code.code_messages(settings, "explain", source, language=code.language_for("cart.py"))
    fix = build_request(settings, loaded.backend, options, "fix", source, ERROR)
    assert fix.options.answer_prefix == "```python\n" and ERROR.strip() in fix.messages[0].content
    convert = build_request(settings, loaded.backend, options.with_overrides(max_tokens=64), "convert", source, "go")
    assert convert.options.answer_prefix == "```go\n" and convert.options.max_tokens == 64
    gen = build_request(settings, loaded.backend, options, "gen", None, "reverse a string")
    assert gen.sent == "the description" and "reverse a string" in gen.messages[0].content
    with pytest.raises(UsageError, match="unknown language"):
        build_request(settings, loaded.backend, options, "convert", source, "klingon")


def test_suggested_paths_never_name_an_existing_file(tmp_path):
    source = tmp_path / "app.py"
    source.write_text("x = 1\n")
    assert suggested_path(source, "explain", "") is None
    assert suggested_path(source, "test", "") == tmp_path / "test_app.py"
    assert suggested_path(source, "convert", "javascript") == tmp_path / "app.js"
    (tmp_path / "app_fixed.py").write_text("")
    assert suggested_path(source, "fix", "") == tmp_path / "app_fixed_2.py"


def test_snapshot_with_a_file_open(tmp_path, monkeypatch, snap_compare):
    (tmp_path / "cart.py").write_text(BUGGY)
    monkeypatch.chdir(tmp_path)
    app = CodeApp(one_thread(tmp_path), preset("precise"))

    async def open_cart(pilot):
        await open_file(pilot, app.pane, "cart.py")
        app.pane.query_one("#code-action", Select).value = "fix"
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=open_cart)


@pytest.mark.usefixtures("bundled_model")
def test_escape_stops_a_long_answer_and_keeps_it(tmp_path):
    options = preset("precise").with_overrides(max_tokens=2000, repeat_penalty=1.0)

    async def session():
        app = CodeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#code-action", Select).value = "gen"
            await pilot.pause()  # the choice is taken, as a user's would be, before typing
            # A prompt the bundled model answers at its 2,000-token limit (greedy), so Esc lands mid-answer.
            pane.query_one("#code-detail", TextArea).load_text(
                "a long Python program: a text adventure game with ten rooms, each room a class with a long "
                "description")
            await pilot.press("ctrl+r")
            result = pane.query_one("#code-result", StreamingAnswer)
            await wait_until(pilot, lambda: pane.generating and len(result.text) > 40)
            await pilot.press("escape")
            started = time.monotonic()
            await wait_until(pilot, lambda: not pane.generating, timeout=30)
            assert time.monotonic() - started < 8  # room for a loaded machine; unstopped, ~1,950 tokens were left
            assert "stopped" in str(pane.query_one("#code-status").render())
            assert pane.answer.startswith("```python\n") and result.text == pane.answer
            await pilot.pause()
            assert str(result.query_one("Static.finish").render()) == "■ stopped before the end"  # in the answer too

    asyncio.run(session())


def test_every_action_has_a_binding_id_and_a_palette_command(tmp_path):
    # Leaving the editor with Esc is how the editor behaves, not an action to look up: it has no id.
    actions = [binding for binding in CodePane.BINDINGS if binding.action != "leave_editor"]
    assert [binding.id for binding in actions] == ["code.run", "code.open", "code.save", "code.stop"]
    pane = CodePane(settings_for(tmp_path), preset("precise"), SharedModel(settings_for(tmp_path)))
    callbacks = {command.callback.__name__ for command in pane.palette_commands()}
    assert callbacks == {f"action_{binding.action}" for binding in actions}


@pytest.mark.usefixtures("bundled_model")
def test_each_action_keeps_its_own_input_and_the_save_name_follows_the_answer(tmp_path):
    source = tmp_path / "cart.py"
    source.write_text(BUGGY)
    options = preset("precise").with_overrides(max_tokens=48)

    async def session():
        app = CodeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await open_file(pilot, pane, str(source))
            action, detail = pane.query_one("#code-action", Select), pane.query_one("#code-detail", TextArea)
            action.value = "fix"
            await pilot.pause()
            detail.load_text(ERROR)
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.generating and pane.answer)
            first_name = pane.query_one("#code-save-path", Input).value
            action.value = "convert"
            await pilot.pause()
            empty_for_convert = detail.text
            detail.load_text("JavaScript")
            fixed = pane.answer
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.generating and pane.answer != fixed)
            second_name = pane.query_one("#code-save-path", Input).value
            action.value = "fix"
            await pilot.pause()
            return first_name, empty_for_convert, second_name, detail.text

    first_name, empty_for_convert, second_name, fix_detail = asyncio.run(session())
    assert first_name == str(tmp_path / "cart_fixed.py")
    assert empty_for_convert == ""
    assert second_name in (str(tmp_path / "cart.js"), "")  # "" when the small model wrote no code block
    assert fix_detail == ERROR


def test_a_traceback_pasted_before_choosing_fix_is_kept_for_it(tmp_path):
    async def session():
        app = CodeApp(settings_for(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            action, detail = pane.query_one("#code-action", Select), pane.query_one("#code-detail", TextArea)
            start = action.value
            detail.load_text(ERROR)  # pasted while "explain", which takes nothing, is chosen
            action.value = "fix"
            await pilot.pause()
            kept = detail.text
            action.value = "convert"
            await pilot.pause()
            for_convert = detail.text
            action.value = "fix"
            await pilot.pause()
            return start, kept, for_convert, detail.text

    start, kept, for_convert, back = asyncio.run(session())
    assert start == "explain"
    assert kept == ERROR and for_convert == "" and back == ERROR


@pytest.mark.usefixtures("bundled_model")
def test_a_file_too_long_for_the_window_is_refused_with_the_answer_room_and_where_to_raise_it(tmp_path):
    long_file = tmp_path / "long.py"
    long_file.write_text("".join(f"def function_{n}(value):\n    return value * {n}\n\n" for n in range(300)))

    async def session():
        app = CodeApp(one_thread(tmp_path), preset("precise"), ctx=1024)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await open_file(pilot, pane, str(long_file))
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.generating and app.notes)
            return [text for severity, text in app.notes if severity == "error"]

    errors = asyncio.run(session())
    assert len(errors) == 1
    assert re.search(r"takes [\d,]+ tokens with the instructions; with [\d,]+ kept for the answer, that is over "
                     r"the 1,024-token window", errors[0]), errors[0]
    assert "FILE:START-END" in errors[0] and "Ctrl+O" in errors[0] and "-o ctx" not in errors[0]


@pytest.mark.usefixtures("bundled_model")
def test_one_escape_in_the_editor_stops_the_answer(tmp_path):
    options = preset("precise").with_overrides(max_tokens=2000)

    async def session():
        app = CodeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#code-action", Select).value = "gen"
            await pilot.pause()
            # The bundled model's answer to this runs to the 2,000-token limit (a shorter one, 85 tokens, could end
            # before the Esc lands on a fast machine).
            pane.query_one("#code-detail", TextArea).load_text(
                "a Python dictionary that maps each of the 200 most common English words to its length")
            pane.query_one("#code-editor", TextArea).focus()
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: pane.generating)
            pane.query_one("#code-editor", TextArea).focus()  # running moved the focus to the answer
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.generating, timeout=30)  # unstopped, 2,000 tokens on one thread
            stopped = "stopped" in str(pane.query_one("#code-status").render())
            pane.query_one("#code-editor", TextArea).focus()
            await pilot.press("escape")
            await pilot.pause()
            return stopped, app.focused

    stopped, focused = asyncio.run(session())
    assert stopped
    assert isinstance(focused, Select)
