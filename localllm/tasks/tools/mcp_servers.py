"""MCP servers as tools, through the official ``mcp`` SDK: each chosen server is started (stdio) or reached
(streamable HTTP), its tools are listed, and calls go to it with a time limit.

The SDK is asynchronous and localllm's chat loop is not, so the sessions live on an event loop in a thread of
their own; each server's connection is opened and closed inside one task, as the SDK's task groups require. A server
that fails to start, never answers, errors or dies during a call is a status or a tool result saying so, never an
exception out of here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from localllm.core.errors import UsageError
from localllm.core.tools import ToolCall, ToolResult, ToolSpec
from localllm.tasks.tools.mcp_config import ServerEntry

START_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 60.0
STDERR_TAIL = 300
"""Characters of a failed server's stderr quoted in the message."""


@dataclass
class ServerStatus:
    name: str
    where: str
    started: bool = False
    tools: list[ToolSpec] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.name, "where": self.where, "started": self.started, "error": self.error,
                "seconds": round(self.seconds, 2),
                "tools": [{"name": tool.name, "description": tool.description, "parameters": tool.parameters}
                          for tool in self.tools]}


class McpServers:
    def __init__(self, entries: Sequence[ServerEntry], *, start_timeout: float = START_TIMEOUT_S,
                 call_timeout: float = CALL_TIMEOUT_S) -> None:
        self.entries = list(entries)
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.statuses: dict[str, ServerStatus] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-servers", daemon=True)
        self._sessions: dict[str, Any] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._ended: dict[str, str] = {}
        """Why a server that had started stopped (its process exited, the connection closed)."""

    # -- starting and stopping -------------------------------------------------------------------------------------
    def start(self) -> list[ServerStatus]:
        """Start every server at once; returns each one's status (started with its tools, or why not)."""
        require_sdk()
        if not self._thread.is_alive():
            self._thread.start()
        futures = {entry.name: asyncio.run_coroutine_threadsafe(self._open(entry), self._loop)
                   for entry in self.entries}
        for entry in self.entries:
            try:
                status = futures[entry.name].result(timeout=self.start_timeout + 10)
            except concurrent.futures.TimeoutError:
                status = ServerStatus(entry.name, entry.where, error=f"did not start within {self.start_timeout:.0f} s")
            self.statuses[entry.name] = status
        return [self.statuses[entry.name] for entry in self.entries]

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop_all() -> None:
            for stop in self._stops.values():
                stop.set()
            tasks = [task for task in self._tasks.values() if not task.done()]
            if tasks:
                done, pending = await asyncio.wait(tasks, timeout=5)
                for task in pending:
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> McpServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _open(self, entry: ServerEntry) -> ServerStatus:
        ready: asyncio.Future[ServerStatus] = self._loop.create_future()
        started = time.monotonic()
        self._tasks[entry.name] = asyncio.ensure_future(self._serve(entry, ready))
        try:
            status = await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
        except TimeoutError:
            self._tasks[entry.name].cancel()
            status = ServerStatus(entry.name, entry.where,
                                  error=f"did not answer within {self.start_timeout:.0f} s (is it an MCP server?)")
        status.seconds = time.monotonic() - started
        return status

    async def _serve(self, entry: ServerEntry, ready: asyncio.Future[ServerStatus]) -> None:
        from mcp import ClientSession

        stop = self._stops[entry.name] = asyncio.Event()
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as errlog:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if entry.url is not None:
                        from mcp.client.streamable_http import streamable_http_client

                        streams = await stack.enter_async_context(streamable_http_client(entry.url))
                        read, write = streams[0], streams[1]
                    else:
                        from mcp import StdioServerParameters
                        from mcp.client.stdio import stdio_client

                        assert entry.command is not None, "mcp_config: a server has a command or a url"
                        # Only what the entry declares, and PATH to find its programs: not the user's secrets.
                        env = {"PATH": os.environ.get("PATH", os.defpath), **entry.env}
                        params = StdioServerParameters(command=entry.command, args=list(entry.args), env=env)
                        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    listed = await session.list_tools()
                    tools = [ToolSpec(str(tool.name), str(tool.description or ""), tool_schema(tool), entry.name)
                             for tool in listed.tools]
                    self._sessions[entry.name] = session
                    ready.set_result(ServerStatus(entry.name, entry.where, True, tools))
                    await stop.wait()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - whatever a server or its transport raises is its failure
                why = failure(exc, errlog)
                self._ended[entry.name] = why
                if not ready.done():
                    ready.set_result(ServerStatus(entry.name, entry.where, error=why))
            finally:
                self._sessions.pop(entry.name, None)

    # -- tools -----------------------------------------------------------------------------------------------------
    def tools(self) -> list[ToolSpec]:
        return [tool for status in self.statuses.values() for tool in status.tools]

    def select(self, wanted: Sequence[str]) -> list[ToolSpec]:
        """The tools ``wanted`` names: SERVER (all its tools), SERVER.TOOL, or a TOOL name any server offers."""
        chosen: list[ToolSpec] = []
        for name in wanted:
            server, _, tool = name.partition(".")
            status = self.statuses.get(server)
            if status is not None and not status.started:
                raise UsageError(f"the MCP server {server!r} did not start: {status.error}",
                                 hint="`localllm tools` shows every server's state")
            if status is not None:
                found = [spec for spec in status.tools if not tool or spec.name == tool]
            else:
                found = [spec for spec in self.tools() if spec.name == name]
            if not found:
                known = ", ".join(sorted({*self.statuses, *(spec.qualified for spec in self.tools())})) or "none"
                raise UsageError(f"no MCP server or tool named {name!r}",
                                 hint=f"known: {known}; servers are declared in mcp.json (see docs/tools.md)")
            chosen.extend(spec for spec in found if spec not in chosen)
        return chosen

    def call(self, call: ToolCall) -> ToolResult:
        started = time.monotonic()
        if not self._thread.is_alive():
            return ToolResult(call, "the MCP servers are not running", is_error=True, ran=False)
        future = asyncio.run_coroutine_threadsafe(self._call(call), self._loop)
        try:
            content, is_error = future.result(timeout=self.call_timeout + 10)
        except concurrent.futures.TimeoutError:
            future.cancel()
            content, is_error = f"{call.qualified} did not answer within {self.call_timeout:.0f} s", True
        return ToolResult(call, content, is_error, time.monotonic() - started)

    async def _call(self, call: ToolCall) -> tuple[str, bool]:
        session, server_task = self._sessions.get(call.server), self._tasks.get(call.server)
        if session is None or server_task is None or call.server in self._ended:
            why = self._ended.get(call.server) or "it is not running"
            return f"the MCP server {call.server!r} cannot take calls: {why}", True
        request = asyncio.ensure_future(session.call_tool(call.name, call.arguments))
        done, _ = await asyncio.wait({request, server_task}, timeout=self.call_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if request not in done:
            request.cancel()
            if server_task in done:
                return f"the MCP server {call.server!r} stopped during the call: {self._ended.get(call.server)}", True
            return f"{call.qualified} did not answer within {self.call_timeout:.0f} s", True
        try:
            result = request.result()
        except Exception as exc:  # noqa: BLE001 - the server's error (McpError) or the transport's
            why = one_line(str(exc)) or type(exc).__name__
            if "connection closed" in why.lower():
                self._ended.setdefault(call.server, "it closed the connection (its process may have ended)")
                return f"the MCP server {call.server!r} closed the connection during the call (it may have " \
                       "crashed)", True
            return f"{call.qualified} failed: {why}", True
        return result_text(result), bool(getattr(result, "is_error", False) or getattr(result, "isError", False))


def require_sdk() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise UsageError("MCP support is not installed", hint='pip install "localllm[mcp]"') from None


def tool_schema(tool: Any) -> dict[str, Any]:
    schema = getattr(tool, "input_schema", None) or getattr(tool, "inputSchema", None)
    return dict(schema) if isinstance(schema, dict) else {"type": "object", "properties": {}}


def result_text(result: Any) -> str:
    """The text a call returned; other content (images, audio, resources) is named, not passed on."""
    parts = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        parts.append(str(getattr(item, "text", "")) if kind == "text" else f"[{kind or 'unknown'} content]")
    if not parts and getattr(result, "structured_content", None) is not None:
        import json

        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


def one_line(text: str) -> str:
    return " ".join(text.split())[:STDERR_TAIL]


def failure(exc: BaseException, errlog: Any) -> str:
    """Why a server failed, in a line: the innermost error of an exception group, and the end of its stderr."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        why = f"its command was not found ({exc.filename or exc})"
    else:
        why = one_line(str(exc)) or type(exc).__name__
    with contextlib.suppress(Exception):
        errlog.seek(0)
        lines = [line.strip() for line in errlog.read()[-4000:].splitlines() if line.strip()]
        if lines:
            why += f"; the last line of its stderr: {lines[-1][:STDERR_TAIL]}"
    return why
