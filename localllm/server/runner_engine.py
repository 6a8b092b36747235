"""`serve`'s side of the runners (server/runner.py): each model loads in a child process of its own, and the
scheduler holds a RunnerEngine, with Engine's public interface, that sends each request to the child by its id and
hands the child's chunks back as they come. Requests are not serialized here: the child's Engine queues them (and
refuses past its queue with 503), as it did in this process.

A runner that dies (a signal in native code, the OOM killer) fails its own requests only, with a 5xx naming the
signal; the scheduler sees it ended and starts a new one at the next request for its model."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from localllm.core.chunks import Chunk, FinalChunk
from localllm.server.engine import ApiError, LoadedModelNames, Request
from localllm.server.runner import HEADER, error_from, frame
from localllm.tasks.serving import LocalModels

logger = logging.getLogger("localllm.serve")
CLOSE_WAIT_S = 10.0
"""Seconds a runner asked to close may take (its model freed) before it is killed."""
_starter = ThreadPoolExecutor(1, thread_name_prefix="runner-start")
"""Runners are started from this one long-lived thread: the child's "die with the parent" (PR_SET_PDEATHSIG)
fires when the thread that started it ends, not the process, and a thread of asyncio's pool may end first."""


def signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return f"exit status {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@dataclass
class RunnerBackend:
    """What the routes read of a loaded model's backend, as the runner reported it."""

    name: str
    capabilities: Any
    vocab_size: int | None
    fills: bool
    chat_format: str | None = None
    build_verdict: Any = None

    def fills_in_middle(self) -> bool:
        return self.fills


