"""What the app remembers between runs, kept in the config file under ``[tui]`` and ``[keys]``.

``[tui]`` holds the app's own choices (model, preset, context size, decoding options, theme), so switching a model
in the app does not change what ``localllm run`` uses. ``[keys]`` maps binding ids to keys, e.g.
``"chat.regenerate" = "ctrl+r"``. The file is edited with tomlkit, which keeps the user's comments and layout.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.core.options import OPTION_TYPES, PRESETS, coerce_option

TUI_KEYS = {"model", "preset", "ctx", "theme", "options"}


@dataclass
class Preferences:
    path: Path
    model: str | None = None
    preset: str | None = None
    ctx: int | None = None
    theme: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """What was ignored, and why, to show once the app is up (a bad entry must not stop the app)."""

    @classmethod
    def load(cls, path: Path) -> Preferences:
        prefs = cls(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            prefs.problems.append(f"{path}: {exc}")
            return prefs
        tui = data.get("tui", {})
        keys = data.get("keys", {})
        if not isinstance(tui, dict) or not isinstance(keys, dict):
            prefs.problems.append(f"{path}: [tui] and [keys] must be tables")
            return prefs
        for key, value in tui.items():
            if key not in TUI_KEYS:
                prefs.problems.append(f"[tui] {key}: unknown setting (known: {', '.join(sorted(TUI_KEYS))})")
            elif key == "options":
                prefs.options = prefs._checked_options(value)
            elif key == "preset" and value not in PRESETS:
                prefs.problems.append(f"[tui] preset {value!r}: choose one of {', '.join(PRESETS)}")
            elif key == "ctx" and not (isinstance(value, int) and value >= 16):
                prefs.problems.append(f"[tui] ctx {value!r}: needs a whole number of tokens, at least 16")
            else:
                setattr(prefs, key, value)
        prefs.keys = {str(k): str(v) for k, v in keys.items()}
        return prefs

    def _checked_options(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.append("[tui.options] must be a table")
            return {}
        checked = {}
        for key, raw in value.items():
            if key not in OPTION_TYPES or key in ("stop", "ctx"):
                self.problems.append(f"[tui.options] {key}: not a decoding option")
                continue
            try:
                checked[key] = coerce_option(key, str(raw))
            except UsageError as exc:
                self.problems.append(f"[tui.options] {exc.message}")
        return checked

    def save(self, **values: Any) -> None:
        """Write ``values`` into ``[tui]`` (None removes a key), keeping the rest of the file as it is."""
        import tomlkit

        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        document = tomlkit.parse(text)
        tui = document.setdefault("tui", tomlkit.table())
        for key, value in values.items():
            if key == "options":
                table = tomlkit.table()
                for name, option in sorted(value.items()):
                    if option is not None:
                        table[name] = option
                tui["options"] = table
            elif value is None:
                tui.pop(key, None)
            else:
                tui[key] = value
            setattr(self, key, value)
        from localllm.core.files import write_text_atomically

        # A file that holds a key stays readable by the user alone, whatever mode it had.
        write_text_atomically(self.path, tomlkit.dumps(document), private="api_key" in document)
