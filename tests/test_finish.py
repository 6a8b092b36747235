"""How an answer ended, decided once (localllm.core.finish) and said alike by `run`, `chat`, the store and the app;
stop strings applied to the stream (backends.streaming.StopScanner) so that the answer names the one that ended
it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localllm.backends.streaming import StopScanner
from localllm.core.chunks import FinalChunk, Timings, Usage
from localllm.core.finish import finish_of

TIMINGS = Timings(0.1, 1.0, 0.9)


def final(reason: str, tokens: int, stop: str | None = None) -> FinalChunk:
    return FinalChunk(reason, Usage(10, tokens), TIMINGS, stop)  # type: ignore[arg-type]


@pytest.mark.parametrize(("chunk", "limit", "kind", "stored", "reason"), [
    (final("stop", 7), 100, "end", "stop", "stop"),
    (final("stop", 7, "END"), 100, "stop_string", "stop", "stop"),
    (final("length", 5), 5, "length", "length", "length"),
    (final("length", 40), 100, "window", "window", "length"),  # fewer tokens than the limit: the window filled
    (final("length", 40), None, "window", "window", "length"),
    (final("cancelled", 3), 100, "stopped", "stopped", "stop"),
    (None, 100, "stopped", "stopped", "stop"),
    (final("error", 3), 100, "error", "stopped", "stop"),
])
def test_each_ending_is_classified_once(chunk, limit, kind, stored, reason):
    finish = finish_of(chunk, limit)
    assert (finish.kind, finish.stored, finish.reason) == (kind, stored, reason)
    assert finish.cut == (kind in ("length", "window"))
    assert (finish.marker() is None) == (kind in ("end", "stop_string"))


def test_a_tool_call_is_its_own_ending():
    assert finish_of(final("stop", 9), 100, tool_calls=True).reason == "tool_calls"


def test_the_cut_marker_names_the_limit_and_the_way_on():
    assert finish_of(final("length", 5), 5).marker() == \
        "[cut at max_tokens=5: continue with `localllm chat -c`, or raise -o max_tokens]"


def test_the_cut_marker_offers_only_the_ways_on_that_exist():
    cut = finish_of(final("length", 5), 5)
    assert cut.marker(continued_with=None) == "[cut at max_tokens=5: raise -o max_tokens]"  # nothing recorded
    assert cut.marker(continued_with=None, raised_with="it with /set max_tokens N") == \
        "[cut at max_tokens=5: raise it with /set max_tokens N]"  # inside chat
    window = finish_of(final("length", 7), None)  # no limit was set: the window filled
    assert window.marker(continued_with=None) == window.marker() == \
        "[cut: the context window is full: start a new conversation, or raise -o ctx=N]"


# No deadline and no speed check: under the suite's load an example or a draw can take longer than hypothesis's
# 200 ms (and a timing it finds flaky fails the test), which says nothing about stop strings.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="abEND ", max_size=6), max_size=12), st.sampled_from(["END", "ab", "N"]))
def test_a_stop_string_split_over_pieces_is_found_and_never_shown(pieces, stop):
    scan = StopScanner([stop])
    shown = ""
    for piece in pieces:  # as the backends do: the stream ends at the stop string
        text, stopped = scan.feed(piece)
        shown += text
        if stopped:
            break
    else:
        shown += scan.flush()
    whole = "".join(pieces)
    if stop in whole:
        assert scan.matched == stop and shown == whole[:whole.index(stop)]
    else:
        assert scan.matched is None and shown == whole


def test_the_earliest_of_several_stop_strings_wins():
    scan = StopScanner(["world", "lo w"])
    assert scan.feed("hello world") == ("hel", True) and scan.matched == "lo w"


@pytest.mark.model
def test_run_marks_a_cut_answer_on_stderr_and_names_a_stop_string_in_json(shared_home):
    cut = run_cli("run", "--preset", "precise", "-o", "max_tokens=5", "Count from 1 to 20.", home=shared_home)
    assert cut.returncode == 0, cut.stderr_text
    assert "[cut at max_tokens=5: continue with `localllm chat -c`, or raise -o max_tokens]" in \
        cut.stderr_text.splitlines()
    stopped = run_cli("run", "--json", "--preset", "precise", "-o", "stop=3", "-o", "max_tokens=40",
                      "Count from 1 to 10, separated by commas.", home=shared_home)
    answer = json.loads(stopped.stdout_text)
    assert answer["finish"] == "stop_string" and answer["stop_sequence"] == "3" and "3" not in answer["text"]
    listed = json.loads(run_cli("logs", "--json", "-n", "2", home=shared_home).stdout_text)
    assert listed[0]["messages"][-1]["content"] == answer["text"]
    assert listed[1]["messages"][-1]["finish"] == "length"  # the cut answer is recorded as cut, as the app does


@pytest.mark.model
def test_a_cut_answer_offers_chat_c_only_where_it_can_be_continued(home):
    assert run_cli("logs", "off", home=home).returncode == 0
    unrecorded = run_cli("run", "--preset", "precise", "-o", "max_tokens=5", "Count from 1 to 20.", home=home)
    assert unrecorded.returncode == 0, unrecorded.stderr_text
    assert "[cut at max_tokens=5: raise -o max_tokens]" in unrecorded.stderr_text.splitlines()
    assert run_cli("logs", "on", home=home).returncode == 0
    in_chat = run_cli("chat", "--preset", "precise", "-o", "max_tokens=5", home=home, stdin="Count from 1 to 20.\n")
    assert "[cut at max_tokens=5: raise it with /set max_tokens N]" in in_chat.stderr_text.splitlines()


@pytest.mark.model
def test_chat_c_shows_the_turns_it_continues_and_set_errors_use_set_syntax(home):
    first = run_cli("chat", "--preset", "precise", "-o", "max_tokens=8", home=home, stdin="Name a river.\n")
    assert first.returncode == 0, first.stderr_text
    again = run_cli("chat", "-c", "-v", home=home, stdin="/set temperature 99\n/exit\n")
    lines = again.stderr_text.splitlines()
    assert "you: Name a river." in lines and any(line.startswith("assistant: ") for line in lines)
    assert "error: temperature 99 is out of range — hint: use a value from 0 to 5" in lines
