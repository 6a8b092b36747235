"""The summarize pane on the real bundled model, driven with Pilot: files and pasted text, the chunk plan before
anything is generated, progress call by call, the summary shown, saved to a new file only, and copied."""

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import settings_for
from helpers.tui_helpers import PaneApp, one_thread, wait_until
from textual.widgets import Input, ProgressBar, Select, TextArea

from localllm.core.options import preset
from localllm.core.settings import Tuned
from localllm.tasks.summarize import STYLES, words_to_tokens
from localllm.tui.activity import SPINNER
from localllm.tui.answer import StreamingAnswer
from localllm.tui.shared_model import SharedModel
from localllm.tui.summarize import SummarizePane

DATA = Path(__file__).parent / "data"


class SummarizeApp(PaneApp):
    PANE = SummarizePane


async def add_files(pilot, pane: SummarizePane, *paths) -> None:
    box = pane.query_one("#sum-paths", Input)
    box.value = " ".join(str(path) for path in paths)
    box.focus()
    await pilot.press("enter")
    await pilot.pause()


def text_of(pane: SummarizePane, widget_id: str) -> str:
    return str(pane.query_one(widget_id).render())


@pytest.mark.usefixtures("bundled_model")
def test_two_files_are_planned_as_one_call_summarized_saved_copied_and_cleared(tmp_path):
    options = preset("precise").with_overrides(max_tokens=48)
    saved = tmp_path / "out" / "summary.md"
    taken = tmp_path / "taken.md"
    taken.write_text("keep me\n")

    async def session():
        app = SummarizeApp(one_thread(tmp_path), options)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await add_files(pilot, pane, DATA / "meeting-notes.md", DATA / "article.txt")
            assert "meeting-notes.md (markdown), article.txt (text)" in text_of(pane, "#sum-files")
            await wait_until(pilot, lambda: pane.plan is not None)
            plan_line = text_of(pane, "#sum-plan")
            assert f"{pane.plan.input_tokens:,} tokens in 2 source(s)" in plan_line and "1 call" in plan_line
            assert pane.plan.input_tokens > 400 and pane.plan.answer_tokens == 48 and not pane.summary

            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: not pane.running and pane.summary)
            assert pane.calls_done == 1 and pane.query_one("#sum-progress", ProgressBar).progress == 1
            assert pane.query_one("#sum-result", StreamingAnswer).text == pane.summary
            assert text_of(pane, "#sum-status").startswith("done: 1 call(s)")

            pane.query_one("#sum-save-path", Input).value = str(saved)
            await pilot.press("ctrl+s")
            assert saved.read_text() == pane.summary.rstrip("\n") + "\n"
            pane.query_one("#sum-save-path", Input).value = str(taken)
            await pilot.press("ctrl+s")
            assert taken.read_text() == "keep me\n"
            assert app.notes[-1][0] == "error" and "exists; it was left as it was" in app.notes[-1][1]

            await pilot.press("ctrl+l")
            assert app.clipboard == pane.summary and app.notes[-1][1].startswith("copied")

            await pilot.click("#sum-clear")  # a fresh start: the files and their summary go
            assert pane.files == [] and pane.summary == ""
            assert pane.query_one("#sum-result", StreamingAnswer).text == "*The summary appears here.*"
            assert "no files" in text_of(pane, "#sum-files") and not text_of(pane, "#sum-status").startswith("done")
            await pilot.press("ctrl+s")
            assert "there is no summary to save yet" in app.notes[-1][1]

    asyncio.run(session())


def long_text() -> str:
    """About 630 tokens: over what a 768-token window holds in one call, so two chunks and a combining call."""
    article = (DATA / "article.txt").read_text()
    return "\n\n".join([(DATA / "meeting-notes.md").read_text(), article, article])


