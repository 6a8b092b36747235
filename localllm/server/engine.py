"""One model, up to ``slots`` generations at once: requests beyond them wait their turn in a bounded queue, each
answer is generated in a thread of its own and handed to the event loop chunk by chunk, and a client that goes
away stops its generation (the backend's stream is closed, which stops decoding, and its slot is free).

With one slot (a backend that cannot batch, or ``parallel`` 1) answers take turns on the model. With more, the
backend decodes the answers together (llama.cpp: localllm.backends.llamacpp_batch): each request's thread reads
its own sequence's tokens, a request joins the running batch at its next step. Embeddings take a slot like an
answer; the model loaded for them is a second, small-window instance, loaded at the first request and kept."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, ThinkingChunk
from localllm.core.errors import BackendUnavailable, ContextOverflow, LocalLLMError, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolSpec

logger = logging.getLogger("localllm.serve")
DEFAULT_QUEUE = 8
"""Requests that may wait for the model beyond those it is answering; more get 503 with Retry-After."""
STREAM_INTERVAL = 0.05
"""Seconds between a streamed answer's events at most: the first piece goes at once, the pieces generated while
one event is sent and this time runs go together in the next. Per-token events cost the server and the client a
wake-up and a parse each, time taken from decoding where llama.cpp uses every core; 0 sends each token alone."""


PROMPT_TOO_LONG = "prompt is too long"
"""How an answer refused for a prompt over the window begins, as Anthropic's API words it: what LangChain (its
ContextOverflowError), LiteLLM (its ContextWindowExceededError, which its context-window fallbacks catch) and agents
that compact a conversation when it no longer fits look for in an error's message, whichever API they speak."""


class ApiError(Exception):
    """An HTTP error with a message for the client (each format wraps it in its own error shape)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def api_error(error: BaseException) -> ApiError:
    """What the client is told of an error raised while the model worked."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, LocalLLMError):
        message = f"{error.message} ({error.hint})" if error.hint else error.message
        if isinstance(error, ContextOverflow):  # the words Anthropic's API says it in, which clients look for
            return ApiError(400, f"{PROMPT_TOO_LONG}: {message}", "context_length_exceeded")
        if isinstance(error, BackendUnavailable):
            return ApiError(501, message, "not_implemented")
        if isinstance(error, UsageError):  # what the request asked cannot be done with this model
            return ApiError(400, message)
        return ApiError(500, message, "api_error")
    return ApiError(500, f"the model failed: {type(error).__name__}: {error}", "api_error")


class Handover:
    """Chunks from the generating thread to the event loop. The loop is woken by a chunk only when it waits for one
    with the stream interval over, and by the answer's end: while it sends, or the interval runs, chunks gather
    without a wake-up each (a wake-up costs both threads time that decoding needs where every core decodes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_for_any = True
        self._ending = False
        """The answer's last item (its final chunk, an error, the end) is in."""

    def put(self, item: Any, last: bool = False) -> None:
        """From the generating thread."""
        with self._lock:
            self._items.append(item)
            self._ending = self._ending or last
            waiter = self._waiter if self._wake_for_any or last else None
            if waiter is not None:
                self._waiter = None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    async def take(self, not_before: float | None = None) -> list[Any]:
        """On the event loop: every item handed over so far. Waits for one if there is none, and for more until
        ``not_before`` (the loop's time), unless the answer ends first."""
        loop = self._loop
        while True:
            with self._lock:
                due = not_before is None or loop.time() >= not_before
                if self._items and (self._ending or due):
                    items = list(self._items)
                    self._items.clear()
                    return items
                waiter = self._waiter = loop.create_future()
                self._wake_for_any = due  # before then, only the answer's end (or the time) wakes it
            timer = None if due or not_before is None else loop.call_at(not_before, _wake, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def merged(items: list[Any]) -> list[Any]:
    """Consecutive text (or thinking) pieces as one: a stream event for each gathered piece, not each token."""
    out: list[Any] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, TextChunk) and isinstance(last, TextChunk):
            out[-1] = TextChunk(last.text + item.text, last.logprobs + item.logprobs)
        elif isinstance(item, ThinkingChunk) and isinstance(last, ThinkingChunk):
            out[-1] = ThinkingChunk(last.text + item.text)
        else:
            out.append(item)
    return out


async def whole_answer(chunks: AsyncIterator[Chunk]) -> tuple[str, str, list, FinalChunk | None]:
    """An answer's chunks gathered: (text, thinking, tool calls, final chunk)."""
    from localllm.core.chunks import ToolCallChunk

    text, thinking, calls, final = [], [], [], None
    async for chunk in chunks:
        if isinstance(chunk, TextChunk):
            text.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            thinking.append(chunk.text)
        elif isinstance(chunk, ToolCallChunk):
            calls.append(chunk.call)
        elif isinstance(chunk, FinalChunk):
            final = chunk
    return "".join(text), "".join(thinking), calls, final


