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
_CACHE_VERSION = 3
"""Raised when what is read from a header changes: 3 cuts long labels and refuses a context over 32 bits."""


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


# What each count may be. A GGUF is untrusted input: every value is checked for type and range where it is read,
# so one damaged or hostile file is one error naming the key, never a crash (or a llama.cpp abort) further on.
MAX_LAYERS = 512
"""llama.cpp's LLAMA_MAX_LAYERS: a model with more (or with none) makes it abort the process."""
COUNT_LIMITS: dict[str, tuple[int, int]] = {
    "block_count": (1, MAX_LAYERS),
    "context_length": (0, (1 << 31) - 1),
    "embedding_length": (0, 1 << 20),
    "feed_forward_length": (0, 1 << 24),
    "attention.head_count": (0, 1 << 16),
    "attention.head_count_kv": (0, 1 << 16),
    "attention.key_length": (0, 1 << 16),
    "attention.value_length": (0, 1 << 16),
    "vocab_size": (0, 1 << 24),
}
MAX_LABEL_CHARS = 200
"""Characters kept of a text field that is shown (general.name, general.license, ...)."""
COUNT_REASONS = {"context_length": "llama.cpp reads it as a 32-bit signed integer"}
"""Why a count's range ends where it does, where that is not plain."""
DAMAGED_HINT = "the file is damaged or was written wrongly; download it again, or use another model"


def info_from_header(header, where: str, file_size: int) -> ModelInfo:
    """The planner's view of a parsed header; ``where`` is a path or, for a remote file, its URL."""
    from gguf.constants import LlamaFileType

    from localllm.store.gguf_header import ArrayLength

    fields = header.fields

    def text(key: str, limit: int | None = MAX_LABEL_CHARS) -> str | None:
        """A text field; a label (a name, a licence) is cut to ``limit`` characters: it is shown, and a 5 MB name
        filled `show`'s screen."""
        found = fields.get(key)
        if not isinstance(found, str):
            return None
        return found if limit is None or len(found) <= limit else found[:limit - 1] + "…"

    arch = fields.get("general.architecture", "unknown")
    if not isinstance(arch, str):
        raise InvalidModelFile(f"{where}: general.architecture should be text, got {_shown(arch)}",
                               hint=DAMAGED_HINT)

    def count(name: str, default: int = 0) -> int:
        """``{arch}.{name}`` as a whole number in its range; an array (per-layer counts) counts as unknown (0)."""
        key = f"{arch}.{name}"
        raw = fields.get(key, default)
        if isinstance(raw, ArrayLength):
            return 0
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidModelFile(f"{where}: {key} should be a whole number, got {_shown(raw)}", hint=DAMAGED_HINT)
        low, high = COUNT_LIMITS[name]
        if key in fields and not low <= raw <= high:
            reason = f": {COUNT_REASONS[name]}" if name in COUNT_REASONS else ""
            raise InvalidModelFile(f"{where}: {key} = {raw} is out of range ({low} to {high}{reason})",
                                   hint=DAMAGED_HINT)
        return raw

    block_count = count("block_count")
    layer_total = sum(t.n_bytes for t in header.tensors if t.name.startswith("blk."))
    other_total = sum(t.n_bytes for t in header.tensors) - layer_total
    per_layer, remainder = divmod(layer_total, block_count) if block_count else (0, layer_total)
    embedding = count("embedding_length")
    heads = count("attention.head_count")
    heads_kv = count("attention.head_count_kv", heads) or heads
    head_dim = embedding // heads if heads else 0
    tokens = fields.get("tokenizer.ggml.tokens")
    vocab = count("vocab_size") or (tokens.count if isinstance(tokens, ArrayLength) else 0)
    file_type = fields.get("general.file_type")
    quant = None
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = f"type {file_type}"
    return ModelInfo(
        path=where,
        file_size=file_size,
        architecture=arch,
        name=text("general.name"),
        quant=quant,
        context_length=count("context_length"),
        block_count=block_count,
        embedding_length=embedding,
        feed_forward_length=count("feed_forward_length"),
        head_count=heads,
        head_count_kv=heads_kv,
        key_length=count("attention.key_length", head_dim) or head_dim,
        value_length=count("attention.value_length", head_dim) or head_dim,
        vocab_size=vocab,
        layer_bytes=per_layer,
        non_layer_bytes=other_total + remainder,
        parameters=sum(t.n_elements for t in header.tensors),
        tokenizer_model=text("tokenizer.ggml.model"),
        tokenizer_pre=text("tokenizer.ggml.pre"),
        chat_template=text("tokenizer.chat_template", limit=None),
        size_label=text("general.size_label"),
        license=text("general.license"),
    )


def _shown(value: Any) -> str:
    """A value from the file, for a message: its repr (control characters escaped), cut short."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


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
