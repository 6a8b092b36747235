"""Tools in the app's chat pane, with a real MCP server (tests/helpers/mcp_test_server.py, over stdio) and the bundled
model: F6 lists the servers and their tools, a conversation chooses some, and every call asks first; a denied call
never reaches the server, an allowed one does, and both are shown in the answer and kept with it."""

import json
import sys
from pathlib import Path

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, on_screen, run, wait_until
from textual.widgets import Button, SelectionList, Switch

from localllm.core.options import preset
from localllm.store.conversations import ConversationStore
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.tools import ApproveCall, ToolsScreen

TEST_SERVER = Path(__file__).parent / "helpers" / "mcp_test_server.py"


def settings_with_server(tmp_path: Path):
    settings = settings_for(tmp_path, discover=False)
    settings.paths.config_dir.mkdir(parents=True, exist_ok=True)
    (settings.paths.config_dir / "mcp.json").write_text(json.dumps({"mcpServers": {
        "t": {"command": sys.executable, "args": [str(TEST_SERVER), "stdio"],
              "env": {"RECORD_FILE": str(tmp_path / "record.txt")}},
        "gone": {"command": "no-such-mcp-server-command"},
    }}))
    return settings


@pytest.mark.usefixtures("bundled_model")
def test_a_conversation_chooses_tools_and_each_call_asks_first(tmp_path):
    settings = settings_with_server(tmp_path)
    record = tmp_path / "record.txt"

    async def session():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=40))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None)
            await pilot.press("f6")
            # Its last widget: the dialog is composed whole (the list alone can be there a moment before the rest).
            await wait_until(pilot, lambda: isinstance(app.screen, ToolsScreen) and app.screen.query("#tools-use"))
            screen = app.screen
            states = [str(line.render()) for line in screen.query(".servers")]
            listed = [str(option.value) for option in screen.query_one(SelectionList)._options]
            screen.query_one(SelectionList).select("t.record")
            screen.query_one(Switch).value = True  # a call before the answer: the small model then always calls
            screen.query_one("#tools-use", Button).press()
            await wait_until(pilot, lambda: not isinstance(app.screen, ToolsScreen))
            status = str(pane.query_one("#status").render())

            answers = []
            for key in ("n", "y"):
                turns = await ask(pilot, pane, "Please record the word river.")
                await wait_until(pilot, lambda: on_screen(app, ApproveCall) and
                                 bool(app.screen.query("#call-tool")))  # pushed, then composed
                question = str(app.screen.query_one("#call-tool").render())
                await pilot.press(key)
                await wait_until(pilot, lambda turns=turns: not pane.generating and pane.session.stats.turns > turns)
                await pilot.pause(0.2)
                lines = [str(line.render()) for line in pane._messages_in_log()[-1].query(".tool")]
                answers.append((question, lines, record.exists()))
            return states, listed, status, answers, pane.conversation_id

    states, listed, status, answers, conversation = run(session())
    assert any(state.startswith("t (") and "started" in state for state in states)
    assert any(state.startswith("gone") and "did not start" in state and "not found" in state for state in states)
    assert {"t.echo", "t.record", "t.crash"} <= set(listed)
    assert "tools: 1 (F6)" in status
    (asked, denied_lines, ran_after_deny), (_, allowed_lines, ran_after_allow) = answers
    assert "t.record" in asked
    assert denied_lines[0].startswith("⚙ t.record {") and denied_lines[1].startswith("  not run:")
    assert not ran_after_deny, "a denied call never reaches the server"
    assert allowed_lines[1].startswith("  result (") and ran_after_allow
    store = ConversationStore.in_data_dir(settings.paths.data_dir)
    try:
        answers_stored = [m for m in store.messages(conversation) if m.role == "assistant"]
        calls = [store.meta(m.id)["tool_calls"][0] for m in answers_stored]
    finally:
        store.close()
    assert [call["ran"] for call in calls] == [False, True] and calls[1]["result"] == "recorded"

    async def reopened():
        app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=40))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: pane.session is not None and pane.conversation_id == conversation)
            await pilot.pause(0.2)
            return pane.tools.chosen.get(conversation), pane.tools.required.get(conversation), \
                str(pane.query_one("#status").render())

    # The app opens the last conversation with the tools chosen for it (kept in the store), not without them.
    chosen, required, reopened_status = run(reopened())
    assert chosen == ["t.record"] and required is True
    assert "tools: 1 (F6)" in reopened_status
