"""Reading a long prompt into llama.cpp in ``n_batch`` pieces, saying after each how far it got.

llama-cpp-python reads a whole prompt in one call (``Llama.eval`` loops over the pieces inside), so a caller sees
nothing until the first answer token: two minutes of a still progress bar for a long document on a CPU. Here the
pieces are fed one by one; the prompt's last token is left to the completion that follows, whose prefix match
then finds the rest in the cache and reads that one token to sample from, as it does with a cached conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def read_prompt(llm: Any, prompt: Sequence[int], cached: int, report: Callable[[int, int], None],
                stopped: Callable[[], bool]) -> None:
    """Evaluates ``prompt[cached:-1]`` after the ``cached`` tokens already in ``llm``'s context, a batch at a time,
    calling ``report(read, to_read)`` after each batch (``to_read`` counts the last token too, which the
    completion reads); returns early once ``stopped()``. A stop raised by llama.cpp's abort callback comes out as
    its RuntimeError, as it does from the completion."""
    to_read = len(prompt) - cached
    pieces = list(prompt[cached:-1])
    llm.n_tokens = cached  # eval drops whatever the context holds past this point before it reads
    report(0, to_read)
    for start in range(0, len(pieces), llm.n_batch):
        if stopped():
            return
        batch = pieces[start:start + llm.n_batch]
        llm.eval(batch)
        report(start + len(batch), to_read)
