"""Stop strings applied to a stream of text, so that the answer can say which one ended it.

A stop string may arrive split over several pieces, so the end of what has come is held back while it could still
be the start of one; the text before a stop string is let through, the stop string itself never is.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopScan:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """The text that may be shown now; after a stop string is found, ``matched`` names it and nothing more
        is let through."""
        if self.matched is not None:
            return ""
        held = self._held + text
        found = [(held.find(stop), stop) for stop in self.stops]
        found = [(at, stop) for at, stop in found if at >= 0]
        if found:
            at, self.matched = min(found, key=lambda item: (item[0], -len(item[1])))
            self._held = ""
            return held[:at]
        keep = max((size for stop in self.stops for size in range(min(len(stop) - 1, len(held)), 0, -1)
                    if held.endswith(stop[:size])), default=0)
        self._held = held[len(held) - keep:] if keep else ""
        return held[:len(held) - keep]

    def flush(self) -> str:
        """What was held back when the text ends without a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held
