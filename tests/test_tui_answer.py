"""A streamed answer is cut into Markdown parts only at paragraph breaks outside code fences, keeps every
character in order, and renders its code blocks whole."""

import random

from helpers.scripted_backend import markdown_tokens
from helpers.tui_helpers import run
from textual.app import App

from localllm.tui.answer import StreamingAnswer, TextBuffer, scan_lines


def test_scan_lines_finds_breaks_outside_fences_only():
    text = "intro\n\n```python\nx = 1\n\ny = 2\n```\n\nafter\n\nunfinished"
    breaks, in_fence, line_start = scan_lines(text, False)
    assert [text[:end].splitlines()[-1] if text[:end].splitlines() else "" for end in breaks] == ["", "", ""]
    assert all(not text[:end].count("```") % 2 for end in breaks), "no break inside a fence"
    assert len(breaks) == 3 and not in_fence and text[line_start:] == "unfinished"
    assert scan_lines("```\ncode\n", False)[1] is True


def test_a_long_streamed_answer_is_split_into_parts_that_never_cut_a_code_block():
    text = "".join(markdown_tokens(1000))
    rng = random.Random(7)
    chunks, at = [], 0
    while at < len(text):  # uneven batches, as a drain timer takes them
        size = rng.randint(1, 400)
        chunks.append(text[at:at + size])
        at += size

    class Host(App):
        def compose(self):
            yield StreamingAnswer(id="answer")

    async def session():
        app = Host()
        async with app.run_test(size=(100, 40)) as pilot:
            answer = app.query_one(StreamingAnswer)
            for chunk in chunks:
                await answer.append(chunk)
            await answer.finish(text)
            await pilot.pause()
            parts = [*answer._parts, answer._live_text]
            assert answer.text == text
            assert len(parts) > 3 and len(answer.children) == len(parts)
            for part in answer._parts:  # the last part may end inside a fence: the answer was cut at 1,000 tokens
                assert part.count("```") % 2 == 0, part[-200:]
            code_blocks = answer.query("MarkdownFence")
            assert len(code_blocks) == text.count("```python")

    run(session())


def test_the_buffer_hands_over_text_in_order():
    buffer = TextBuffer()
    for piece in ("a", "b", "c"):
        buffer.put(piece)
    assert buffer.take() == "abc" and buffer.take() == ""


def test_a_message_is_shown_as_typed_and_html_in_an_answer_is_shown() -> None:
    from localllm.tui.answer import ChatMessage

    typed = "What does the <div> tag do in *HTML*? [/bold] # not a heading"
    answer = "The <div> element groups content; `<span>` is inline.\n\n```html\n<p>hi</p>\n```\n"

    class Host(App):
        def compose(self):
            yield ChatMessage("user", typed)
            yield ChatMessage("assistant", answer)

    async def session():
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            user, reply = app.query(ChatMessage)
            shown_user = str(user.query_one("Static.typed").render())
            paragraphs = [str(block._content) for block in reply.query("MarkdownParagraph")]
            fences = [str(block.code) for block in reply.query("MarkdownFence")]
            return shown_user, user.text, paragraphs, fences

    shown_user, text, paragraphs, fences = run(session())
    assert shown_user == typed and text == typed
    assert paragraphs == ["The <div> element groups content; <span> is inline."]
    assert fences == ["<p>hi</p>"]


def test_thinking_streams_in_its_own_block_folded_when_the_answer_starts():
    from textual.widgets import Collapsible

    from localllm.tui.answer import ChatMessage
    from localllm.tui.message_log import MessageLog

    class Host(App):
        def compose(self):
            with MessageLog(id="log"):
                yield ChatMessage("assistant")

    async def session():
        app = Host()
        async with app.run_test(size=(100, 30)) as pilot:
            message = app.query_one(ChatMessage)
            for piece in ("The user wants ", "a <b>colour</b>. ", "Blue is [bold]fine[/bold]."):
                await message.append_thinking(piece)
            await pilot.pause()
            block = message.query_one(Collapsible)
            open_while_thinking = (block.collapsed, block.title)
            shown = str(message.query_one(".thinking-text").render())
            await message.append("Blue.")
            await message.finish("Blue, surely.")  # replaced whole (a stored answer, an error): only the text goes
            await message.mark("■ stopped before the end")
            await pilot.pause()
            folded = (block.collapsed, block.title)
            order = [type(child).__name__ for child in message.children]
            app.query_one(MessageLog).focus()
            await pilot.press("t")
            reopened = block.collapsed
            return open_while_thinking, shown, folded, order, reopened, message.text, message.thinking

    open_while_thinking, shown, folded, order, reopened, text, thinking = run(session())
    assert open_while_thinking == (False, "Thinking…")
    assert shown == "The user wants a <b>colour</b>. Blue is [bold]fine[/bold]."  # shown as written, inert
    assert folded == (True, "Thought for 8 words")
    assert order == ["Static", "Collapsible", "Markdown", "Static"]  # label, thinking, answer, how it ended
    assert reopened is False
    assert text == "Blue, surely." and thinking.endswith("fine[/bold].")
