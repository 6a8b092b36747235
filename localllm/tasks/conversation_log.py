"""One conversation log for the CLI and the app: `run` and `chat` record each exchange in the store the app uses
(conversations.db), so a conversation started in one continues in the other, and `localllm logs` lists and searches
them. Logging stops while a marker file sits in the data folder (`localllm logs off`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from localllm.core.chunks import Response
from localllm.core.errors import LocalLLMError, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.store.conversations import Conversation, ConversationStore, StorageProblem
from localllm.tasks.exchange import Exchange, conversation_title

logger = logging.getLogger("localllm")
"""What is said while a command works (the CLI prints its warnings on stderr)."""

OFF_MARKER = "logging-off"


def off_marker(settings: Settings) -> Path:
    return settings.paths.data_dir / OFF_MARKER


def logging_on(settings: Settings) -> bool:
    return not off_marker(settings).exists()


def set_logging(settings: Settings, on: bool) -> None:
    marker = off_marker(settings)
    if on:
        marker.unlink(missing_ok=True)
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("localllm does not record conversations while this file exists (`localllm logs on`)\n")


def say_waiting(path: Path) -> None:
    from localllm.store.conversations import LOCK_WAIT_S

    logger.warning(f"waiting for {path.name}, locked by another process (another localllm?), up to {LOCK_WAIT_S:g} s…")


def open_store(settings: Settings) -> ConversationStore:
    """The store as the CLI opens it: a wait for another process's lock is said."""
    return ConversationStore.in_data_dir(settings.paths.data_dir, on_wait=say_waiting)


def store_error(problem: StorageProblem) -> LocalLLMError:
    """A store fault as an error, for a command that cannot do its work without the file (`logs`, `chat -c`)."""
    return LocalLLMError(problem.cause, hint=problem.hint)


def _warn_unrecorded(problem: StorageProblem) -> None:
    logger.warning(f"warning: this conversation is not recorded: {problem.cause}"
                   + (f" — hint: {problem.hint}" if problem.hint else ""))


class ConversationLog:
    """The CLI's side of the store: which conversation an exchange belongs to, and recording it. Off (logs off),
    it records nothing but can still continue a conversation already recorded. A store that fails (damaged,
    locked, unwritable) is an error where a conversation is to be continued, and otherwise a warning that nothing
    is recorded: the answer matters more than its record."""

    def __init__(self, settings: Settings, *, origin: str, continue_last: bool = False,
                 conversation_id: int | None = None,
                 unrecorded: Callable[[StorageProblem], None] | None = None) -> None:
        """``unrecorded``: says that the recording stopped (default: a warning on the `localllm` logger, which the
        CLI prints on stderr; the app shows a notice)."""
        self.enabled = logging_on(settings)
        self.origin = origin
        self._unrecorded = unrecorded or _warn_unrecorded
        self.store = open_store(settings)
        self.store.on_problem = self._stop_recording
        self.conversation: Conversation | None = None
        try:
            if self.store.problem is not None:
                if conversation_id is not None or continue_last:
                    raise store_error(self.store.problem)
                self._stop_recording(self.store.problem)
            if conversation_id is not None:
                try:
                    self.conversation = self.store.get(conversation_id)
                except KeyError:
                    raise UsageError(f"there is no conversation {conversation_id}",
                                     hint="`localllm logs` lists them with their ids") from None
            elif continue_last:
                self.conversation = next(iter(self.store.list()), None)
                if self.conversation is None:
                    raise UsageError("there is no conversation to continue yet",
                                     hint="start one with `localllm chat` or `localllm run`")
        except BaseException:
            self.store.close()
            raise

    def _stop_recording(self, problem: StorageProblem) -> None:
        """Said once; the store would go on in memory, which records nothing the next command can see."""
        if not self.enabled:
            return
        self.enabled = False
        self._unrecorded(problem)

    def _safely(self, write: Callable[[], object]) -> object:
        """A write that the store could not make (its file failed, or stayed locked) stops the recording, said
        once, and leaves the answer alone."""
        try:
            return write()
        except StorageProblem as problem:
            self._stop_recording(problem)
            return None

    def history(self) -> list[Message]:
        if self.conversation is None:
            return []
        return [Message(m.role, m.content) for m in self.store.messages(self.conversation.id)]

    @property
    def system(self) -> str | None:
        return self.conversation.system if self.conversation is not None else None

    def begin(self, user_text: str, *, model: str, system: str | None, title: str | None = None) -> Exchange | None:
        """Record the prompt as it is sent (a crash keeps it); the exchange to save the answer into, or None where
        nothing is recorded. ``title``: a new conversation's, where the prompt's first line would not say it."""
        if not self.enabled:
            return None

        def record() -> Exchange:
            if self.conversation is None:
                self.conversation = self.store.create(conversation_title(title or user_text), model=model,
                                                      system=system, origin=self.origin)
            else:
                self.store.continued_in(self.conversation.id, self.origin)
            return Exchange.begin(self.store, self.conversation.id, user_text)

        exchange = self._safely(record)
        return exchange if self.enabled and isinstance(exchange, Exchange) else None

    def progress(self, exchange: Exchange | None, text: str) -> None:
        """The answer so far, saved now and then as it streams."""
        if exchange is not None and self.enabled:
            self._safely(lambda: exchange.progress(text))

    def end(self, exchange: Exchange | None, response: Response, *, model: str, backend: str,
            options: GenerationOptions) -> None:
        if exchange is None or not self.enabled:
            return
        self._safely(lambda: exchange.end(response, model=model, backend=backend, options=options))

    def undo(self, exchange: Exchange | None) -> None:
        """A prompt that got no answer leaves no trace (tasks/exchange.py); a conversation left empty goes too."""
        if exchange is not None and self.enabled:
            if self._safely(exchange.undo):
                self.conversation = None

    def forget(self) -> None:
        """``/reset``: the next message starts a new conversation; the old one stays in the log."""
        self.conversation = None

    def set_system(self, system: str | None) -> None:
        if self.conversation is not None and self.enabled:
            conversation_id = self.conversation.id
            self._safely(lambda: self.store.set_system(conversation_id, system))

    def close(self) -> None:
        self.store.close()
