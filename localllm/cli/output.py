"""Writing to the terminal: one-line errors, notes on stderr, sizes, and a rich Console that honours NO_COLOR."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from localllm.core.printable import inert_text


def use_color(stream=None) -> bool:
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    color = use_color(stream)
    # Piped output keeps whole lines (no folding at 80 columns) so that grep and cut see one row per line.
    return Console(file=stream, no_color=not color, color_system="auto" if color else None, highlight=False,
                   width=None if stream.isatty() else 1000)


def error_line(message: str, hint: str | None = None, secrets: tuple[str, ...] = ()) -> str:
    """One line, whatever a server or a file put in the message: its control characters (escape sequences, line
    breaks) are shown as escapes."""
    return redact(inert_text(f"error: {message}" + (f" — hint: {hint}" if hint else ""), keep=""), secrets)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret localllm holds replaced, in case a server echoed one back in an error."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def note(text: str) -> None:
    """A remark for the person at the terminal; stdout stays clean for pipes."""
    prefix = "\x1b[2m" if use_color(sys.stderr) else ""
    suffix = "\x1b[0m" if prefix else ""
    print(f"{prefix}{inert_text(text)}{suffix}", file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def inert(value: object):
    """Text from a model file, a server or a file name, made safe to print: control characters (escape sequences,
    bells, bidi overrides) are shown as escapes, and Rich markup in it is printed as typed."""
    from rich.text import Text

    return Text(inert_text(value))
