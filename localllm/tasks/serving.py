"""What `serve` needs to serve many models by name: which names it answers to, which model a name means, what is
known of each without loading it, and loading one beside the models already loaded, planned for the memory they
leave. Two sources: the local models (`localllm list`'s) and a server backend's (Ollama's, an OpenAI-compatible
server's), whose names are the server's own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from localllm.backends import backend_class
from localllm.core.model import ModelInfo, ModelRef, NamedDefaults
from localllm.core.plan import MemoryEstimate
from localllm.core.settings import Settings
from localllm.hardware.report import HardwareReport
from localllm.tasks.loading import LoadedModel, load_model

logger = logging.getLogger("localllm")
LATEST = ":latest"
"""Ollama's tag for "the one version": its clients add it to every name they show and send."""


@dataclass(frozen=True)
class ServedName:
    """A name a client may send, and the key of the model it means (two names of one file share a key)."""

    name: str
    key: str


@dataclass(frozen=True)
class Described:
    """What a listing says of a model without loading it."""

    name: str
    key: str
    size: int = 0
    modified: datetime | None = None
    info: ModelInfo | None = None
    digest: str = ""
    """sha256 of the file, where it is known without reading the file (a pull's manifest, Ollama's blob name)."""
    named: NamedDefaults | None = None
    """A named model's system prompt and parameters, and what it is built on."""
    window: int = 0
    """The window it answers in: loaded, the one it runs with; else the one it would load with (a named model's
    ctx, else serve's -o ctx, else the default capped by the trained one; a machine short of memory may halve it
    at load); 0 where that is not known."""


class ModelSource(Protocol):
    def names(self) -> list[ServedName]: ...

    def key_of(self, name: str) -> str | None:
        """The key ``name`` means; None for a name this source does not serve."""

    def load(self, name: str | None, beside: list[LoadedModel]) -> LoadedModel:
        """Load ``name`` (None: the default) planned beside the ``beside`` models; WontFit before loading when it
        does not fit there."""

    def describe(self, served: ServedName) -> Described: ...

    def defaults(self, name: str | None) -> NamedDefaults | None:
        """The system prompt and parameters of the named model ``name`` is (None: it is not one)."""


NAMED_KEY = "named:"


def served_key(ref: ModelRef) -> str:
    """The key of the model ``ref`` is: its file, or for a named model its name (a model of its own, loaded with
    its own window, answering under its own name, though it shares the file)."""
    return f"{NAMED_KEY}{ref.name}" if ref.named is not None else str(ref.path)


def normalized(name: str) -> str:
    return name.strip().lower().removesuffix(LATEST)


