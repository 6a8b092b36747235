"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores its multiple-choice tasks.

Each choice is continued after the context (a space between) and scored as the sum of its tokens' log-probabilities
given everything before them. The pair is tokenized as the harness does: the context alone, then context and
choice together, the choice's tokens being what follows the context's (trailing spaces of the context move to the
choice). ``acc`` counts the items whose right choice scores highest; ``acc_norm`` divides each score by the choice's
length in UTF-8 bytes first. Each comes with the binomial standard error sqrt(p (1 - p) / (n - 1)).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localllm.tasks.evaluate.choice_data import ChoiceItem

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ScoredItem:
    item: ChoiceItem
    logprobs: tuple[float, ...]
    tokens: tuple[tuple[int, ...], ...]
    """Each choice's tokens scored, after the context's ``context_tokens``."""
    context_tokens: tuple[int, ...]

    @property
    def picked(self) -> int:
        return max(range(len(self.logprobs)), key=lambda index: self.logprobs[index])

    @property
    def picked_norm(self) -> int:
        lengths = [max(len(choice.encode("utf-8")), 1) for choice in self.item.choices]
        return max(range(len(self.logprobs)), key=lambda index: self.logprobs[index] / lengths[index])

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item.number, "answer": self.item.answer, "picked": self.picked,
                "picked_norm": self.picked_norm, "logprobs": list(self.logprobs),
                "context_tokens": list(self.context_tokens), "choice_tokens": [list(t) for t in self.tokens]}


def binomial_error(p: float, n: int) -> float | None:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None


@dataclass
class ChoiceReport:
    scored: list[ScoredItem] = field(default_factory=list)
    planned: int = 0
    seconds: float = 0.0
    stopped: bool = False

    def to_dict(self, items: bool = True) -> dict[str, Any]:
        n = len(self.scored)
        acc = sum(s.picked == s.item.answer for s in self.scored) / n if n else None
        norm = sum(s.picked_norm == s.item.answer for s in self.scored) / n if n else None
        summary: dict[str, Any] = {
            "items": n, "items_planned": self.planned, "acc": acc,
            "acc_stderr": binomial_error(acc, n) if acc is not None else None, "acc_norm": norm,
            "acc_norm_stderr": binomial_error(norm, n) if norm is not None else None,
            "seconds": round(self.seconds, 3), "stopped": self.stopped}
        if items:
            summary["scored"] = [s.to_dict() for s in self.scored]
        return summary


def encode_pair(backend: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids, _ = backend.evaluation_tokens(context)
    whole, _ = backend.evaluation_tokens(context + continuation)
    return context_ids, whole[len(context_ids):]


def score_item(backend: Any, item: ChoiceItem) -> ScoredItem:
    logprobs, tokens = [], []
    context_ids: list[int] = []
    for choice in item.choices:
        context_ids, continuation = encode_pair(backend, item.context, " " + choice)
        entries = backend.score([*context_ids, *continuation])
        logprobs.append(sum(float(entry.logprob or 0.0) for entry in entries[len(context_ids):]))
        tokens.append(tuple(continuation))
    return ScoredItem(item, tuple(logprobs), tuple(tokens), tuple(context_ids))


def evaluate_choices(backend: Any, items: Sequence[ChoiceItem], progress: Progress | None = None) -> ChoiceReport:
    """Ctrl-C ends it after the item being scored, with the items done."""
    report = ChoiceReport(planned=len(items))
    started = time.perf_counter()
    try:
        for done, item in enumerate(items, start=1):
            report.scored.append(score_item(backend, item))
            if progress:
                progress(done, len(items))
    except KeyboardInterrupt:
        report.stopped = True
    report.seconds = time.perf_counter() - started
    return report
