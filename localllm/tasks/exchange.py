"""One prompt and its answer in the conversation store, recorded the same way by `run`, `chat` and the app.

The prompt is saved the moment it is sent, with an empty answer marked stopped beside it; the answer is saved as
it streams (at most once a ``SAVE_INTERVAL_S``) and once more when it ends, with how it ended (core.finish) and
what it cost. A crash or a kill therefore keeps the prompt and what was written so far, marked stopped. A prompt
that got no answer at all (refused as too long, or the backend failed) is undone: the store is left as it was.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from localllm.core.chunks import Response
from localllm.core.finish import Finish, finish_of
from localllm.core.options import GenerationOptions
from localllm.store.conversations import ConversationStore

SAVE_INTERVAL_S = 1.0
"""How often an answer being written is saved: a kill loses at most this much of it."""
TITLE_CHARACTERS = 40


def conversation_title(text: str) -> str:
    """A new conversation's title: the first line of its first prompt, shortened."""
    return (text.strip().splitlines() or ["New conversation"])[0][:TITLE_CHARACTERS]


def meta_of(response: Response, model: str, backend: str, options: GenerationOptions) -> dict[str, Any]:
    """What an answer cost and how it was made, kept with it (`logs --json` shows it)."""
    final = response.final
    chosen = {key: value for key, value in asdict(options).items()
              if value is not None and key not in ("answer_prefix", "json_schema")}
    meta: dict[str, Any] = {"model": model, "backend": backend, "options": chosen}
    if final is not None:
        meta["usage"] = {"prompt_tokens": final.usage.prompt_tokens,
                         "completion_tokens": final.usage.completion_tokens,
                         "thinking_tokens": final.usage.thinking_tokens}
        meta["timings"] = {"first_token_s": final.timings.first_token_s, "total_s": final.timings.total_s,
                           "tokens_per_second": final.tokens_per_second}
        if final.stop_sequence:
            meta["stop_sequence"] = final.stop_sequence
    if response.tool_results:
        meta["tool_calls"] = [result.to_dict() for result in response.tool_results]
    return meta


@dataclass
class Exchange:
    store: ConversationStore
    conversation_id: int
    prompt_id: int
    answer_id: int
    saved_at: float = field(default_factory=time.monotonic)

    @classmethod
    def begin(cls, store: ConversationStore, conversation_id: int, text: str) -> Exchange:
        """The prompt saved as it is sent, and its answer's place beside it (marked stopped until it ends)."""
        prompt = store.add_message(conversation_id, "user", text)
        answer = store.add_message(conversation_id, "assistant", "", stopped=True)
        return cls(store, conversation_id, prompt.id, answer.id)

    @property
    def ids(self) -> list[int]:
        return [self.prompt_id, self.answer_id]

    def progress(self, text: str) -> bool:
        """The answer so far, saved when the last save is ``SAVE_INTERVAL_S`` old; whether it was saved now."""
        if time.monotonic() - self.saved_at < SAVE_INTERVAL_S:
            return False
        self.store.update_message(self.answer_id, text, stopped=True)
        self.saved_at = time.monotonic()
        return True

    def end(self, response: Response | None, *, model: str, backend: str, options: GenerationOptions,
            shown: str = "") -> Finish:
        """The answer's end: its whole text, how it ended and what it cost. ``response`` None: it never got a
        stream (the app closing mid-answer), so ``shown`` is what was written and it ended stopped."""
        finish = finish_of(response.final if response is not None else None, options.max_tokens)
        text = response.partial_text if response is not None else shown
        meta = meta_of(response, model, backend, options) if response is not None else None
        self.store.update_message(self.answer_id, text, stopped=finish.stored == "stopped", finish=finish.stored,
                                  meta=meta)
        return finish

    def forget(self) -> None:
        """Its prompt and answer out of the store (to send the prompt again); the conversation stays."""
        for message_id in self.ids:
            self.store.delete_message(message_id)

    def undo(self) -> bool:
        """A prompt that got no answer leaves no trace: its messages go, and the conversation too when it has no
        others. Whether the conversation went."""
        self.forget()
        if not self.store.messages(self.conversation_id):
            self.store.delete(self.conversation_id)
            return True
        return False
