"""Many answers from one llama.cpp model at once (continuous batching), on llama-cpp-python's low-level API.

One context holds ``slots`` sequences, each with the model's whole window (a KV cache that is not unified: a
sequence never runs out of room because of another). One decode thread steps every active sequence together: a
``llama_batch`` holds the next token of each answer being written and, in the room left up to ``n_batch``, pieces
of the prompts being read, so a new request joins at the next step and its prompt is read beside the others'
decoding. Each request samples with its own sampler chain (its grammar, from the grammar gate; its seed,
penalties, biases), and its tokens go to the thread that asked for them through a queue of its own.

A slot keeps the tokens its last request left in the cache: a new request takes the free slot whose cache starts
as its prompt does (a chat's next turn finds its conversation there) and reads only the rest.

llama-cpp-python's Llama decodes one sequence (its ``create_completion``); llama.cpp's own server batches, but
keeps no prompt log-probabilities, nor this project's bounded templates and tool grammars: hence this module.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from localllm.core.errors import GenerationError

logger = logging.getLogger("localllm")

@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens (what llama-cpp-python's create_completion takes, in its chain's order)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    constraint: Any = None
    """The grammar gate's grammar (llama.cpp has parsed it), or None."""


END = object()
"""The decode thread's last item for a job, after its finish reason."""


@dataclass
class Timings:
    """What one request's sequence cost, in the decode thread's steps (shared with the others in its batches)."""

    prompt_evaluated: int = 0
    prompt_eval_s: float = 0.0
    decoded: int = 0
    eval_s: float = 0.0


class Job:
    """One request's sequence: its prompt, its sampler, and the queue its tokens come back through."""

    def __init__(self, prompt: list[int], sampler: Any, max_tokens: int, top: int | None) -> None:
        self.prompt = prompt
        self.sampler = sampler
        self.max_tokens = max_tokens
        """Tokens to generate at most; 0: until the window is full."""
        self.top = top
        """Log-probabilities with this many alternatives per token; None: none."""
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stopped = threading.Event()
        """Set by the asking thread (its client left, or it has what it wanted): the slot is freed at the next step."""
        self.outside_stop: threading.Event | None = None
        """The caller's own stop (serve's client gone), watched by the decode thread while the prompt is read."""
        self.cached = 0
        """Prompt tokens found in the slot's cache, not read again."""
        self.slot: Slot | None = None
        self.read = 0
        """Prompt tokens in the cache so far."""
        self.next_token: int | None = None
        """The token sampled last, to be decoded at the next step."""
        self.end_entry: Any = None
        """The end token's log-probability entry, where the answer ended with one and they were asked for."""
        self.generated = 0
        self.timings = Timings()
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    @property
    def cancelled(self) -> bool:
        return self.stopped.is_set() or (self.outside_stop is not None and self.outside_stop.is_set())


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    """What this sequence's cache holds, position by position."""
    job: Job | None = None
    used: float = 0.0


