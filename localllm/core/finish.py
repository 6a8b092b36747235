"""How an answer ended, decided in one place for every front end and for `serve`.

A backend reports little: "stop" (the model ended, or a stop string did), "length" (no more tokens: the answer's
limit, or the context window filled up), "cancelled", "error". What the user is told needs more: which stop
string, whether the limit was the one they set or the window, and whether the answer was a tool call. ``finish_of``
works that out from the final chunk and the limit the request set; each front end then says the same thing in its
own place (the CLI's marker on stderr, the app's note under the answer, the stored ``finish``, serve's reasons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from localllm.core.chunks import FinalChunk

FinishKind = Literal["end", "stop_string", "length", "window", "stopped", "error", "tool_call"]

NOTES = {"length": "cut: the answer reached its token limit", "window": "cut: the context window is full",
         "stopped": "stopped before the end"}
"""What a message's end says where it is not a normal one, by its stored value."""


@dataclass(frozen=True)
class Finish:
    kind: FinishKind
    stop: str | None = None
    """The stop string that ended the answer, where the backend says which."""
    limit: int | None = None
    """The answer's token limit (``max_tokens``), where one was set."""
    completion_tokens: int = 0

    @property
    def cut(self) -> bool:
        """The answer ended before the model did: its limit, or the window."""
        return self.kind in ("length", "window")

    @property
    def stored(self) -> str:
        """The value kept with a message in conversations.db: "stop" where it ended normally, else a key of
        NOTES."""
        if self.kind in ("length", "window"):
            return self.kind
        if self.kind in ("stopped", "error"):
            return "stopped"
        return "stop"

    @property
    def reason(self) -> str:
        """OpenAI's finish_reason (and `run --json`'s): stop, length or tool_calls."""
        return "tool_calls" if self.kind == "tool_call" else "length" if self.cut else "stop"

    @property
    def note(self) -> str | None:
        return NOTES.get(self.stored)

    def marker(self, *, continued_with: str | None = "`localllm chat -c`",
               raised_with: str = "-o max_tokens") -> str | None:
        """The CLI's line on stderr after an answer that did not end by itself, in the words the app uses.
        ``continued_with``: how this answer can be taken further (None where it cannot: an answer that was not
        recorded has no conversation to continue); ``raised_with``: how the limit is raised where the user is."""
        if self.kind == "length":
            ways = [f"continue with {continued_with}"] if continued_with else []
            if self.limit:
                return f"[cut at max_tokens={self.limit}: {', or '.join([*ways, f'raise {raised_with}'])}]"
            return f"[cut at the token limit: {ways[0]}]" if ways else "[cut at the token limit]"
        if self.kind == "window":
            return "[cut: the context window is full: start a new conversation, or raise -o ctx=N]"
        if self.kind in ("stopped", "error"):
            return "[stopped]"
        return None


def finish_of(final: FinalChunk | None, max_tokens: int | None = None, *, tool_calls: bool = False) -> Finish:
    """How an answer ended: ``final`` is its last chunk (None: it never got one, so it was stopped), ``max_tokens``
    the limit the request set, ``tool_calls`` whether the answer called tools."""
    if final is None or final.finish_reason == "cancelled":
        return Finish("stopped")
    tokens = final.usage.completion_tokens
    if final.finish_reason == "error":
        return Finish("error", completion_tokens=tokens)
    if tool_calls:
        return Finish("tool_call", completion_tokens=tokens)
    if final.finish_reason == "length":
        # A backend says "length" when the window fills up too: the limit was reached only if that many came.
        reached = bool(max_tokens) and tokens >= (max_tokens or 0)
        return Finish("length" if reached else "window", limit=max_tokens, completion_tokens=tokens)
    if final.stop_sequence:
        return Finish("stop_string", stop=final.stop_sequence, completion_tokens=tokens)
    return Finish("end", completion_tokens=tokens)