class LocalModels:
    """The models `localllm list` shows, by name and NAME:QUANT (first found first, as -m finds them). Paths are
    not names here: a client of the server does not choose files on this machine."""

    def __init__(self, settings: Settings, report: HardwareReport, *, backend: str, ctx: int | None,
                 slots: int = 1) -> None:
        """``slots``: answers the model decodes at once, each with a KV cache of the model's whole window."""
        self.settings, self.report, self.backend, self.ctx = settings, report, backend, ctx
        self.slots = slots

    def names(self) -> list[ServedName]:
        from localllm.store.locate import installed_models

        names: dict[str, ServedName] = {}
        refs = installed_models(self.settings)
        # Named models first: a name chosen for one means it, as -m finds it (tasks.named keeps names apart).
        for ref in sorted(refs, key=lambda ref: ref.named is None):
            for name in (ref.name, f"{ref.name}:{ref.quant.lower()}" if ref.quant else ""):
                if name and name not in names:
                    names[name] = ServedName(name, served_key(ref))
        return list(names.values())

    def key_of(self, name: str) -> str | None:
        from localllm.store.locate import looks_like_path

        wanted = normalized(name)
        if not wanted or looks_like_path(wanted):
            return None
        key = next((served.key for served in self.names() if served.name == wanted), None)
        if key is None:  # the name Ollama's clients pulled a Hub model by: hf.co/OWNER/REPO:QUANT
            from localllm.store.locate import pulled_from_hub

            pulled = pulled_from_hub(self.settings, name.strip())
            key = served_key(pulled) if pulled is not None else None
        return key

    def load(self, name: str | None, beside: Sequence[LoadedModel | Footprint]) -> LoadedModel:
        """``name`` is a served name, or the path serve's -m gave (the default model loaded again)."""
        from localllm.store.locate import looks_like_path

        if name and not looks_like_path(name):
            name = normalized(name)
        named = self.defaults(name)
        # A named model's window is its own, over serve's -o ctx (which is for every model)
        ctx = named.value("ctx") if named is not None and named.value("ctx") else self.ctx
        report = memory_left(self.report, beside)
        if self.slots > 1:
            report = self._less_extra_slots(name, ctx, report)
        loaded = load_model(self.settings, name or None, backend=self.backend, ctx=ctx, report=report)
        if self.slots > 1:  # what the model takes, as the next model's plan and /api/ps count it
            memory = loaded.plan.memory
            loaded.plan = replace(loaded.plan, memory=replace(memory, kv_cache=memory.kv_cache * self.slots))
        return loaded

    def _less_extra_slots(self, name: str | None, ctx: int | None, report: HardwareReport) -> HardwareReport:
        """``report`` less the KV cache of the slots beyond the first (the planner plans one), at the window the
        model would get: the model is planned, and refused, with all its slots. (Counted in RAM: the planner puts
        one cache on the GPU where it has room; the others are planned where there surely is.)"""
        from localllm.hardware.planner import kv_cache_bytes
        from localllm.tasks.loading import describe_model, plan_for

        _, info = describe_model(self.settings, name or self.settings.model)
        plan = plan_for(self.settings, info, report, ctx=ctx, backend=self.backend)
        extra = kv_cache_bytes(info, plan.n_ctx) * (self.slots - 1)
        return replace(report, ram_available=max(0, report.ram_available - extra))

    def defaults(self, name: str | None) -> NamedDefaults | None:
        from localllm.store.named import read_named

        record = read_named(self.settings.paths, normalized(name)) if name else None
        return record.defaults() if record is not None else None

    def describe(self, served: ServedName) -> Described:
        from localllm.store.gguf_info import ModelInfoCache
        from localllm.store.manifest import read_manifest
        from localllm.store.named import read_named

        record = read_named(self.settings.paths, served.key[len(NAMED_KEY):]) \
            if served.key.startswith(NAMED_KEY) else None
        named = record.defaults() if record is not None else None
        path = Path(record.path) if record is not None else Path(served.key)
        try:
            stat = path.stat()
        except OSError:
            return Described(served.name, served.key, named=named)
        try:
            info: ModelInfo | None = ModelInfoCache(self.settings.paths.cache_dir).get(path)
        except Exception as error:  # noqa: BLE001 - an unreadable file is listed without details, not a failure
            logger.debug("no details for %s: %s", path, error)
            info = None
        manifest = read_manifest(path)
        digest = getattr(manifest, "sha256", "") or ""
        if not digest and path.name.startswith("sha256-") and len(path.name) == 71:  # Ollama's blob store
            digest = path.name[7:]
        if not digest:
            digest = self._digest(path)
        return Described(served.name, served.key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC), info,
                         digest, named, self._window(named, info))

    def _window(self, named: NamedDefaults | None, info: ModelInfo | None) -> int:
        """The window ``load`` would give the model, as the planner chooses it when memory allows."""
        ctx = (named.value("ctx") if named is not None else None) or self.ctx
        if ctx:
            return int(ctx)
        if info is None:
            return 0
        return min(self.settings.ctx, info.context_length or self.settings.ctx)


    def _digest(self, path: Path) -> str:
        """The file's sha256 from the digest cache; when it is not there yet, it is computed in a thread of its own
        (a file of gigabytes takes a while: the listing does not wait for it, and names it once it is known)."""
        from localllm.store.digests import DigestCache

        cache = DigestCache(self.settings.paths.cache_dir)
        known = cache.known(path)
        if known is None:
            _hash_later(cache, path)
        return known or ""


