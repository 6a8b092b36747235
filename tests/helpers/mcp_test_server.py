"""A real MCP server for the tests, built with the official SDK: `python mcp_test_server.py stdio` or
`python mcp_test_server.py http PORT`. Its tools: echo, record (writes a line to $RECORD_FILE, so a test can tell
whether a call ran), env_names (the environment it was given), fail (raises), crash (the process dies mid-call)."""

from __future__ import annotations

import os
import sys

from mcp.server import MCPServer

server = MCPServer("localllm-test")


@server.tool()
def echo(text: str) -> str:
    """Return the text as it was given."""
    return text


@server.tool()
def record(text: str) -> str:
    """Append the text to the record file."""
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(text + "\n")
    return "recorded"


@server.tool()
def env_names() -> str:
    """The names of the environment variables this server has."""
    return " ".join(sorted(os.environ))


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
def crash() -> str:
    """The server process dies during the call."""
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
