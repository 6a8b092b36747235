"""`localllm tools`, and the tools of `run` and `chat` (-T, --approve-tools, --chain-limit, --tool-choice): MCP
servers started for the command, each call shown on stderr and asked about before it runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from localllm.cli.arguments import Commands
from localllm.cli.output import note, print_json
from localllm.core.chunks import ToolCallChunk, ToolResultChunk
from localllm.core.printable import inert_text
from localllm.core.settings import Settings
from localllm.core.tools import ToolCall

if TYPE_CHECKING:
    from localllm.tasks.tools.calling import ToolLoop

SHOWN_RESULT_CHARS = 400
"""Of a tool's result, this much is shown on stderr (the model gets all of it, up to calling.MAX_RESULT_CHARS)."""


def add_tool_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tools (MCP servers from mcp.json; see docs/tools.md)")
    group.add_argument("-T", "--tool", action="append", default=[], metavar="NAME",
                       help="let the model call this MCP server's tools (SERVER), one tool (SERVER.TOOL or TOOL); "
                            "repeatable")
    group.add_argument("--tools", action="append", default=[], metavar="SERVER", dest="tool_servers",
                       help="every tool of this MCP server; repeatable")
    group.add_argument("--approve-tools", action="store_true", help="run every call without asking (for scripts)")
    group.add_argument("--chain-limit", type=int, default=None, metavar="N",
                       help="calls in a row before the model must answer (default 5)")
    group.add_argument("--tool-choice", default="auto", metavar="CHOICE",
                       help="auto (the model decides), required (it must call one first), or a tool's name")
    group.add_argument("--mcp-config", metavar="FILE", help="read the MCP servers from FILE instead of mcp.json")


def config_file(args: argparse.Namespace, settings: Settings):
    from pathlib import Path

    from localllm.tasks.tools.mcp_config import config_path

    return config_path(settings, Path(args.mcp_config).expanduser() if args.mcp_config else None)


def tools_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.tools.mcp_config import read_servers
    from localllm.tasks.tools.mcp_servers import McpServers

    path = config_file(args, settings)
    entries = read_servers(path, required=bool(args.mcp_config))
    if not entries:
        if args.json:
            print_json({"config": str(path), "servers": []})
        else:
            note(f"no MCP servers are declared in {path}; docs/tools.md shows the format")
        return 0
    with McpServers(entries) as servers:
        statuses = servers.start()
    if args.json:
        print_json({"config": str(path), "servers": [status.to_dict() for status in statuses]})
    else:
        print(f"MCP servers from {path}")
        for status in statuses:
            state = f"started in {status.seconds:.1f} s" if status.started else f"not started: {status.error}"
            # One line each, whatever a server names its tools: a line break in a name is shown as \n.
            print("\n" + inert_text(f"{status.name} ({status.where}): {state}", keep=""))
            for tool in status.tools:
                description = " ".join(tool.description.split())
                print(inert_text(f"  {status.name}.{tool.name}  {description[:100]}", keep=""))
    return 0 if all(status.started for status in statuses) else 1


def chosen_names(args: argparse.Namespace) -> list[str]:
    return [*args.tool, *args.tool_servers]


