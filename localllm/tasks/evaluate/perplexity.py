"""Perplexity by llama-perplexity's method (tools/perplexity in llama.cpp).

The text is tokenized once, as the model reads a document (its start token first where it adds one), and cut into
windows of ``n_ctx`` tokens; the tail that fills no window is left out. Each window is read from an empty context,
with its first token replaced by the start token where the model adds one, and only its second half is scored:
the positions ``n_ctx/2`` to ``n_ctx - 2`` predict the tokens after them, so every scored token has at least half a
window before it. With ``-log p`` of each scored token's, over N of them:

    PPL = exp(mean(-log p)),  ± PPL × sqrt((mean((-log p)²) - mean(-log p)²) / (N - 1))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.tasks.evaluate.logits_file import LogitsWriter

Progress = Callable[[int, int], None]
"""Called with (windows done, windows in all)."""


@dataclass(frozen=True)
class Text:
    name: str
    text: str


@dataclass(frozen=True)
class Windows:
    """One text's tokens and how many windows of them are scored."""

    name: str
    tokens: list[int]
    count: int
    start_token: int | None


def log_softmax_at(logits: Any, targets: Any) -> tuple[Any, Any]:
    """(each row's log-probability of its target, each row's log of the normaliser), in double precision."""
    import numpy as np

    high = logits.max(axis=1)
    log_total = high.astype(np.float64) + np.log(np.exp(logits - high[:, None]).sum(axis=1, dtype=np.float64))
    picked = logits[np.arange(len(targets)), targets].astype(np.float64)
    return picked - log_total, log_total


@dataclass
class Scores:
    """-log p of every scored token, in order."""

    nll: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.nll)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        count = self.count
        if not count:
            return {"perplexity": None, "error": None, "tokens_scored": 0}
        values = np.asarray(self.nll, dtype=np.float64)
        mean = float(values.mean())
        ppl = float(np.exp(mean))
        spread = float((values * values).mean() - mean * mean)
        error = ppl * float(np.sqrt(spread / (count - 1))) if count > 1 and spread > 0 else None
        return {"perplexity": ppl, "error": error, "tokens_scored": count, "mean_nll": mean}


@dataclass
class PerplexityReport:
    n_ctx: int
    files: list[tuple[str, Scores, int]]
    """(name, its scores, windows scored)."""
    seconds: float
    windows_planned: int
    stopped: bool = False
    saved: Path | None = None

    @property
    def total(self) -> Scores:
        return Scores([value for _, scores, _ in self.files for value in scores.nll])

    @property
    def windows(self) -> int:
        return sum(done for _, _, done in self.files)

    def to_dict(self) -> dict[str, Any]:
        tokens = self.windows * self.n_ctx
        return {"n_ctx": self.n_ctx, **self.total.summary(), "windows": self.windows,
                "windows_planned": self.windows_planned, "seconds": round(self.seconds, 3),
                "tokens_per_s": round(tokens / self.seconds, 2) if self.seconds > 0 else None,
                "stopped": self.stopped, "saved_logits": str(self.saved) if self.saved else None,
                "files": [{"file": name, **scores.summary(), "windows": done} for name, scores, done in self.files]}


def plan_windows(backend: Any, texts: Sequence[Text], n_ctx: int, chunks: int | None) -> list[Windows]:
    """Each text's windows; a text shorter than two windows is refused, as llama-perplexity refuses it (the
    first half of a window is only context)."""
    if n_ctx < 8:
        raise UsageError(f"a window of {n_ctx} tokens is too small to measure perplexity", hint="use -c 512")
    planned = []
    for text in texts:
        tokens, start = backend.evaluation_tokens(text.text)
        if len(tokens) < 2 * n_ctx:
            raise UsageError(f"{text.name} has {len(tokens):,} tokens; perplexity over {n_ctx}-token windows needs "
                             f"at least {2 * n_ctx:,}", hint=f"use a longer text, or a smaller window: -c "
                                                             f"{max(8, len(tokens) // 4)}")
        count = len(tokens) // n_ctx
        planned.append(Windows(text.name, tokens, min(count, chunks) if chunks else count, start))
    return planned


def window_tokens(windows: Windows, index: int, n_ctx: int) -> list[int]:
    """The tokens window ``index`` is read as: its first replaced by the start token where the model adds one."""
    part = windows.tokens[index * n_ctx:(index + 1) * n_ctx]
    if windows.start_token is not None:
        part = [windows.start_token, *part[1:]]
    return part


def scored_targets(windows: Windows, index: int, n_ctx: int) -> list[int]:
    start = index * n_ctx
    return windows.tokens[start + n_ctx // 2 + 1:start + n_ctx]


def evaluate_perplexity(backend: Any, texts: Sequence[Text], n_ctx: int, *, chunks: int | None = None,
                        save_logits: Path | None = None, progress: Progress | None = None) -> PerplexityReport:
    """Perplexity of ``texts`` under the loaded model. Ctrl-C ends it after the window being read, with the result
    of the windows done (and no logits file: a partial one would claim windows it lacks)."""
    import numpy as np

    planned = plan_windows(backend, texts, n_ctx, chunks)
    if save_logits is not None and len(planned) != 1:
        raise UsageError("--save-logits keeps one text's windows (the file holds one run of tokens)",
                         hint="measure the reference on one file")
    total = sum(windows.count for windows in planned)
    writer = None
    if save_logits is not None:
        only = planned[0]
        writer = LogitsWriter(save_logits, n_ctx, int(backend.vocab_size), only.tokens, only.count)
    report = PerplexityReport(n_ctx, [], 0.0, total)
    first = n_ctx // 2
    started = time.perf_counter()
    done = 0
    try:
        for windows in planned:
            scores = Scores()
            report.files.append((windows.name, scores, 0))
            for index in range(windows.count):
                targets = np.asarray(scored_targets(windows, index, n_ctx))
                values: list[float] = []
                at = 0
                # The last position predicts nothing inside the window: it is not read.
                for logits in backend.window_logits(window_tokens(windows, index, n_ctx)[:-1], first):
                    picked, _ = log_softmax_at(logits, targets[at:at + len(logits)])
                    values.extend((-picked).tolist())
                    if writer is not None:
                        writer.add(logits)
                    at += len(logits)
                if at != len(targets):  # stopped inside the window
                    raise KeyboardInterrupt
                scores.nll.extend(values)
                report.files[-1] = (windows.name, scores, index + 1)
                done += 1
                if progress:
                    progress(done, total)
    except KeyboardInterrupt:
        report.stopped = True
    report.seconds = time.perf_counter() - started
    if writer is not None:
        if report.stopped:
            writer.discard()
        else:
            writer.finish()
            report.saved = save_logits
    return report
