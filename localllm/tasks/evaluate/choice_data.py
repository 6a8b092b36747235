"""Multiple-choice items from local files, in the shapes the common data sets are published in on the Hugging Face
Hub (JSONL, CSV or Parquet), each turned into one context, its choices and the right one's index:

- MMLU (``question``, ``choices`` list, ``answer`` index), and its CSV form (``question``, ``A``..``D``,
  ``answer`` letter);
- ARC (``question``, ``choices`` {``text``, ``label``}, ``answerKey``);
- HellaSwag (``ctx`` or ``ctx_a``/``ctx_b``, ``endings``, ``label``, ``activity_label``);
- plain ``{"question", "choices", "answer"}``, the answer an index, a letter or the choice's text.

The context is ``Question: ...\\nAnswer:`` and each choice is continued after a space (lm-evaluation-harness's ARC
form, used here for all but HellaSwag, whose context is its own text, as the harness reads it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class ChoiceItem:
    number: int
    context: str
    choices: tuple[str, ...]
    answer: int


def read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"no such file: {path}", hint="name a JSONL, CSV or Parquet file")
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise UsageError("reading Parquet needs pyarrow", hint="pip install pyarrow, or use JSONL or CSV") \
                from None
        try:
            return list(parquet.read_table(path).to_pylist())
        except Exception as exc:  # pyarrow raises its own error types for a damaged file
            raise UsageError(f"{path.name} is not a readable Parquet file: {exc}",
                             hint="check the file") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path.name} is not UTF-8 text", hint="use a JSONL, CSV or Parquet file") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise UsageError(f"{path.name} line {number} is not JSON", hint="one JSON object per line") from None
            if not isinstance(record, dict):
                raise UsageError(f"{path.name} line {number} is not a JSON object", hint="one object per line")
            records.append(record)
        return records
    if suffix in (".csv", ".tsv"):
        import csv
        import io

        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        if not rows:
            return []
        header = [name.strip() for name in rows[0]]
        if "question" not in header:  # MMLU's own CSV files have no header: question, A, B, C, D, answer
            return [{"question": row[0], **dict(zip(LETTERS, row[1:-1], strict=False)), "answer": row[-1]}
                    for row in rows if len(row) >= 4]
        return [dict(zip(header, row, strict=False)) for row in rows[1:] if row]
    raise UsageError(f"{path.name}: not a JSONL, CSV or Parquet file", hint="use .jsonl, .csv or .parquet")


def _listed(value: Any) -> list[str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict) and "text" in value:  # ARC: {"text": [...], "label": [...]}
        value = value["text"]
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, (str, int, float)) for item in value):
        return [str(item) for item in value]
    return None


def _answer_index(value: Any, choices: list[str], labels: list[str] | None) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(choices) else None
    if isinstance(value, float) and value.is_integer():
        return _answer_index(int(value), choices, labels)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if labels and text in labels:
        return labels.index(text)
    if text.isdigit():
        return _answer_index(int(text), choices, labels)
    if len(text) == 1 and text.upper() in LETTERS[:len(choices)]:
        return LETTERS.index(text.upper())
    return choices.index(text) if text in choices else None


def _hellaswag_text(text: str) -> str:
    """lm-evaluation-harness's clean-up of HellaSwag's WikiHow text: bracketed headers out, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def to_item(number: int, record: dict[str, Any]) -> ChoiceItem:
    """One record as an item; a record of no known shape is a usage error naming what it lacks."""
    if "endings" in record:  # HellaSwag
        choices = _listed(record["endings"])
        context = record.get("ctx") or f"{record.get('ctx_a', '')} {str(record.get('ctx_b', '')).capitalize()}"
        if record.get("activity_label"):
            context = f"{record['activity_label']}: {context}"
        if choices is None:
            raise UsageError(f"item {number}: endings is not a list of texts", hint="see docs/eval.md for the shapes")
        answer = _answer_index(record.get("label"), choices, None)
        context, choices = _hellaswag_text(str(context)), [_hellaswag_text(choice) for choice in choices]
    else:
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise UsageError(f"item {number} has no question", hint="each item needs question, choices and answer "
                                                                    "(or MMLU's, ARC's or HellaSwag's columns)")
        labels = None
        choices = _listed(record.get("choices")) if "choices" in record else None
        if isinstance(record.get("choices"), dict):
            labels = [str(label) for label in record["choices"].get("label") or []] or None
        if choices is None:  # CSV: one column per choice, A, B, C...
            choices = [str(record[letter]) for letter in LETTERS if letter in record and record[letter] != ""]
        if len(choices) < 2:
            raise UsageError(f"item {number} has fewer than two choices",
                             hint="a choices list, or columns A, B, C...")
        answer = _answer_index(record.get("answerKey", record.get("answer")), choices, labels)
        context = f"Question: {question.strip()}\nAnswer:"
    if answer is None:
        raise UsageError(f"item {number}: its answer names none of its {len(choices)} choices",
                         hint="an index from 0, a letter, or the choice's text")
    return ChoiceItem(number, context, tuple(choices), answer)


def read_items(path: Path, limit: int | None = None) -> list[ChoiceItem]:
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise UsageError(f"{path.name} holds no items", hint="one question per line or row")
    return [to_item(number, record) for number, record in enumerate(records, start=1)]
