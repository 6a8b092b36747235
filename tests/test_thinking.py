"""A reasoning model's thinking is told apart from its answer however the stream cuts the text."""

import pytest

from localllm.core.chunks import FinalChunk, Response, TextChunk, ThinkingChunk, Timings, Usage
from localllm.core.thinking import split_thinking

END = FinalChunk("stop", Usage(5, 9), Timings(0.1, 0.5, 0.4))


def pieces(text: str, size: int):
    return [TextChunk(text[i:i + size]) for i in range(0, len(text), size)] + [END]


def split(text: str, size: int, opened: str | None = None) -> tuple[str, str]:
    response = Response(split_thinking(iter(pieces(text, size)), opened))
    answer = response.text()
    final = response.final
    assert final is not None and (final.finish_reason, final.timings) == (END.finish_reason, END.timings)
    assert final.usage.completion_tokens == END.usage.completion_tokens
    return response.thinking, answer


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_a_leading_block_is_thinking_at_any_cut(size):
    assert split("<think>\nThe user asks for a colour.\n</think>\n\nBlue.", size) == \
        ("\nThe user asks for a colour.\n", "Blue.")
    assert split("  <thinking>hmm</thinking>Red <b>and</b> green.", size) == ("hmm", "Red <b>and</b> green.")
    assert split("<reasoning>x < y</reasoning>\nYes.", size) == ("x < y", "Yes.")


def test_the_thinking_tokens_are_counted_apart_from_the_answer():
    tokens = ["<think>", "Red", " or", " blue", "?", "</think>", "\n\n", "Blue", "."]
    response = Response(split_thinking(iter([*map(TextChunk, tokens), END])))
    assert response.text() == "Blue."
    assert response.final.usage.thinking_tokens == 6 and response.final.usage.completion_tokens == 9
    # A server's own thinking field: one chunk, one token.
    server = [ThinkingChunk("Red"), ThinkingChunk(" or blue"), TextChunk("Blue."), END]
    assert Response(split_thinking(iter(server))).final is None  # not drained yet
    drained = Response(split_thinking(iter(server)))
    drained.text()
    assert drained.final.usage.thinking_tokens == 2
    plain = Response(split_thinking(iter([TextChunk("<b>Bold</b> answer"), END])))
    plain.text()
    assert plain.final.usage.thinking_tokens == 0


@pytest.mark.parametrize("size", [1, 4, 100])
def test_a_block_opened_by_the_template_ends_at_its_closing_tag(size):
    assert split("Counting: 2 and 2 </thi", size, opened="<think>") == ("Counting: 2 and 2 </thi", "")
    assert split("Counting: 2 and 2.</think>\n4", size, opened="<think>") == ("Counting: 2 and 2.", "4")


@pytest.mark.parametrize("size", [1, 3, 100])
def test_tags_elsewhere_are_the_answer(size):
    assert split("Use <think> in HTML? No.", size) == ("", "Use <think> in HTML? No.")
    assert split("The <think>tag</think> is not HTML.", size) == ("", "The <think>tag</think> is not HTML.")
    assert split("<b>bold</b> text", size) == ("", "<b>bold</b> text")
    assert split("<thin", size) == ("", "<thin")  # an answer that is only the start of a tag is still an answer


def test_thinking_that_never_ends_stays_thinking_and_closing_the_stream_reaches_the_backend():
    closed = []

    def backend():
        try:
            yield TextChunk("<think>still")
            yield TextChunk(" going")
            yield END
        finally:
            closed.append(True)

    response = Response(split_thinking(backend()))
    assert response.text() == "" and response.thinking == "still going"
    stopped = Response(split_thinking(backend()))
    next(iter(stopped))
    stopped.close()
    assert closed == [True, True]


def test_chunks_a_server_separated_itself_pass_through():
    chunks = [ThinkingChunk("plan"), TextChunk("Answer."), END]
    response = Response(split_thinking(iter(chunks)))
    assert response.text() == "Answer." and response.thinking == "plan"


def test_the_cli_writes_the_thinking_to_stderr_and_only_the_answer_to_stdout(capsys):
    from localllm.cli.generate import stream_to_stdout

    def answer():
        return Response(split_thinking(iter(pieces("<think>Plan: say blue.\x1b[31m</think>\n\nBlue.", 4))))

    assert stream_to_stdout(answer()) == "Blue."
    out, err = capsys.readouterr()
    assert out == "Blue.\n"
    assert err == "Plan: say blue.\\x1b[31m\n"  # inert: a control sequence in it is shown, not obeyed
    stream_to_stdout(answer(), show_thinking=False)
    out, err = capsys.readouterr()
    assert out == "Blue.\n" and err == ""
    from localllm.tasks.answer_stats import stats_line

    counted = answer()
    counted.text()
    # -v's statistics line: the thinking's share of the generated tokens (9 stream pieces of 4 characters)
    assert "9 generated (8 of them thinking)" in stats_line(counted.final)
