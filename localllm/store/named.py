"""Named models: a name for a model file with a system prompt and decoding parameters (what `localllm create` and
Ollama's /api/create and /api/copy make). Each is a small JSON file, ``<data>/named/<name>.json``, written
atomically; the file it is built on is never copied, moved or deleted through it.

Names take Ollama's ``MODEL[:TAG]`` form without a host or namespace (so never a path): each part starts with a
letter, a digit or ``_``, holds only those and ``.`` ``-``, and has at most 80 characters. Names are lower case, as
every model name in localllm is, and ``NAME:latest`` is ``NAME`` (Ollama's clients add the tag to every name)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.core.model import ModelRef, NamedDefaults
from localllm.core.options import OPTION_TYPES, coerce_option
from localllm.core.settings import Paths
from localllm.store.manifest import write_json_atomic

logger = logging.getLogger("localllm")
NAMED_DIR = "named"
LATEST = ":latest"
MAX_PART = 80
_PART = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
MAX_TEXT = 1024 * 1024
"""Characters a system prompt or a licence may have: far beyond any window, small enough to read on every load."""
MAX_STOPS = 64
MAX_STOP_CHARS = 1000
MAX_RECORD = 4 * 1024 * 1024
"""Bytes a record file may have when it is read back (a hand-edited file is data, not trusted for its size)."""

OLLAMA_PARAMETERS = {"num_ctx": "ctx", "num_predict": "max_tokens", "num_thread": "threads"}
"""Ollama's names for the parameters localllm has under its own names (the others are the same in both)."""
SHARED_PARAMETERS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop")


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a named model's name (None: nothing)."""
    if not isinstance(name, str) or not name:
        return "is empty"
    shown = json.dumps(name if len(name) <= 60 else name[:57] + "...")
    model, sep, tag = name.lower().partition(":")
    for part, what in ((model, "name"), (tag, "tag")):
        if part == "" and (what == "name" or sep):
            return f"{shown} has an empty {what}"
        if part and len(part) > MAX_PART:
            return f"{shown}: the {what} has more than {MAX_PART} characters"
        if part and not _PART.fullmatch(part):
            return (f"{shown} is not a model name: use letters, digits, '_', '.' and '-' (first a letter, a digit or "
                    "'_'), with an optional :TAG")
    if model.endswith(".gguf"):
        return f"{shown} ends in .gguf, which reads as a file's path"
    return None


def normal_name(name: str, what: str = "the name") -> str:
    """``name`` checked and lower-cased, ``:latest`` dropped; UsageError naming ``what`` when it is not a name."""
    problem = name_problem(name)
    if problem:
        raise UsageError(f"{what} {problem}", hint="for example: my-assistant or my-assistant:v2")
    return name.lower().removesuffix(LATEST)


def looks_like_name(name: str) -> bool:
    return name_problem(name) is None


# -- parameters -----------------------------------------------------------------------------------------------------
def parameter_key(key: str, where: str) -> str:
    """localllm's option for ``key``, one of Ollama's parameter names or one of localllm's -o keys."""
    local = OLLAMA_PARAMETERS.get(key, key)
    if local not in OPTION_TYPES:
        known = sorted(set(OPTION_TYPES) | set(OLLAMA_PARAMETERS))
        raise UsageError(f"{where} is not a parameter localllm has",
                         hint=f"these are: {', '.join(known)}")
    return local


def parameter_value(key: str, value: Any, where: str) -> Any:
    """The typed value of parameter ``key`` (localllm's name) from JSON or from text, checked for type and range;
    None for Ollama's "no limit" answer lengths (num_predict -1 or -2), which is localllm's default too."""
    if key == "stop":
        items = value if isinstance(value, list) else [value]
        if len(items) > MAX_STOPS:
            raise UsageError(f"{where} has {len(items)} stop strings; at most {MAX_STOPS} are kept")
        stops = []
        for index, item in enumerate(items):
            label = f"{where}[{index}]" if isinstance(value, list) else where
            if not isinstance(item, str) or not item:
                raise UsageError(f"{label} must be a non-empty string")
            if len(item) > MAX_STOP_CHARS:
                raise UsageError(f"{label} has more than {MAX_STOP_CHARS} characters")
            stops.append(item)
        return tuple(stops)
    if key == "logit_bias" and isinstance(value, (list, dict)):
        # As a record keeps it ([[id, bias], ...]) or as OpenAI writes it ({"id": bias}): the -o text, checked there.
        pairs = list(value.items()) if isinstance(value, dict) else value
        if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs):
            raise UsageError(f"{where} must be token ids with their biases")
        value = ",".join(f"{token}:{bias}" for token, bias in pairs)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{where} must be {'a string' if OPTION_TYPES[key] is str else 'a number'}")
    text = value if isinstance(value, str) else repr(value)
    if key == "max_tokens" and text.strip() in ("-1", "-2"):
        return None
    if len(text) > MAX_STOP_CHARS:
        raise UsageError(f"{where} is too long")
    try:
        return coerce_option(key, text.strip() if key != "template" else text)
    except UsageError as error:
        message = error.message.removeprefix("option ").removeprefix(f"{key}=")
        raise UsageError(f"{where}: {message}", hint=error.hint) from None


