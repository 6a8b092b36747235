"""The small JSON record kept beside every model localllm installs, so `list`, `verify` and `rm` never guess."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class Manifest:
    name: str
    quant: str | None
    source: str
    """Where it came from, e.g. hf://owner/repo/file.gguf."""
    repo: str | None
    revision: str | None
    sha256: str | None
    size: int
    downloaded: str
    """ISO 8601 time of installation."""


def manifest_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + MANIFEST_SUFFIX)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(model_file: Path, manifest: Manifest) -> None:
    write_json_atomic(manifest_path(model_file), asdict(manifest))


def read_manifest(model_file: Path) -> Manifest | None:
    try:
        data = json.loads(manifest_path(model_file).read_text(encoding="utf-8"))
        return Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None
