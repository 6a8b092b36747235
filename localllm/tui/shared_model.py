"""The one loaded model the app's panes share: loaded once, on first use, from a worker thread.

Each pane that loaded its own copy would hold the weights twice or thrice; and a llama.cpp context must not run two
generations at once, so ``use()`` hands it to one caller at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from localllm.core.errors import LocalLLMError
from localllm.core.settings import Settings

if TYPE_CHECKING:
    from localllm.tasks.loading import LoadedModel


class SharedModel:
    def __init__(self, settings: Settings, name: str | None = None, ctx: int | None = None, *,
                 loaded: LoadedModel | None = None) -> None:
        """``loaded``: a model already loaded elsewhere, handed over (it is closed with the app)."""
        self.settings = settings
        self.name = name
        self.ctx = ctx
        self._loaded: LoadedModel | None = loaded
        self._load_lock = threading.Lock()
        self._use_lock = threading.Lock()
        self._listeners: list[Callable[[LoadedModel], None]] = []
        self._closed = threading.Event()

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    @property
    def busy(self) -> bool:
        return self._use_lock.locked()

    def on_loaded(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener`` (from the loading thread) each time a model is loaded or switched."""
        self._listeners.append(listener)

    def get(self) -> LoadedModel:
        """The loaded model, loading it first if needed. Blocks: call from a worker thread."""
        with self._load_lock:
            if self._loaded is None:
                from localllm.tasks.loading import load_model

                self._loaded = load_model(self.settings, self.name, ctx=self.ctx)
                self._close_if_closed()
                self._announce()
            return self._loaded

    def switch(self, name: str, ctx: int | None = None) -> LoadedModel:
        """Load ``name`` in place of the current model; the old one is freed first so both never sit in memory.
        ``ctx``: the context size to load it with; None is the automatic size (the model's own, capped by memory),
        so a context size cleared in the parameters goes back to it."""
        from localllm.tasks.loading import load_model

        with self._load_lock, self._use_lock:
            if self._loaded is not None:
                self._loaded.close()
                self._loaded = None
            self.name, self.ctx = name, ctx
            self._loaded = load_model(self.settings, name, ctx=self.ctx)
            self._close_if_closed()
            self._announce()
            return self._loaded

    @contextmanager
    def use(self) -> Iterator[LoadedModel]:
        """The model, for one generation at a time across all panes."""
        loaded = self.get()
        with self._use_lock:
            yield self._loaded or loaded

    def _announce(self) -> None:
        loaded = self._loaded
        assert loaded is not None, "announced after a load"
        for listener in self._listeners:
            listener(loaded)

    def _close_if_closed(self) -> None:
        if self._closed.is_set() and self._loaded is not None:
            self._loaded.close()
            self._loaded = None
            raise ModelClosed()

    def close(self, wait_s: float = 10.0) -> None:
        """Free the model once no generation uses it (the panes stop theirs when they unmount).

        Never waits for a load in progress, so quitting stays quick: that load frees itself when it ends. Freeing
        the weights under a running generation would crash the process, so after ``wait_s`` the model is left to
        the process's exit instead.
        """
        self._closed.set()
        if not self._load_lock.acquire(blocking=False):
            return
        try:
            if not self._use_lock.acquire(timeout=wait_s):
                return
            try:
                if self._loaded is not None:
                    self._loaded.close()
                    self._loaded = None
            finally:
                self._use_lock.release()
        finally:
            self._load_lock.release()


class ModelClosed(LocalLLMError):
    def __init__(self) -> None:
        super().__init__("the app is closing", hint="")
