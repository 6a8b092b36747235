"""A sign of life for work that shows nothing for a while: a model reading a long prompt prints no token for
seconds (minutes for a large model on a CPU), and a still screen reads as a hang."""

from __future__ import annotations

import time

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def activity_line(started: float, what: str, tail: str = "(Esc stops)") -> str:
    """A spinner frame (ten a second), what is being done and the whole seconds since ``started`` (monotonic)."""
    elapsed = time.monotonic() - started
    return f"{SPINNER[int(elapsed * 10) % len(SPINNER)]} {what}… {elapsed:.0f} s {tail}"
