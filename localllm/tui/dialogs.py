"""Small modal screens the panes share: a line of text, a longer text, a yes/no question, a list to pick from."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, OptionList, TextArea
from textual.widgets.option_list import Option

# Each dialog has its own footer: the one of the screen under it went on showing that screen's keys, which do
# nothing while the dialog is open.
# A label is as wide as its text by default, so a long question ran past the box and was cut: here it takes the
# box's width and wraps. The box keeps inside the terminal (an 80-column box cut its own border at 80 columns).
DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 80; max-width: 100%; height: auto; max-height: 80%; border: thick $primary;
                    background: $surface; padding: 1 2; }}
{name} > Vertical > Label {{ width: 100%; }}
{name} Horizontal {{ height: auto; align-horizontal: right; margin: 1 0 0 0; }}
{name} Button {{ margin: 0 0 0 1; }}
"""


class AskText(ModalScreen[str | None]):
    """One line of text (a title, a file name); Enter accepts, Esc cancels, as its buttons say (a key inside the
    text box shows in no footer)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="AskText")
    AUTO_FOCUS = "#answer"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "", accept: str = "OK") -> None:
        """``accept``: what Enter does, on its button (Rename, Export)."""
        super().__init__()
        self.question, self.value, self.placeholder, self.accept_label = question, value, placeholder, accept

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(self.value, placeholder=self.placeholder, id="answer")
            with Horizontal():
                yield Button("Cancel (Esc)", id="cancel")
                yield Button(f"{self.accept_label} (Enter)", id="accept", variant="primary")
        yield Footer()  # the dialog's keys, not those of the screen under it

    @on(Input.Submitted)
    def accept(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    @on(Button.Pressed, "#accept")
    def accept_pressed(self) -> None:
        self.dismiss(self.query_one("#answer", Input).value)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class AskLongText(ModalScreen[str | None]):
    """Several lines (a system prompt); Ctrl+S saves, Esc cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(name="AskLongText") + "AskLongText TextArea { height: 10; }"
    AUTO_FOCUS = "#answer"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel"),
                Binding("ctrl+s", "save", "Save", id="dialog.save", priority=True)]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield TextArea(self.value, id="answer")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Save (Ctrl+S)", id="save", variant="primary")
        yield Footer()  # the dialog's keys, not those of the screen under it

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A yes/no question; "y" and "n" (or Esc) answer it from the keyboard, and "no" has the focus."""

    DEFAULT_CSS = DIALOG_CSS.format(name="Confirm") + "Confirm > Vertical { border: thick $error; }"
    AUTO_FOCUS = "#confirm-no"
    BINDINGS = [Binding("y", "dismiss(True)", "Yes", id="dialog.yes"),
                Binding("n,escape", "dismiss(False)", "No", id="dialog.no")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical():
            # Shown as typed: a title, a model name or a path with brackets is not markup.
            yield Label(self.question, id="confirm-question", markup=False)
            with Horizontal():
                yield Button(f"{self.no} (n)", id="confirm-no", variant="primary")
                yield Button(f"{self.yes} (y)", id="confirm-yes", variant="error")
        yield Footer()  # the dialog's keys, not those of the screen under it

    @on(Button.Pressed)
    def answer(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")


class PickOne(ModalScreen[str | None]):
    """A list of choices by id; Enter picks, Esc cancels. Rows that cannot be picked are shown disabled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PickOne") + "PickOne OptionList { height: auto; max-height: 20; }"
    AUTO_FOCUS = "#choices"
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, choices: list[tuple[str, str, bool]]) -> None:
        """``choices``: (id, text, enabled)."""
        super().__init__()
        self.title_text, self.choices = title, choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield OptionList(*[Option(text, id=choice_id, disabled=not enabled)
                               for choice_id, text, enabled in self.choices], id="choices")
        yield Footer()  # the dialog's keys, not those of the screen under it

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