@contextlib.contextmanager
def tool_loop(args: argparse.Namespace, settings: Settings, ask: Callable[[str], str | None]
              ) -> Iterator[ToolLoop | None]:
    """The tools the command line chose, their servers running for the block; None when none were chosen.
    ``ask`` reads the user's answer to a question (None: there is no one to ask)."""
    names = chosen_names(args)
    if not names:
        unused = [flag for flag, given in (("--approve-tools", args.approve_tools),
                                           ("--chain-limit", args.chain_limit is not None),
                                           ("--tool-choice", args.tool_choice != "auto"),
                                           ("--mcp-config", bool(args.mcp_config))) if given]
        if unused:
            note(f"note: {', '.join(unused)} change nothing without -T or --tools (which choose the tools)")
        yield None
        return
    from localllm.core.errors import UsageError
    from localllm.tasks.tools.calling import DEFAULT_CHAIN_LIMIT, ToolLoop
    from localllm.tasks.tools.mcp_config import read_servers
    from localllm.tasks.tools.mcp_servers import McpServers

    path = config_file(args, settings)
    entries = read_servers(path, required=bool(args.mcp_config))
    if not entries:
        raise UsageError(f"no MCP servers are declared in {path}", hint="declare them there (see docs/tools.md), "
                         "or name another file with --mcp-config")
    if args.chain_limit is not None and args.chain_limit < 1:
        raise UsageError("--chain-limit must be 1 or more", hint="e.g. --chain-limit 3")
    declared = {entry.name for entry in entries}
    wanted_servers = {name.partition(".")[0] for name in names}
    # Only the servers named are started; a bare tool name may be any server's, so then all of them are.
    needed = [entry for entry in entries if entry.name in wanted_servers] if wanted_servers <= declared else entries
    with McpServers(needed) as servers:
        for status in servers.start():
            if not status.started and status.name not in wanted_servers:  # a chosen one is the error below
                note(f"note: the MCP server {status.name} did not start: {status.error}")
        loop = ToolLoop(servers.select(names), servers.call, TerminalApproval(args.approve_tools, ask),
                        chain_limit=args.chain_limit or DEFAULT_CHAIN_LIMIT, choice=args.tool_choice)
        yield loop


class TerminalApproval:
    """Asks before each call: yes, no, or always for this tool (for the rest of the command)."""

    def __init__(self, approve_all: bool, ask: Callable[[str], str | None]) -> None:
        self.approve_all = approve_all
        self.ask = ask
        self.always: set[str] = set()

    def __call__(self, call: ToolCall) -> bool:
        if self.approve_all or call.qualified in self.always:
            return True
        answer = self.ask(f"run {inert_text(call.qualified, keep='')}? [y]es, [n]o, [a]lways for this tool: ")
        if answer is None:
            note(f"note: {inert_text(call.qualified, keep='')} was not run: there is no terminal to ask "
                 "(--approve-tools allows calls without asking)")
            return False
        answer = answer.strip().lower()
        if answer in ("a", "always"):
            self.always.add(call.qualified)
            return True
        return answer in ("y", "yes")


def ask_on_terminal(question: str) -> str | None:
    """The answer typed on the controlling terminal (stdin may be a piped document)."""
    try:  # two handles: Python cannot open a terminal for reading and writing at once in text mode
        with open("/dev/tty", "w", encoding="utf-8") as out, \
                open("/dev/tty", encoding="utf-8", errors="replace") as answer:
            out.write(question)
            out.flush()
            return answer.readline()
    except OSError:
        return None


def ask_on_stdin(question: str) -> str | None:
    """The next line of stdin (the chat's own input, scripted or typed); None at its end."""
    if not sys.stdin.isatty():
        sys.stderr.write(question + "\n")  # asked all the same, so a transcript shows what the answer was for
        sys.stderr.flush()
    try:
        return input(question if sys.stdin.isatty() else "")
    except EOFError:
        return ""  # the input ended (Ctrl-D): no answer is a no


def show_tool_chunk(chunk: ToolCallChunk | ToolResultChunk) -> None:
    """A call and its result on stderr, inert (a server's text is data), the result shortened."""
    if isinstance(chunk, ToolCallChunk):
        arguments = json.dumps(chunk.call.arguments, ensure_ascii=False)
        sys.stderr.write(inert_text(f"⚙ {chunk.call.qualified} {arguments}", keep="") + "\n")
    else:
        result = chunk.result
        text = " ".join(result.content.split())
        if len(text) > SHOWN_RESULT_CHARS:
            text = text[:SHOWN_RESULT_CHARS] + "…"
        if not result.ran:
            label = "not run"
        else:
            label = f"{'error' if result.is_error else 'result'} after {result.seconds:.2f} s"
        sys.stderr.write(inert_text(f"  {label}: {text}") + "\n")
    sys.stderr.flush()


def register(commands: Commands) -> None:
    tools = commands.add_parser("tools", help="the MCP servers in mcp.json: whether each starts, and its tools")
    tools.add_argument("--mcp-config", metavar="FILE", help="read the servers from FILE instead of mcp.json")
    tools.add_argument("--json", action="store_true")
    tools.set_defaults(handler=tools_command)
