"""Named models as use cases: create one (from a model, a GGUF, an uploaded file, or a Modelfile), copy one, remove
one, and the defaults a named model gives a command: its parameters under the command's own flags, its system
prompt where the command gives none. `run`, `chat`, `serve` and the app all take them from here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from localllm.core.errors import ModelNotFound, UsageError
from localllm.core.model import ModelRef, NamedDefaults
from localllm.core.options import PRESETS, GenerationOptions, apply_assignments, preset, with_think
from localllm.core.settings import Settings
from localllm.store.blobs import digest_hex, find_blob
from localllm.store.catalog import find_model, load_catalog
from localllm.store.gguf_info import ModelInfoCache
from localllm.store.locate import installed_models, looks_like_path, resolve_model
from localllm.store.modelfile import parse_modelfile
from localllm.store.named import (
    NamedModel,
    normal_name,
    parameters_from,
    read_named,
    remove_named,
    write_named,
)

PRESET_KEYS = frozenset(key for key in (f.name for f in fields(GenerationOptions))
                        if len({getattr(options, key) for options in PRESETS.values()}) > 1)
"""The options a preset sets (the ones the presets differ in): an explicit --preset keeps them over a named
model's."""


# -- defaults for a command -----------------------------------------------------------------------------------------
def named_defaults(settings: Settings, model: str | None) -> NamedDefaults | None:
    """The defaults of the named model ``model`` (None: the configured model) means; None when it is not one."""
    name = model or settings.model
    record = read_named(settings.paths, name) if name else None
    return record.defaults() if record is not None else None


def decoding_options(settings: Settings, model: str | None, *, preset_name: str | None = None,
                     assignments: Sequence[str] = (), think: str | None = None,
                     base: GenerationOptions | None = None) -> GenerationOptions:
    """A command's options: ``base`` (else the preset it names, else the configured one), a named model's
    parameters over them (but under an explicit preset's own keys), then the command's -o KEY=VALUE and
    --think."""
    options = base if base is not None else preset(preset_name or settings.preset)
    defaults = named_defaults(settings, model)
    if defaults is not None:
        options = defaults.over(options, keep=PRESET_KEYS if preset_name else frozenset())
    return with_think(apply_assignments(options, list(assignments)), think)


def system_prompt(settings: Settings, model: str | None, given: str | None) -> str | None:
    """``given`` (the command's -s, or a continued conversation's own), else the named model's system prompt."""
    if given:
        return given
    defaults = named_defaults(settings, model)
    return defaults.system if defaults is not None else None


def loaded_system(ref: ModelRef, given: str | None) -> str | None:
    """The same for a model already loaded (the app's chat pane)."""
    return given or (ref.named.system if ref.named is not None else None)


# -- create, copy, remove -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Base:
    """What a named model is built on: its file, how it was named, and the defaults it inherits (from a named
    model)."""

    path: Path
    shown: str
    inherited: NamedDefaults | None = None
    digest: str | None = None


def resolve_base(settings: Settings, base: str, *, paths_allowed: bool, relative_to: Path | None = None) -> Base:
    """The file ``base`` names: ``sha256:<hex>`` (an uploaded file, or one a pull installed), an installed model's
    name (a named one's defaults are inherited), or, where ``paths_allowed`` (the command line; never a client of
    the server, which does not choose files on this machine), a GGUF's path, relative to ``relative_to``."""
    if not isinstance(base, str) or not base.strip():
        raise UsageError("the model to build on is empty")
    base = base.strip()
    hex_digest = digest_hex(base.removeprefix("@"))
    if hex_digest is not None:
        found = find_blob(settings, hex_digest)
        if found is None:
            raise ModelNotFound(f"no file with sha256:{hex_digest} is here",
                                hint=f"upload it first: POST /api/blobs/sha256:{hex_digest}")
        return Base(found, f"sha256:{hex_digest}", digest=hex_digest)
    candidate = Path(base).expanduser()
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    if looks_like_path(base) or (paths_allowed and _is_file(candidate)):
        if not paths_allowed:
            raise UsageError(f"{_shown(base)} is a path: a client names a served model, or uploads the file",
                             hint="upload it with POST /api/blobs/sha256:<digest>, then name it in files")
        if not _is_file(candidate):
            raise ModelNotFound(f"no such model file: {_shown(str(candidate))}", hint="check the path")
        path = candidate.resolve()
        return Base(path, str(path))
    ref = resolve_model(base, settings) if paths_allowed else installed_ref(settings, base)
    return Base(ref.path, ref.name if ref.named is not None or ":" not in base else base.lower(), ref.named)


