"""The parameter panel: a preset and each decoding option, checked with the same rules as ``-o key=value``.

A value that breaks them is marked in its field as it is typed (the field's error style and a line under it saying
what is wrong) and is never applied. On terminals under 100 columns the open panel takes the conversation list's
place, so the chat keeps its width.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from textual import events, on
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Select, Static

from localllm.core.errors import UsageError
from localllm.core.options import PRESETS, GenerationOptions, coerce_option

FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "ctx")


OPEN_CLASS = "-parameters-open"
"""Set on the screen while the panel is shown: the app's narrow layouts make room for it."""


def field_text(options: GenerationOptions, name: str) -> str:
    value = getattr(options, name)
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def field_problem(name: str, error: UsageError) -> str:
    """What is wrong with a field's text, in coerce_option's words less the option's name (the field's label says
    it) and the command line's ``-o key=``."""
    message = re.sub(rf"^option {name}(=| )", "", error.message)
    hint = re.sub(r"-o \w+=", "", error.hint or "")
    return f"{message}; {hint}" if hint else message


class OptionValue(Validator):
    """The rules of ``-o NAME=value``; an empty field is valid (automatic, or the preset's value)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def validate(self, value: str) -> ValidationResult:
        raw = value.strip()
        if raw:
            try:
                coerce_option(self.name, raw)
            except UsageError as exc:
                return self.failure(field_problem(self.name, exc), raw)
        return self.success()


class ParameterPanel(VerticalScroll):
    DEFAULT_CSS = """
    ParameterPanel { width: 30; border-left: solid $primary-background; padding: 0 1; display: none; }
    ParameterPanel.open { display: block; }
    ParameterPanel Label { margin: 1 0 0 0; color: $text-muted; }
    ParameterPanel Input { height: 3; }
    ParameterPanel .problem { color: $text-error; display: none; }
    ParameterPanel .problem.shown { display: block; }
    """

    class Applied(Message):
        """New options were applied; ``ctx`` changed means the model must be loaded again."""

        def __init__(self, options: GenerationOptions, preset: str, ctx_changed: bool) -> None:
            super().__init__()
            self.options = options
            self.preset = preset
            self.ctx_changed = ctx_changed

    class CloseRequested(Message):
        """Esc in the panel: the chat pane closes it (applying what was typed)."""

    BINDINGS = [Binding("escape", "close", "Close parameters", show=False)]

    def __init__(self, options: GenerationOptions, preset: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = options
        self.preset = preset if preset in PRESETS else "balanced"
        self._applied_preset = self.preset

    def action_close(self) -> None:
        self.post_message(self.CloseRequested())

    def changed(self) -> bool:
        """Whether the fields hold something other than the options applied last."""
        return self.preset != self._applied_preset or any(
            self.query_one(f"#param-{name}", Input).value.strip() != field_text(self.options, name)
            for name in FIELDS)

    def compose(self):
        yield Label("preset")
        yield Select([(name, name) for name in PRESETS], value=self.preset, allow_blank=False, id="param-preset")
        for name in FIELDS:
            yield Label(name.replace("_", " ") + (" (reloads the model)" if name == "ctx" else ""))
            yield Input(field_text(self.options, name), id=f"param-{name}", validators=[OptionValue(name)],
                        placeholder="automatic" if name in ("seed", "max_tokens", "ctx") else "")
            yield Static("", id=f"param-{name}-problem", classes="problem", markup=False)
        yield Button("Apply", id="param-apply", variant="primary")

    def on_show(self, event: events.Show) -> None:
        self.screen.add_class(OPEN_CLASS)

    def on_hide(self, event: events.Hide) -> None:
        self.screen.remove_class(OPEN_CLASS)

    @on(Input.Changed)
    def _checked(self, event: Input.Changed) -> None:
        """The field's error style comes with the Input's validation; the line under it says why."""
        self._show_problem(event.input, event.validation_result)

    def _show_problem(self, field: Input, result: ValidationResult | None) -> None:
        problem = self.query_one(f"#{field.id}-problem", Static)
        text = "; ".join(result.failure_descriptions) if result is not None and not result.is_valid else ""
        problem.update(text)
        problem.set_class(bool(text), "shown")

    def problems(self) -> dict[str, str]:
        """Each field whose text breaks its option's rules, with what is wrong; the fields are marked as invalid."""
        found = {}
        for name in FIELDS:
            field = self.query_one(f"#param-{name}", Input)
            result = field.validate(field.value)
            self._show_problem(field, result)
            if result is not None and not result.is_valid:
                found[name] = "; ".join(result.failure_descriptions)
        return found

    @on(Select.Changed, "#param-preset")
    def preset_chosen(self, event: Select.Changed) -> None:
        if event.value == self.preset:
            return
        self.preset = str(event.value)
        chosen = replace(PRESETS[self.preset], seed=self.options.seed, max_tokens=self.options.max_tokens,
                         ctx=self.options.ctx)
        for name in FIELDS:
            self.query_one(f"#param-{name}", Input).value = field_text(chosen, name)

    @on(Button.Pressed, "#param-apply")
    @on(Input.Submitted)
    def apply(self) -> bool:
        """Apply the fields' values; False (and the first wrong field focused) where one breaks its rules."""
        problems = self.problems()
        if problems:
            first = next(iter(problems))
            self.query_one(f"#param-{first}", Input).focus()
            self.app.notify("\n".join(f"{name.replace('_', ' ')}: {text}" for name, text in problems.items()),
                            title="parameters not applied", severity="error", markup=False)
            return False
        changes: dict[str, Any] = {}
        for name in FIELDS:  # each passed its option's rules just above
            raw = self.query_one(f"#param-{name}", Input).value.strip()
            changes[name] = coerce_option(name, raw) if raw else None
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            if changes[name] is None:
                changes[name] = getattr(PRESETS[self.preset], name)
        options = replace(self.options, **changes)
        ctx_changed = options.ctx != self.options.ctx
        self.options = options
        self._applied_preset = self.preset
        self.post_message(self.Applied(options, self.preset, ctx_changed))
        return True
