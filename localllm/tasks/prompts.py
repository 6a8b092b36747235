"""Prompt templates: Markdown files in localllm/prompts/, each overridable by a file of the same name in
``<config_dir>/prompts/``. Placeholders are ``$name`` (string.Template), so braces in code or JSON need no escaping.
"""

from __future__ import annotations

import string
from pathlib import Path

from localllm.core.errors import ConfigError
from localllm.core.settings import Settings

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def prompt_path(name: str, settings: Settings) -> Path:
    override = settings.paths.config_dir / "prompts" / f"{name}.md"
    return override if override.is_file() else PROMPTS_DIR / f"{name}.md"


def render(name: str, settings: Settings, **values: object) -> str:
    path = prompt_path(name, settings)
    try:
        template = string.Template(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the prompt {path}: {exc.strerror}", hint="check the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the prompt {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})",
                          hint="save it as UTF-8, or remove it to use the built-in prompt") from None
    try:
        return template.substitute({key: str(value) for key, value in values.items()}).strip()
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"the prompt {path} uses an unknown placeholder {exc}",
                          hint=f"placeholders available: {', '.join('$' + k for k in values)}") from None
