"""A runner: the child process that holds one model for `serve` (`python -m localllm.server.runner FD PARENT`).

It loads the model exactly as serve did in its own process, hosts the same Engine (its queue, its 503s, its
streaming), and answers the parent over one Unix socket, many requests at once, each by its request id. A crash in
native code (llama.cpp) ends this process only, and unloading the model is ending it, so its memory really comes
back to the system.

The wire: each message is a 4-byte big-endian length and a pickle of a tuple whose first item says what it is.
Pickle is safe here because both ends are this package, started by the parent with a socket pair nobody else
holds; nothing read from a client is unpickled that a client could have shaped into anything but our own types.

Parent to runner: ("load", spec) · ("stream", id, Request) · ("count", id, Request) · ("embed", id, texts) ·
("cancel", id) · ("close",).
Runner to parent: ("loaded", facts) · ("load_failed", error) · ("chunk", id, chunk) · ("end", id) ·
("result", id, value) · ("error", id, error).
An error crosses as the exception itself where it pickles (LocalLLMError and its kinds do), an ApiError as
("api", status, message, kind, headers) (its constructor takes more than its message, so pickle cannot rebuild it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from typing import Any

HEADER = struct.Struct(">I")
logger = logging.getLogger("localllm.serve")


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def error_payload(error: BaseException) -> Any:
    """How ``error`` crosses the socket (see the module's doc)."""
    from localllm.server.engine import ApiError, api_error

    if not isinstance(error, ApiError):
        try:
            pickle.loads(pickle.dumps(error))
            return error
        except Exception:  # noqa: BLE001 - an exception that does not pickle crosses as what the client is told
            error = api_error(error)
    return ("api", error.status, error.message, error.kind, dict(error.headers))


def error_from(payload: Any) -> BaseException:
    from localllm.server.engine import ApiError

    if isinstance(payload, tuple) and payload and payload[0] == "api":
        _, status, message, kind, headers = payload
        return ApiError(status, message, kind, headers)
    return payload if isinstance(payload, BaseException) else RuntimeError(str(payload))


def die_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGKILL when the parent ends (a parent killed by a signal runs no clean-up), and a
    parent already gone before this line ran is noticed by its pid. Elsewhere the socket's EOF ends the runner."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


class Runner:
    """The child's side: one model, one Engine, the parent's requests as tasks on one event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.engine: Any = None
        self.loaded: Any = None
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, message: Any) -> None:
        self.writer.write(frame(message))

    async def run(self) -> None:
        while True:
            try:
                size = HEADER.unpack(await self.reader.readexactly(HEADER.size))[0]
                message = pickle.loads(await self.reader.readexactly(size))
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the parent closed the socket, or is gone
            kind = message[0]
            if kind == "close":
                return
            if kind == "load":
                await self.load(message[1])
            elif kind == "cancel":
                task = self.tasks.get(message[1])
                if task is not None:
                    task.cancel()
            else:
                ident = message[1]
                self.tasks[ident] = asyncio.create_task(self.answer(kind, ident, message[2]))
            await self.writer.drain()

    async def load(self, spec: dict[str, Any]) -> None:
        try:
            loaded = await asyncio.to_thread(load_from_spec, spec)
        except BaseException as error:  # noqa: BLE001 - the parent tells the client, as serve did in-process
            self.send(("load_failed", error_payload(error)))
            return
        from localllm.cli.serve import embedder_for
        from localllm.hardware.planner import parallel_slots
        from localllm.server.engine import Engine

        self.loaded = loaded
        parallel = spec["parallel"] or parallel_slots(loaded.plan, spec["most_parallel"])
        self.engine = Engine(loaded, max_queue=spec["max_queue"], stream_interval=spec["stream_interval"],
                             embedder=embedder_for(spec["settings"], loaded, spec["embedding_ctx"]),
                             parallel=parallel)
        self.send(("loaded", facts_of(self.engine)))

    async def answer(self, kind: str, ident: int, payload: Any) -> None:
        try:
            if kind == "stream":
                chunks = self.engine.stream(payload)
                try:
                    async for chunk in chunks:
                        self.send(("chunk", ident, chunk))
                        await self.writer.drain()
                finally:
                    await chunks.aclose()
                self.send(("end", ident))
            elif kind == "count":
                self.send(("result", ident, await self.engine.count_prompt_tokens(payload)))
            elif kind == "embed":
                vectors, tokens = await self.engine.embed(payload)
                self.send(("result", ident, (vectors, tokens)))
            else:
                raise ValueError(f"unknown request {kind!r}")
        except asyncio.CancelledError:
            pass  # the parent's client went away: nobody waits for an answer
        except BaseException as error:  # noqa: BLE001 - every failure is the request's answer
            self.send(("error", ident, error_payload(error)))
        finally:
            self.tasks.pop(ident, None)

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self.engine is not None:
            self.engine.close()
        if self.loaded is not None:
            await asyncio.to_thread(self.loaded.close)


def load_from_spec(spec: dict[str, Any]) -> Any:
    """The model loaded as serve loaded it in its own process, planned beside the other runners' models and this
    process's own interpreter and libraries."""
    from localllm.core.plan import MemoryEstimate
    from localllm.tasks.serving import Footprint, LocalModels

    if spec.get("build_verdict") is not None:
        remember_build_verdict(spec["build_verdict"])
    source = LocalModels(spec["settings"], spec["report"], backend=spec["backend"], ctx=spec["ctx"],
                         slots=spec["slots"])
    itself = Footprint(MemoryEstimate(0, 0, 0, 0), own_resident_bytes())
    return source.load(spec["name"], [*spec["beside"], itself])


def remember_build_verdict(verdict: Any) -> None:
    """A llama.cpp self-check an earlier runner of this serve ran and could not finish in time (a busy machine) is
    not run again by each new runner: llamacpp_check keeps such a verdict for its own process only (the user
    already waited once), and serve's models were in one process before runners. (Its memo is private: there is
    no public way to hand a verdict over.)"""
    from localllm.backends import llamacpp_check

    if getattr(verdict, "timed_out", False):
        with llamacpp_check._memo_lock:
            llamacpp_check._memo.setdefault(verdict.digest, verdict)


def own_resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def facts_of(engine: Any) -> dict[str, Any]:
    """What the parent needs to answer for the model without asking the runner: its name, window, backend, what
    it can do, and the refusals Engine's own checks give (their exact words)."""
    loaded = engine.loaded
    backend = loaded.backend

    def refusal(check: Any) -> Any:
        try:
            check()
        except BaseException as error:  # noqa: BLE001 - the refusal, sent as the parent will raise it
            return error_payload(error)
        return None

    return {"ref": loaded.ref, "info": loaded.info, "plan": loaded.plan, "choice": loaded.choice,
            "load_s": loaded.load_s, "backend_name": backend.name, "capabilities": backend.capabilities,
            "vocab_size": backend.vocab_size, "fills_in_middle": backend.fills_in_middle(),
            "chat_format": getattr(backend, "chat_format", None),
            "build_verdict": getattr(backend, "build_verdict", None),
            "text_completion_refusal": refusal(engine.check_text_completion),
            "embeddings_refusal": refusal(engine.check_embeddings), "slots": engine.slots}


async def main_async(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    runner = Runner(reader, writer)
    try:
        await runner.run()
    finally:
        await runner.close()
        writer.close()


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at serve's terminal is serve's to handle
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("localllm.serve", "localllm"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO if name == "localllm.serve" else logging.WARNING)
        log.propagate = False
    asyncio.run(main_async(fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
