"""The conversation list: search as you type, open, and the highlighted one for rename and delete."""

from __future__ import annotations

from textual import on
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from localllm.store.conversations import ConversationStore
from localllm.tui.inert import plain


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str) -> None:
        super().__init__(Label(plain(title)))
        self.conversation_id = conversation_id


class ConversationList(Vertical):
    DEFAULT_CSS = """
    ConversationList { width: 28; border-right: solid $primary-background; }
    ConversationList #search { height: 3; }
    """

    class Opened(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, store: ConversationStore, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store

    def compose(self):
        yield Input(placeholder="search chats (Ctrl+F)", id="search")
        yield ListView(id="conversations")

    def on_mount(self) -> None:
        self.refresh_list()

    @property
    def list_view(self) -> ListView:
        return self.query_one("#conversations", ListView)

    @property
    def highlighted_id(self) -> int | None:
        item = self.list_view.highlighted_child
        return item.conversation_id if isinstance(item, ConversationItem) else None

    def refresh_list(self) -> None:
        search = self.query_one("#search", Input).value.strip()
        view = self.list_view
        view.clear()
        for conversation in self.store.list(search or None):
            view.append(ConversationItem(conversation.id, conversation.title))

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.refresh_list()

    @on(Input.Submitted, "#search")
    def search_submitted(self) -> None:
        self.list_view.focus()

    @on(ListView.Selected, "#conversations")
    def selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Opened(event.item.conversation_id))
