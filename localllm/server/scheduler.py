"""Many models behind one server, each by its name: loaded at its first request, kept while it is used and for its
keep-alive after, and unloaded, least recently used first, when a model about to load needs the memory. A request
naming no model gets the default one (serve's -m). A model in use is never unloaded under its request: a request
holds a lease on its model from before its answer starts until its last byte is sent. `serve` makes each local
model's engine a RunnerEngine (runner_engine.py: the model in a process of its own); a model whose runner ended is
dropped at its next lease and loaded again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from localllm.core.errors import LocalLLMError, ModelNotFound, WontFit
from localllm.core.units import FOREVER, duration_text
from localllm.server.engine import ApiError, Engine, api_error
from localllm.tasks.serving import Described, ModelSource, ServedName, give_back_freed_memory, normalized

logger = logging.getLogger("localllm.serve")
DEFAULT_KEEP_ALIVE = 300.0
"""Seconds an unused model stays loaded (Ollama's default, five minutes)."""
LISTED_IN_ERRORS = 12
"""Names an unknown-model error lists at most (the rest are counted)."""


@dataclass
class Slot:
    """A loaded model: its engine, the leases on it, and when it is unloaded if nobody uses it."""

    key: str
    engine: Engine
    loaded: Any
    leases: int = 0
    keep_alive: float = DEFAULT_KEEP_ALIVE
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None
    """Wall-clock time (time.time()) it unloads at; None while leased or kept forever."""
    retired: bool = False
    """Its name now means another model (or none): it is closed when its last request ends."""


class Lease:
    """A request's hold on its model. ``release`` once, when the answer's last byte is sent (or it failed)."""

    def __init__(self, scheduler: Scheduler, slot: Slot, keep_alive: float, load_s: float = 0.0) -> None:
        self._scheduler, self.slot, self.keep_alive, self._released = scheduler, slot, keep_alive, False
        self.load_s = load_s
        """Seconds this request waited for its model to load (0 when it was loaded already)."""

    @property
    def engine(self) -> Engine:
        return self.slot.engine

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler._release(self)


class Scheduler:
    """The models of ``source`` (tasks/serving.py: the local ones, or a server backend's), each wrapped in an
    engine by ``make_engine`` when it loads."""

    def __init__(self, source: ModelSource, make_engine: Callable[[Any], Engine], *,
                 keep_alive: float = DEFAULT_KEEP_ALIVE, max_loaded: int = 0) -> None:
        """``max_loaded``: models loaded at once at most (0: as many as the memory holds)."""
        self.source, self._make_engine = source, make_engine
        self.keep_alive, self.max_loaded = keep_alive, max_loaded
        self.default_name: str | None = None
        """The name that loads the default model again once it was unloaded."""
        self._default_listing: ServedName | None = None
        self.slots: dict[str, Slot] = {}
        self.default_key: str | None = None
        self._aliases: dict[str, str] = {}
        """Names already resolved, to their keys (a loaded model's names need no look-up)."""
        self._retired: list[Slot] = []
        """Models whose name was changed or removed while they answered: closed when their last request ends."""
        self._loading = asyncio.Lock()
        """Loads and unloads one at a time: each plans with the memory the others left."""
        self._idle = asyncio.Condition()

    @classmethod
    def serving(cls, engine: Engine) -> Scheduler:
        """One engine, already loaded, kept until the end (tests that build the app in-process)."""
        scheduler = cls(OneModel(engine.name), lambda loaded: engine, keep_alive=FOREVER)
        scheduler.adopt(engine.name, engine, engine.loaded, default=True)
        return scheduler

    def adopt(self, key: str, engine: Engine, loaded: Any, *, default: bool = False) -> Slot:
        """A model loaded before serving began (serve's -m)."""
        slot = self.slots[key] = Slot(key, engine, loaded, keep_alive=self.keep_alive)
        self._alias(engine.name, key)
        if default:
            self.default_key = key
            # By its name where that name means this model, else by its key (a file given as a path to -m)
            named = self.source.key_of(engine.name) == key
            self.default_name = engine.name if named else key
            self._default_listing = None if named else ServedName(engine.name, key)
        self._expire_later(slot)
        return slot

    @property
    def default(self) -> Engine | None:
        slot = self.slots.get(self.default_key or "")
        return slot.engine if slot else None

    def names(self) -> list[ServedName]:
        """What is served: the source's models, and the default one where the source does not name it."""
        names = self.source.names()
        return names + [self._default_listing] if self._default_listing is not None else names

    def _alias(self, name: str, key: str) -> None:
        self._aliases[normalized(name)] = key

    def resolve(self, name: str | None) -> str | None:
        """The key ``name`` means (None: the default); ApiError 404 for a name nothing here serves."""
        if not name:
            return self.default_key
        known = self._aliases.get(normalized(name))
        if known is not None:
            return known
        key = self.source.key_of(name)
        if key is None:
            raise self.unknown(name)
        self._alias(name, key)
        return key

    def unknown(self, name: str) -> ApiError:
        served = sorted({served.name for served in self.names()})
        shown = ", ".join(served[:LISTED_IN_ERRORS]) + (f" and {len(served) - LISTED_IN_ERRORS} more"
                                                         if len(served) > LISTED_IN_ERRORS else "")
        short = name if len(name) <= 80 else name[:77] + "..."
        return ApiError(404, f"model {short!r} is not served here; served: {shown or 'none'}", "not_found_error")

    async def lease(self, name: str | None, keep_alive: float | None = None) -> Lease:
        """The model ``name`` means, loaded if it is not (which may unload others), held for one request."""
        keep = self.keep_alive if keep_alive is None else keep_alive
        key = self.resolve(name)
        slot = self.slots.get(key) if key is not None else None
        if slot is not None and ended(slot):
            self._drop_ended(slot)
            slot = None
        load_s = 0.0
        if slot is None:
            started = time.monotonic()
            slot = await self._load_slot(name or self.default_name, key)
            load_s = time.monotonic() - started
        slot.leases += 1
        slot.expires_at = None
        return Lease(self, slot, keep, load_s)

    async def _load_slot(self, name: str | None, key: str | None) -> Slot:
        async with self._loading:
            slot = self.slots.get(key) if key is not None else None
            if slot is not None and ended(slot):
                self._drop_ended(slot)
            elif slot is not None:  # loaded by another request meanwhile
                return slot
            while True:
                if self.max_loaded and len(self.slots) >= self.max_loaded:
                    await self._make_room(f"{self.max_loaded} loaded at most")
                    continue
                others = [s.loaded for s in self.slots.values()]
                try:
                    loaded = await asyncio.to_thread(self.source.load, name, others)
                    break
                except WontFit as refusal:
                    if not await self._make_room(refusal.message):
                        raise api_error(refusal) from None
                except ModelNotFound:
                    raise self.unknown(name or "") from None
                except LocalLLMError as error:
                    raise api_error(error) from None
            engine = self._make_engine(loaded)
            key = key or engine.name
            slot = self.slots[key] = Slot(key, engine, loaded, keep_alive=self.keep_alive)
            if name:
                self._alias(name, key)
            self._alias(engine.name, key)
            if not name and self.default_key is None:
                self.default_key = key
            if name and self.default_name == name:
                self.default_key = key
            logger.info("loaded %s (%s beside %d other%s)", engine.name, _memory(loaded),
                        len(self.slots) - 1, "" if len(self.slots) == 2 else "s")
            return slot

    def _drop_ended(self, slot: Slot) -> None:
        """A model whose runner ended (killed, crashed): forgotten, its requests failed by the runner's end; the
        next request for it loads it again in a new runner."""
        if self.slots.get(slot.key) is slot:
            del self.slots[slot.key]
            logger.info("%s's runner ended (%s): it will be loaded again", slot.engine.name, ended(slot))
            slot.loaded.close()  # reaps the process; its requests were failed when it ended

    async def _make_room(self, why: str) -> bool:
        """Unload the least recently used idle model, waiting for one to become idle if all are in use; False
        when no model is loaded (the one asked for does not fit even alone)."""
        while self.slots:
            idle = [slot for slot in self.slots.values() if slot.leases == 0]
            if idle:
                victim = min(idle, key=lambda slot: slot.last_used)
                logger.info("unloading %s to make room (%s)", victim.engine.name, why)
                await self._close(victim)
                return True
            async with self._idle:
                await self._idle.wait()
        return False

    def _release(self, lease: Lease) -> None:
        slot = lease.slot
        slot.leases -= 1
        slot.last_used = time.monotonic()
        slot.keep_alive = lease.keep_alive
        if slot.retired:
            if slot.leases == 0 and slot in self._retired:
                self._retired.remove(slot)
                asyncio.ensure_future(self._close_retired(slot))
            return
        if slot.leases == 0:
            self._expire_later(slot)
            if slot.keep_alive == 0:
                asyncio.ensure_future(self._unload(slot, "keep_alive 0"))
            asyncio.ensure_future(self._notify_idle())

    async def _notify_idle(self) -> None:
        async with self._idle:
            self._idle.notify_all()

    def _expire_later(self, slot: Slot) -> None:
        slot.expires_at = None if slot.keep_alive == FOREVER else time.time() + slot.keep_alive

    async def reap(self, every: float = 1.0) -> None:
        """Runs while the server does: unloads each idle model whose keep-alive has run out."""
        while True:
            await asyncio.sleep(every)
            now = time.time()
            for slot in list(self.slots.values()):
                if slot.leases == 0 and slot.expires_at is not None and now >= slot.expires_at:
                    await self._unload(slot, f"unused for {duration_text(slot.keep_alive)}")

    async def _unload(self, slot: Slot, why: str) -> None:
        async with self._loading:
            if self.slots.get(slot.key) is slot and slot.leases == 0:
                logger.info("unloading %s: %s", slot.engine.name, why)
                await self._close(slot)

    async def unload(self, name: str | None) -> bool:
        """Unload ``name`` now if it is loaded and idle (Ollama's keep_alive 0 with no prompt); False if not
        loaded."""
        key = self.resolve(name)
        slot = self.slots.get(key) if key is not None else None
        if slot is None:
            return False
        slot.keep_alive = 0
        if slot.leases == 0:
            await self._unload(slot, "asked to")
        return True

    async def forget(self, name: str, key: str | None = None) -> None:
        """``name`` now means another model, or none (a named model created, copied over or deleted; a model
        deleted): every name that led to its model is looked up afresh, and the model loaded for it is unloaded, now
        if it is idle, else when its last request ends (new requests load what the name means now)."""
        wanted = normalized(name)
        keys = {k for n, k in self._aliases.items() if n == wanted} | ({key} if key else set())
        for alias in [n for n, k in self._aliases.items() if k in keys]:
            del self._aliases[alias]
        async with self._loading:
            for k in keys:
                slot = self.slots.get(k)
                if slot is None:
                    continue
                logger.info("unloading %s: its name was changed or removed", slot.engine.name)
                if slot.leases == 0:
                    await self._close(slot)
                else:
                    del self.slots[k]
                    slot.retired = True
                    self._retired.append(slot)

    async def _close_retired(self, slot: Slot) -> None:
        slot.engine.close()
        await asyncio.to_thread(slot.loaded.close)

    async def _close(self, slot: Slot) -> None:
        del self.slots[slot.key]
        slot.engine.close()
        await asyncio.to_thread(slot.loaded.close)
        await asyncio.to_thread(give_back_freed_memory)

    def loaded(self) -> list[Slot]:
        """The loaded models, most recently used first (a model whose runner ended is no longer loaded)."""
        return sorted((slot for slot in self.slots.values() if not ended(slot)),
                      key=lambda slot: (slot.leases == 0, -slot.last_used))

    def close(self) -> None:
        """At the server's end: every model unloaded."""
        for slot in [*self.slots.values(), *self._retired]:
            logger.info("unloading %s: the server stops", slot.engine.name)
            slot.engine.close()
            if slot.loaded is not None and hasattr(slot.loaded, "close"):
                slot.loaded.close()
        self.slots.clear()
        self._retired.clear()
        close_source = getattr(self.source, "close", None)
        if close_source is not None:  # a runner kept for a retried load
            close_source()


def ended(slot: Slot) -> str | None:
    """Why the runner of ``slot``'s model ended (its signal, its exit status); None while it runs, and for a model
    loaded in this process."""
    return getattr(slot.loaded, "ended", None)


def _memory(loaded: Any) -> str:
    from localllm.core.units import human_size

    plan = getattr(loaded, "plan", None)
    total = getattr(getattr(plan, "memory", None), "total", 0)
    return f"about {human_size(total)}" if total else "its memory is its server's"


class OneModel:
    """The source of a scheduler that serves one engine it was given: nothing to load."""

    def __init__(self, name: str) -> None:
        self.name = name

    def names(self) -> list[ServedName]:
        return [ServedName(self.name, self.name)]

    def key_of(self, name: str) -> str | None:
        return self.name if normalized(name) == self.name.lower() else None

    def load(self, name: str | None, beside: list[Any]) -> Any:
        raise AssertionError("a scheduler serving one given engine loads nothing")

    def describe(self, served: ServedName) -> Described:
        return Described(served.name, served.key)

    def defaults(self, name: str | None) -> Any:
        return None
