"""Models other tools already downloaded, found where those tools keep them and used in place.

Nothing here writes, moves or deletes a file: a discovered model is read-only to localllm.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from localllm.core.model import ModelRef

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


def ollama_root(env: dict[str, str]) -> Path:
    return Path(env["OLLAMA_MODELS"]).expanduser() if env.get("OLLAMA_MODELS") else Path.home() / ".ollama" / "models"


def lmstudio_roots(env: dict[str, str]) -> list[Path]:
    return [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]


def gpt4all_root(env: dict[str, str]) -> Path:
    system = platform.system()
    if system == "Darwin":
        return Path.home() / "Library" / "Application Support" / "nomic.ai" / "GPT4All"
    if system == "Windows":
        return Path(env.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "nomic.ai" / "GPT4All"
    return Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "nomic.ai" / "GPT4All"


def hf_cache_root(env: dict[str, str]) -> Path:
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def ollama_models(root: Path) -> list[ModelRef]:
    """Ollama's manifests (manifests/<registry>/<namespace>/<model>/<tag>) name a model layer held in blobs/."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return []
    found = []
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            layer = next(layer for layer in data.get("layers", []) if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
        except (OSError, ValueError, StopIteration, AttributeError):
            continue
        blob = root / "blobs" / str(layer.get("digest", "")).replace(":", "-")
        if not blob.is_file():
            continue
        registry, *middle, tag = manifest.relative_to(manifests).parts
        if len(middle) < 2:
            continue
        namespace, model = "/".join(middle[:-1]), middle[-1]
        if registry == "registry.ollama.ai":
            shown = model if namespace == "library" else f"{namespace}/{model}"
        else:
            shown = f"{registry}/{namespace}/{model}"
        found.append(ModelRef(f"ollama/{shown}:{tag}", blob, "Ollama"))
    return found


def gguf_files(root: Path, prefix: str, source: str) -> list[ModelRef]:
    if not root.is_dir():
        return []
    return [ModelRef(f"{prefix}/{path.stem.lower()}", path, source)
            for path in sorted(root.rglob("*.gguf")) if path.is_file() and not path.name.startswith(".")]


def hf_cache_models(root: Path) -> list[ModelRef]:
    """models--OWNER--REPO/snapshots/<commit>/*.gguf, links into blobs/; one entry per distinct blob."""
    found = []
    for repo_dir in sorted(root.glob("models--*")):
        owner_repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        for path in sorted((repo_dir / "snapshots").glob("*/**/*.gguf")):
            if path.is_file():
                found.append(ModelRef(f"hf/{owner_repo}/{path.stem}".lower(), path, "Hugging Face cache"))
    return found


def discovered_models(environ: dict[str, str] | None = None) -> list[ModelRef]:
    env = dict(os.environ if environ is None else environ)
    refs = ollama_models(ollama_root(env))
    for root in lmstudio_roots(env):
        refs += gguf_files(root, "lmstudio", "LM Studio")
    refs += gguf_files(gpt4all_root(env), "gpt4all", "GPT4All")
    refs += hf_cache_models(hf_cache_root(env))
    unique: dict[Path, ModelRef] = {}
    for ref in refs:
        unique.setdefault(ref.path.resolve(), ref)
    return list(unique.values())
