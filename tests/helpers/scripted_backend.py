"""A scripted backend: yields pre-written tokens at full speed (or a set pace) instead of running a model.

Only for UI-only speed tests and benchmarks, where the model's own speed would hide the interface's; everything
that checks what the app does with a model uses the real bundled model.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from localllm.backends.base import Backend, Capabilities
from localllm.backends.choice import BackendChoice
from localllm.core.chunks import Chunk, FinalChunk, FinishReason, Stopwatch, TextChunk, Usage
from localllm.core.messages import Message
from localllm.core.model import ModelInfo, ModelRef
from localllm.core.options import GenerationOptions
from localllm.core.plan import LoadPlan, MemoryEstimate
from localllm.tasks.loading import LoadedModel

WINDOW = 1 << 20


class ScriptedBackend(Backend):
    name = "scripted"
    capabilities = Capabilities(stream=True, cancel=True)

    def __init__(self, tokens: Sequence[str], delay_s: float = 0.0,
                 hold: tuple[int, threading.Event] | None = None) -> None:
        super().__init__()
        self.tokens = list(tokens)
        self.delay_s = delay_s
        self.hold = hold
        """(index, event): the token at that index waits for the event (a test looks at the screen there, however
        slowly a loaded machine gets to it)."""
        self.calls = 0

    def chat(self, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        from localllm.core.thinking import split_thinking

        return split_thinking(self._tokens(messages, options))  # as every real backend's stream is

    def _tokens(self, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        self.calls += 1
        watch = Stopwatch()
        sent = 0
        reason: FinishReason = "stop"
        for index, token in enumerate(self.tokens):
            if options.max_tokens and sent >= options.max_tokens:
                reason = "length"
                break
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.hold is not None and index == self.hold[0]:
                self.hold[1].wait(60)
            watch.mark_token()
            sent += 1
            yield TextChunk(token)
        yield FinalChunk(reason, Usage(self.count_prompt_tokens(messages), sent), watch.timings())

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(message.content) + 4 for message in messages)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))

    @property
    def context_window(self) -> int:
        return WINDOW


def markdown_tokens(count: int) -> list[str]:
    """``count`` tokens of an answer with paragraphs, lists and fenced code, as a model writes them."""
    section = (
        "## Step {n}\n\nHere is how the **parser** handles part {n}: it reads the input, checks each field and "
        "keeps going.\n\n- first, open the file\n- then read each line\n- finally close it\n\n"
        "```python\ndef step_{n}(lines):\n    total = 0\n    for line in lines:\n        total += len(line)\n"
        "    return total\n```\n\n"
    )
    tokens: list[str] = []
    n = 1
    while len(tokens) < count:
        tokens += re.findall(r"\s*\S+|\s+", section.format(n=n))
        n += 1
    return tokens[:count]


def scripted_model(tokens: Sequence[str], delay_s: float = 0.0,
                   hold: tuple[int, threading.Event] | None = None) -> LoadedModel:
    info = ModelInfo(path="scripted", file_size=0, architecture="scripted", name="scripted", quant=None,
                     context_length=WINDOW, block_count=1, embedding_length=1, feed_forward_length=1, head_count=1,
                     head_count_kv=1, key_length=1, value_length=1, vocab_size=1, layer_bytes=0, non_layer_bytes=0,
                     parameters=0, tokenizer_model=None, tokenizer_pre=None, chat_template=None)
    plan = LoadPlan(backend="scripted", n_ctx=WINDOW, n_gpu_layers=0, n_layers=1, n_threads=1,
                    memory=MemoryEstimate(0, 0, 0, 0), placement="cpu", fits=True, ram_available=0, gpu_available=0)
    return LoadedModel(ModelRef("scripted", Path("scripted"), "scripted"), info, plan,
                       BackendChoice("scripted", ("a scripted backend for UI tests",)),
                       ScriptedBackend(tokens, delay_s, hold))
