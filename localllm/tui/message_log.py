"""The chat's log of messages: one focus stop for the lot, with a picked message to copy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.geometry import Size

if TYPE_CHECKING:  # the answer module imports the Markdown widget, which the first frame does without
    from localllm.tui.answer import ChatMessage


class MessageLog(VerticalScroll):
    """The chat's messages, one stop for Tab however many there are. Focused, ↑/↓ pick a message (marked at its
    left edge), c copies it, k its first code block, t opens or folds its thinking; PgUp/PgDn scroll."""

    BINDINGS = [
        Binding("up", "pick(-1)", "Previous message", id="message.previous", show=False),
        Binding("down", "pick(1)", "Next message", id="message.next", show=False),
        Binding("c", "copy", "Copy message", id="message.copy"),
        Binding("k", "copy_code", "Copy code block", id="message.copy_code"),
        Binding("t", "toggle_thinking", "Show/fold thinking", id="message.thinking"),
    ]

    def watch_virtual_size(self, size: Size) -> None:
        # Anchored, the log follows a growing answer, and a conversation opened shows its end once its Markdown is
        # laid out; scrolling up lets go (the user reads on undisturbed), scrolling back to the end holds again.
        # Only while the messages overflow: Textual draws an anchored log's short content at its bottom edge.
        overflowing = size.height > self.scrollable_content_region.height
        if overflowing != self.is_anchored:
            self.anchor(overflowing)

    def messages(self) -> list[ChatMessage]:
        return list(self.query_children("ChatMessage"))  # type: ignore[arg-type]  # all are ChatMessage

    @property
    def picked(self) -> ChatMessage | None:
        return next((m for m in self.messages() if m.has_class("-selected")), None)

    def _pick(self, message: ChatMessage | None) -> None:
        for other in self.query_children(".-selected"):
            other.remove_class("-selected")
        if message is not None:
            message.add_class("-selected")
            self.release_anchor()  # a message picked above stays in view while an answer grows
            self.scroll_to_widget(message, animate=False, top=message.outer_size.height > self.size.height)

    def on_focus(self) -> None:
        if self.picked is None and (messages := self.messages()):
            self._pick(messages[-1])

    def on_blur(self) -> None:
        self._pick(None)

    def action_pick(self, step: int) -> None:
        messages = self.messages()
        if not messages:
            return
        current = self.picked
        index = messages.index(current) + step if current in messages else len(messages) - 1
        self._pick(messages[max(0, min(index, len(messages) - 1))])

    def action_copy(self) -> None:
        if (message := self.picked) is not None:
            message.action_copy()

    def action_copy_code(self) -> None:
        if (message := self.picked) is not None:
            message.action_copy_code()

    def action_toggle_thinking(self) -> None:
        if (message := self.picked) is not None and not message.toggle_thinking():
            self.app.notify("this message has no thinking to show", severity="warning")
