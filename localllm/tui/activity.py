"""A sign of life for work that shows nothing for a while: a model reading a long prompt prints no token for
seconds (minutes for a large model on a CPU), and a still screen reads as a hang."""

from __future__ import annotations

import time
from typing import Any

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def activity_line(started: float, what: str, tail: str = "(Esc stops)") -> str:
    """A spinner frame (ten a second), what is being done and the whole seconds since ``started`` (monotonic)."""
    elapsed = time.monotonic() - started
    return f"{SPINNER[int(elapsed * 10) % len(SPINNER)]} {what}… {elapsed:.0f} s {tail}"


class FooterFlag:
    """A pane's attribute that says what it is busy with (an answer, a pull): setting it redraws the footer, whose
    keys the pane's check_action offers only while they do something (Esc to stop only while an answer runs)."""

    def __init__(self, default: object = False) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_value"

    def __get__(self, pane: object, owner: type | None = None) -> Any:
        return self if pane is None else getattr(pane, self.slot, self.default)

    def __set__(self, pane: Any, value: object) -> None:
        setattr(pane, self.slot, value)
        if pane.is_attached:
            pane.refresh_bindings()