@dataclass
class Request:
    messages: list[Message]
    options: GenerationOptions
    tools: Sequence[ToolSpec] = ()
    tool_choice: str = "auto"
    prompt: str | list[int] | None = None
    """Raw text (or token ids) to continue with no chat template (/v1/completions, Ollama's raw); ``messages`` is
    then empty."""
    suffix: str | None = None
    """With ``prompt``: the text after the cursor; the answer is what goes between them (fill-in-the-middle)."""
    n: int = 1
    """Answers to generate, one after another in this request's turn (OpenAI's n); each ends with its FinalChunk.
    With a seed, answer i samples with seed + i: the same request gives the same answers, not n copies of one."""


class LoadedModelNames:
    """What the routes read of an engine's model, the same whether it runs here or in a runner: ``loaded`` is a
    LoadedModel or a runner's account of one."""

    loaded: Any

    @property
    def name(self) -> str:
        return str(self.loaded.ref.name)

    @property
    def window(self) -> int:
        return int(self.loaded.plan.n_ctx)

    @property
    def backend_name(self) -> str:
        return str(self.loaded.backend.name)


class Engine(LoadedModelNames):
    def __init__(self, loaded: Any, *, max_queue: int = DEFAULT_QUEUE,
                 embedder: Callable[[], Any] | None = None, stream_interval: float = STREAM_INTERVAL,
                 parallel: int = 1) -> None:
        """``embedder`` loads the backend that computes embeddings (called once, at the first request for them);
        None: this server computes none. ``parallel``: answers generated at once where the backend can batch
        them (its decoding is then started here, and ends when the model is closed)."""
        self.loaded = loaded
        self.max_queue = max_queue
        self.stream_interval = stream_interval
        self._load_embedder = embedder
        self._embedder: Any = None
        batch = getattr(loaded.backend, "batch", None)
        self.slots = batch(parallel) if parallel > 1 and batch is not None else 1
        self._batched = self.slots > 1
        self._turns = asyncio.Semaphore(self.slots)
        self._model = threading.Lock()
        """Held by the thread that generates when answers take turns: a generation whose client went away
        finishes closing before the next one starts, even if the event loop has moved on."""
        self._waiting = 0


    def check_text_completion(self) -> None:
        if not self.loaded.backend.capabilities.text_completion:
            raise ApiError(501, f"backend {self.backend_name} cannot continue raw text: /v1/completions needs "
                                "--backend llama.cpp (/v1/chat/completions works on every backend)",
                           "not_implemented")

    def check_embeddings(self) -> None:
        if self._load_embedder is None or not self.loaded.backend.capabilities.embeddings:
            raise ApiError(501, f"backend {self.backend_name} cannot compute embeddings: serve with "
                                "--backend llama.cpp for them", "not_implemented")

    async def _wait_turn(self) -> None:
        if self._turns.locked() and self._waiting >= self.max_queue:
            raise ApiError(503, f"the server is busy: {self._waiting} requests are waiting for the model",
                           "overloaded_error", {"Retry-After": "5"})
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1

    async def stream(self, request: Request) -> AsyncIterator[Chunk]:
        """The answer's chunks as they are generated. Raises ApiError before the first one for a full queue
        (503) or a prompt over the window (400); closing the iterator (a client gone) stops the generation."""
        if request.prompt is not None:
            self.check_text_completion()
        await self._wait_turn()
        try:
            async for chunk in self._generate(request):
                yield chunk
        finally:
            self._turns.release()

    async def _generate(self, request: Request) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        handover = Handover(loop)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                # Batched: the backend's decode thread takes the turns; this request's stop is its own.
                with self.loaded.backend.stopped_by(stop) if self._batched else self._model:
                    self._produce(request, handover, stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which turns it into an answer
                handover.put(exc, last=True)
            finally:
                handover.put(done, last=True)

        thread = threading.Thread(target=produce, name="serve-generation", daemon=True)
        thread.start()
        next_event: float | None = None
        try:
            while True:
                # The first piece goes at once; the next ones gather until the interval has passed since an event
                # was last sent (or the answer ends).
                for item in merged(await handover.take(next_event)):
                    if item is done:
                        return
                    if isinstance(item, BaseException):
                        raise api_error(item)
                    yield item
                next_event = loop.time() + self.stream_interval if self.stream_interval > 0 else None
        finally:
            stop.set()  # the client went away, or the answer ended: either way the thread ends at its next chunk
            if thread.is_alive() and not self._batched:  # batched, ``stop`` ends its sequence alone
                self.loaded.backend.interrupt()  # a prompt still being read is given up within a step
            await asyncio.to_thread(thread.join, 30)

    def _produce(self, request: Request, handover: Handover, stop: threading.Event) -> None:
        chunks = self._answers(request)
        produced = finals = 0
        try:
            for chunk in chunks:
                finals += isinstance(chunk, FinalChunk)
                handover.put(chunk, last=finals == request.n)
                produced += 1
                if stop.is_set():
                    logger.info("the client went away: its answer was stopped after %d chunks", produced)
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops decoding: the backend ends its stream

    def _answers(self, request: Request):
        """The request's n answers' chunks in turn; closing it stops the one being generated."""
        for index in range(request.n):
            options = request.options
            if index:  # the prompt is the same for every answer: scored (where asked) for the first only
                options = replace(options, prompt_logprobs=None,
                                  seed=None if options.seed is None else options.seed + index)
            chunks = self._chunks(replace(request, options=options))
            try:
                yield from chunks
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

    def _chunks(self, request: Request):
        backend = self.loaded.backend
        if isinstance(request.prompt, str) and request.suffix is not None:
            return backend.fill_in_middle(request.prompt, request.suffix, request.options)
        if request.prompt is not None:
            return backend.complete_text(request.prompt, request.options)
        if request.tools:
            from localllm.tasks.tools.calling import offer_tools

            return offer_tools(backend, request.messages, request.options, request.tools, request.tool_choice)
        return backend.chat(request.messages, request.options)

    async def complete(self, request: Request) -> tuple[str, str, list, FinalChunk | None]:
        """The whole answer: (text, thinking, tool calls, final chunk)."""
        return await whole_answer(self.stream(request))

    async def count_prompt_tokens(self, request: Request) -> int:
        """Tokens the request's prompt would take (its messages through the chat template, its tools as they would
        be offered), counted by the backend: exact where it tokenizes, an estimate on a server backend. Not in the
        queue: counting reads only the template and the vocabulary, which a generation does not change (llama.cpp's
        own server tokenizes in its HTTP threads while it decodes), so a count need not wait for an answer."""
        from localllm.tasks.tools.calling import offered_prompt_tokens

        try:
            return await asyncio.to_thread(offered_prompt_tokens, self.loaded.backend, request.messages,
                                           request.tools, request.tool_choice)
        except Exception as error:
            raise api_error(error) from None

    async def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """(one vector per text, the tokens they took), in the model's turn. The first request loads the
        embedding model; a text over its window is refused (400), never cut."""
        self.check_embeddings()
        try:
            await self._wait_turn()
        except asyncio.CancelledError:
            logger.info("the client went away before its embeddings began (%d texts)", len(texts))
            raise
        stop = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(self._embed, list(texts), stop))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:  # the client went away: the texts not yet begun are left
            stop.set()
            (result,) = await asyncio.gather(work, return_exceptions=True)  # the model is free when this returns
            done = len(result[0]) if isinstance(result, tuple) else 0
            if done < len(texts):
                logger.info("the client went away: its embeddings were stopped after %d of %d texts", done,
                            len(texts))
            else:  # the last group was under way: nothing was left to stop
                logger.info("the client went away when its embeddings were all done: none was sent")
            raise
        except Exception as error:
            raise api_error(error) from None
        finally:
            self._turns.release()

    def _embed(self, texts: list[str], stop: threading.Event) -> tuple[list[list[float]], int]:
        with self._model:  # a generation whose client left may still be closing in its thread
            if self._embedder is None:
                assert self._load_embedder is not None
                logger.info("loading %s for embeddings", self.name)
                self._embedder = self._load_embedder()
            try:
                vectors = self._embedder.embed(texts, stop)
            except ContextOverflow as error:
                raise ContextOverflow(f"{error.message} of the model loaded for embeddings",
                                      hint="split it, or serve with a larger --embedding-ctx N",
                                      prompt_tokens=error.prompt_tokens, window=error.window) from None
            return vectors, sum(self._embedder.count_tokens(text) for text in texts[:len(vectors)])

    @property
    def embedding_window(self) -> int | None:
        """The window of the embedding model, once it is loaded."""
        return int(self._embedder.context_window) if self._embedder is not None else None

    def close(self) -> None:
        """Free the embedding model (the chat model belongs to whoever loaded it)."""
        if self._embedder is not None:
            embedder, self._embedder = self._embedder, None
            embedder.close()
