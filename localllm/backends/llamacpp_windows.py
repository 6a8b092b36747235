"""A window of tokens evaluated from an empty context, handing out the raw logits over the whole vocabulary of the
positions asked for: what perplexity and KL divergence read (tasks/evaluate).

As llama-perplexity does, only the positions asked for get an output row (``llama_batch.logits[i]``), so the
output head and its vocabulary-sized product run for the scored half of a window alone; loading the model with
``logits_all=True`` would compute and keep a row for every position. Rows are handed out a batch at a time as a
numpy view of llama.cpp's own output buffer (no copy): the caller reads them before asking for the next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from localllm.backends.llamacpp_logprobs import SCORE_LOGITS_BYTES
from localllm.core.errors import GenerationError


def window_logits(llm: Any, tokens: Sequence[int], first: int, stopped: Callable[[], bool] = lambda: False
                  ) -> Iterator[Any]:
    """The logits at positions ``first`` .. ``len(tokens) - 1`` of ``tokens`` read from position 0, as 2-D arrays
    (rows × vocabulary) in order, one per batch that has any. Stops quietly when ``stopped()`` (asked between
    batches) or the abort callback ends a decode."""
    import llama_cpp
    import numpy as np

    count = len(tokens)
    n_vocab = llm.n_vocab()
    # A batch's rows are bounded as the scorer's are: llama.cpp keeps its output buffer at the largest size asked.
    per_batch = max(1, min(llm.n_batch, SCORE_LOGITS_BYTES // (4 * n_vocab)))
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0
    batch = llm._batch
    try:
        for offset in range(0, count, per_batch):
            if stopped():
                return
            part = list(tokens[offset:offset + per_batch])
            batch.set_batch(batch=part, n_past=offset, logits_all=False)
            outputs = 0
            for index in range(len(part)):
                wanted = offset + index >= first
                batch.batch.logits[index] = wanted
                outputs += wanted
            try:
                llm._ctx.decode(batch)
            except RuntimeError:
                if stopped():
                    return
                raise
            if outputs:
                pointer = llama_cpp.llama_get_logits(llm._ctx.ctx)
                if not pointer:  # reading a null pointer would crash the process
                    raise GenerationError("llama.cpp returned no logits (a bug in localllm)")
                yield np.ctypeslib.as_array(pointer, shape=(outputs, n_vocab))
    finally:
        # The context now holds this window, not what llama-cpp-python's prompt cache believes: start afresh.
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        llm._requires_eval = True