class BatchDecoder:
    """The decode thread of one loaded llama_cpp.Llama, on a context of its own with ``slots`` sequences."""

    def __init__(self, llm: Any, slots: int, window: int, n_batch: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.llm = llm
        self.slots = [Slot(index) for index in range(slots)]
        self.slot_count = slots
        self.window = window
        self.n_batch = max(1, n_batch)
        self.n_vocab = int(llm.n_vocab())
        self.vocab = llm._model.vocab
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_seq_max = slots
        params.n_ctx = window * slots
        params.n_batch = params.n_ubatch = self.n_batch
        params.kv_unified = False  # each sequence its own window: one long answer never crowds out the others
        params.embeddings = False
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise GenerationError(f"llama.cpp could not make a context for {slots} sequences of {window} tokens",
                                  hint="serve with a smaller --parallel N, or a smaller window (-o ctx=N)")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch + slots, 0, 1)
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-batch-decode", daemon=True)
        self._thread.start()

    # -- the asking threads' side ------------------------------------------------------------------------------
    def sampler(self, sampling: Sampling) -> Any:
        """A sampler chain for one request, in llama-cpp-python's order for create_completion."""
        from llama_cpp import _internals

        llama_cpp = self._llama_cpp
        chain = _internals.LlamaSampler()
        if sampling.logit_bias:
            chain.add_logit_bias(self.n_vocab, sampling.logit_bias)
        # Over the last 64 tokens, as llama-cpp-python's last_n_tokens_size.
        chain.add_penalties(self.n_vocab, 64, sampling.repeat_penalty, sampling.frequency_penalty,
                            sampling.presence_penalty)
        if sampling.constraint is not None:  # only ever the gate's (localllm.backends.grammars)
            chain.add_grammar(self.llm._model, sampling.constraint)
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        if sampling.temperature < 0:
            chain.add_dist(seed)
        elif sampling.temperature == 0:
            chain.add_greedy()
        else:
            chain.add_top_k(sampling.top_k)
            chain.add_typical(1.0, 1)
            chain.add_top_p(sampling.top_p, 1)
            chain.add_min_p(sampling.min_p, 1)
            chain.add_temp(sampling.temperature)
            chain.add_dist(seed)
        return chain

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closing:
                raise GenerationError("the model is being unloaded")
            self._pending.append(job)
            self._wake.notify()

    def tokens(self, job: Job) -> Generator[tuple[int, Any], None, str]:
        """(token, its log-probability entry or None) as the decode thread samples them; then the finish reason
        ("stop", "length", "cancelled") is returned. Closing it frees the job's slot at the next step."""
        ended = False
        try:
            while True:
                item = job.out.get()
                if isinstance(item, (BaseException, str)):
                    ended = True
                    if isinstance(item, BaseException):
                        raise item
                    return item
                yield item
        finally:
            if not ended:  # left early: the decode thread frees the slot at its next step
                job.stopped.set()
                with self._wake:
                    self._wake.notify()

    def close(self) -> None:
        """Ends the decode thread (its jobs end cancelled) and frees the context."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(60)
        if self._thread.is_alive():  # a decode that never returns: leak the context rather than free it in use
            logger.warning("the batch decode thread did not end; its context is left allocated")
            return
        llama_cpp = self._llama_cpp
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.ctx = None

    # -- the decode thread ---------------------------------------------------------------------------------------
    def _warm(self) -> None:
        """llama.cpp's first decodes on a new context are several times slower than the next (its buffers are
        allocated, the weights' pages touched): one step over every slot is paid here, as the model loads, rather
        than by the first requests."""
        llama_cpp = self._llama_cpp
        start = llama_cpp.llama_vocab_bos(self.vocab)
        batch = self.batch
        for index, slot in enumerate(self.slots):
            batch.token[index] = start if start >= 0 else 0
            batch.pos[index] = 0
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = slot.seq_id
            batch.logits[index] = True
        batch.n_tokens = len(self.slots)
        llama_cpp.llama_decode(self.ctx, batch)
        llama_cpp.llama_memory_clear(self.memory, True)

    def _run(self) -> None:
        try:
            self._warm()
            while True:
                with self._wake:
                    while not self._closing and not self._pending and not self._active():
                        self._wake.wait()
                    if self._closing:
                        break
                    self._admit()
                self._drop_cancelled()
                if self._active():
                    self._step()
        finally:
            for job in [*self._pending, *(slot.job for slot in self.slots if slot.job is not None)]:
                job.out.put("cancelled")
            self._pending.clear()

    def _active(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.job is not None]

    def _admit(self) -> None:
        """Pending jobs into free slots: each the one whose cache shares the longest start with its prompt."""
        free = [slot for slot in self.slots if slot.job is None]
        while self._pending and free:
            job = self._pending.popleft()
            if job.cancelled:
                job.out.put("cancelled")
                continue
            best = max(free, key=lambda slot: (_shared(slot.tokens, job.prompt), -slot.used))
            free.remove(best)
            # The prompt's last token is always read again: its logits are the first token's.
            keep = min(_shared(best.tokens, job.prompt), len(job.prompt) - 1)
            if not self._llama_cpp.llama_memory_seq_rm(self.memory, best.seq_id, keep, -1):
                keep = 0  # a cache that cannot lose only its end (a recurrent model's) is emptied
                self._llama_cpp.llama_memory_seq_rm(self.memory, best.seq_id, -1, -1)
            del best.tokens[keep:]
            best.job, job.slot, job.read, job.cached = job, best, keep, keep

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            job = slot.job
            if job is not None and job.cancelled:
                self._finish(slot, "cancelled")

    def _finish(self, slot: Slot, reason: str | BaseException) -> None:
        job = slot.job
        assert job is not None
        slot.job, slot.used = None, time.perf_counter()
        if job.first_token_at is not None:
            job.timings.eval_s = time.perf_counter() - job.first_token_at
        job.out.put(reason)

    def _step(self) -> None:
        """One llama_decode over every active sequence: each answer's next token, then prompt pieces."""
        llama_cpp = self._llama_cpp
        batch = self.batch
        count = 0
        sampled_at: list[tuple[Slot, int]] = []
        placed: list[tuple[Slot, list[int]]] = []

        def add(slot: Slot, pieces: list[int], token: int, logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = len(slot.tokens) + len(pieces)
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = slot.seq_id
            batch.logits[count] = logits
            pieces.append(token)
            if logits:
                sampled_at.append((slot, count))
            count += 1

        reading = []
        for slot in self.slots:
            job = slot.job
            if job is None:
                continue
            if job.next_token is None:
                reading.append(slot)
                continue
            placed.append((slot, []))
            add(slot, placed[-1][1], job.next_token, True)
        room = self.n_batch - count
        for slot in reading:  # prompts share the room the answers leave, first come first
            if room <= 0:
                break
            job = slot.job
            assert job is not None
            part = job.prompt[job.read:job.read + room]
            placed.append((slot, []))
            for index, token in enumerate(part):
                add(slot, placed[-1][1], token, job.read + index == len(job.prompt) - 1)
            room -= len(part)
            job.read += len(part)
        batch.n_tokens = count
        began = time.perf_counter()
        result = llama_cpp.llama_decode(self.ctx, batch)
        if result != 0:
            error = GenerationError(f"llama.cpp could not decode a batch (llama_decode returned {result})",
                                    hint="try again; a smaller --parallel N leaves each answer more room")
            for slot, _ in placed:
                llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                slot.tokens.clear()
                self._finish(slot, error)
            return
        took = time.perf_counter() - began
        for slot, pieces in placed:
            slot.tokens.extend(pieces)
            job = slot.job
            if job is not None and job.next_token is None:
                job.timings.prompt_eval_s += took
        for slot, index in sampled_at:
            self._sample(slot, index)

    def _sample(self, slot: Slot, index: int) -> None:
        llama_cpp = self._llama_cpp
        job = slot.job
        assert job is not None
        try:
            token = int(llama_cpp.llama_sampler_sample(job.sampler.sampler, self.ctx, index))
            entry = self._entry(job, index, token) if job.top is not None else None
        except Exception as error:  # noqa: BLE001 - the request's own failure, not the thread's
            self._finish(slot, error)
            return
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
            job.timings.prompt_evaluated = len(job.prompt) - job.cached
        else:
            job.timings.decoded += 1
        job.generated += 1
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            job.end_entry = entry
            job.out.put((token, None))
            self._finish(slot, "stop")
            return
        job.out.put((token, entry))
        job.next_token = token
        if (job.max_tokens and job.generated >= job.max_tokens) or len(slot.tokens) >= self.window:
            self._finish(slot, "length")

    def _entry(self, job: Job, index: int, token: int) -> Any:
        from localllm.backends.llamacpp_logprobs import Pieces, Rows

        rows = Rows(self.n_vocab, self._pieces(Pieces), job.top or 0)
        return rows.entry(rows.row(self.ctx, index), token, False)

    def _pieces(self, make: Any) -> Any:
        pieces = getattr(self, "_shared_pieces", None)
        if pieces is None:
            pieces = self._shared_pieces = make(self.vocab)
        return pieces


def _shared(cached: Sequence[int], prompt: Sequence[int]) -> int:
    count = 0
    for old, new in zip(cached, prompt, strict=False):
        if old != new:
            break
        count += 1
    return count


class AnswerParts:
    """A job's tokens as the parts llama-cpp-python's create_completion streams (``{"choices": [{"text": ...,
    "finish_reason": ...}]}``), so that the backend's stop strings, thinking split and log-probabilities treat a
    batched answer as any other: text decoded across tokens that split a character, the chat format's own stop
    strings held back and cut, as create_completion does. ``generated``: the tokens taken so far (an end token
    included, as llama-cpp-python counts them). Closing it frees the job's slot."""

    def __init__(self, decoder: BatchDecoder, job: Job, pieces: Any, stops: Sequence[str], recorder: Any) -> None:
        self.generated = 0
        self._parts = self._make(decoder, job, pieces, stops, recorder)

    def __iter__(self) -> AnswerParts:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._parts)

    def close(self) -> None:
        self._parts.close()

    def _make(self, decoder: BatchDecoder, job: Job, pieces: Any, stops: Sequence[str], recorder: Any
              ) -> Generator[dict[str, Any], None, None]:
        import codecs

        from localllm.backends.streaming import StopScanner

        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        scan = StopScanner(stops)
        tokens = decoder.tokens(job)
        try:
            while True:
                try:
                    token, entry = next(tokens)
                except StopIteration as end:
                    reason = end.value
                    break
                self.generated += 1
                if recorder is not None and entry is not None:
                    recorder.add(entry)
                shown, stopped = scan.feed(text.decode(pieces(token)))
                if shown:
                    yield _part(shown, None)
                if stopped:
                    yield _part("", "stop")
                    return
            if recorder is not None:
                recorder.end = job.end_entry
            rest = scan.flush() + text.decode(b"", final=True)
            if reason == "cancelled":
                if rest:
                    yield _part(rest, None)
                return
            yield _part(rest, reason)
        finally:
            tokens.close()


def _part(text: str, finish: str | None) -> dict[str, Any]:
    return {"choices": [{"text": text, "finish_reason": finish}]}
