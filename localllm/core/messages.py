"""Chat messages as every backend receives them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from localllm.core.errors import TemplateFailure
from localllm.core.tools import ToolCall

Role = Literal["system", "user", "assistant", "tool"]
"""``tool``: what a tool call returned, sent back to the model (``name`` is the tool's)."""
T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    name: str | None = None
    """The tool a ``tool`` message answers for."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The native tool calls an assistant message made (a server's tools field)."""
    call_id: str = ""
    """The native call a ``tool`` message answers."""

    def as_dict(self) -> dict[str, Any]:
        """Ollama's shape (also every template's): a tool result names its tool, a call carries its arguments."""
        if self.role == "tool" and self.name:
            return {"role": "tool", "content": self.content, "tool_name": self.name}
        if self.tool_calls:
            return {"role": self.role, "content": self.content,
                    "tool_calls": [{"function": {"name": call.name, "arguments": call.arguments}}
                                   for call in self.tool_calls]}
        return {"role": self.role, "content": self.content}


def tool_results_as_user(messages: list[Message]) -> list[Message]:
    """Tool results as user messages that say so, for a server or chat template with no ``tool`` role (an
    OpenAI-compatible server wants a tool_call_id the constrained calls do not have)."""
    if not any(message.role == "tool" for message in messages):
        return messages
    return [Message("user", f"Result of the tool {message.name or ''}:\n{message.content}")
            if message.role == "tool" else message for message in messages]


def fold_system_prompt(messages: list[Message]) -> list[Message]:
    """The system prompt put at the start of the first user message, for chat templates that accept no system
    role (Gemma's raise an error; others insist that roles alternate user/assistant from the first message)."""
    if not messages or messages[0].role != "system":
        return messages
    system, rest = messages[0].content, messages[1:]
    if rest and rest[0].role == "user":
        return [Message("user", f"{system}\n\n{rest[0].content}"), *rest[1:]]
    return [Message("user", system), *rest]


def render_folding_system(render: Callable[[list[Message]], T],
                          messages: list[Message]) -> tuple[T, TemplateFailure | None]:
    """``render(messages)``; when a chat template fails with a system prompt first, once more with it folded into
    the first user message. Returns the result and the failure the fold got round (None: no fold was needed);
    raises the first failure when folding does not help either."""
    try:
        return render(messages), None
    except TemplateFailure as failure:
        folded = fold_system_prompt(messages)
        if folded is messages:
            raise
        try:
            return render(folded), failure
        except TemplateFailure:
            raise failure from None
