"""Ollama's Modelfile, the part of it a named model holds: FROM, SYSTEM, PARAMETER and LICENSE. A Go-template
TEMPLATE, an ADAPTER and MESSAGE lines are refused with what to do instead; localllm renders prompts with the GGUF's
own chat template.

The text is a client's or a user's: it is read within a size bound, each value is checked where it is used, and an
error names the line."""

from __future__ import annotations

from dataclasses import dataclass, field

from localllm.core.errors import UsageError

MAX_MODELFILE = 1024 * 1024
"""Characters a Modelfile may have: a long system prompt fits many times over."""
IGNORED = ("REQUIRES",)
"""Instructions that change nothing here: REQUIRES names the Ollama version a Modelfile was written for."""


@dataclass
class Modelfile:
    base: str | None = None
    system: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    """(name, value as written), in order: a stop may come several times."""
    license: str | None = None


def _value(lines: list[str], index: int, rest: str) -> tuple[str, int]:
    """The value that starts with ``rest`` on line ``index``: a triple-quoted block (which may span lines), a
    double-quoted string, or the rest of the line. Returns it and the index of the line after it."""
    stripped = rest.strip()
    if stripped.startswith('"""'):
        body = stripped[3:]
        collected: list[str] = []
        at = index
        while True:
            end = body.find('"""')
            if end >= 0:
                collected.append(body[:end])
                if body[end + 3:].strip():
                    raise UsageError(f"Modelfile line {at + 1}: text after the closing \"\"\"")
                return "\n".join(collected), at + 1
            collected.append(body)
            at += 1
            if at >= len(lines):
                raise UsageError(f"Modelfile line {index + 1}: the \"\"\" block is never closed")
            body = lines[at]
    if stripped.startswith('"'):
        out, escaped = [], False
        for position, char in enumerate(stripped[1:], start=1):
            if escaped:
                out.append(char if char in '"\\' else "\\" + char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                if stripped[position + 1:].strip():
                    raise UsageError(f"Modelfile line {index + 1}: text after the closing quote")
                return "".join(out), index + 1
            else:
                out.append(char)
        raise UsageError(f"Modelfile line {index + 1}: the quoted text is never closed",
                         hint='use """ ... """ for text over several lines')
    return stripped, index + 1


def parse_modelfile(text: str) -> Modelfile:
    """FROM, SYSTEM, PARAMETER and LICENSE of a Modelfile; UsageError naming the line for anything else."""
    if not isinstance(text, str):
        raise UsageError("the Modelfile must be text")
    if len(text) > MAX_MODELFILE:
        raise UsageError(f"the Modelfile has more than {MAX_MODELFILE:,} characters")
    if "\x00" in text:
        raise UsageError("the Modelfile holds a NUL character: it is not text")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    found = Modelfile()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        number = index + 1
        if not line or line.startswith("#"):
            index += 1
            continue
        word, rest = (line.split(None, 1) + [""])[:2]
        instruction = word.upper()
        if instruction == "PARAMETER":
            key, raw = (rest.split(None, 1) + [""])[:2]
            if not key or not raw.strip():
                raise UsageError(f"Modelfile line {number}: PARAMETER needs a name and a value",
                                 hint="for example: PARAMETER temperature 0.2")
            value, index = _value(lines, index, raw)
            found.parameters.append((key.strip().lower(), value))
            continue
        value, index = _value(lines, index, rest)
        if instruction == "FROM":
            if found.base is not None:
                raise UsageError(f"Modelfile line {number}: a second FROM", hint="a named model is built on one file")
            if not value:
                raise UsageError(f"Modelfile line {number}: FROM needs a model name or a GGUF file's path")
            found.base = value
        elif instruction == "SYSTEM":
            found.system = value
        elif instruction == "LICENSE":
            found.license = value if found.license is None else f"{found.license}\n\n{value}"
        elif instruction == "TEMPLATE":
            if value.strip():
                raise UsageError(f"Modelfile line {number}: TEMPLATE (a Go template for Ollama's prompts) is not "
                                 "supported", hint="localllm formats prompts with the GGUF's own chat template; "
                                 "drop the TEMPLATE line (for a GGUF without one, -o template=chatml names a format)")
        elif instruction == "ADAPTER":
            raise UsageError(f"Modelfile line {number}: ADAPTER (a LoRA adapter) is not supported",
                             hint="merge the adapter into the GGUF first, or drop the line")
        elif instruction == "MESSAGE":
            raise UsageError(f"Modelfile line {number}: MESSAGE (a conversation to start from) is not supported",
                             hint="put what it should know in SYSTEM instead")
        elif instruction not in IGNORED:
            shown = word if len(word) <= 40 else word[:37] + "..."
            raise UsageError(f"Modelfile line {number}: unknown instruction {shown!r}",
                             hint="a Modelfile here takes FROM, SYSTEM, PARAMETER and LICENSE")
    if found.base is None:
        raise UsageError("the Modelfile has no FROM line", hint="for example: FROM smollm2-135m")
    return found