@pytest.mark.usefixtures("bundled_model")
def test_a_long_input_is_chunked_and_each_call_reports_progress(tmp_path):
    options = preset("precise").with_overrides(max_tokens=32)
    seen_progress: set[int] = set()
    messages: set[str] = set()

    async def session():
        app = SummarizeApp(one_thread(tmp_path), options, ctx=768)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#sum-style", Select).value = "tldr"
            pane.query_one("#sum-text", TextArea).load_text(long_text())
            await wait_until(pilot, lambda: pane.plan is not None)
            plan = pane.plan
            assert not plan.single and len(plan.chunks) >= 2 and plan.calls > len(plan.chunks)
            assert f"{len(plan.chunks)} chunks" in text_of(pane, "#sum-plan")
            assert f"{plan.calls} calls" in text_of(pane, "#sum-plan")

            await pilot.click("#sum-run")
            deadline = time.monotonic() + 180  # a failed summary (never a summary) fails here instead of hanging
            while pane.running or not pane.summary:
                assert time.monotonic() < deadline, text_of(pane, "#sum-status")
                seen_progress.add(pane.calls_done)
                messages.add(text_of(pane, "#sum-progress-text"))
                await pilot.pause(0.05)
            assert len(pane.query_one("#sum-result", StreamingAnswer).text) > 0
            return plan

    plan = asyncio.run(session())
    assert {1, len(plan.chunks)} <= seen_progress
    # A spinner, the call and its prompt's size while it is read, and the seconds so far.
    assert any(re.fullmatch(f"[{SPINNER}] part 1 of {len(plan.chunks)}: reading [0-9,]+ tokens… \\d+ s \\(Esc stops\\)",
                            message) for message in messages), messages


@pytest.mark.usefixtures("bundled_model")
def test_the_bar_moves_while_a_long_prompt_is_read_and_escape_stops_it_there(tmp_path):
    bar_values: list[float] = []

    async def session():
        # One call over the whole text: ~1,900 tokens of prompt, seconds of reading before the first token, read in
        # pieces of 128 tokens (the batch size `bench --tune` would save), each moving the bar.
        settings = replace(one_thread(tmp_path), tuned=Tuned(batch=128))
        app = SummarizeApp(settings, preset("precise").with_overrides(max_tokens=32), ctx=4096)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#sum-text", TextArea).load_text("\n\n".join([long_text()] * 3))
            await pilot.click("#sum-run")
            bar = pane.query_one("#sum-progress", ProgressBar)

            def moved_twice() -> bool:
                if bar.progress not in bar_values:
                    bar_values.append(bar.progress)
                return len([value for value in bar_values if value > 0]) >= 2

            await wait_until(pilot, moved_twice)
            assert bar.total == 1 and 0 < bar.progress < 1 and pane.calls_done == 0  # the one call is still reading
            assert re.fullmatch(f"[{SPINNER}] reading ([0-9,]+) tokens, ([0-9,]+) read… \\d+ s \\(Esc stops\\)",
                                text_of(pane, "#sum-progress-text"))
            started = time.monotonic()
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.running, timeout=30)
            # The read is cut short. Generous for a loaded machine: the rest of the prompt (over 1,600 tokens on one
            # thread) takes far longer to read, and unstopped, the call would then finish (see below).
            assert time.monotonic() - started < 8
            assert pane.calls_done == 0 and pane.summary == ""  # unstopped, the first call would have finished
            assert text_of(pane, "#sum-status") == "stopped; nothing was summarized (0 call(s) had finished)"
            assert pane.query_one("#sum-result", StreamingAnswer).text == "*The summary appears here.*"

    asyncio.run(session())
    assert bar_values == sorted(bar_values)  # it only moves forward


