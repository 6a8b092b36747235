"""Messages the panes send to the app."""

from __future__ import annotations

from textual.message import Message


class SettingsChanged(Message):
    """A pane changed a setting the user expects to find again on the next start (saved under ``[tui]``)."""

    def __init__(self, **values) -> None:
        super().__init__()
        self.values = values