_hashing: set[Path] = set()
_hashing_lock = threading.Lock()


def _hash_later(cache: Any, path: Path) -> None:
    with _hashing_lock:
        if path in _hashing:
            return
        _hashing.add(path)

    def work() -> None:
        try:
            cache.compute(path)
        except OSError as error:
            logger.debug("no digest for %s: %s", path, error)
        finally:
            with _hashing_lock:
                _hashing.discard(path)

    threading.Thread(target=work, name="model-digest", daemon=True).start()


class ServerModels:
    """A server backend's models, by the server's names, passed as they came (an OpenAI-compatible server's ids are
    case-sensitive). Memory is the server's business: nothing is planned here."""

    def __init__(self, settings: Settings, *, backend: str, ctx: int | None) -> None:
        self.settings, self.backend, self.ctx = settings, backend, ctx

    def names(self) -> list[ServedName]:
        from localllm.core.errors import LocalLLMError

        instance = backend_class(self.backend).from_settings(self.settings)
        try:
            listing = getattr(instance, "list_models", None)
            entries = listing() if listing is not None else []
        except (LocalLLMError, OSError):
            entries = []
        finally:
            instance.close()
        found = [str(e.get("name") or e.get("id") or e.get("model") or "") for e in entries if isinstance(e, dict)]
        return [ServedName(name, name) for name in found if name]

    def key_of(self, name: str) -> str | None:
        return name

    def load(self, name: str | None, beside: list[LoadedModel]) -> LoadedModel:
        return load_model(self.settings, name, backend=self.backend, ctx=self.ctx)

    def describe(self, served: ServedName) -> Described:
        return Described(served.name, served.key)

    def defaults(self, name: str | None) -> NamedDefaults | None:
        return None  # the server's models are its own: named models are local ones


@dataclass(frozen=True)
class Footprint:
    """What a loaded model takes, as the plan of the next model counts it: its plan's memory, and what its
    process holds beyond that (a runner's interpreter and libraries, read from its resident set)."""

    memory: MemoryEstimate
    overhead: int = 0


def footprint(model: LoadedModel | Footprint) -> Footprint:
    """``model``'s Footprint; a model in a runner tells its ``overhead`` (0 for one in this process, whose
    interpreter is there whatever is loaded)."""
    if isinstance(model, Footprint):
        return model
    return Footprint(model.plan.memory, int(getattr(model, "overhead", 0)))


def memory_left(report: HardwareReport, loaded: Iterable[LoadedModel | Footprint]) -> HardwareReport:
    """``report`` less what the loaded models were planned to take, and what their runners hold beyond that: the
    room a model loaded beside them has. (The free memory the system reports would count a loaded model's weights,
    mapped from its file, as reclaimable cache.)"""
    ram, gpu = report.ram_available, [g.free_bytes for g in report.gpus]
    for model in loaded:
        held = footprint(model)
        memory = held.memory
        ram -= (memory.total if report.unified_memory else memory.cpu) + held.overhead
        left = memory.gpu
        for index, free in enumerate(gpu):
            taken = min(free, left)
            gpu[index], left = free - taken, left - taken
    gpus = tuple(replace(g, free_bytes=max(0, free)) for g, free in zip(report.gpus, gpu, strict=True))
    return replace(report, ram_available=max(0, ram), gpus=gpus)


def give_back_freed_memory() -> None:
    """After a model is unloaded: glibc keeps the heap pages its buffers freed for the next allocation, so the
    process would still hold them; malloc_trim hands them back to the system. Nothing to do elsewhere."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