def test_bad_inputs_are_notifications(tmp_path):
    (tmp_path / "empty.txt").write_text("")

    async def session():
        app = SummarizeApp(one_thread(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            await pilot.press("ctrl+r")
            assert "nothing to summarize" in app.notes[-1][1] and not pane.running
            await add_files(pilot, pane, tmp_path / "missing.md")
            assert app.notes[-1][0] == "error" and "no such file" in app.notes[-1][1]
            await add_files(pilot, pane, tmp_path / "empty.txt")
            assert "empty.txt is empty" in app.notes[-1][1] and pane.files == []
            pane.query_one("#sum-text", TextArea).load_text("Some text.")
            pane.query_one("#sum-words", Input).value = "5"
            await pilot.press("ctrl+r")
            assert "5 words is too few" in app.notes[-1][1] and not pane.running
            pane.query_one("#sum-words", Input).value = "-"
            await pilot.press("ctrl+r")
            assert "'-' is not a number of words" in app.notes[-1][1] and not pane.running
            assert text_of(pane, "#sum-plan") == "plan: '-' is not a number of words"
            await pilot.press("ctrl+s")
            assert "no summary to save" in app.notes[-1][1]

    asyncio.run(session())


@pytest.mark.usefixtures("bundled_model")
def test_snapshot_with_files_added(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(DATA)
    app = SummarizeApp(one_thread(tmp_path), preset("precise"), ctx=2048)

    async def add(pilot):
        pane = app.pane
        await add_files(pilot, pane, "meeting-notes.md", "article.txt")
        pane.query_one("#sum-style", Select).value = "executive"
        executive = words_to_tokens(STYLES["executive"][1])
        await wait_until(pilot, lambda: pane.plan is not None and pane.plan.answer_tokens == executive)
        pane.query_one("#sum-paths", Input).cursor_blink = False  # a blinking cursor drew differently run to run
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=add)


def test_every_action_has_a_binding_id_and_a_palette_command(tmp_path):
    assert [binding.id for binding in SummarizePane.BINDINGS] == [
        "summarize.run", "summarize.open", "summarize.save", "summarize.copy", "summarize.stop"]
    pane = SummarizePane(settings_for(tmp_path), preset("precise"), SharedModel(settings_for(tmp_path)))
    callbacks = {command.callback.__name__ for command in pane.palette_commands()}
    assert callbacks == {f"action_{binding.action}" for binding in SummarizePane.BINDINGS}


@pytest.mark.usefixtures("bundled_model")
def test_the_summary_streams_in_while_it_is_written(tmp_path):
    async def session():
        app = SummarizeApp(one_thread(tmp_path), preset("precise").with_overrides(max_tokens=48))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#sum-text", TextArea).load_text(DATA.joinpath("meeting-notes.md").read_text())
            await wait_until(pilot, lambda: pane.plan is not None)
            await pilot.click("#sum-run")
            result = pane.query_one("#sum-result", StreamingAnswer)
            await wait_until(pilot, lambda: pane.running and pane._streamed and result.text.strip())
            assert not pane.summary, "text shows before the summary is done"
            await wait_until(pilot, lambda: not pane.running)
            assert pane.summary and result.text == pane.summary

    asyncio.run(session())


@pytest.mark.usefixtures("bundled_model")
def test_a_summary_stopped_after_some_parts_keeps_their_notes(tmp_path):
    async def session():
        app = SummarizeApp(one_thread(tmp_path), preset("precise").with_overrides(max_tokens=32), ctx=768)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            pane.query_one("#sum-text", TextArea).load_text(long_text())
            await pilot.click("#sum-run")
            await wait_until(pilot, lambda: pane.calls_done >= 1)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.running, timeout=30)
            await pilot.pause()
            return (pane.part_notes, pane.summary, text_of(pane, "#sum-status"),
                    pane.query_one("#sum-result", StreamingAnswer).text, len(pane.plan.chunks))

    notes, summary, status, shown, parts = asyncio.run(session())
    assert notes and all(text.strip() for _, text in notes)
    assert status == f"stopped: no summary, but the notes on {len(notes)} of {parts} parts are kept below (Ctrl+S " \
                     "saves them)"
    assert shown == summary and summary.startswith(f"**Notes on part 1 of {parts}**") and notes[0][1] in summary


@pytest.mark.usefixtures("bundled_model")
def test_a_cut_summary_and_one_stopped_while_written_are_marked(tmp_path):
    async def session():
        app = SummarizeApp(one_thread(tmp_path), preset("precise"))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.pane
            result = pane.query_one("#sum-result", StreamingAnswer)
            pane.query_one("#sum-text", TextArea).load_text(DATA.joinpath("article.txt").read_text())
            pane.query_one("#sum-style", Select).value = "detailed"
            pane.query_one("#sum-words", Input).value = "10"  # far less room than a detailed summary takes
            await wait_until(pilot, lambda: pane.plan is not None and pane.plan.answer_tokens < 60)
            await pilot.click("#sum-run")
            await wait_until(pilot, lambda: not pane.running and pane.summary)
            await pilot.pause()
            cut = (text_of(pane, "#sum-status"), str(result.query_one("Static.finish").render()))

            pane.query_one("#sum-words", Input).value = "300"
            await wait_until(pilot, lambda: pane.plan is not None and pane.plan.answer_tokens > 300)
            await pilot.click("#sum-run")
            await wait_until(pilot, lambda: pane.running and pane._streamed and len(result.text) > 40)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not pane.running)
            await pilot.pause()
            stopped = (text_of(pane, "#sum-status"), str(result.query_one("Static.finish").render()), pane.summary,
                       result.text)
            return cut, stopped

    (cut_status, cut_note), (status, note, summary, shown) = asyncio.run(session())
    assert cut_status.endswith(" · cut at the token limit") and cut_status.startswith("done: 1 call(s)")
    assert cut_note.startswith("✂ cut: the answer reached its token limit (")
    assert status == "stopped: the summary so far is kept below (Ctrl+S saves it)"
    assert note == "■ stopped before the end" and len(summary) > 40 and summary == shown
