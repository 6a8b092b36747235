"""A chat session: history, a system prompt, options, and the context accounting that keeps it honest."""

from __future__ import annotations

from dataclasses import dataclass, field

from localllm.core.chunks import FinalChunk, Response
from localllm.core.errors import ContextOverflow, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions, apply_assignments
from localllm.tasks.loading import LoadedModel
from localllm.tasks.prompting import answer_reserve


@dataclass
class SessionStats:
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last: FinalChunk | None = None


@dataclass
class ChatSession:
    model: LoadedModel
    options: GenerationOptions
    system: str | None = None
    history: list[Message] = field(default_factory=list)
    stats: SessionStats = field(default_factory=SessionStats)
    dropped: int = 0
    """Messages at the start of the history left out of the last prompt because the window was full."""

    def reset(self) -> None:
        self.history.clear()
        self.dropped = 0

    def set_option(self, key: str, value: str) -> None:
        if key == "ctx":
            raise UsageError("the context window is fixed while a model is loaded",
                             hint="start the chat again with -o ctx=N")
        self.options = apply_assignments(self.options, [f"{key}={value}"])

    def _messages(self, history: list[Message]) -> list[Message]:
        return ([Message("system", self.system)] if self.system else []) + history

    def fitted_messages(self, user_text: str) -> list[Message]:
        """The prompt for the next turn: oldest turns are left out (and counted in ``dropped``) until it fits."""
        backend = self.model.backend
        window = backend.context_window
        reserve = answer_reserve(window, self.options.max_tokens)
        history = [*self.history, Message("user", user_text)]
        dropped = 0
        while backend.count_prompt_tokens(self._messages(history)) + reserve > window:
            if len(history) <= 1:
                tokens = backend.count_prompt_tokens(self._messages(history))
                raise ContextOverflow(
                    f"this message has {tokens} tokens; with {reserve} kept for the answer it exceeds the "
                    f"{window}-token window", hint="send a shorter message, or restart with -o ctx=N",
                    prompt_tokens=tokens, window=window)
            # Drop a whole exchange so the history never starts with an assistant reply.
            cut = 2 if len(history) > 2 and history[1].role == "assistant" else 1
            history = history[cut:]
            dropped += cut
        self.dropped = dropped
        return self._messages(history)

    def send(self, user_text: str) -> Response:
        """Stream the answer; the exchange joins the history when the stream ends or is stopped."""
        messages = self.fitted_messages(user_text)
        return Response(self.model.backend.chat(messages, self.options),
                        on_done=lambda response: self._record(user_text, response))

    def _record(self, user_text: str, response: Response) -> None:
        self.history.append(Message("user", user_text))
        self.history.append(Message("assistant", response.partial_text))
        self.stats.turns += 1
        if response.final is not None:
            self.stats.last = response.final
            self.stats.prompt_tokens += response.final.usage.prompt_tokens
            self.stats.completion_tokens += response.final.usage.completion_tokens
