"""Tools in the chat pane: F6 chooses the MCP servers' tools a conversation may call (from mcp.json), and each call
asks first in a dialog (Allow, Deny, Always for this tool in this conversation).

The servers are started the first time the tools are opened, in a worker, and stay up while the app runs. Calls
come from the generation's thread; the question is put on the screen from there and the thread waits for the
answer (an Esc that stops the answer also answers it: Deny).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, SelectionList, Static, Switch
from textual.widgets.selection_list import Selection

from localllm.core.tools import ToolCall
from localllm.tui.dialogs import DIALOG_CSS

if TYPE_CHECKING:
    from localllm.core.settings import Settings
    from localllm.tasks.tools.calling import ToolLoop
    from localllm.tasks.tools.mcp_servers import McpServers, ServerStatus


class ChatTools:
    """The app's MCP servers and, per conversation, the tools chosen and the ones always allowed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: McpServers | None = None
        self.statuses: list[ServerStatus] = []
        self.problem: str | None = None
        """Why there are no servers (no mcp.json, a broken one, the SDK missing)."""
        self.chosen: dict[int | None, list[str]] = {}
        """Qualified tool names per conversation (None: the chat not yet saved)."""
        self.required: dict[int | None, bool] = {}
        self.always: dict[int | None, set[str]] = {}
        self._lock = threading.Lock()
        self._read: tuple[float, int] | None = None
        """The file's (mtime, size) when it was read: a file changed since is read again, its servers restarted."""

    @property
    def path(self):
        from localllm.tasks.tools.mcp_config import config_path

        return config_path(self.settings)

    def start(self) -> None:
        """Start the declared servers, again when the file changed since (blocks: call from a worker)."""
        from localllm.core.errors import LocalLLMError
        from localllm.tasks.tools.mcp_config import read_servers
        from localllm.tasks.tools.mcp_servers import McpServers

        with self._lock:
            path = self.path
            try:
                stat = path.stat()
                read = (stat.st_mtime, stat.st_size)
            except OSError:
                read = (0.0, -1)
            if read == self._read:
                return
            self._read = read
            self.close()
            self.servers, self.statuses, self.problem = None, [], None
            try:
                entries = read_servers(path)
                if not entries:
                    self.problem = f"no MCP servers are declared in {path} (docs/tools.md shows how)"
                    return
                self.servers = McpServers(entries)
                self.statuses = self.servers.start()
            except LocalLLMError as exc:
                self.problem = f"{exc.message} ({exc.hint})" if exc.hint else exc.message

    def close(self) -> None:
        if self.servers is not None:
            self.servers.close()

    @property
    def up_to_date(self) -> bool:
        """Started from the file as it is now (F6 then opens at once)."""
        try:
            stat = self.path.stat()
            return self._read == (stat.st_mtime, stat.st_size)
        except OSError:
            return self._read == (0.0, -1)

    def move(self, old: int | None, new: int | None) -> None:
        """A new chat got its id when first saved: its choice goes with it."""
        for table in (self.chosen, self.required, self.always):
            if old in table and new not in table:
                table[new] = table.pop(old)  # type: ignore[assignment]  # each table keeps its own value type

    def restore(self, conversation: int, stored: str | None) -> None:
        """A stored conversation's choice (the store's JSON), unless one was made in this session."""
        if conversation in self.chosen or not stored:
            return
        try:
            value = json.loads(stored)
            chosen = [str(name) for name in value.get("chosen", [])]
            self.chosen[conversation], self.required[conversation] = chosen, bool(value.get("required"))
        except (ValueError, AttributeError, TypeError):
            return  # a damaged entry: the conversation starts without tools, as if none were chosen

    def loop(self, conversation: int | None, approve) -> ToolLoop | None:
        """The tool loop for a conversation's next answer; None when it has no tools."""
        names = self.chosen.get(conversation)
        if not names or self.servers is None:
            return None
        from localllm.tasks.tools.calling import ToolLoop

        tools = [tool for tool in self.servers.tools() if tool.qualified in names]
        if not tools:
            return None
        return ToolLoop(tools, self.servers.call, approve,
                        choice="required" if self.required.get(conversation) else "auto")


