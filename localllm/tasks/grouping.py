"""Customer segments and recommendations over rows that may not fit one window: batches first, then a merge.
Every item they name is a row of the input (the schema only admits the row numbers shown)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from localllm.backends.base import Backend
from localllm.core.errors import UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.feedback import batches, rows_text
from localllm.tasks.rows import Row
from localllm.tasks.structured import InvalidAnswer, ask_json

ANSWER_TOKENS = 512
UNASSIGNED = "unassigned"


@dataclass
class Segment:
    name: str
    description: str
    rows: list[int] = field(default_factory=list)


@dataclass
class Tally:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, answer) -> None:
        self.calls += answer.attempts
        self.tokens_in += answer.prompt_tokens
        self.tokens_out += answer.completion_tokens


def _segment_schema(numbers: Sequence[int], most: int) -> dict:
    return {"type": "object", "required": ["segments"], "additionalProperties": False, "properties": {
        "segments": {"type": "array", "minItems": 1, "maxItems": most, "items": {
            "type": "object", "required": ["name", "description", "rows"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 60},
                           "description": {"type": "string", "minLength": 2, "maxLength": 300},
                           "rows": {"type": "array", "minItems": 1, "maxItems": len(numbers),
                                    "items": {"enum": list(numbers)}}}}}}}


def _merge_schema(count: int, most: int) -> dict:
    return {"type": "object", "required": ["segments"], "additionalProperties": False, "properties": {
        "segments": {"type": "array", "minItems": 1, "maxItems": most, "items": {
            "type": "object", "required": ["name", "description", "members"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 60},
                           "description": {"type": "string", "minLength": 2, "maxLength": 300},
                           "members": {"type": "array", "minItems": 1, "maxItems": count,
                                       "items": {"enum": list(range(1, count + 1))}}}}}}}


def segment(settings: Settings, backend: Backend, rows: Sequence[Row], count: int, options: GenerationOptions,
            progress: Callable[[str], None] = lambda message: None) -> tuple[list[Segment], Tally]:
    if count < 2:
        raise UsageError("--segments must be at least 2", hint="e.g. --segments 4")
    usable = [row for row in rows if row.problem is None]
    if not usable:
        raise UsageError("no row has text to segment", hint="check --field and the file")
    tally = Tally()
    options = options.with_overrides(max_tokens=ANSWER_TOKENS)

    def messages(batch: Sequence[Row]) -> list[Message]:
        return [Message("user", prompts.render("segment", settings, rows=rows_text(batch), segments=count))]

    found: list[Segment] = []
    groups = batches(backend, usable, backend.count_prompt_tokens(messages([])), ANSWER_TOKENS)
    for index, batch in enumerate(groups, start=1):
        numbers = [row.number for row in batch]
        taken: set[int] = set()
        try:
            answer = ask_json(backend, messages(batch), _segment_schema(numbers, count), options)
            tally.add(answer)
            for item in answer.value["segments"]:
                members = [n for n in item["rows"] if n not in taken]
                taken.update(members)
                if members:
                    found.append(Segment(item["name"].strip(), item["description"].strip(), members))
        except InvalidAnswer as exc:
            progress(f"batch {index}: {exc.message}")
        left = [n for n in numbers if n not in taken]
        if left:
            found.append(Segment(UNASSIGNED, "rows the model did not place", left))
        progress(f"batch {index} of {len(groups)}: {len(batch)} rows")
    named = [s for s in found if s.name != UNASSIGNED]
    if len(named) > count:
        named = _merge_segments(settings, backend, named, count, options, tally, progress)
    others = [row for s in found if s.name == UNASSIGNED for row in s.rows]
    result = named + ([Segment(UNASSIGNED, "rows the model did not place", others)] if others else [])
    assert sorted(r for s in result for r in s.rows) == sorted(row.number for row in usable)
    return result, tally


def _merge_segments(settings: Settings, backend: Backend, found: list[Segment], count: int,
                    options: GenerationOptions, tally: Tally, progress: Callable[[str], None]) -> list[Segment]:
    listing = "\n".join(f"{i}. {s.name}: {s.description} ({len(s.rows)} customers)"
                        for i, s in enumerate(found, start=1))
    messages = [Message("user", prompts.render("segment-merge", settings, found=listing, segments=count))]
    try:
        answer = ask_json(backend, messages, _merge_schema(len(found), count), options)
    except InvalidAnswer as exc:
        progress(f"merging segments: {exc.message}; segments kept as found")
        return found
    tally.add(answer)
    merged, used = [], set()
    for item in answer.value["segments"]:
        members = [m for m in item["members"] if m not in used]
        used.update(members)
        if members:
            merged.append(Segment(item["name"].strip(), item["description"].strip(),
                                  [row for m in members for row in found[m - 1].rows]))
    left_out = [s for i, s in enumerate(found, start=1) if i not in used]
    if left_out:  # more segments than asked for then: said, never silent
        progress(f"merging segments: the model left {len(left_out)} of the {len(found)} segments found out of its "
                 f"merge; they are kept as found")
    return merged + left_out


@dataclass(frozen=True)
class Pick:
    row: Row
    reason: str


def _picks_schema(numbers: Sequence[int], top: int) -> dict:
    return {"type": "object", "required": ["picks"], "additionalProperties": False, "properties": {
        "picks": {"type": "array", "minItems": 1, "maxItems": top, "items": {
            "type": "object", "required": ["row", "reason"], "additionalProperties": False,
            "properties": {"row": {"enum": list(numbers)},
                           "reason": {"type": "string", "minLength": 2, "maxLength": 300}}}}}}


def recommend(settings: Settings, backend: Backend, catalogue: Sequence[Row], profile: str, top: int,
              options: GenerationOptions, progress: Callable[[str], None] = lambda message: None
              ) -> tuple[list[Pick], Tally]:
    if not profile.strip():
        raise UsageError("--profile is empty", hint='e.g. --profile "likes hiking, budget under 100"')
    if top < 1:
        raise UsageError("--top must be at least 1", hint="e.g. --top 3")
    tally = Tally()
    options = options.with_overrides(max_tokens=ANSWER_TOKENS)
    by_number = {row.number: row for row in catalogue}

    def messages(batch: Sequence[Row]) -> list[Message]:
        return [Message("user", prompts.render("recommend", settings, rows=rows_text(batch), profile=profile.strip(),
                                               top=top))]

    def pick_from(batch: Sequence[Row]) -> list[Pick]:
        answer = ask_json(backend, messages(batch), _picks_schema([r.number for r in batch], top), options)
        tally.add(answer)
        seen, picks = set(), []
        for item in answer.value["picks"]:
            if item["row"] not in seen:
                seen.add(item["row"])
                picks.append(Pick(by_number[item["row"]], item["reason"].strip()))
        return picks

    usable = [row for row in catalogue if row.problem is None]
    groups = batches(backend, usable, backend.count_prompt_tokens(messages([])), ANSWER_TOKENS)
    candidates: list[Pick] = []
    for index, batch in enumerate(groups, start=1):
        candidates += pick_from(batch)
        progress(f"catalogue batch {index} of {len(groups)}")
    if len(groups) > 1 and len(candidates) > top:
        # The finalists compete in one call, so the ranking is over the whole catalogue.
        return pick_from([pick.row for pick in candidates]), tally
    return candidates[:top], tally
