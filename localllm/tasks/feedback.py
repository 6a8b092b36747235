"""Feedback analysis: themes per batch of rows (JSON constrained to the batch's row numbers), merged across
batches, counted, and quoted. Every row analysed is counted exactly once, so the counts add up."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from localllm.backends.base import Backend
from localllm.core.errors import ContextOverflow, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.rows import Row
from localllm.tasks.structured import InvalidAnswer, ask_json

UNASSIGNED = "other"
THEME_ANSWER_TOKENS = 512


@dataclass
class Theme:
    name: str
    rows: list[int] = field(default_factory=list)


@dataclass
class FeedbackResult:
    analysed: int
    themes: list[Theme]
    texts: dict[int, str]
    failed: list[tuple[int, str]]
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def top(self, count: int) -> list[Theme]:
        return sorted(self.themes, key=lambda t: (-len(t.rows), t.name))[:count]

    def quotes(self, theme: Theme, count: int = 2) -> list[str]:
        """The shortest rows of the theme, quoted whole: real words from the input, never paraphrased."""
        return [self.texts[number] for number in sorted(theme.rows, key=lambda n: len(self.texts[n]))[:count]]


def rows_text(rows: Sequence[Row]) -> str:
    return "\n".join(f"row {row.number}: {' '.join((row.text or '').split())}" for row in rows)


def themes_schema(numbers: Sequence[int]) -> dict:
    return {"type": "object", "required": ["themes"], "additionalProperties": False, "properties": {
        "themes": {"type": "array", "minItems": 1, "maxItems": min(len(numbers), 8), "items": {
            "type": "object", "required": ["theme", "rows"], "additionalProperties": False, "properties": {
                "theme": {"type": "string", "minLength": 2, "maxLength": 60},
                "rows": {"type": "array", "minItems": 1, "maxItems": len(numbers),
                         "items": {"enum": list(numbers)}}}}}}}


def merge_schema(names: Sequence[str]) -> dict:
    return {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
        "groups": {"type": "array", "minItems": 1, "maxItems": len(names), "items": {
            "type": "object", "required": ["theme", "members"], "additionalProperties": False, "properties": {
                "theme": {"type": "string", "minLength": 2, "maxLength": 60},
                "members": {"type": "array", "minItems": 1, "maxItems": len(names),
                            "items": {"enum": list(names)}}}}}}}


def batches(backend: Backend, rows: Sequence[Row], overhead: int, answer_tokens: int) -> list[list[Row]]:
    """Consecutive rows packed so that each batch's prompt (``overhead`` plus its rows) leaves room for the answer."""
    window = backend.context_window
    room = window - answer_tokens
    packed: list[list[Row]] = []
    current: list[Row] = []
    used = overhead
    for row in rows:
        tokens = backend.count_tokens(f"row {row.number}: {row.text}\n")
        if overhead + tokens > room:
            raise ContextOverflow(f"row {row.number} alone does not fit the {window}-token window",
                                  hint="raise -o ctx=N", window=window)
        if current and used + tokens > room:
            packed.append(current)
            current, used = [], overhead
        current.append(row)
        used += tokens
    if current:
        packed.append(current)
    return packed


def _theme_messages(settings: Settings, rows: Sequence[Row]) -> list[Message]:
    return [Message("user", prompts.render("feedback-themes", settings, rows=rows_text(rows)))]


def analyse(settings: Settings, backend: Backend, rows: Sequence[Row], options: GenerationOptions,
            progress: Callable[[str], None] = lambda message: None) -> FeedbackResult:
    usable = [row for row in rows if row.problem is None]
    failed = [(row.number, row.problem or "") for row in rows if row.problem is not None]
    if not usable:
        raise UsageError("no row has text to analyse", hint="check --field and the file")
    result = FeedbackResult(analysed=len(usable), themes=[], texts={r.number: (r.text or "").strip() for r in usable},
                            failed=failed)
    found: dict[str, Theme] = {}
    groups = batches(backend, usable, backend.count_prompt_tokens(_theme_messages(settings, [])),
                     THEME_ANSWER_TOKENS)
    for index, batch in enumerate(groups, start=1):
        numbers = [row.number for row in batch]
        assigned: set[int] = set()
        try:
            answer = ask_json(backend, _theme_messages(settings, batch), themes_schema(numbers),
                              options.with_overrides(max_tokens=THEME_ANSWER_TOKENS))
            _account(result, answer)
            themes = answer.value["themes"]
        except InvalidAnswer as exc:
            themes = []
            progress(f"batch {index}: {exc.message}; its rows count as '{UNASSIGNED}'")
        for item in themes:
            name = " ".join(item["theme"].lower().split())
            for number in item["rows"]:
                if number in assigned:
                    continue  # a row goes to the first theme that claims it, so it is counted once
                assigned.add(number)
                found.setdefault(name, Theme(name)).rows.append(number)
        for number in numbers:
            if number not in assigned:
                found.setdefault(UNASSIGNED, Theme(UNASSIGNED)).rows.append(number)
        progress(f"batch {index} of {len(groups)}: {len(batch)} rows")
    result.themes = _merge(settings, backend, list(found.values()), options, result, progress)
    assert sum(len(theme.rows) for theme in result.themes) == result.analysed
    return result


def _merge(settings: Settings, backend: Backend, themes: list[Theme], options: GenerationOptions,
           result: FeedbackResult, progress: Callable[[str], None]) -> list[Theme]:
    """Ask once to merge theme names that mean the same; names the answer leaves out stay as they are."""
    names = [theme.name for theme in themes if theme.name != UNASSIGNED]
    if len(names) < 2:
        return themes
    messages = [Message("user", prompts.render("feedback-merge", settings, themes="\n".join(names)))]
    if backend.count_prompt_tokens(messages) + THEME_ANSWER_TOKENS > backend.context_window:
        return themes  # too many names to merge in one call: the themes stay unmerged
    try:
        answer = ask_json(backend, messages, merge_schema(names),
                          options.with_overrides(max_tokens=THEME_ANSWER_TOKENS))
    except InvalidAnswer as exc:
        progress(f"merging themes: {exc.message}; themes kept as found")
        return themes
    _account(result, answer)
    by_name = {theme.name: theme for theme in themes}
    merged: dict[str, Theme] = {}
    taken: set[str] = set()
    for group in answer.value["groups"]:
        target = " ".join(group["theme"].lower().split())
        for member in group["members"]:
            if member in taken or member not in by_name:
                continue
            taken.add(member)
            merged.setdefault(target, Theme(target)).rows.extend(by_name[member].rows)
    for theme in themes:
        if theme.name not in taken:
            merged.setdefault(theme.name, Theme(theme.name)).rows.extend(theme.rows)
    return list(merged.values())


def _account(result: FeedbackResult, answer) -> None:
    result.calls += answer.attempts
    result.tokens_in += answer.prompt_tokens
    result.tokens_out += answer.completion_tokens
