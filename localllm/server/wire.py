"""What the three wire formats share: request values checked for type and range (a client's numbers are data),
message content given as text or as a list of parts, and options built from the server's defaults."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from localllm.core.options import GenerationOptions
from localllm.server.engine import ApiError


def number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def bounded_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts (images and other parts are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                texts.append(str(part.get("text") or ""))
            elif isinstance(part, str):
                texts.append(part)
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"message parts of type {kind!r} are not supported: send text")
        return "".join(texts)
    raise ApiError(400, "a message's content must be a string or a list of text parts")


def options_from(base: GenerationOptions, changes: dict[str, Any]) -> GenerationOptions:
    return replace(base, **changes)
