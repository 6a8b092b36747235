"""Tools a model can call: what one is (a name, a description, a JSON schema for its arguments), a call the model
made, and what the call returned. Where tools come from (an MCP server, a Python function) is the tasks' business."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    """The JSON schema of the arguments (an object)."""
    server: str = ""
    """Where it comes from, for the user: an MCP server's name ("" for a tool of localllm's own)."""

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}" if self.server else self.name


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    server: str = ""
    id: str = ""
    """The server's id for a native call (its result refers to it); "" for a constrained one."""

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}" if self.server else self.name


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    content: str
    """The text the model gets back (a tool's error included)."""
    is_error: bool = False
    seconds: float = 0.0
    ran: bool = True
    """False when the call never ran (the user declined it, or its arguments broke the tool's schema)."""

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.call.qualified, "arguments": self.call.arguments, "result": self.content,
                "error": self.is_error, "ran": self.ran, "seconds": round(self.seconds, 3)}


def native_call(name: str, arguments: Any, call_id: str = "") -> ToolCall:
    """A server's tool call: arguments that are not a JSON object (a small model's broken JSON) are kept raw, so
    the schema check refuses them and the model hears why."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {"_unparsed": arguments}
    return ToolCall(name, arguments if isinstance(arguments, dict) else {"_unparsed": arguments}, id=call_id)


def function_specs(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The tools in OpenAI's `tools` shape, which Ollama's API and chat templates read too."""
    return [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                              "parameters": tool.parameters}} for tool in tools]
