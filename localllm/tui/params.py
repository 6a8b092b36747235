"""The parameter panel: a preset and each decoding option, checked with the same rules as ``-o key=value``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual import on
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select

from localllm.core.errors import UsageError
from localllm.core.options import PRESETS, GenerationOptions, coerce_option

FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens", "ctx")


def field_text(options: GenerationOptions, name: str) -> str:
    value = getattr(options, name)
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class ParameterPanel(VerticalScroll):
    DEFAULT_CSS = """
    ParameterPanel { width: 30; border-left: solid $primary-background; padding: 0 1; display: none; }
    ParameterPanel.open { display: block; }
    ParameterPanel Label { margin: 1 0 0 0; color: $text-muted; }
    ParameterPanel Input { height: 3; }
    """

    class Applied(Message):
        """New options were applied; ``ctx`` changed means the model must be loaded again."""

        def __init__(self, options: GenerationOptions, preset: str, ctx_changed: bool) -> None:
            super().__init__()
            self.options = options
            self.preset = preset
            self.ctx_changed = ctx_changed

    def __init__(self, options: GenerationOptions, preset: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = options
        self.preset = preset if preset in PRESETS else "balanced"

    def compose(self):
        yield Label("preset")
        yield Select([(name, name) for name in PRESETS], value=self.preset, allow_blank=False, id="param-preset")
        for name in FIELDS:
            yield Label(name.replace("_", " ") + (" (reloads the model)" if name == "ctx" else ""))
            yield Input(field_text(self.options, name), id=f"param-{name}",
                        placeholder="automatic" if name in ("seed", "max_tokens", "ctx") else "")
        yield Button("Apply", id="param-apply", variant="primary")

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
    def apply(self) -> None:
        changes: dict[str, Any] = {}
        try:
            for name in FIELDS:
                raw = self.query_one(f"#param-{name}", Input).value.strip()
                changes[name] = coerce_option(name, raw) if raw else None
        except UsageError as exc:
            self.app.notify(f"{exc.message}; {exc.hint}", title="parameters", severity="error")
            return
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            if changes[name] is None:
                changes[name] = getattr(PRESETS[self.preset], name)
        options = replace(self.options, **changes)
        ctx_changed = options.ctx != self.options.ctx
        self.options = options
        self.post_message(self.Applied(options, self.preset, ctx_changed))
