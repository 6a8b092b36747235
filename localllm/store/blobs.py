"""Files uploaded by digest (Ollama's /api/blobs/sha256:<hex>, which `ollama create` and the ollama library's
create_blob use), kept as ``<data>/blobs/sha256-<hex>`` for named models to be built on.

An upload is written to a temporary file beside its destination while it is hashed, and renamed into place only when
its sha256 is the one it was sent under; anything else (a mismatch, a client that leaves, a full disk) leaves nothing
behind. Only GGUF files are kept: they are all localllm can run. The size is never taken from the client: the body is
counted as it arrives, against the disk space the store may use."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from localllm.core.errors import LocalLLMError, UsageError
from localllm.core.settings import Settings
from localllm.core.units import human_size

BLOBS_DIR = "blobs"
GGUF_MAGIC = b"GGUF"
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")


class NoRoom(LocalLLMError):
    """The upload would leave less free disk space than the store keeps (min_free_disk_mb)."""


def digest_hex(text: str) -> str | None:
    """The hex of ``sha256:<64 hex>`` (or Ollama's file form ``sha256-<hex>``), lower case; None for anything
    else."""
    match = _DIGEST.fullmatch(text) if isinstance(text, str) else None
    return match.group(1).lower() if match else None


def blobs_dir(settings: Settings) -> Path:
    return settings.paths.data_dir / BLOBS_DIR


def blob_path(settings: Settings, hex_digest: str) -> Path:
    assert re.fullmatch(r"[0-9a-f]{64}", hex_digest), "only a checked digest names a file"
    return blobs_dir(settings) / f"sha256-{hex_digest}"


def find_blob(settings: Settings, hex_digest: str) -> Path | None:
    """The file localllm holds with this sha256: an uploaded one, or a model `localllm pull` installed (its
    manifest recorded the sha256 it was verified against), so that a client need not upload a model the store
    already has."""
    uploaded = blob_path(settings, hex_digest)
    if uploaded.is_file():
        return uploaded
    from localllm.store.locate import localllm_models
    from localllm.store.manifest import read_manifest

    for ref in localllm_models(settings.paths.models_dir):
        manifest = read_manifest(ref.path)
        if manifest is not None and manifest.sha256 == hex_digest:
            try:
                if ref.path.stat().st_size == manifest.size:
                    return ref.path
            except OSError:
                continue
    return None


def uploaded_blobs(settings: Settings) -> list[Path]:
    folder = blobs_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if digest_hex(path.name) and path.is_file())


class BlobUpload:
    """One upload in progress: ``write`` each piece as it arrives, then ``finish`` (or ``discard``). Not
    thread-safe: one writer."""

    def __init__(self, settings: Settings, hex_digest: str) -> None:
        self.settings, self.hex = settings, hex_digest
        self.target = blob_path(settings, hex_digest)
        folder = self.target.parent
        folder.mkdir(parents=True, exist_ok=True)
        self.reserve = settings.min_free_disk_mb * 1024 * 1024
        self.room = shutil.disk_usage(folder).free - self.reserve
        """Bytes the upload may take: what the disk has free less what the store keeps free."""
        if self.room <= 0:
            raise NoRoom(f"no room for an upload: {folder} has {human_size(shutil.disk_usage(folder).free)} free "
                         f"and keeps {human_size(self.reserve)} free", hint="free some space")
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".upload-{hex_digest[:12]}-", suffix=".partial")
        self.temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._head = b""

    def check_declared(self, declared: int | None) -> None:
        """A Content-Length the disk cannot take is refused before a byte is written."""
        if declared is not None and declared > self.room:
            raise self._no_room(declared)

    def _no_room(self, size: int) -> NoRoom:
        return NoRoom(f"the upload of {human_size(size)} does not fit: {self.target.parent} may take "
                      f"{human_size(max(0, self.room))} more (keeping {human_size(self.reserve)} free)",
                      hint="free some space, or lower min_free_disk_mb in the config")

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.room:
            raise self._no_room(self.size + len(data))
        if len(self._head) < len(GGUF_MAGIC):
            self._head += data[:len(GGUF_MAGIC) - len(self._head)]
            if not GGUF_MAGIC.startswith(self._head):
                raise UsageError("the upload is not a GGUF file (it does not start with GGUF): localllm runs GGUF "
                                 "models only")
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def finish(self) -> Path:
        """Verify and move into place; the temporary file is removed on any failure (``discard``)."""
        if self.size < len(GGUF_MAGIC):
            raise UsageError("the upload is empty or too short to be a GGUF file")
        actual = self._hash.hexdigest()
        if actual != self.hex:
            raise UsageError(f"the upload's sha256 is {actual}, not the sha256:{self.hex} it was sent as: nothing "
                             "was kept")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.target)  # a second upload of the same bytes replaces it with the same bytes
        return self.target

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temp.unlink(missing_ok=True)
