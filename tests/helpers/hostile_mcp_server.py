"""An MCP server (the official SDK's low-level server, over stdio) whose tools' input schemas are the kind llama.cpp's
grammar parser cannot take as they are: a `\\d` pattern, a quote and a backslash in property names and enum values,
a back-reference and a count of a million. Its one tool, `ship`, answers "shipped"."""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

SHIP_SCHEMA = {
    "type": "object",
    "properties": {
        "zip": {"type": "string", "pattern": "^\\d{5}$"},
        'say "when"': {"type": "string", "enum": ['now "please"', "later\\maybe"]},
        "code": {"type": "string", "pattern": "^(a)\\1$", "maxLength": 1_000_000},
    },
    "required": ["zip"],
}


async def list_tools(_context, _params) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(name="ship", description="Ship a parcel to a ZIP code",
                                                   input_schema=SHIP_SCHEMA)])


async def call_tool(_context, params) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text="shipped")])


server = Server("hostile-schemas", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
