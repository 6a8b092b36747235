"""Answers that are always valid JSON: constrained by a schema where the backend can, validated with jsonschema
always, retried once when invalid, and reported with their row when still invalid."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.backends.base import Backend
from localllm.core.chunks import Response
from localllm.core.errors import ConfigError, ContextOverflow, LocalLLMError, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.prompting import least_tokens
from localllm.tasks.rows import Row

SENTIMENT_SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative", "neutral", "mixed"]},
                   "score": {"type": "number", "minimum": -1, "maximum": 1}},
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}
NER_SCHEMA = {
    "type": "object",
    "properties": {kind: {"type": "array", "items": {"type": "string"}}
                   for kind in ("persons", "organisations", "places", "dates")},
    "required": ["persons", "organisations", "places", "dates"],
    "additionalProperties": False,
}
ANSWER_TOKENS = 256


class InvalidAnswer(LocalLLMError):
    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message, hint="the model could not give a valid answer; try a larger model")
        self.raw = raw


@dataclass(frozen=True)
class JsonAnswer:
    value: Any
    attempts: int
    prompt_tokens: int
    completion_tokens: int


def label_schema(labels: Sequence[str]) -> dict:
    return {"type": "object", "properties": {"label": {"enum": list(labels)}}, "required": ["label"],
            "additionalProperties": False}


def parse_labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        raise UsageError("--labels is empty", hint="e.g. --labels bug,feature,question")
    if len(set(labels)) != len(labels):
        raise UsageError("--labels repeats a label", hint="name each label once")
    return labels


def load_schema(path: str) -> dict:
    import jsonschema

    try:
        with open(path, encoding="utf-8") as handle:
            schema = json.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read the schema {path}: {exc.strerror}", hint="check the path") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                          hint="fix the schema file") from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top level"
        raise ConfigError(f"{path} is not a valid JSON schema: {exc.message} (at {where})",
                          hint="see https://json-schema.org/understanding-json-schema") from None
    return schema


def ask_json(backend: Backend, messages: list[Message], schema: dict, options: GenerationOptions) -> JsonAnswer:
    """One answer that parses and validates, with one retry that tells the model what was wrong."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    answer_tokens = options.max_tokens or ANSWER_TOKENS
    constrained = options.with_overrides(json_schema=schema, max_tokens=answer_tokens)
    conversation = list(messages)
    prompt_tokens = completion_tokens = 0
    problem, raw = "", ""
    for attempt in (1, 2):
        window = backend.context_window
        floor = least_tokens(conversation) + answer_tokens
        if floor > window:  # measured before it is tokenized
            characters = sum(len(m.content) for m in conversation)
            raise ContextOverflow(f"the prompt has {characters:,} characters, at least {floor:,} tokens with the "
                                  f"answer: over the {window:,}-token window",
                                  hint="shorten the text or raise -o ctx=N", prompt_tokens=floor, window=window)
        needed = backend.count_prompt_tokens(conversation) + answer_tokens
        if needed > window:
            raise ContextOverflow(f"the prompt and answer need {needed} tokens, over the {window}-token window",
                                  hint="shorten the text or raise -o ctx=N", prompt_tokens=needed, window=window)
        response = Response(backend.chat(conversation, constrained))
        raw = response.text().strip()
        if response.final is not None:
            prompt_tokens += response.final.usage.prompt_tokens
            completion_tokens += response.final.usage.completion_tokens
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            problem = f"the answer is not JSON ({exc.msg})"
        else:
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            if not errors:
                return JsonAnswer(value, attempt, prompt_tokens, completion_tokens)
            problem = f"the answer does not match the schema: {errors[0].message}"
        conversation = [*messages, Message("assistant", raw),
                        Message("user", f"That answer is invalid: {problem}. Answer again with JSON only.")]
    raise InvalidAnswer(problem, raw)


@dataclass(frozen=True)
class RowResult:
    row: Row
    value: Any | None
    error: str | None
    answer: JsonAnswer | None = None

    def to_record(self, key: str | None) -> dict:
        """The output line: the input record plus the answer (under ``key``, or merged when key is None)."""
        record = {"row": self.row.number, **self.row.record}
        if self.error is not None:
            record["error"] = self.error
        elif key is None and isinstance(self.value, dict):
            record.update(self.value)
        else:
            record[key or "result"] = self.value
        return record


def run_rows(rows: Iterable[Row], answer: Callable[[str], JsonAnswer],
             pick: Callable[[Any], Any] = lambda value: value) -> Iterator[RowResult]:
    """Apply ``answer`` to each row; a bad row becomes an error result and the batch goes on."""
    for row in rows:
        if row.problem is not None:
            yield RowResult(row, None, row.problem)
            continue
        try:
            result = answer(row.text or "")
        except (InvalidAnswer, ContextOverflow) as exc:
            yield RowResult(row, None, exc.message)
            continue
        yield RowResult(row, pick(result.value), None, result)


def classify_messages(settings: Settings, text: str, labels: Sequence[str]) -> list[Message]:
    return [Message("user", prompts.render("classify", settings, text=text, labels=", ".join(labels)))]


def sentiment_messages(settings: Settings, text: str) -> list[Message]:
    return [Message("user", prompts.render("sentiment", settings, text=text))]


def extract_messages(settings: Settings, text: str, schema: dict) -> list[Message]:
    return [Message("user", prompts.render("extract", settings, text=text, schema=json.dumps(schema, indent=2)))]


def ner_messages(settings: Settings, text: str) -> list[Message]:
    return [Message("user", prompts.render("ner", settings, text=text))]
