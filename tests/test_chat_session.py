"""Chat sessions on the real model: history, trimming to the window with a count of what was left out."""

import re

import pytest
from conftest import run_cli, settings_for

from localllm.core.errors import UsageError
from localllm.core.options import preset
from localllm.tasks.chat import ChatSession
from localllm.tasks.loading import load_model


def test_history_grows_and_resets(loaded):
    session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=8), system="Answer briefly.")
    replies, texts = [], []
    for prompt in ("Hello!", "Hello!"):
        replies.append(session.send(prompt))
        texts.append(replies[-1].text())
    assert [m.role for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[1].content == texts[0] and session.history[3].content == texts[1]
    assert session.stats.turns == 2
    assert session.stats.completion_tokens == sum(r.final.usage.completion_tokens for r in replies) <= 16
    # the second prompt carries the first exchange
    assert replies[1].final.usage.prompt_tokens > replies[0].final.usage.prompt_tokens
    session.reset()
    assert session.history == [] and session.dropped == 0


def test_stopped_answer_is_kept(loaded):
    session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=200))
    response = session.send("Tell me a long story.")
    for index, _ in enumerate(response):
        if index == 3:
            break
    response.close()
    assert session.history[-1].role == "assistant" and session.history[-1].content == response.partial_text != ""


def test_set_option_and_fixed_context(loaded):
    session = ChatSession(loaded, preset("balanced"))
    session.set_option("temperature", "0.2")
    assert session.options.temperature == 0.2
    with pytest.raises(UsageError):
        session.set_option("ctx", "4096")


@pytest.mark.usefixtures("bundled_model")
def test_old_turns_are_left_out_and_counted_when_the_window_fills(tmp_path):
    with load_model(settings_for(tmp_path, ctx=512), "smollm2-135m") as small:
        session = ChatSession(small, preset("precise").with_overrides(max_tokens=16), system="Be brief.",
                              condense=False)
        for turn in range(6):
            session.send(f"Turn {turn}: " + "tell me about rivers and lakes " * 16).text()
        assert session.dropped >= 2
        messages = session.fitted_messages("last question")
        assert messages[0].role == "system" and messages[1].role == "user"
        assert small.backend.count_prompt_tokens(messages) + 16 <= 512


@pytest.mark.usefixtures("bundled_model")
def test_a_last_exchange_over_the_window_is_counted_as_left_out_not_as_more_than_the_window(tmp_path):
    from localllm.core.messages import Message

    with load_model(settings_for(tmp_path, ctx=512), "smollm2-135m") as small:
        long_answer = "The river flows past the old mill. " * 80  # an answer cut when the window filled
        history = [Message("user", "Tell me about the mill."), Message("assistant", long_answer)]
        session = ChatSession(small, preset("precise").with_overrides(max_tokens=16), system="Be brief.",
                              history=history)
        used, left_out = session.context_used()
        assert left_out == 2, "the meter's warning names the messages the next prompt leaves out"
        assert 0 < used < 512, f"the meter shows what the next prompt takes, not {used}/512"
        assert session.fitted_messages("And the river?")[-1].content == "And the river?"


@pytest.mark.usefixtures("bundled_model")
def test_old_turns_are_condensed_into_a_summary_when_the_window_fills(tmp_path):
    with load_model(settings_for(tmp_path, ctx=512), "smollm2-135m") as small:
        session = ChatSession(small, preset("precise").with_overrides(max_tokens=16), system="Be brief.")
        condensed = []
        for turn in range(6):
            session.send(f"Turn {turn}: my cat is called Tom{turn}. " + "Tell me about rivers and lakes. " * 12).text()
            condensed.append(session.condensed)
            assert session.prompt_tokens + 16 <= 512
        folded = [c for c in condensed if c]
        assert folded, "the window filled and nothing was condensed"
        messages, freed = folded[0]
        assert messages >= 2 and freed > 0
        assert session.summary and session.summarized >= messages
        prompt = session.fitted_messages("What is my cat called?")
        # The summary travels with the system prompt; the newest turns follow whole.
        assert prompt[0].role == "system" and prompt[0].content.startswith("Be brief.\n\nSummary of the earlier")
        assert session.summary in prompt[0].content
        assert prompt[-1].content == "What is my cat called?"
        assert small.backend.count_prompt_tokens(prompt) + 16 <= 512
        # Another conversation in the same session: the summary was not made for it and is dropped.
        session.history = session.history[-2:]
        assert not session.fitted_messages("Hello")[0].content.count("Summary of the earlier")


@pytest.mark.usefixtures("bundled_model")
def test_chat_says_how_many_turns_were_condensed(tmp_path):
    lines = "".join(f"Turn {turn}: " + "tell me about rivers and lakes " * 14 + "\n" for turn in range(5))
    done = run_cli("chat", "-o", "ctx=512", "-o", "max_tokens=16", "--preset", "precise", home=tmp_path,
                   stdin=lines + "/exit\n")
    assert done.returncode == 0, done.stderr_text
    assert re.search(r"note: \d+ earlier message\(s\) condensed into a summary so the conversation fits the "
                     r"512-token window \([\d,]+ tokens freed\)", done.stderr_text), done.stderr_text


def test_the_next_turn_reuses_the_conversation_so_far_from_the_cache(loaded):
    from localllm.tasks.answer_stats import READ_RATE_MIN_TOKENS, stats_line

    session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=8), system="Answer briefly.")
    first = session.send("Name a colour.")
    first.text()
    second = session.send("And another one?")
    second.text()
    # The second prompt starts with the whole first one (then the first answer and the new question): llama.cpp
    # reads only what follows, and the stats say how much it did not read again.
    assert second.final.usage.cached_tokens >= first.final.usage.prompt_tokens - 3
    assert second.final.usage.cached_tokens < second.final.usage.prompt_tokens
    line = stats_line(second.final, load_s=0.5)
    assert line.startswith("load 0.50 s, ") and "reused from the cache)" in line and "finish: " in line
    # A reading speed only where enough was read to tell (a few tokens' time is mostly the first token's decoding).
    read = second.final.usage.prompt_tokens - second.final.usage.cached_tokens
    assert (" read at " in line) == (read >= READ_RATE_MIN_TOKENS), line


def test_the_meter_counts_the_tool_instruction_that_goes_with_each_prompt(loaded):
    from localllm.core.tools import ToolResult, ToolSpec
    from localllm.tasks.tools.calling import ToolLoop, with_instruction

    echo = ToolSpec("echo", "Repeat a text", {"type": "object", "properties": {"text": {"type": "string"}}})
    session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=30), system="Answer briefly.")
    session.send("Hello!").text()
    without, _ = session.context_used()
    loop = ToolLoop([echo], lambda call: ToolResult(call, "echoed"), approve=lambda call: True)
    session.tools = loop
    with_tools, _ = session.context_used()
    instruction = loaded.backend.count_prompt_tokens(with_instruction([], [echo])) - \
        loaded.backend.count_prompt_tokens([])
    assert with_tools - without == session.tool_tokens() and abs(session.tool_tokens() - instruction) <= 4
    assert session.tool_tokens() > 50
    session.send("Say hi.").text()
    # What the next prompt was said to take is what was sent: the history with the tool instruction.
    assert session.prompt_tokens == loaded.backend.count_prompt_tokens(loop.prompts[0])
