"""Read a GGUF file's metadata without loading its weights, and cache it by path, size and modification time."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from localllm.core.errors import InvalidModelFile, ModelNotFound
from localllm.core.model import ModelInfo

GGUF_MAGIC = b"GGUF"
_CACHE_VERSION = 2


def check_gguf_file(path: Path) -> None:
    """Fail fast with a clear message for a missing, unreadable or non-GGUF file."""
    if not path.exists():
        raise ModelNotFound(f"no such file: {path}", hint="check the path, or run `localllm list` to see models")
    if not path.is_file():
        raise InvalidModelFile(f"{path} is not a file", hint="pass the path of a .gguf file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc.strerror}", hint="check the file's permissions") from None
    if magic != GGUF_MAGIC:
        raise InvalidModelFile(
            f"{path} is not a GGUF model file (it starts with {magic!r}, not b'GGUF')",
            hint="localllm runs GGUF files; convert other formats with llama.cpp's convert_hf_to_gguf.py",
        )


def read_model_info(path: Path) -> ModelInfo:
    """Parse the header; raise InvalidModelFile if it is damaged or the file is shorter than its tensors need."""
    check_gguf_file(path)
    from localllm.store.gguf_header import GGUFFormatError, read_header

    try:
        header = read_header(path)
    except (GGUFFormatError, OSError, ValueError) as exc:
        raise InvalidModelFile(
            f"{path} is not a readable GGUF file ({exc})",
            hint="the file may be truncated or damaged; download it again",
        ) from None
    file_size = path.stat().st_size
    tensor_end = max((t.offset + t.n_bytes for t in header.tensors), default=0)
    if tensor_end > file_size:
        raise InvalidModelFile(
            f"{path} is truncated: its tensors need {tensor_end:,} bytes but the file has {file_size:,}",
            hint="the download was cut short; download it again",
        )
    return info_from_header(header, str(path), file_size)


def info_from_header(header, where: str, file_size: int) -> ModelInfo:
    """The planner's view of a parsed header; ``where`` is a path or, for a remote file, its URL."""
    from gguf.constants import LlamaFileType

    from localllm.store.gguf_header import ArrayLength

    fields = header.fields

    def value(key: str, default: Any = None) -> Any:
        found = fields.get(key, default)
        return default if isinstance(found, ArrayLength) else found

    arch = value("general.architecture") or "unknown"
    block_count = int(value(f"{arch}.block_count", 0) or 0)
    layer_total = sum(t.n_bytes for t in header.tensors if t.name.startswith("blk."))
    other_total = sum(t.n_bytes for t in header.tensors) - layer_total
    per_layer, remainder = divmod(layer_total, block_count) if block_count else (0, layer_total)
    embedding = int(value(f"{arch}.embedding_length", 0) or 0)
    heads = _first_int(fields.get(f"{arch}.attention.head_count", 0))
    heads_kv = _first_int(fields.get(f"{arch}.attention.head_count_kv", heads)) or heads
    head_dim = embedding // heads if heads else 0
    tokens = fields.get("tokenizer.ggml.tokens")
    vocab = int(value(f"{arch}.vocab_size", 0) or 0) or (tokens.count if isinstance(tokens, ArrayLength) else 0)
    file_type = value("general.file_type")
    quant = None
    if file_type is not None:
        try:
            quant = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = f"type {file_type}"
    return ModelInfo(
        path=where,
        file_size=file_size,
        architecture=arch,
        name=value("general.name"),
        quant=quant,
        context_length=int(value(f"{arch}.context_length", 0) or 0),
        block_count=block_count,
        embedding_length=embedding,
        feed_forward_length=_first_int(fields.get(f"{arch}.feed_forward_length", 0)),
        head_count=heads,
        head_count_kv=heads_kv,
        key_length=int(value(f"{arch}.attention.key_length", head_dim) or head_dim),
        value_length=int(value(f"{arch}.attention.value_length", head_dim) or head_dim),
        vocab_size=vocab,
        layer_bytes=per_layer,
        non_layer_bytes=other_total + remainder,
        parameters=sum(t.n_elements for t in header.tensors),
        tokenizer_model=value("tokenizer.ggml.model"),
        tokenizer_pre=value("tokenizer.ggml.pre"),
        chat_template=value("tokenizer.chat_template"),
        size_label=value("general.size_label"),
        license=value("general.license"),
    )


def _first_int(raw: Any) -> int:
    # Some architectures store per-layer counts as an array, which the header reader keeps as its length only;
    # such a model is planned with the embedding-derived defaults (0 here means "unknown").
    if not isinstance(raw, (int, float)):
        return 0
    return int(raw or 0)


class ModelInfoCache:
    """A JSON file of ModelInfo keyed by resolved path, size and mtime, so listing many models stays fast."""

    def __init__(self, cache_dir: Path) -> None:
        self.file = cache_dir / "gguf-info.json"
        self._entries: dict[str, dict[str, Any]] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            try:
                data = json.loads(self.file.read_text(encoding="utf-8"))
                self._entries = data["entries"] if data.get("version") == _CACHE_VERSION else {}
            except (OSError, ValueError, KeyError, TypeError):
                self._entries = {}
        return self._entries

    @staticmethod
    def _key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def get(self, path: Path) -> ModelInfo:
        check_gguf_file(path)
        key = self._key(path)
        entries = self._load()
        cached = entries.get(key)
        if cached is not None:
            try:
                return ModelInfo.from_dict(cached)
            except TypeError:
                pass
        info = read_model_info(path)
        entries[key] = info.to_dict()
        self._dirty = True
        self.save()
        return info

    def save(self) -> None:
        if not self._dirty or self._entries is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".gguf-info.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": _CACHE_VERSION, "entries": self._entries}, handle)
            os.replace(tmp, self.file)
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written only costs speed
