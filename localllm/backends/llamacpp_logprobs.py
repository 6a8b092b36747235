"""Log-probabilities from llama.cpp, through llama-cpp-python's low-level API.

A prompt is scored by evaluating it in batches that ask llama.cpp for the logits of every position
(``llama_batch.logits[i] = 1``, read back with ``llama_get_logits_ith``); each row becomes the scored token's
log-probability and its likeliest alternatives at once, and only those are kept. Loading the model with
``logits_all=True`` instead would keep a row of the whole vocabulary for every position of the window: 49152 floats
× 2048 positions is 400 MB for SmolLM2-135M, and gigabytes for a larger vocabulary or window.

An answer's tokens are scored as they are sampled: the sampler llama-cpp-python builds for a generation is wrapped
so that each sampled token is read, with the raw logits of the position it was sampled at (the sampler chain works
on a copy of them; llama-cpp-python's own logprobs need ``logits_all=True``).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator, Sequence
from typing import Any

from localllm.core.chunks import Alternative, TokenLogprob
from localllm.core.errors import GenerationError, UsageError

SCORE_LOGITS_BYTES = 64 * 1024 * 1024
"""The most memory one scoring batch's logits may take (a row of the vocabulary's floats per position). llama.cpp
keeps its output buffer at the largest size asked for, so this also bounds what scoring adds to a context for
good: 341 positions a batch for SmolLM2's 49152 tokens, 110 for Qwen's 151936."""
MAX_TOP = 20
"""Alternatives a token may come with (OpenAI's own bound for chat's top_logprobs)."""


class Pieces:
    """Tokens' text as bytes, read once from the vocabulary. ``special``: a control token (``<|im_start|>``) as its
    text, as a prompt read with special=True spells it; without, as llama-cpp-python's answers show it (nothing)."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._known: dict[tuple[int, bool], bytes] = {}

    def __call__(self, token: int, special: bool = False) -> bytes:
        key = (token, special)
        piece = self._known.get(key)
        if piece is None:
            piece = self._known[key] = token_piece(self._vocab, token, special)
        return piece


def token_piece(vocab: Any, token: int, special: bool) -> bytes:
    """The token's text as bytes, however long (llama-cpp-python's own token_to_piece cuts a piece at 32 bytes and
    keeps the buffer's padding)."""
    import llama_cpp

    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, special)
        if length >= 0:
            return buffer.raw[:length]
        if -length <= size:  # a negative length is the size needed: a smaller one would loop
            return b""
        size = -length


class Rows:
    """Turns rows of raw logits into TokenLogprob entries: the log-softmax of the token asked about and of the
    ``top`` likeliest, computed from the row while llama.cpp still holds it (it is overwritten by the next decode)."""

    def __init__(self, n_vocab: int, pieces: Pieces, top: int) -> None:
        self.n_vocab, self.pieces, self.top = n_vocab, pieces, top

    def row(self, context: Any, index: int) -> Any:
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(context, index)
        if not pointer:  # llama.cpp computed no logits there: reading a null pointer would crash the process
            raise GenerationError(f"llama.cpp has no logits for output {index} (a bug in localllm)")
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def entry(self, row: Any, token: int, special: bool) -> TokenLogprob:
        import numpy as np

        high = float(row.max())
        # In double precision: the sum runs over the whole vocabulary.
        normaliser = high + float(np.log(np.exp(row.astype(np.float64) - high).sum()))
        alternatives: tuple[Alternative, ...] = ()
        if self.top:
            best = np.argpartition(row, -self.top)[-self.top:]
            best = best[np.argsort(-row[best], kind="stable")]
            alternatives = tuple(Alternative(int(i), self.pieces(int(i), special), float(row[i]) - normaliser)
                                 for i in best)
        return TokenLogprob(token, self.pieces(token, special), float(row[token]) - normaliser, alternatives)


def checked_ids(tokens: Sequence[int], n_vocab: int, what: str = "the prompt") -> list[int]:
    """Token ids a client sent, before llama.cpp reads them: an id outside the vocabulary would be read out of its
    tables' bounds in native code."""
    ids = list(tokens)
    for index, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < n_vocab:
            raise UsageError(f"{what} holds the token id {token!r} at {index}, outside the model's vocabulary "
                             f"(ids 0 to {n_vocab - 1})", hint="send token ids of this model's own tokenizer")
    return ids


