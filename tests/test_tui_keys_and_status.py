"""The app's keys where the user reads them, and its status bar after an edit, on the scripted backend (what is
checked here is the interface, not the model): Help in the footer at 80 columns whatever has the focus, every key
on the help screen with its id and Ctrl+P among those that work everywhere, the rename dialog's keys on its buttons
and in its own footer, a chat search that finds nothing saying so, and Ctrl+G leaving a status bar without the
answer it took back."""

import threading

from conftest import settings_for
from helpers.scripted_backend import scripted_model
from helpers.tui_helpers import ask, on_screen, run, wait_until
from textual.widgets import Button, Footer, Input

from localllm.core.chunks import FinalChunk, Timings, Usage
from localllm.core.options import preset
from localllm.tasks.answer_stats import compact_stats, stats_line
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import AskText
from localllm.tui.help import HelpScreen
from localllm.tui.prompt import PromptArea

ANSWER = ["The", " sky", " is", " blue", " because", " of", " scattering", "."]


def scripted_app(settings, delay_s: float = 0.0, hold=None) -> LocalLLMApp:
    from localllm.tui.shared_model import SharedModel

    shared = SharedModel(settings, loaded=scripted_model(ANSWER, delay_s=delay_s, hold=hold))
    return LocalLLMApp(settings, preset("precise"), shared=shared)


def footer_texts(screen) -> list[tuple[str, int]]:
    """Each key a screen's footer shows, with the column where it ends."""
    footer = screen.query_one(Footer)
    return [(f"{key.key_display} {key.description}", key.region.right) for key in footer.query("FooterKey")]


def help_shown(screen, width: int) -> bool:
    return any(text == "f9 Help" and right <= width - 12 for text, right in footer_texts(screen))  # left of ^p


async def footer_settled(pilot, screen, condition=lambda texts: True) -> list[tuple[str, int]]:
    """The footer's keys once it has drawn them (it composes after the bindings settle) and ``condition`` holds."""
    shown: list[tuple[str, int]] = []

    def ready() -> bool:
        shown[:] = footer_texts(screen)
        return bool(shown) and condition([text for text, _ in shown])

    await wait_until(pilot, ready)
    return shown


def test_help_leads_the_footer_at_80_columns_and_the_help_screen_lists_every_key_with_its_id(tmp_path):
    settings = settings_for(tmp_path)
    footer_seen = threading.Event()

    async def session():
        # The answer's last token waits until the footer has been seen while it is written: a pace alone could end
        # the answer before a loaded machine's footer caught up.
        app = scripted_app(settings, delay_s=0.05, hold=(len(ANSWER) - 1, footer_seen))
        seen = {}
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            seen["chat"] = await footer_settled(pilot, app.screen)
            await ask(pilot, pane, "Why is the sky blue?")
            await wait_until(pilot, lambda: pane.generating)
            # Esc (stop) joins the pane's keys while the answer is written.
            try:
                seen["chat, writing"] = await footer_settled(pilot, app.screen, lambda texts: "esc Stop" in texts)
            finally:
                footer_seen.set()
            await wait_until(pilot, lambda: not pane.generating)
            await pilot.press("shift+tab")  # the messages: their keys come first
            assert app.focused is pane.query_one("#log")
            seen["messages"] = await footer_settled(pilot, app.screen, lambda texts: "c Copy message" in texts)

            await pilot.press("f9")
            await wait_until(pilot, lambda: on_screen(app, HelpScreen))
            text = app.screen.text
            await pilot.press("escape")
            await wait_until(pilot, lambda: not on_screen(app, HelpScreen))
            await pilot.press("ctrl+p")  # the key the help screen names opens the palette, as before
            await wait_until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
            await pilot.press("escape")
        return seen, text

    seen, text = run(session())
    for where, keys in seen.items():
        assert keys[0][0] == "f9 Help" and keys[0][1] <= 68, f"{where}: {keys}"  # left of the palette's key
    # Help came last in these, and they ran past the palette's key: it was cut off.
    assert max(right for _, right in seen["messages"]) > 68

    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Key |")]
    assert rows and not [row for row in rows if row.rstrip().endswith("| `` |")]
    everywhere = text.split("## Everywhere")[1].split("## ")[0]
    assert "| Ctrl+P | Command palette: every action by name | `app.palette` |" in everywhere
    assert "| Up | Previous message | `message.previous` |" in text