class ToolsScreen(ModalScreen[tuple[list[str], bool] | None]):
    """Which tools this conversation may call, with each server's state; Enter or Use applies, Esc cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ToolsScreen") + """
    ToolsScreen > Vertical { overflow-y: auto; }
    ToolsScreen SelectionList { height: auto; max-height: 12; }
    ToolsScreen .servers { color: $text-muted; max-height: 3; }
    ToolsScreen .required { height: auto; margin: 1 0 0 0; }
    ToolsScreen .required Label { padding: 1 0 0 1; }
    """
    AUTO_FOCUS = "#tool-list"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, tools: ChatTools, chosen: list[str], required: bool) -> None:
        super().__init__()
        self.tools, self.chosen, self.required = tools, chosen, required

    def compose(self) -> ComposeResult:
        from localllm.tui.inert import plain

        with Vertical():
            yield Label("Tools this conversation may call (each call asks first)")
            if self.tools.problem:
                yield Static(plain(self.tools.problem), classes="servers")
            for status in self.tools.statuses:
                state = "started" if status.started else f"did not start: {status.error}"
                yield Static(plain(f"{status.name} ({status.where}): {state}"), classes="servers")
            yield SelectionList[str](*[
                Selection(plain(f"{tool.qualified}  {' '.join(tool.description.split())[:60]}"), tool.qualified,
                          tool.qualified in self.chosen)
                for tool in (self.tools.servers.tools() if self.tools.servers else [])], id="tool-list")
            with Horizontal(classes="required"):
                yield Switch(self.required, id="tool-required")
                yield Label("call a tool before answering")
            with Horizontal():
                yield Button("Cancel", id="tools-cancel")
                yield Button("Use", id="tools-use", variant="primary")

    def on_key(self, event) -> None:
        if event.key == "enter" and not isinstance(self.focused, Button):
            event.stop()
            self.use()

    @on(Button.Pressed, "#tools-use")
    def use(self) -> None:
        self.dismiss((list(self.query_one(SelectionList).selected), self.query_one(Switch).value))

    @on(Button.Pressed, "#tools-cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class ApproveCall(ModalScreen[str]):
    """Run this call? Deny has the focus; y, a and n (or Esc) answer from the keyboard."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ApproveCall") + """
    ApproveCall > Vertical { border: thick $warning; }
    ApproveCall #call-arguments { color: $text-muted; max-height: 12; }
    """
    AUTO_FOCUS = "#call-deny"
    BINDINGS = [Binding("y", "dismiss('yes')", "Allow"), Binding("a", "dismiss('always')", "Always"),
                Binding("n,escape", "dismiss('no')", "Deny")]

    def __init__(self, call: ToolCall) -> None:
        super().__init__()
        self.call = call

    def compose(self) -> ComposeResult:
        from localllm.tui.inert import plain

        with Vertical():
            yield Label(plain(f"The model wants to call {self.call.qualified}"), id="call-tool")
            yield Static(plain(json.dumps(self.call.arguments, indent=2, ensure_ascii=False)[:2000]),
                         id="call-arguments")
            with Horizontal():
                yield Button("Deny (n)", id="call-deny", variant="primary")
                yield Button("Always for this tool (a)", id="call-always")
                yield Button("Allow (y)", id="call-allow", variant="warning")

    @on(Button.Pressed)
    def answered(self, event: Button.Pressed) -> None:
        self.dismiss({"call-allow": "yes", "call-always": "always"}.get(event.button.id or "", "no"))


def ask_from_thread(app: Any, call: ToolCall, stop: threading.Event) -> str:
    """From a worker thread: put the question on the screen and wait for its answer ("no" if the answer is
    stopped meanwhile, or the app goes)."""
    answered = threading.Event()
    answer = ["no"]

    def done(choice: str | None) -> None:
        answer[0] = choice or "no"
        answered.set()

    app.call_from_thread(app.push_screen, ApproveCall(call), done)
    while not answered.wait(0.1):
        if stop.is_set() or not app.is_running:
            if isinstance(app.screen, ApproveCall):
                app.call_from_thread(app.screen.dismiss, "no")
            return "no"
    return answer[0]


def tool_line(chunk: Any) -> str:
    """A call or its result, one line, for the answer (inert text: a server's words are data)."""
    from localllm.core.chunks import ToolCallChunk

    if isinstance(chunk, ToolCallChunk):
        return f"⚙ {chunk.call.qualified} {json.dumps(chunk.call.arguments, ensure_ascii=False)}"[:300]
    result = chunk.result
    text = " ".join(result.content.split())
    label = "not run" if not result.ran else ("error" if result.is_error else f"result ({result.seconds:.2f} s)")
    return f"  {label}: {text[:300]}{'…' if len(text) > 300 else ''}"
