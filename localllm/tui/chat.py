"""The chat pane: conversations in a sidebar, answers streamed as Markdown, Esc to stop, a status bar with the
model, its speed, a context meter and a warning when earlier messages no longer fit."""

from __future__ import annotations

import threading

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, ListItem, ListView, Markdown, Static

from localllm.core.chunks import TextChunk
from localllm.core.errors import LocalLLMError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.store.conversations import ConversationStore
from localllm.tasks.chat import ChatSession
from localllm.tui.prompt import PromptArea


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str) -> None:
        super().__init__(Label(title))
        self.conversation_id = conversation_id


class ChatPane(Vertical):
    DEFAULT_CSS = """
    ChatPane #conversations { width: 28; border-right: solid $primary-background; }
    ChatPane #log { height: 1fr; padding: 0 1; }
    ChatPane #prompt { height: 5; }
    ChatPane #status { height: 1; background: $primary-background; padding: 0 1; }
    ChatPane .user { background: $boost; margin: 1 0 0 0; }
    """
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_conversation", "New chat", id="chat.new"),
        Binding("delete", "delete_conversation", "Delete chat", id="chat.delete", show=False),
    ]

    def __init__(self, settings: Settings, options: GenerationOptions, model: str | None = None) -> None:
        super().__init__(id="chat-pane")
        self.settings = settings
        self.options = options
        self.model_name = model
        self.store = ConversationStore.in_data_dir(settings.paths.data_dir)
        self.loaded = None
        self.session: ChatSession | None = None
        self.conversation_id: int | None = None
        self.generating = False
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ListView(id="conversations")
            with Vertical():
                yield VerticalScroll(id="log")
                yield PromptArea(id="prompt")
                yield Static("loading the model…", id="status")

    def on_mount(self) -> None:
        self.refresh_sidebar()
        self.load_model()

    # -- model -----------------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="model")
    def load_model(self) -> None:
        from localllm.tasks.loading import load_model

        try:
            loaded = load_model(self.settings, self.model_name, ctx=self.options.ctx)
        except LocalLLMError as exc:
            self.app.call_from_thread(self._status, f"error: {exc.message}")
            self.app.call_from_thread(self.app.notify, exc.hint or exc.message, title="model", severity="error")
            return
        self.loaded = loaded
        self.session = ChatSession(loaded, self.options)
        self.app.call_from_thread(self._status, self._status_text())

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    def _status_text(self, rate: float | None = None) -> str:
        if self.loaded is None:
            return "loading the model…"
        window = self.loaded.plan.n_ctx
        used = 0
        if self.session is not None and self.session.history:
            used = self.loaded.backend.count_prompt_tokens(self.session._messages(self.session.history))
        parts = [self.loaded.ref.name, self.loaded.choice.name, f"context {used}/{window}"]
        if rate:
            parts.insert(2, f"{rate:.0f} tokens/s")
        if self.session is not None and self.session.dropped:
            parts.append(f"⚠ {self.session.dropped} earlier message(s) left out to fit the window")
        return " · ".join(parts)

    # -- conversations ---------------------------------------------------------------------------------------------
    def refresh_sidebar(self) -> None:
        sidebar = self.query_one("#conversations", ListView)
        sidebar.clear()
        for conversation in self.store.list():
            sidebar.append(ConversationItem(conversation.id, conversation.title))

    @on(ListView.Selected, "#conversations")
    def open_conversation(self, event: ListView.Selected) -> None:
        if self.generating or not isinstance(event.item, ConversationItem):
            return
        self.conversation_id = event.item.conversation_id
        conversation = self.store.get(self.conversation_id)
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
        history = []
        for message in self.store.messages(self.conversation_id):
            log.mount(Markdown(message.content, classes=message.role))
            history.append(Message(message.role, message.content))
        if self.session is not None:
            self.session.history = history
            self.session.system = conversation.system
        self._status(self._status_text())

    def action_new_conversation(self) -> None:
        if self.generating:
            return
        self.conversation_id = None
        self.query_one("#log", VerticalScroll).remove_children()
        if self.session is not None:
            self.session.reset()
        self.query_one("#prompt", PromptArea).focus()

    def action_delete_conversation(self) -> None:
        sidebar = self.query_one("#conversations", ListView)
        item = sidebar.highlighted_child
        if self.generating or not isinstance(item, ConversationItem):
            return
        self.store.delete(item.conversation_id)
        if item.conversation_id == self.conversation_id:
            self.action_new_conversation()
        self.refresh_sidebar()
        self.app.notify("conversation deleted")

    # -- generation ------------------------------------------------------------------------------------------------
    @on(PromptArea.Submitted)
    def send(self, event: PromptArea.Submitted) -> None:
        if self.session is None:
            self.app.notify("the model is still loading", severity="warning")
            return
        if self.generating:
            self.app.notify("an answer is being written: Esc stops it", severity="warning")
            return
        text = event.text.strip()
        self.query_one("#prompt", PromptArea).clear()
        if self.conversation_id is None:
            conversation = self.store.create(text.splitlines()[0][:40], model=self.loaded.ref.name)
            self.conversation_id = conversation.id
            self.refresh_sidebar()
        log = self.query_one("#log", VerticalScroll)
        log.mount(Markdown(text, classes="user"))
        answer = Markdown("", classes="assistant")
        log.mount(answer)
        log.scroll_end(animate=False)
        self.generating = True
        self._stop.clear()
        # The stream runs an asyncio task, so it is made here on the event loop, not in the worker thread.
        self.generate(text, answer, Markdown.get_stream(answer))

    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()

    @work(thread=True, exclusive=True, group="generation")
    def generate(self, text: str, answer: Markdown, stream) -> None:
        response = None
        error = None
        try:
            response = self.session.send(text)
            for chunk in response:
                if self._stop.is_set():
                    response.close()
                    break
                if isinstance(chunk, TextChunk) and chunk.text:
                    self.app.call_from_thread(stream.write, chunk.text)
        except LocalLLMError as exc:
            error = exc
        self.app.call_from_thread(self._finish, text, answer, stream, response, error)

    async def _finish(self, text: str, answer: Markdown, stream, response, error) -> None:
        await stream.stop()
        self.generating = False
        if error is not None:
            await answer.update(f"*{error.message}*")
            self.app.notify(error.hint or error.message, title="error", severity="error")
            return
        full = response.partial_text if response is not None else ""
        stopped = response is None or response.final is None
        await answer.update(full)  # one final render, so code fences look right after streaming
        self.store.add_message(self.conversation_id, "user", text)
        self.store.add_message(self.conversation_id, "assistant", full, stopped=stopped)
        rate = response.final.tokens_per_second if response is not None and response.final else None
        self._status(self._status_text(rate) + (" · stopped" if stopped else ""))
        self.query_one("#log", VerticalScroll).scroll_end(animate=False)

    def on_unmount(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
        self.store.close()
