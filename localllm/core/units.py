"""How sizes are written for people: one formatter, binary units, three significant digits."""

from __future__ import annotations

UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(count: float) -> str:
    """``98.4 MiB``, ``1.23 GiB``, ``512 B``: powers of 1024, named as such, with three significant digits (1000 MiB
    and above are written ``0.98 GiB``: never four digits)."""
    value = float(count)
    if abs(round(value)) < 1000:
        return f"{value:.0f} B"
    for index, unit in enumerate(UNITS):
        value /= 1024
        text = _three_digits(value)
        if abs(float(text)) < 1000 or index == len(UNITS) - 1:
            return f"{text} {unit}"
    raise AssertionError("unreachable")  # the last unit always returns


def _three_digits(value: float) -> str:
    for decimals, below in ((2, 10), (1, 100)):
        text = f"{value:.{decimals}f}"
        if abs(float(text)) < below:
            return text
    return f"{value:.0f}"


def plain_number(value: float) -> str:
    """A number as people write it: 10,000,000 rather than 1e+07, 0.05 rather than 5e-02."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6f}".rstrip("0").rstrip(".")


FOREVER = float("inf")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a duration as Ollama's keep_alive takes it: a number of seconds, or text such as ``5m``,
    ``1h30m``, ``250ms`` or ``-1`` (a bare number is seconds). Any negative duration is FOREVER. ValueError for
    anything else, with the reason."""
    import math
    import re

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("a duration is a number of seconds or text such as 5m")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise ValueError("a duration is at most 40 characters")
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", body)
            if not body or "".join(number + unit for number, unit in parts) != body:
                raise ValueError(f"{value!r} is not a duration (e.g. 30s, 5m, 1h, -1 to keep forever)") from None
            seconds = sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise ValueError("a duration cannot be NaN")
    return FOREVER if seconds < 0 or math.isinf(seconds) else seconds


def duration_text(seconds: float) -> str:
    """``5m``, ``90s``, ``1h30m``, ``forever``: for messages and listings."""
    if seconds == FOREVER:
        return "forever"
    whole = int(round(seconds))
    if whole < 60 or whole % 60:
        return f"{seconds:g}s" if whole < 60 else f"{whole // 60}m{whole % 60}s"
    minutes = whole // 60
    return f"{minutes // 60}h{minutes % 60}m" if minutes >= 60 and minutes % 60 else \
        f"{minutes // 60}h" if minutes >= 60 else f"{minutes}m"


def parameter_count(count: float, label: str | None = None) -> str:
    """A model's parameters, written one way everywhere (the CLI, the app, the catalog): ``135M``, ``1.5B``,
    ``7.62B``, ``70.6B``: three significant digits at most, trailing zeros dropped. ``label``: the size the model
    file names itself (GGUF ``general.size_label``, such as ``8x7B``), added in brackets where it says something
    the count does not."""
    rounded = float(f"{count:.3g}")  # 999.6M is 1B, not 1000M
    text = f"{rounded:g}"
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if rounded >= threshold:
            text = f"{rounded / threshold:g}{suffix}"
            break
    return f"{text} ({label})" if label and label.strip() and label.strip().upper() != text.upper() else text
