"""An MCP server (the official SDK's low-level server, over stdio) whose tools' input schemas are the kind llama.cpp's
grammar parser cannot take as they are: a `\\d` pattern, a quote and a backslash in property names and enum values,
a back-reference and a count of a million. Its one tool, `ship`, answers "shipped".

With an argument it misbehaves instead: `garbage` writes 20,000 lines that are not JSON-RPC on its stdout (and then
serves); `stderr-flood` serves while writing to its stderr as fast as it can; `crash` writes 10,000 lines to its
stderr and exits with status 3 before answering; `odd-names` names its tool with a line break and an escape
sequence in it."""

from __future__ import annotations

import sys

SHIP_SCHEMA = {
    "type": "object",
    "properties": {
        "zip": {"type": "string", "pattern": "^\\d{5}$"},
        'say "when"': {"type": "string", "enum": ['now "please"', "later\\maybe"]},
        "code": {"type": "string", "pattern": "^(a)\\1$", "maxLength": 1_000_000},
    },
    "required": ["zip"],
}


TOOL_NAME = "ship"


def serve() -> None:
    """The SDK is imported here, not at the top: it costs over a second of processor time, which the servers that
    misbehave before they serve (`garbage`, `crash`) never need."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    async def list_tools(_context, _params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=TOOL_NAME, description="Ship a parcel to a ZIP code",
                                                       input_schema=SHIP_SCHEMA)])

    async def call_tool(_context, params) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text="shipped")])

    server = Server("hostile-schemas", on_list_tools=list_tools, on_call_tool=call_tool)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)


def misbehave(how: str) -> None:
    if how == "garbage":
        for number in range(20_000):
            print(f"not json-rpc, line {number}", flush=number % 1000 == 0)
        sys.stdout.flush()
    elif how == "stderr-flood":
        import threading

        def flood() -> None:
            line = "x" * 1023 + "\n"
            while True:
                sys.stderr.write(line * 64)

        threading.Thread(target=flood, daemon=True).start()
    elif how == "odd-names":
        global TOOL_NAME
        TOOL_NAME = "ship\nfake.tool  Pretends to be another tool\x1b[2J"
    elif how == "crash":
        for number in range(10_000):
            sys.stderr.write(f"warming up, step {number}\n")
        sys.stderr.write("fatal: the database at /nowhere cannot be opened\n")
        sys.stderr.flush()
        raise SystemExit(3)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        misbehave(sys.argv[1])
    serve()