def test_rename_names_its_keys_a_fruitless_search_says_so_and_ctrl_g_takes_the_answers_cost_back(tmp_path):
    settings = settings_for(tmp_path)

    async def session():
        app = scripted_app(settings)
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(ChatPane)
            status = pane.query_one("#status")
            await wait_until(pilot, lambda: pane.session is not None)
            empty = str(status.render())
            turns = await ask(pilot, pane, "Why is the sky blue?")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()
            answered = str(status.render())
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: pane.query_one("#prompt", PromptArea).text == "Why is the sky blue?")
            edited = str(status.render())
            pane.query_one("#prompt", PromptArea).clear()

            # The rename dialog: its keys on its buttons and in its own footer, and each works.
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            dialog = app.screen
            labels = [str(button.label) for button in dialog.query(Button)]
            footer = [text for text, _ in await footer_settled(pilot, dialog)]
            await pilot.press("escape")  # Esc cancels: the title stays
            await wait_until(pilot, lambda: not on_screen(app, AskText))
            kept = pane.store.get(pane.conversation_id).title
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            app.screen.query_one("#answer", Input).value = "Rivers of Europe"
            await pilot.press("enter")  # Enter renames
            await wait_until(pilot, lambda: pane.store.get(pane.conversation_id).title == "Rivers of Europe")
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: on_screen(app, AskText))
            app.screen.query_one("#answer", Input).value = "Rivers"
            await pilot.click("#accept")  # and so does its button
            await wait_until(pilot, lambda: pane.store.get(pane.conversation_id).title == "Rivers")

            # A search that finds nothing says so; Esc clears it.
            await pilot.press("ctrl+f")
            await pilot.press(*"zebra")
            line = pane.query_one("#no-match")
            await wait_until(pilot, lambda: line.display)
            missing = (str(line.render()), len(pane.sidebar.list_view.children))
            await pilot.press("escape")
            await wait_until(pilot, lambda: not line.display)
            pane.query_one("#search", Input).value = "rivers"
            await pilot.pause()
            found = (line.display, len(pane.sidebar.list_view.children))
        return (empty, answered, edited), (labels, footer, kept), (missing, found)

    (empty, answered, edited), (labels, footer, kept), (missing, found) = run(session())
    assert "answer 8 tokens" in answered and edited == empty  # the meter as before, no cost of a removed answer
    assert labels == ["Cancel (Esc)", "Rename (Enter)"]
    assert footer == ["esc Cancel"]  # the dialog's own keys: the chat's (^n New chat) did nothing there
    assert kept != "Rivers of Europe"
    assert missing == ("no chat matches “zebra” (Esc clears the search)", 0) and found == (False, 1)


def test_no_reading_speed_from_a_few_uncached_prompt_tokens():
    """A prompt mostly in the cache reads a token or two: its time to the first token is the decoding of that
    token, and "1 token in 0.08 s" read as a prompt speed of 12/s."""
    def final(prompt: int, cached: int) -> FinalChunk:
        return FinalChunk("stop", Usage(prompt, 20, cached_tokens=cached), Timings(0.08, 1.0, 0.9))

    assert compact_stats(final(412, 411)).split(" · ")[2] == "prompt 412 (411 cached)"
    assert "read at" not in stats_line(final(412, 411))
    assert compact_stats(final(412, 0)).split(" · ")[2] == "prompt 412 5,150/s"
    assert "412 prompt tokens read at 5,150 tokens/s" in stats_line(final(412, 0))
