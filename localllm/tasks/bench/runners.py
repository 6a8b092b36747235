"""One measurement at a time: in-process on llama.cpp, or through a backend's chat stream.

In-process (llama.cpp through llama-cpp-python) the measurements are llama-bench's: a prompt of ``p`` tokens read
in batches (prompt processing, ``pp``), and ``n`` tokens decoded one at a time (text generation, ``tg``), each the
greedy pick of the one before, with nothing else in the way (no chat template, no sampler chain, no stop test);
``depth`` tokens already in the context before the generation is timed, as llama-bench's ``-d``. The tokens are
drawn from the vocabulary by a seeded generator, so that two runs read the same prompt.

Through a chat stream (a server's API; GPT4All) a request is timed as a user sees it: the time to the first token
holds the whole prompt's reading and the round trip, the generation rate comes from the stream's pace.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from localllm.backends.base import Backend
from localllm.core.chunks import FinalChunk
from localllm.core.errors import GenerationError
from localllm.core.messages import Message
from localllm.core.options import PRESETS


class LlamaRunner:
    """llama-bench's measurements on a loaded llama_cpp.Llama."""

    def __init__(self, llm: Any, seed: int = 1) -> None:
        import llama_cpp
        import numpy as np

        self.llm = llm
        self._llama_cpp = llama_cpp
        self._np = np
        self._vocab = int(llm.n_vocab())
        self._random = random.Random(seed)

    @classmethod
    def of(cls, backend: Backend) -> LlamaRunner | None:
        """The runner for a llama.cpp backend with its model loaded; None for any other backend."""
        llm = getattr(backend, "_llm", None) if backend.name == "llama.cpp" else None
        return cls(llm) if llm is not None else None

    def set_threads(self, threads: int) -> None:
        """Decode and read prompts on ``threads`` threads from now on (no reload: llama.cpp takes it per call)."""
        self._llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
        self.llm.n_threads = self.llm.n_threads_batch = threads

    def _tokens(self, count: int) -> list[int]:
        return [self._random.randrange(self._vocab) for _ in range(count)]

    def _greedy(self) -> int:
        logits = self._np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1),
                                             shape=(self._vocab,))
        return int(logits.argmax())

    def prompt(self, count: int) -> tuple[float, float]:
        """Seconds to read a prompt of ``count`` tokens into an empty context, and to its first token's pick."""
        tokens = self._tokens(count)
        self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(tokens)
        read = time.perf_counter() - started
        self._greedy()
        return read, time.perf_counter() - started

    def generate(self, count: int, depth: int = 0) -> float:
        """Seconds to decode ``count`` tokens one by one after ``depth`` tokens (read first, untimed)."""
        self.llm.reset()
        if depth:
            self.llm.eval(self._tokens(depth))
            token = self._greedy()
        else:
            token = self._tokens(1)[0]
        started = time.perf_counter()
        for _ in range(count):
            self.llm.eval([token])
            token = self._greedy()
        return time.perf_counter() - started


@dataclass(frozen=True)
class StreamSample:
    prompt_tokens: int
    """As the backend reports it (a server's usage), else its estimate."""
    completion_tokens: int
    first_token_s: float
    tokens_per_s: float | None
    """The pace of the stream after its first token; None under two tokens."""

    @property
    def prompt_per_s(self) -> float:
        return self.prompt_tokens / self.first_token_s


FILLER = ("time year people way day man thing woman life child world school state family student group country "
          "problem hand part place case week company system program question work government number night point "
          "home water room mother area money story fact month lot right study book eye job word business issue "
          "side kind head house service friend father power hour game line end member law car city community name "
          "president team minute idea kid body information back parent face others level office door health person "
          "art war history party result change morning reason research girl guy moment air teacher force "
          "education").split()
INSTRUCTION = "\n\nRepeat every word above, in order, separated by spaces."


class StreamRunner:
    """Timed requests through ``backend.chat``: greedy, at most ``n`` tokens, a prompt of about ``p`` tokens made of
    common words in a new order each time (so that no server answers from its prompt cache)."""

    def __init__(self, backend: Backend, seed: int = 1) -> None:
        self.backend = backend
        self._random = random.Random(seed)

    def _prompt(self, tokens: int) -> str:
        """About ``tokens`` prompt tokens in all, the chat template's own counted as the backend counts them."""
        overhead = self.backend.count_prompt_tokens([Message("user", INSTRUCTION.strip())])
        budget = max(tokens - overhead, 1)
        words = [self._random.choice(FILLER) for _ in range(budget)]
        counted = self.backend.count_tokens(" ".join(words))
        if counted > budget:
            words = words[:max(len(words) * budget // counted, 1)]
        return " ".join(words) + INSTRUCTION

    def run(self, prompt_tokens: int, gen_tokens: int) -> StreamSample:
        options = PRESETS["precise"].with_overrides(max_tokens=gen_tokens, seed=0)
        final: FinalChunk | None = None
        stream = self.backend.chat([Message("user", self._prompt(prompt_tokens))], options)
        try:
            for chunk in stream:
                if isinstance(chunk, FinalChunk):
                    final = chunk
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if final is None or final.timings.first_token_s is None:
            raise GenerationError(f"backend {self.backend.name} answered without a single token",
                                  hint="try a larger -n, or another model")
        return StreamSample(final.usage.prompt_tokens, final.usage.completion_tokens, final.timings.first_token_s,
                            final.tokens_per_second)