def installed_ref(settings: Settings, name: str) -> ModelRef:
    """The installed model ``name`` names (NAME, NAME:QUANT, or a named model's NAME:latest), never a file by its
    path: what a client of the server may name."""
    wanted = name.strip().lower()
    base, _, tag = wanted.partition(":")
    refs = installed_models(settings)
    for match in (lambda ref: ref.named is not None and ref.name == wanted.removesuffix(":latest"),
                  lambda ref: ref.name == wanted,
                  lambda ref: bool(tag) and ref.name == base and (ref.quant or "").lower() == tag):
        found = next((ref for ref in refs if match(ref)), None)
        if found is not None:
            return found
    raise ModelNotFound(f"no installed model is called {_shown(name)}", hint="GET /api/tags lists them")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def name_taken(settings: Settings, name: str) -> str | None:
    """Why ``name`` cannot be a named model's (None: it can): the name of a model that is not a named one, here or
    in the catalog (a later pull would make two models of one name)."""
    model, _, tag = name.partition(":")
    for ref in installed_models(settings):
        if ref.named is None and (ref.name == name or (tag and ref.name == model and
                                                       (ref.quant or "").lower() == tag)):
            return f"{name} is the name of an installed model ({ref.source})"
    entry = find_model(model, load_catalog())
    if entry is not None and entry.name == model:
        return f"{model} is the name of a catalog model (`localllm pull {model}` would install it)"
    return None


def create_named(settings: Settings, name: str, base: Base, *, system: str | None = None,
                 parameters: dict[str, Any] | None = None, license: str | None = None) -> NamedModel:
    """Write the named model ``name`` over ``base``: the base's own defaults (a named model's) with these over
    them. The file is read (its GGUF header) before anything is written: a name never points at what cannot load.
    Creating a name that exists replaces it, as Ollama's create does."""
    name = normal_name(name)
    taken = name_taken(settings, name)
    if taken:
        raise UsageError(f"not created: {taken}", hint="choose another name")
    ModelInfoCache(settings.paths.cache_dir).get(base.path)  # InvalidModelFile for what is not a readable GGUF
    inherited = base.inherited
    merged = dict(inherited.parameters) if inherited is not None else {}
    merged.update(parameters or {})
    return write_named(settings.paths, NamedModel(
        name, base.shown, str(base.path),
        system if system is not None else (inherited.system if inherited is not None else None),
        merged, license if license is not None else (inherited.license if inherited is not None else None)))


def create_from_modelfile(settings: Settings, name: str, text: str, *, paths_allowed: bool,
                          relative_to: Path | None = None, base_override: str | None = None,
                          system: str | None = None, parameters: dict[str, Any] | None = None) -> NamedModel:
    """A named model from a Modelfile's FROM, SYSTEM, PARAMETER and LICENSE, with the given values over them."""
    modelfile = parse_modelfile(text)
    base = resolve_base(settings, base_override or modelfile.base or "", paths_allowed=paths_allowed,
                        relative_to=relative_to)
    found = parameters_from(modelfile.parameters, "PARAMETER")
    found.update(parameters or {})
    return create_named(settings, name, base, system=system if system is not None else modelfile.system,
                        parameters=found, license=modelfile.license)


def copy_named(settings: Settings, source: str, destination: str) -> NamedModel:
    """``destination``: a named model over the same file as ``source``, with its system prompt and parameters."""
    base = resolve_base(settings, source, paths_allowed=False)
    return create_named(settings, destination, base)


def remove_name(settings: Settings, name: str) -> bool:
    return remove_named(settings.paths, name)


def describe_parameters(parameters: dict[str, Any] | tuple[tuple[str, Any], ...]) -> str:
    """``temperature=0.2 stop="###"``: a named model's parameters on one line, as -o takes them."""
    items = parameters.items() if isinstance(parameters, dict) else parameters
    parts = []
    for key, value in items:
        for one in (value if isinstance(value, tuple) else (value,)):
            parts.append(f"{key}={one!r}" if isinstance(one, str) else f"{key}={one}")
    return " ".join(parts)
