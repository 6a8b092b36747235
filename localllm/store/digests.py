"""sha256 digests of model files, kept in a JSON file keyed by resolved path, size and mtime (as the metadata cache
is): a model's digest is read once, however often a listing names it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_VERSION = 1
_LOCK = threading.Lock()
"""One writer of the file at a time within the process (the server hashes in a thread of its own)."""


def _key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


class DigestCache:
    def __init__(self, cache_dir: Path) -> None:
        self.file = cache_dir / "digests.json"

    def _entries(self) -> dict[str, str]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == _VERSION else None
        return {k: v for k, v in entries.items() if isinstance(v, str)} if isinstance(entries, dict) else {}

    def known(self, path: Path) -> str | None:
        """The file's digest if it was computed for it as it is now (same size and time), else None."""
        try:
            return self._entries().get(_key(path))
        except OSError:
            return None

    def compute(self, path: Path) -> str:
        """Read the whole file, keep its digest, and return it."""
        key = _key(path)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
        value = digest.hexdigest()
        with _LOCK:
            entries = self._entries()
            entries[key] = value
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".digests.")
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump({"version": _VERSION, "entries": entries}, out)
                os.replace(tmp, self.file)
            except OSError:
                pass  # a cache that cannot be written only costs a second reading
        return value
