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
