"""The help screen: every key, as remapped in the config file, and where to change them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

INTRO = """\
# localllm

Chat with the model, ask it about code, summarize documents, manage models and see what this machine can run.
Everything the keys do is also in the command palette (**Ctrl+P**). Model work runs in the background: the app
stays usable while an answer streams, and **Esc** stops it.
"""

OUTRO = """\
## Changing keys

Each key has an id. Map ids to keys in the config file under `[keys]`, for example:

```toml
[keys]
"chat.regenerate" = "ctrl+r"
"app.help" = "f1,question_mark"
```
"""


KEY_NAMES = {"escape": "Esc", "delete": "Del", "enter": "Enter", "question_mark": "?"}


def key_label(binding: Binding, keymap: dict[str, str]) -> str:
    keys = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return ", ".join(KEY_NAMES.get(key, "+".join(part.capitalize() for part in key.split("+")))
                     for key in keys.split(","))


def help_markdown(groups: list[tuple[str, list[Binding]]], keymap: dict[str, str]) -> str:
    lines = [INTRO]
    for title, bindings in groups:
        if not bindings:
            continue
        lines += [f"## {title}", "", "| Key | Does | Id |", "|---|---|---|"]
        lines += [f"| {key_label(b, keymap)} | {b.tooltip or b.description or b.action} | `{b.id}` |"
                  for b in bindings]
        lines.append("")
    lines.append(OUTRO)
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    # The box takes the terminal's width up to 100 columns (a fixed 90 ran off an 80-column terminal), and the
    # scrollbar's track is drawn in the box's own colour: the theme's darker track made a black band down the
    # right of the tables.
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100%; max-width: 100; height: 90%; border: thick $primary; background: $surface;
        scrollbar-background: $surface; scrollbar-background-hover: $surface; scrollbar-background-active: $surface;
    }
    HelpScreen MarkdownTableContent { grid-columns: 1fr 2fr 2fr; }
    """
    BINDINGS = [Binding("escape,f9,q", "dismiss", "Close", id="help.close")]

    def __init__(self, groups: list[tuple[str, list[Binding]]], keymap: dict[str, str]) -> None:
        super().__init__()
        self.text = help_markdown(groups, keymap)

    AUTO_FOCUS = "#help-scroll"
    """PgDn, PgUp and the arrows scroll the text at once, without a Tab first."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-scroll"):
            yield Markdown(self.text, id="help-text")
