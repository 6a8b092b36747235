"""A measurement repeated: its median and how far the repetitions spread."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float] | tuple[float, ...]) -> Spread:
        if not values:
            raise ValueError("a spread of no values")
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def stdev(self) -> float:
        """The sample standard deviation; 0 for a single value."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self, digits: int = 1) -> str:
        """``61.2 ± 3.1``: the median and the standard deviation."""
        return f"{self.median:.{digits}f} ± {self.stdev:.{digits}f}"

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        return {"median": round(self.median, digits), "stdev": round(self.stdev, digits),
                "min": round(self.low, digits), "max": round(self.high, digits),
                "values": [round(value, digits) for value in self.values]}
