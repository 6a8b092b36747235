"""`eval task`: the user's own labelled rows through a structured task (classify, sentiment, extract), each
answer compared with the row's gold field.

classify and sentiment: accuracy (with its binomial standard error), each label's precision, recall and F1, and
the confusion table (gold label → predicted label → rows). extract: the share of rows whose whole answer equals the
gold object, and each gold field's share of rows where the answer's value equals it. A row whose answer fails
(invalid after the retry, over the window) counts as wrong and is listed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localllm.core.errors import UsageError
from localllm.tasks.evaluate.choice import binomial_error

TASKS = ("classify", "sentiment", "extract")


@dataclass
class LabelledReport:
    task: str
    pairs: list[tuple[int, Any, Any]] = field(default_factory=list)
    """(row number, gold, predicted or None)."""
    failures: list[tuple[int, str]] = field(default_factory=list)
    planned: int = 0
    seconds: float = 0.0
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        n = len(self.pairs)
        out: dict[str, Any] = {"task": self.task, "rows": n, "rows_planned": self.planned,
                               "failed": [{"row": row, "error": error} for row, error in self.failures],
                               "predictions": [{"row": row, "gold": gold, "predicted": predicted}
                                               for row, gold, predicted in self.pairs],
                               "seconds": round(self.seconds, 3), "stopped": self.stopped}
        if self.task == "extract":
            exact = sum(gold == predicted for _, gold, predicted in self.pairs) / n if n else None
            fields: Counter[str] = Counter()
            matched: Counter[str] = Counter()
            for _, gold, predicted in self.pairs:
                for key, value in (gold or {}).items():
                    fields[key] += 1
                    matched[key] += isinstance(predicted, dict) and predicted.get(key) == value
            out.update({"exact": exact, "exact_stderr": binomial_error(exact, n) if exact is not None else None,
                        "fields": {key: matched[key] / count for key, count in sorted(fields.items())}})
            return out
        accuracy = sum(gold == predicted for _, gold, predicted in self.pairs) / n if n else None
        labels = sorted({str(gold) for _, gold, _ in self.pairs} | {str(p) for _, _, p in self.pairs if p is not None})
        confusion = {gold: {predicted: 0 for predicted in labels} for gold in labels}
        for _, gold, predicted in self.pairs:
            if predicted is not None:
                confusion[str(gold)][str(predicted)] += 1
        per_label = {}
        for label in labels:
            true_positive = confusion[label][label]
            predicted_as = sum(confusion[gold][label] for gold in labels)
            gold_count = sum(1 for _, gold, _ in self.pairs if str(gold) == label)
            precision = true_positive / predicted_as if predicted_as else None
            recall = true_positive / gold_count if gold_count else None
            f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
            per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_count}
        out.update({"accuracy": accuracy,
                    "accuracy_stderr": binomial_error(accuracy, n) if accuracy is not None else None,
                    "labels": per_label, "confusion": confusion})
        return out


def _gold(record: dict[str, Any], name: str, task: str, number: int) -> Any:
    if name not in record:
        raise UsageError(f"row {number} has no {name!r} field", hint="--gold names the column with the right answer")
    value = record[name]
    if task == "extract" and isinstance(value, str):  # CSV: the gold object as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            raise UsageError(f"row {number}: {name} is not a JSON object", hint="the gold answer of extract is "
                                                                              "an object") from None
    if task == "extract" and not isinstance(value, dict):
        raise UsageError(f"row {number}: {name} is not a JSON object", hint="the gold answer of extract is an object")
    return value if task == "extract" else str(value).strip()


def evaluate_labelled(settings: Any, backend: Any, task: str, rows: Sequence[Any], gold: str, options: Any, *,
                      labels: Sequence[str] | None = None, schema: dict | None = None,
                      progress: Callable[[int, int], None] | None = None) -> LabelledReport:
    from localllm.tasks import structured

    golds = [_gold(row.record, gold, task, row.number) for row in rows]
    if task == "classify":
        names = list(labels) if labels else sorted(set(golds))
        if len(names) < 2:
            raise UsageError("classify needs at least two labels", hint="--labels a,b,c (or gold labels that differ)")
        task_schema = structured.label_schema(names)

        def messages(text: str) -> Any:
            return structured.classify_messages(settings, text, names)

        def pick(value: Any) -> Any:
            return value["label"]
    elif task == "sentiment":
        task_schema = structured.SENTIMENT_SCHEMA

        def messages(text: str) -> Any:
            return structured.sentiment_messages(settings, text)

        def pick(value: Any) -> Any:
            return value["sentiment"]
    else:
        if schema is None:
            raise UsageError("eval task --task extract needs --schema FILE", hint="the same schema extract takes")
        task_schema = schema

        def messages(text: str) -> Any:
            return structured.extract_messages(settings, text, schema)

        def pick(value: Any) -> Any:
            return value
    report = LabelledReport(task, planned=len(rows))
    started = time.perf_counter()
    try:
        results = structured.run_rows(rows, lambda text: structured.ask_json(backend, messages(text), task_schema,
                                                                             options), pick)
        for done, (result, expected) in enumerate(zip(results, golds, strict=False), start=1):
            report.pairs.append((result.row.number, expected, result.value if result.error is None else None))
            if result.error is not None:
                report.failures.append((result.row.number, result.error))
            if progress:
                progress(done, len(rows))
    except KeyboardInterrupt:
        report.stopped = True
    report.seconds = time.perf_counter() - started
    return report