@dataclass
class Pending:
    """A request the runner is answering: its messages arrive on ``queue``, on the loop it was sent from."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class RunnerDied(ApiError):
    """The answer of a request whose runner ended under it (or before it was sent)."""

    def __init__(self, why: str) -> None:
        message = f"the model's runner died ({why}); it will be started again at the next request"
        super().__init__(500, message, "api_error")
        self.args_for_payload: tuple[Any, ...] = (500, message, "api_error", {})


class RunnerProcess:
    """One child process and the socket to it. Messages are read by a thread of its own (blocking reads; each is
    handed to the loop of the request it belongs to); messages are sent with one lock, whole."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "localllm.server.runner", str(child_end.fileno()), str(os.getpid())]
        try:
            self.process = _starter.submit(subprocess.Popen, command, pass_fds=(child_end.fileno(),),
                                           stdin=subprocess.DEVNULL).result()
        finally:
            child_end.close()
        self.pid = self.process.pid
        self.sock = parent_end
        self._send_lock = threading.Lock()
        self._pending: dict[int, Pending] = {}
        self._pending_lock = threading.Lock()
        """Taken to add a request and to fail them all at the runner's end: none is added after and left waiting."""
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self.ended: str | None = None
        """Why the runner ended (its signal, its exit status), once it has."""
        self.closing = False

    def send(self, message: Any) -> None:
        data = frame(message)
        with self._send_lock:
            self.sock.sendall(data)

    def receive(self) -> Any:
        """One message (blocking); EOFError when the runner is gone."""
        header = self._exactly(HEADER.size)
        return pickle.loads(self._exactly(HEADER.unpack(header)[0]))

    def _exactly(self, size: int) -> bytes:
        view = bytearray()
        while len(view) < size:
            piece = self.sock.recv(size - len(view))
            if not piece:
                raise EOFError
            view += piece
        return bytes(view)

    def load(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Ask the runner to load (blocking, in a worker thread): the facts of the loaded model, or the load's
        error raised here as it was raised there."""
        try:
            self.send(("load", spec))
            reply = self.receive()
        except (EOFError, OSError):
            why = self.wait_end()
            raise ApiError(500, f"the model's runner died ({why}) while loading {spec['name'] or 'the model'}",
                           "api_error") from None
        if reply[0] == "load_failed":
            raise error_from(reply[1])
        return dict(reply[1])

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._read, name=f"runner-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = self.receive()
                pending = self._pending.get(message[1])
                if pending is not None:
                    pending.loop.call_soon_threadsafe(pending.queue.put_nowait, message)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        why = self.wait_end()
        if not self.closing:
            logger.info("the runner of pid %d ended (%s)", self.pid, why)
        failure = ("error", 0, ("api", *self.death().args_for_payload))
        with self._pending_lock:
            waiting, self._pending = list(self._pending.values()), {}
        for pending in waiting:
            pending.loop.call_soon_threadsafe(pending.queue.put_nowait, failure)

    def wait_end(self) -> str:
        """Why the runner ended (after it has, or is about to: its socket is closed)."""
        try:
            returncode = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        self.ended = signal_name(returncode)
        return self.ended

    def death(self) -> RunnerDied:
        return RunnerDied(self.ended or "its connection closed")

    def open(self) -> tuple[int, Pending]:
        ident = next(self._ids)
        with self._pending_lock:
            if self.ended is not None:
                raise self.death()
            pending = self._pending[ident] = Pending(asyncio.get_running_loop())
        return ident, pending

    def done(self, ident: int) -> None:
        self._pending.pop(ident, None)

    def rss(self) -> int:
        """Bytes of memory the runner holds now (its resident set, from /proc); 0 where that cannot be read."""
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def close(self) -> None:
        """End the runner: asked to close (its model freed), killed if it takes longer than CLOSE_WAIT_S."""
        self.closing = True
        if self.process.poll() is None:
            try:
                self.send(("close",))
            except OSError:
                pass
            try:
                self.process.wait(timeout=CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.sock.close()
        if self._reader is not None:
            self._reader.join(timeout=5)


class RunnerModel:
    """The LoadedModel the scheduler holds for a model in a runner: what was loaded (ref, info, plan, backend's
    facts) and the process; closing it ends the process."""

    served = None

    def __init__(self, runner: RunnerProcess, facts: dict[str, Any]) -> None:
        self.runner = runner
        self.ref, self.info, self.plan, self.choice = facts["ref"], facts["info"], facts["plan"], facts["choice"]
        self.load_s = facts["load_s"]
        self.backend = RunnerBackend(facts["backend_name"], facts["capabilities"], facts["vocab_size"],
                                     facts["fills_in_middle"], facts["chat_format"], facts["build_verdict"])
        self.facts = facts

    @property
    def ended(self) -> str | None:
        """Why the runner ended (its signal, its exit status); None while it runs."""
        if self.runner.ended is None and self.runner.process.poll() is not None:
            return signal_name(self.runner.process.returncode)
        return self.runner.ended

    @property
    def overhead(self) -> int:
        """Bytes the runner holds beyond its model's plan (the interpreter, its libraries, what the plan missed)."""
        return max(0, self.runner.rss() - self.plan.memory.cpu)

    def close(self) -> None:
        self.runner.close()


class RunnerEngine(LoadedModelNames):
    """Engine's public interface for a model in a runner."""

    def __init__(self, loaded: RunnerModel) -> None:
        self.loaded = loaded
        self._runner = loaded.runner
        self._facts = loaded.facts
        self._runner.start_reading()


    @property
    def slots(self) -> int:
        """Answers the runner decodes at once."""
        return int(self._facts.get("slots", 1))

    def check_text_completion(self) -> None:
        if self._facts["text_completion_refusal"] is not None:
            raise error_from(self._facts["text_completion_refusal"])

    def check_embeddings(self) -> None:
        if self._facts["embeddings_refusal"] is not None:
            raise error_from(self._facts["embeddings_refusal"])

    def _send(self, message: Any) -> None:
        try:
            self._runner.send(message)
        except OSError:
            raise self._runner.death() from None

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """As Engine.stream: closing the iterator (a client gone) tells the runner to stop the generation."""
        if request.prompt is not None:
            self.check_text_completion()
        ident, pending = self._runner.open()
        finished = False
        try:
            self._send(("stream", ident, request))
            while True:
                message = await pending.queue.get()
                kind = message[0]
                if kind == "chunk":
                    yield message[2]
                elif kind == "end":
                    finished = True
                    return
                else:
                    finished = True
                    raise error_from(message[2])
        finally:
            self._end(ident, answered=finished)

    async def _ask(self, kind: str, payload: Any) -> Any:
        """The runner's one answer; cancelled (a client gone), the runner stops the work too."""
        ident, pending = self._runner.open()
        message: Any = None
        try:
            self._send((kind, ident, payload))
            message = await pending.queue.get()
        finally:
            self._end(ident, answered=message is not None)
        if message[0] == "result":
            return message[2]
        raise error_from(message[2])

    def _end(self, ident: int, *, answered: bool) -> None:
        """The request is over here; one left before its answer (a client gone) is stopped in the runner too."""
        self._runner.done(ident)
        if not answered and self._runner.process.poll() is None:
            try:
                self._runner.send(("cancel", ident))
            except OSError:
                pass

    async def complete(self, request: Request) -> tuple[str, str, list, FinalChunk | None]:
        """The whole answer: (text, thinking, tool calls, final chunk)."""
        from localllm.server.engine import whole_answer

        return await whole_answer(self.stream(request))

    async def count_prompt_tokens(self, request: Request) -> int:
        return int(await self._ask("count", request))

    async def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        self.check_embeddings()
        vectors, tokens = await self._ask("embed", list(texts))
        return vectors, tokens

    def close(self) -> None:
        """Nothing here: closing the model (RunnerModel.close) ends the runner, and its embedding model with it."""


class RunnerModels(LocalModels):
    """LocalModels (tasks/serving.py) whose models load in runners: the same names, listing and plans, each load in
    a new child process. A load refused as too big (WontFit) keeps its runner for the scheduler's next try, after
    it has made room, so making room costs no second process start."""

    def __init__(self, settings: Any, report: Any, *, backend: str, ctx: int | None, max_queue: int,
                 stream_interval: float, embedding_ctx: int, slots: int = 1, parallel: int | None = None,
                 most_parallel: int = 1) -> None:
        """``parallel``: answers each runner decodes at once (None: as many as fit beside its model once loaded, up
        to ``most_parallel``); ``slots``: the caches each model is planned with."""
        super().__init__(settings, report, backend=backend, ctx=ctx, slots=slots)
        self.engine_options = {"max_queue": max_queue, "stream_interval": stream_interval,
                               "embedding_ctx": embedding_ctx, "parallel": parallel, "most_parallel": most_parallel}
        self._spare: RunnerProcess | None = None
        self._spare_lock = threading.Lock()
        self._build_verdict: Any = None
        """The llama.cpp self-check's verdict a runner got, for the next runners (see runner.py)."""

    def load(self, name: str | None, beside: list[Any]) -> RunnerModel:  # type: ignore[override]
        from localllm.core.errors import WontFit
        from localllm.tasks.serving import footprint

        started = time.monotonic()
        with self._spare_lock:
            runner, self._spare = self._spare, None
        if runner is None or runner.process.poll() is not None:
            runner = RunnerProcess()
        spec = {"settings": self.settings, "report": self.report, "backend": self.backend, "ctx": self.ctx,
                "slots": self.slots, "name": name, "build_verdict": self._build_verdict,
                "beside": [footprint(model) for model in beside], **self.engine_options}
        try:
            facts = runner.load(spec)
        except WontFit:
            with self._spare_lock:
                self._spare, spare = runner, self._spare
            if spare is not None:
                spare.close()
            raise
        except BaseException:
            runner.close()
            raise
        self._build_verdict = facts["build_verdict"] or self._build_verdict
        logger.info("runner %d: %s ready in %.2f s (its weights took %.2f s)", runner.pid, facts["ref"].name,
                    time.monotonic() - started, facts["load_s"] or 0.0)
        return RunnerModel(runner, facts)

    def close(self) -> None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()


def make_runner_engine(loaded: Any) -> Any:
    """The scheduler's make_engine for RunnerModels."""
    return RunnerEngine(loaded)