class Scorer:
    """Scores token sequences on a loaded llama_cpp.Llama.

    A sequence is always evaluated from its start, in batches of the same size: llama.cpp's numbers for a position
    differ a little (about 1e-3 in a log-probability) with the batch it is evaluated in, so reusing the start of
    the sequence scored before would make a score depend on what was asked before it. Evaluation results must
    not: each sequence gets the numbers it gets alone."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.pieces = Pieces(llm._model.vocab)

    def score(self, tokens: list[int], top: int, silent: int = 0,
              stopped: Any = lambda: False) -> list[TokenLogprob] | None:
        """Each token's entry (the first's logprob None); tokens read with special=True show control tokens as
        their text. ``silent``: leading tokens the tokenizer added (a start token), shown as no text. None: stopped
        (``stopped()`` is asked between batches, and a decode the abort callback stopped ends it too)."""
        llm = self.llm
        count = len(tokens)
        if not count:
            return []
        rows = Rows(llm.n_vocab(), self.pieces, top)
        per_batch = max(1, min(llm.n_batch, SCORE_LOGITS_BYTES // (4 * rows.n_vocab)))
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        entries = [TokenLogprob(tokens[0], b"" if silent else self.pieces(tokens[0], True), None)]
        batch = llm._batch
        # The entry of token i comes from the logits at position i - 1. The last position is not evaluated:
        # nothing here needs its logits, and an answer that follows reads the prompt's last token itself
        # (llama-cpp-python finds the rest of the prompt in the context).
        for offset in range(0, count - 1, per_batch):
            if stopped():
                return None
            part = tokens[offset:min(offset + per_batch, count - 1)]
            batch.set_batch(batch=part, n_past=offset, logits_all=True)
            try:
                llm._ctx.decode(batch)
            except RuntimeError:
                llm._ctx.kv_cache_seq_rm(-1, offset, -1)  # what the failed batch may have left
                if stopped():  # llama_decode returned 2: aborted by the callback
                    return None
                raise
            llm.input_ids[offset:offset + len(part)] = part
            llm.n_tokens = offset + len(part)
            for index in range(len(part)):
                place = offset + index + 1
                entries.append(rows.entry(rows.row(llm._ctx.ctx, index), tokens[place], True)
                               if place >= silent else TokenLogprob(tokens[place], b"", None))
        # Whoever generates next reads its prompt's last token again rather than trusting the logits left here.
        llm._requires_eval = True
        return entries


class Recorder:
    """Each token a generation samples, with its log-probability and the ``top`` likeliest alternatives, handed
    out with the text it became: ``take`` gives the tokens whose text starts within the text shown so far, so that
    tokens held back (a stop sequence, an end token) are never reported."""

    def __init__(self, llm: Any, pieces: Pieces, top: int) -> None:
        import llama_cpp

        self.llm = llm
        self.rows = Rows(llm.n_vocab(), pieces, top)
        self._vocab = llm._model.vocab
        self._is_end = llama_cpp.llama_vocab_is_eog
        self._pending: list[tuple[int, TokenLogprob]] = []
        """(where the token's text starts in the answer, in bytes; its entry)."""
        self._made = 0
        """Bytes of text the tokens sampled so far make."""
        self._shown = 0
        self.end: TokenLogprob | None = None
        """The end token's entry, where the answer ended with one (FinalChunk.end_logprob)."""

    def _sampled(self, context: Any, index: int, token: int) -> None:
        if self._is_end(self._vocab, token):  # no part of the answer's text, but a token it generated
            self.end = self.rows.entry(self.rows.row(context.ctx, index), token, False)
            return
        entry = self.rows.entry(self.rows.row(context.ctx, index), token, False)
        self._pending.append((self._made, entry))
        self._made += len(entry.piece)

    def take(self, shown: str) -> tuple[TokenLogprob, ...]:
        """The entries of the tokens ``shown`` (the next piece of the answer's text) comes from."""
        self._shown += len(shown.encode("utf-8"))
        count = 0
        while count < len(self._pending) and self._pending[count][0] < self._shown:
            count += 1
        taken, self._pending = self._pending[:count], self._pending[count:]
        return tuple(entry for _, entry in taken)

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """While a generation runs: the sampler llama-cpp-python makes for it reports each token it samples. The
        logits read are those the sampler read (the output ``index``), before the chain's penalties and biases,
        which work on a copy."""
        llm = self.llm
        make = llm._init_sampler

        def init_sampler(*args: Any, **kwargs: Any) -> Any:
            sampler = make(*args, **kwargs)
            sample = sampler.sample

            def sampled(context: Any, index: int) -> int:
                token = sample(context, index)
                self._sampled(context, index, token)
                return int(token)

            sampler.sample = sampled
            return sampler

        llm._init_sampler = init_sampler  # this instance only, and only while this generation runs
        try:
            yield
        finally:
            del llm._init_sampler


class BatchRecorder(Recorder):
    """A Recorder for a batched answer (llamacpp_batch): the decode thread reads each token's entry while its
    logits are there, and the answer's thread adds them here in order; no sampler is wrapped."""

    def add(self, entry: TokenLogprob) -> None:
        self._pending.append((self._made, entry))
        self._made += len(entry.piece)

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        yield
