"""The conversation list: search as you type, open, and the highlighted one for rename and delete. `localllm run`'s
one-shots are left out until asked for (F7): they are answers, not chats, and would bury the chats."""

from __future__ import annotations

from datetime import datetime

from textual import on
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView, Static

from localllm.store.conversations import ONE_SHOTS, ConversationStore
from localllm.tui.inert import plain


def when(iso: str, now: datetime | None = None) -> str:
    """A conversation's last change, short: the time today, the day this year, else the date."""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return ""
    now = now or datetime.now().astimezone()
    if moment.date() == now.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%b %-d" if moment.year == now.year else "%Y-%m-%d")


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str, updated: str = "", origin: str | None = None) -> None:
        self.one_shot = origin in ONE_SHOTS
        self.origin = origin
        super().__init__(Label(plain(title), classes="title"), Label(self._when(updated), classes="when"))
        self.conversation_id = conversation_id
        self.set_class(self.one_shot, "-one-shot")

    def _when(self, updated: str) -> str:
        return plain((f"{self.origin} " if self.one_shot else "") + when(updated))

    def updated(self, updated: str) -> None:
        self.query_one(".when", Label).update(self._when(updated))


class ConversationList(Vertical):
    DEFAULT_CSS = """
    ConversationList { width: 28; border-right: solid $primary-background; }
    ConversationList #search { height: 3; }
    ConversationItem Label.title { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    ConversationItem Label.when { color: $text-muted; }
    ConversationItem.-current Label.title { text-style: bold; color: $accent; }
    ConversationItem.-one-shot Label.title { text-style: italic; }
    ConversationList #one-shots { height: auto; color: $text-muted; padding: 0 1; }
    ConversationList #one-shots.-none { display: none; }
    ConversationList #no-match { height: auto; color: $text-muted; padding: 0 1; }
    ConversationList #no-match.-none { display: none; }
    """
    BINDINGS = [Binding("escape", "clear_search", "Clear search", id="chat.clear_search", show=False)]

    class Opened(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def __init__(self, store: ConversationStore, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.current_id: int | None = None
        """The conversation open in the chat, marked in the list."""
        self.one_shots = False
        """Whether the one-shots (`localllm run`, code actions) are listed (toggle_one_shots)."""
        self.toggle_key = "R"
        """The key that toggles them in the list, as the help screen names it (the chat pane says a remapped one)."""

    def compose(self):
        yield Input(placeholder="search chats (Ctrl+F)", id="search")
        yield Static("", id="no-match", classes="-none", markup=False)
        yield ListView(id="conversations")
        yield Static("", id="one-shots", classes="-none", markup=False)

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
        found = self.store.list(search or None, one_shots=self.one_shots)
        for conversation in found:
            item = ConversationItem(conversation.id, conversation.title, conversation.updated, conversation.origin)
            item.set_class(conversation.id == self.current_id, "-current")
            view.append(item)
        # An empty list after a search says so: without a word it looked like the list had not loaded.
        no_match = self.query_one("#no-match", Static)
        no_match.set_class(bool(found) or not search, "-none")
        if search and not found:
            shown = search if len(search) <= 40 else search[:39] + "…"
            no_match.update(plain(f"no chat matches “{shown}” (Esc clears the search)"))
        self._say_one_shots()

    def _say_one_shots(self) -> None:
        """How many one-shots the list leaves out, and the key that lists them; nothing while there are none."""
        count = self.store.count_one_shots()
        line = self.query_one("#one-shots", Static)
        line.set_class(count == 0, "-none")
        if self.one_shots:
            line.update(f"one-shots listed ({self.toggle_key} in the list hides them)")
        else:
            line.update(f"{count:,} one-shot{'s' if count != 1 else ''} hidden: runs, code actions "
                        f"({self.toggle_key} in the list shows them)")

    def toggle_one_shots(self) -> None:
        self.one_shots = not self.one_shots
        self.refresh_list()

    def touched(self, conversation_id: int) -> None:
        """A conversation changed (an answer ended): its time is updated and it goes to the top, as the store lists
        conversations; listed first already, only its time changes, so the list keeps its place."""
        items = [item for item in self.list_view.children if isinstance(item, ConversationItem)]
        if items and items[0].conversation_id == conversation_id:
            items[0].updated(self.store.get(conversation_id).updated)
        else:
            self.refresh_list()

    def show(self, conversation_id: int | None) -> None:
        """Mark the open conversation; one that the search hides (a new chat) clears the search."""
        self.current_id = conversation_id
        search = self.query_one("#search", Input)
        if conversation_id is not None and search.value.strip() and not any(
                isinstance(item, ConversationItem) and item.conversation_id == conversation_id
                for item in self.list_view.children):
            search.value = ""  # its Changed event lists everything again
            return
        items = [item for item in self.list_view.children if isinstance(item, ConversationItem)]
        if conversation_id is None or any(item.conversation_id == conversation_id for item in items):
            for item in items:  # listed already: only the mark moves, the list and its highlight stay
                item.set_class(item.conversation_id == conversation_id, "-current")
            return
        self.refresh_list()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Esc clears a search; with none, it is the chat's Esc (stop the answer).
        return action != "clear_search" or bool(self.query_one("#search", Input).value)

    def action_clear_search(self) -> None:
        self.query_one("#search", Input).value = ""

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
