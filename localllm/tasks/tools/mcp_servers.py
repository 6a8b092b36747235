"""MCP servers as tools, through the official ``mcp`` SDK: each chosen server is started (stdio) or reached
(streamable HTTP), its tools are listed, and calls go to it with a time limit.

The SDK is asynchronous and localllm's chat loop is not, so the sessions live on an event loop in a thread of
their own; each server's connection is opened and closed inside one task, as the SDK's task groups require. A server
that fails to start, never answers, errors or dies during a call is a status or a tool result saying so, never an
exception out of here.

A server is untrusted output: what it writes on its stdout that is not JSON-RPC is counted (the SDK would log a
traceback per line) and past a few lines ends it with one message; its stderr goes through a pipe into a bounded
tail (the SDK wants a file, which would grow as long as the server writes), whose last lines a failure quotes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
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
STDERR_KEPT = 8192
"""Bytes of a server's stderr kept, the newest: enough for the last lines a failure quotes."""
STDERR_LINES = 3
"""Lines of a failed server's stderr quoted in the message."""
MAX_BAD_LINES = 50
"""Lines on a server's stdout that are not JSON-RPC before it is stopped: a banner or two is tolerated."""


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
        with StderrTail() as errlog:
            checked: StdoutChecked | None = None
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
                        try:
                            read, write = await stack.enter_async_context(
                                stdio_client(params, errlog=errlog.writer))  # type: ignore[arg-type]
                        finally:
                            errlog.spawned()
                        read = checked = StdoutChecked(read)
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
                await asyncio.to_thread(errlog.finish, 2.0)
                why = failure(exc, errlog, checked.problem() if checked is not None else None)
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


def failure(exc: BaseException, errlog: StderrTail, stdout_problem: str | None = None) -> str:
    """Why a server failed, in a line: what was wrong with its stdout, else the innermost error of an exception
    group; then the last lines of its stderr."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if stdout_problem is not None:
        why = stdout_problem
    elif isinstance(exc, FileNotFoundError):
        why = f"its command was not found ({exc.filename or exc})"
    else:
        why = one_line(str(exc)) or type(exc).__name__
    lines = errlog.last_lines(STDERR_LINES)
    if lines:
        quoted = " | ".join(line[:STDERR_TAIL] for line in lines)
        why += f"; the end of its stderr: {quoted[-STDERR_TAIL:]}"
    return why


class StderrTail:
    """A server's stderr: the write end of a pipe for the child, and a thread that keeps the newest
    ``STDERR_KEPT`` bytes of what arrives, whatever the server writes and for however long."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._kept: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="mcp-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            with contextlib.suppress(OSError, ValueError):
                while block := self._reader.read(65536):
                    with self._lock:
                        self._kept.append(block)
                        self._size += len(block)
                        while self._size - len(self._kept[0]) >= STDERR_KEPT:
                            self._size -= len(self._kept.popleft())
        finally:
            self._reader.close()  # at the end of the pipe: every writer has closed it

    def spawned(self) -> None:
        """The child holds its copy of the write end now (or never will): the pipe ends when the child's does."""
        with contextlib.suppress(OSError):
            self.writer.close()

    def finish(self, seconds: float) -> None:
        """Waits (a bounded time) for what the server wrote before it ended."""
        self._thread.join(seconds)

    def last_lines(self, count: int) -> list[str]:
        with self._lock:
            data = b"".join(self._kept)[-STDERR_KEPT:]
        text = data.decode("utf-8", errors="replace")
        return [one_line(line) for line in text.splitlines() if line.strip()][-count:]

    def __enter__(self) -> StderrTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.spawned()
        # A descendant of the server may still hold the write end: the thread (a daemon) closes the read end when
        # the pipe ends; closing it here would race its read.


class _NotJsonRpc(logging.Filter):
    """Drops the SDK's traceback for each stdout line that is not JSON-RPC: StdoutChecked says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


_SDK_LOG_FILTER = _NotJsonRpc()


class StdoutChecked:
    """The SDK's stream of a stdio server's messages, without the parse errors it passes on for lines that are
    not JSON-RPC: those are counted, and past ``MAX_BAD_LINES`` the stream ends, which ends the session."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bad_lines = 0
        self.first_bad: str | None = None
        sdk_logger = logging.getLogger("mcp.client.stdio")
        if _SDK_LOG_FILTER not in sdk_logger.filters:
            sdk_logger.addFilter(_SDK_LOG_FILTER)

    def problem(self) -> str | None:
        if not self.bad_lines:
            return None
        lines = "a line" if self.bad_lines == 1 else f"{self.bad_lines:,} lines"
        return f"it wrote {lines} that {'is' if self.bad_lines == 1 else 'are'} not MCP (JSON-RPC) on its " \
               f"stdout, the first: {self.first_bad}"

    async def receive(self) -> Any:
        import anyio

        while True:
            item = await self.inner.receive()
            if not isinstance(item, Exception):
                return item
            self.bad_lines += 1
            if self.first_bad is None:
                self.first_bad = _bad_input(item)
            if self.bad_lines > MAX_BAD_LINES:
                raise anyio.EndOfStream

    def __aiter__(self) -> StdoutChecked:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> StdoutChecked:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _bad_input(error: Exception) -> str:
    """The line a parse error was about, shown escaped and short (pydantic's errors carry it as their input)."""
    errors = getattr(error, "errors", None)
    with contextlib.suppress(Exception):
        found = errors()[0].get("input") if callable(errors) else None
        if isinstance(found, str | bytes):
            text = found.decode("utf-8", errors="replace") if isinstance(found, bytes) else found
            return repr(text[:80] + ("…" if len(text) > 80 else ""))
    return one_line(str(error))[:120]
