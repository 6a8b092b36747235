"""Text shown as it is: a model name, a path, a server's message or a conversation title is neither Textual markup
(``[/bold]`` would crash the widget) nor terminal escape sequences."""

from __future__ import annotations

from localllm.core.printable import inert_text


def plain(text: str):
    from rich.text import Text

    return Text(inert_text(text))
