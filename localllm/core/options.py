"""Decoding options, named presets and the ``-o key=value`` parser.

The keys are the decoding strategies users know from Hugging Face's "how to generate" guide: greedy decoding
(temperature 0), temperature sampling, top-k, top-p (nucleus), min-p, a repeat penalty, a seed, a token budget and
stop strings. Every backend maps these same fields onto its own names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from localllm.core.errors import UsageError


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    ctx: int | None = None
    """Requested context window in tokens; None lets the planner choose."""
    threads: int | None = None
    """CPU threads for decoding and reading the prompt (a load setting, like ctx); None: the planner's rule."""
    template: str | None = None
    """A llama-cpp-python chat format by name, for a GGUF without a chat template (a load setting)."""
    json_schema: Mapping[str, Any] | None = field(default=None, compare=False)
    """Constrain the answer to JSON matching this schema (tasks set it; it is not a -o key)."""
    think: str | None = None
    """A reasoning model's thinking: "on", "off", or a level ("low", "medium", "high") where the backend has
    levels; None leaves it to the model. Each backend maps it to its own switch (--think / --no-think)."""
    answer_prefix: str | None = None
    """The answer starts with this text and the model continues it, e.g. an opening code fence (tasks set it)."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token already in the recent text (OpenAI's meaning; -2 to 2)."""
    frequency_penalty: float = 0.0
    """Subtracted from a token's logit once for each time it is already in the recent text (-2 to 2)."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to those tokens' logits before sampling: +100 all but forces a token, -100
    all but bans it. Token ids are the model's own; a tuple so that the options stay hashable."""
    logprobs: int | None = None
    """Each answer token's log-probability and this many likeliest alternatives (0 to 20) in its TextChunk; None:
    none. Where ``Capabilities.logprobs`` (serve's ``logprobs``; not a -o key)."""
    prompt_logprobs: int | None = None
    """A raw prompt's tokens with their log-probabilities and this many alternatives each, in a PromptChunk before
    the answer (``complete_text``); None: none (serve's ``echo``; not a -o key)."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def with_overrides(self, **changes: Any) -> GenerationOptions:
        return replace(self, **changes)


PRESETS: dict[str, GenerationOptions] = {
    # Greedy: the same prompt gives the same answer; best for facts, extraction and code.
    "precise": GenerationOptions(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
    "balanced": GenerationOptions(),
    "creative": GenerationOptions(temperature=1.0, top_k=100, top_p=0.95, min_p=0.02, repeat_penalty=1.05),
}

OPTION_TYPES: dict[str, type] = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "seed": int,
    "max_tokens": int,
    "stop": str,
    "ctx": int,
    "threads": int,
    "template": str,
    "think": str,
    "presence_penalty": float,
    "frequency_penalty": float,
    "logit_bias": str,
}
THINK_VALUES = {"on": "on", "true": "on", "yes": "on", "1": "on", "off": "off", "false": "off", "no": "off",
                "0": "off", "low": "low", "medium": "medium", "high": "high"}
LOAD_OPTIONS = ("ctx", "threads", "template")
"""Keys that choose how the model is loaded rather than how an answer is decoded."""
SERVER_ONLY = ("json_schema", "answer_prefix", "logprobs", "prompt_logprobs")
"""Fields that tasks and serve set rather than a -o key."""
assert set(OPTION_TYPES) == {f.name for f in fields(GenerationOptions)} - set(SERVER_ONLY)

_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 5.0),
    "top_k": (0, 1_000_000),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.0, 10.0),
    "max_tokens": (1, 10_000_000),
    "ctx": (16, 10_000_000),
    "threads": (1, 1024),
    "presence_penalty": (-2.0, 2.0),  # OpenAI's ranges for both
    "frequency_penalty": (-2.0, 2.0),
    "seed": (-(2**63), 2**63 - 1),  # 64 bits, as serve takes it: a larger one was wrapped without a word
}
LOGIT_BIAS_RANGE = (-100.0, 100.0)
"""OpenAI's range for a token's bias: at either end the token is all but forced or banned."""
MAX_LOGIT_BIAS = 1024
"""Tokens one request may bias: each is adjusted before every sampled token."""


EXAMPLES = {"threads": "4", "ctx": "4096", "max_tokens": "256", "top_k": "40", "seed": "42",
            "logit_bias": "1234:5,42:-100"}


def preset(name: str) -> GenerationOptions:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown preset {name!r}", hint=f"choose one of: {', '.join(PRESETS)}"
        ) from None


def coerce_option(key: str, raw: str) -> Any:
    """Turn ``raw`` text into the typed value of option ``key``, or raise a UsageError saying what is wrong."""
    if key not in OPTION_TYPES:
        close = [k for k in OPTION_TYPES if k.startswith(key)] or difflib.get_close_matches(key, OPTION_TYPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown option {key!r}", hint=hint + f"options are: {', '.join(OPTION_TYPES)}")
    kind = OPTION_TYPES[key]
    if key == "think":
        if raw.strip().lower() not in THINK_VALUES:
            raise UsageError(f"option think={raw} is not a thinking setting",
                             hint="use on, off, low, medium or high, e.g. -o think=off")
        return THINK_VALUES[raw.strip().lower()]
    if key == "logit_bias":
        return parse_logit_bias(raw)
    if kind is str:
        return raw
    example = EXAMPLES.get(key, "42" if kind is int else "0.5")
    try:
        value = kind(raw)
    except ValueError:
        raise UsageError(f"option {key} needs {'an integer' if kind is int else 'a number'}, got {raw!r}",
                         hint=f"for example: -o {key}={example}") from None
    low, high = _RANGES.get(key, (float("-inf"), float("inf")))
    if not low <= value <= high:
        from localllm.core.units import plain_number

        raise UsageError(f"option {key}={raw} is out of range",
                         hint=f"use a value from {plain_number(low)} to {plain_number(high)}")
    return value


def parse_logit_bias(raw: str) -> tuple[tuple[int, float], ...]:
    """``-o logit_bias=ID:BIAS[,ID:BIAS...]`` (token ids of the model's own vocabulary; the backend checks that
    each is in it). Empty: no bias. A token given twice keeps its last bias."""
    biases: dict[int, float] = {}
    for item in raw.replace(" ", "").split(","):
        if not item:
            continue
        token, sep, bias = item.partition(":")
        try:
            if not sep:
                raise ValueError
            token_id, value = int(token), float(bias)
        except ValueError:
            raise UsageError(f"option logit_bias={item} is not TOKEN_ID:BIAS",
                             hint=f"for example: -o logit_bias={EXAMPLES['logit_bias']}") from None
        low, high = LOGIT_BIAS_RANGE
        if token_id < 0 or not low <= value <= high:  # NaN fails the comparison too
            raise UsageError(f"option logit_bias={item} is out of range",
                             hint=f"token ids are 0 or more; biases go from {low:g} to {high:g}")
        biases[token_id] = value
    if len(biases) > MAX_LOGIT_BIAS:
        raise UsageError(f"option logit_bias biases {len(biases)} tokens; at most {MAX_LOGIT_BIAS} may be biased")
    return tuple(biases.items())


def apply_assignments(options: GenerationOptions, assignments: list[str]) -> GenerationOptions:
    """Apply ``key=value`` strings in order; ``stop`` may be given several times and accumulates."""
    changes: dict[str, Any] = {}
    stops = list(options.stop)
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"option {item!r} is not key=value", hint="for example: -o temperature=0.2")
        value = coerce_option(key, raw.strip() if key != "stop" else raw)
        if key == "stop" and not value:
            raise UsageError("an empty stop string would end every answer before it starts",
                             hint='give the text to stop at, e.g. -o stop="###"')
        if key == "stop":
            stops.append(value)
        else:
            changes[key] = value
    if stops != list(options.stop):
        changes["stop"] = tuple(stops)
    return replace(options, **changes)


def with_think(options: GenerationOptions, think: str | None) -> GenerationOptions:
    """``--think [LEVEL]`` / ``--no-think`` over the options (None: as they are)."""
    return apply_assignments(options, [f"think={think}"]) if think is not None else options


__all__ = ["GenerationOptions", "PRESETS", "OPTION_TYPES", "preset", "coerce_option", "apply_assignments"]