def parameters_from(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    """Parameters as localllm keeps them, from (key, value) pairs in Ollama's or localllm's names; a stop given
    in several pairs (a Modelfile's PARAMETER stop lines) is several stops."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        label = f"{where}.{key}" if where else key
        if not isinstance(key, str) or not key:
            raise UsageError(f"{where} has an empty parameter name")
        local = parameter_key(key, label)
        typed = parameter_value(local, value, label)
        if local == "stop":
            typed = tuple(found.get("stop", ())) + typed
            if len(typed) > MAX_STOPS:
                raise UsageError(f"{label}: more than {MAX_STOPS} stop strings")
        if typed is None:
            found.pop(local, None)
        else:
            found[local] = typed
    return found


def ollama_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """localllm's parameters under Ollama's names, for /api/show."""
    back = {local: ollama for ollama, local in OLLAMA_PARAMETERS.items()}
    return {back.get(key, key): list(value) if isinstance(value, tuple) else value for key, value in parameters.items()}


# -- records --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedModel:
    name: str
    base: str
    """What it was built on, as given (shown by `list`, the app and /api/show)."""
    path: str
    """The file, absolute."""
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    created: str = ""

    def defaults(self) -> NamedDefaults:
        return NamedDefaults(self.base, self.system, tuple(self.parameters.items()), self.license)

    def ref(self, path: Path | None = None) -> ModelRef:
        return ModelRef(self.name, path or Path(self.path), f"named, on {self.base}", None, self.defaults())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "path": self.path, "system": self.system,
                "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters.items()},
                "license": self.license, "created": self.created}


def named_dir(paths: Paths) -> Path:
    return paths.data_dir / NAMED_DIR


def record_path(paths: Paths, name: str) -> Path:
    # ':' is not a character every file system takes in a name; '@' is not one a model name may hold.
    return named_dir(paths) / f"{normal_name(name).replace(':', '@')}.json"


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} is not text")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is too long")
    return value


def _from_json(data: Any, expected: str) -> NamedModel:
    """A record read back, checked as strictly as when it was made (the file is on disk: someone may edit it)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or normal_name(name) != expected:
        raise ValueError(f"it names {name!r}, not {expected!r}")
    base, path = data.get("base"), data.get("path")
    if not isinstance(base, str) or not base or not isinstance(path, str) or not Path(path).is_absolute():
        raise ValueError("its base or path is missing")
    raw = data.get("parameters") or {}
    if not isinstance(raw, dict):
        raise ValueError("its parameters are not an object")
    try:
        parameters = parameters_from(list(raw.items()), "parameters")
    except UsageError as error:
        raise ValueError(error.message) from None
    return NamedModel(expected, base, path, _text(data.get("system"), "system"), parameters,
                      _text(data.get("license"), "license"), str(data.get("created") or ""))


def read_named(paths: Paths, name: str) -> NamedModel | None:
    """The named model ``name``; None when there is none (or ``name`` is not a name at all). A damaged record is
    a warning and None, never a crash of whatever was listing the models."""
    if not looks_like_name(name):
        return None
    file = record_path(paths, name)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_RECORD + 1)
    except (FileNotFoundError, NotADirectoryError):  # no named models there (or no data folder at all)
        return None
    except OSError as error:
        logger.warning(f"note: cannot read the named model {file}: {error.strerror or error}")
        return None
    try:
        if len(raw) > MAX_RECORD:
            raise ValueError("it is too large")
        return _from_json(json.loads(raw), normal_name(name))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        logger.warning(f"note: the named model {file} is damaged ({error}); `localllm rm {normal_name(name)}` "
                       "removes it")
        return None


def all_named(paths: Paths) -> list[NamedModel]:
    folder = named_dir(paths)
    if not folder.is_dir():
        return []
    found = []
    for file in sorted(folder.glob("*.json")):
        name = file.stem.replace("@", ":")
        if file.name.startswith(".") or not looks_like_name(name):
            continue  # a temporary file of a write in progress, or a file that is not ours
        model = read_named(paths, name)
        if model is not None:
            found.append(model)
    return found


def write_named(paths: Paths, model: NamedModel) -> NamedModel:
    model = NamedModel(normal_name(model.name), model.base, model.path, model.system, dict(model.parameters),
                       model.license, model.created or datetime.now(UTC).isoformat(timespec="seconds"))
    write_json_atomic(record_path(paths, model.name), model.to_json())
    return model


def remove_named(paths: Paths, name: str) -> bool:
    """Remove the name (never the file it is built on); False when there was none."""
    if not looks_like_name(name):
        return False
    try:
        record_path(paths, name).unlink()
    except FileNotFoundError:
        return False
    return True
