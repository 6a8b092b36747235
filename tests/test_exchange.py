"""One exchange path (tasks/exchange.py): the prompt saved when sent, the answer as it streams and when it ends, a
prompt with no answer undone; `run` and the app record an answer with the same fields."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, settings_for
from helpers.tui_helpers import ask, run, wait_until

from localllm.core.chunks import FinalChunk, Response, TextChunk, Timings, Usage
from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tasks import exchange as exchange_module
from localllm.tasks.exchange import Exchange, conversation_title


def answer(text: str, reason: str = "stop", tokens: int = 3) -> Response:
    response = Response(iter([TextChunk(text), FinalChunk(reason, Usage(5, tokens),  # type: ignore[arg-type]
                                                          Timings(0.1, 0.5, 0.4))]))
    response.text()
    return response


def test_the_prompt_is_kept_at_once_the_answer_as_it_streams_and_how_it_ended(tmp_path, monkeypatch):
    store = ConversationStore.in_data_dir(tmp_path)
    conversation = store.create(conversation_title("  Name a river\nplease"), model="m")
    assert conversation.title == "Name a river"
    exchange = Exchange.begin(store, conversation.id, "Name a river")
    assert [(m.role, m.content, m.finish) for m in store.messages(conversation.id)] == \
        [("user", "Name a river", None), ("assistant", "", "stopped")]  # a kill now keeps the prompt, marked
    assert not exchange.progress("The Ni")  # saved at most once a second
    monkeypatch.setattr(exchange_module, "SAVE_INTERVAL_S", 0.0)
    assert exchange.progress("The Nile")
    assert store.messages(conversation.id)[-1].content == "The Nile"
    finish = exchange.end(answer("The Nile is long", "length", tokens=4), model="m", backend="llama.cpp",
                          options=preset("precise").with_overrides(max_tokens=4))
    last = store.messages(conversation.id)[-1]
    assert finish.kind == "length" and (last.content, last.finish) == ("The Nile is long", "length")
    exchange.undo()  # a prompt that got no answer leaves nothing, its new conversation neither
    assert store.list() == []
    store.close()


def test_undo_keeps_a_conversation_that_has_other_messages(tmp_path):
    store = ConversationStore.in_data_dir(tmp_path)
    conversation = store.create("t", model="m")
    Exchange.begin(store, conversation.id, "first").end(answer("one"), model="m", backend="b",
                                                       options=preset("precise"))
    second = Exchange.begin(store, conversation.id, "second")
    assert not second.undo()
    assert [m.content for m in store.messages(conversation.id)] == ["first", "one"]
    store.close()


@pytest.mark.model
def test_run_and_the_app_record_an_answer_alike(tmp_path):
    settings = settings_for(tmp_path)
    done = run_cli("run", "--preset", "precise", "-o", "max_tokens=6", "Name a river.", home=tmp_path)
    assert done.returncode == 0, done.stderr_text

    async def session():
        from localllm.tui.app import LocalLLMApp
        from localllm.tui.chat import ChatPane

        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=6))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            turns = await ask(pilot, pane, "Name a mountain.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > turns)
            await pilot.pause()

    run(session())
    logged = json.loads(run_cli("logs", "--json", "-n", "5", home=tmp_path).stdout_text)
    by_prompt = {c["messages"][0]["content"]: c["messages"][1] for c in logged}
    from_run, from_app = by_prompt["Name a river."], by_prompt["Name a mountain."]
    assert from_run["finish"] == from_app["finish"] == "length"
    assert set(from_run["meta"]) == set(from_app["meta"]) >= {"model", "backend", "options", "usage", "timings"}
    assert from_run["meta"]["options"]["max_tokens"] == from_app["meta"]["options"]["max_tokens"] == 6
