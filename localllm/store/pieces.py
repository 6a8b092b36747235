"""One download over up to N ranged connections, into the one preallocated ``FILE.partial``.

The file is cut into pieces (8–64 MiB). Each connection takes the next piece not yet taken, in order, asks for its
missing bytes with a Range request and writes them at their offset. After every block written, the piece's byte
count is rewritten in place in ``FILE.partial.parts`` (8 bytes a piece), so a killed process has lost at most the
block each connection held. Because pieces are taken in order, the start of the file completes first: a hashing
thread follows that contiguous prefix, reading it back from the page cache, and the sha256 is ready moments after
the last byte arrives. The first request is a probe: only when it comes back 206 do the other connections start;
a server that answers 200 (it ignores Range) gets one connection reading the whole file from byte 0.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from localllm.core.errors import LocalLLMError

MIB = 1024 * 1024
BLOCK = 512 * 1024
"""Bytes read from a connection between two progress records: the most a SIGKILL costs each connection."""
HASH_BLOCK = 8 * MIB
MAX_CONNECTIONS = 32
_SLOT = struct.Struct("<Q")
_SEEK_LOCK = threading.Lock()
BINARY = getattr(os, "O_BINARY", 0)
"""Windows opens descriptors in text mode without it."""


def pwrite(fd: int, data, offset: int) -> int:
    """os.pwrite, or a seek and a write under a lock where the platform has no pwrite (Windows)."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def piece_size(size: int) -> int:
    """About 32 pieces a file, each a whole number of MiB between 8 and 64: small enough that the hash follows the
    download closely and the connections finish together, large enough that a request's round trip is noise."""
    wanted = -(-size // 32 // MIB) * MIB
    return min(max(wanted, 8 * MIB), 64 * MIB)


def default_connections(size: int) -> int:
    """One connection for each piece, up to 8."""
    return max(1, min(8, -(-size // piece_size(size))))


class PieceMap:
    """How many bytes are present at the start of each piece, in memory and in the parts file."""

    def __init__(self, path: Path, size: int, piece: int) -> None:
        self.path = path
        self.size = size
        self.piece = piece
        self.count = max(1, -(-size // piece))
        self.done = [0] * self.count
        self.fd: int | None = None

    @classmethod
    def load(cls, path: Path, size: int, piece: int) -> PieceMap | None:
        """The map stored at ``path``; None when it is missing or does not fit this file."""
        pieces = cls(path, size, piece)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) != pieces.count * _SLOT.size:
            return None
        for index, (value,) in enumerate(_SLOT.iter_unpack(data)):
            if value > pieces.length(index):
                return None
            pieces.done[index] = value
        return pieces

    def create(self, prefix: int = 0) -> None:
        """Write a new map in which the first ``prefix`` bytes of the file are present."""
        for index in range(self.count):
            start = index * self.piece
            self.done[index] = max(0, min(prefix - start, self.length(index)))
        self.path.write_bytes(b"".join(_SLOT.pack(value) for value in self.done))

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | BINARY)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def start(self, index: int) -> int:
        return index * self.piece

    def length(self, index: int) -> int:
        return min(self.piece, self.size - index * self.piece)

    def complete(self, index: int) -> bool:
        return self.done[index] >= self.length(index)

    def present(self) -> int:
        return sum(self.done)

    def contiguous(self, position: int = 0) -> int:
        """The end of the run of present bytes that contains ``position`` (the hash may go that far)."""
        index = position // self.piece
        while index < self.count:
            end = self.start(index) + self.done[index]
            if not self.complete(index):
                return max(end, position)
            index += 1
        return self.size

    def add(self, offset: int, count: int) -> None:
        """Record ``count`` bytes written at ``offset`` (which continues what each piece it touches holds)."""
        assert self.fd is not None
        while count > 0:
            index = offset // self.piece
            taken = min(count, self.start(index) + self.length(index) - offset)
            self.done[index] = offset + taken - self.start(index)
            pwrite(self.fd, _SLOT.pack(self.done[index]), index * _SLOT.size)
            offset += taken
            count -= taken

    def reset(self) -> None:
        assert self.fd is not None
        self.done = [0] * self.count
        pwrite(self.fd, bytes(self.count * _SLOT.size), 0)


class RateLimiter:
    """Sleeps so that the average rate over all connections stays at or under ``bytes_per_second``."""

    def __init__(self, bytes_per_second: int | None) -> None:
        self.rate = bytes_per_second
        self.started = time.monotonic()
        self.count = 0
        self.lock = threading.Lock()

    def consumed(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            self.count += n
            ahead = self.count / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


class Stopped(Exception):
    """A connection saw the stop flag (cancel, Ctrl-C, another connection's failure) and left its block unrecorded."""


class Hasher(threading.Thread):
    """sha256 of the file's contiguous prefix, following it as pieces complete; restarts from byte 0 when the
    download has to start over (a server that ignores Range)."""

    def __init__(self, path: Path, pieces: PieceMap, lock: threading.Lock) -> None:
        super().__init__(name="sha256", daemon=True)
        self.path = path
        self.pieces = pieces
        self.lock = lock
        self.progressed = threading.Event()
        self.finish = threading.Event()
        """Hash to the end of what is present, then stop."""
        self.abandon = threading.Event()
        """Stop now: the download stopped (cancel, Ctrl-C, an error) and its hash is not wanted."""
        self.generation = 0
        self.digest = hashlib.sha256()
        self.position = 0
        self.error: OSError | None = None

    def restart(self) -> None:
        with self.lock:
            self.generation += 1

    def result(self) -> str:
        self.finish.set()
        self.progressed.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()

    def run(self) -> None:
        try:
            self._follow()
        except OSError as exc:  # reported by result()
            self.error = exc

    def _follow(self) -> None:
        buffer = bytearray(HASH_BLOCK)
        generation = self.generation
        with self.path.open("rb", buffering=0) as handle:
            while not self.abandon.is_set():
                with self.lock:
                    if generation != self.generation:
                        generation, self.digest, self.position = self.generation, hashlib.sha256(), 0
                    limit = self.pieces.contiguous(self.position)
                if self.position >= self.pieces.size:
                    return
                if limit <= self.position:
                    if self.finish.is_set():
                        return
                    self.progressed.wait(0.1)
                    self.progressed.clear()
                    continue
                handle.seek(self.position)
                view = memoryview(buffer)[:min(HASH_BLOCK, limit - self.position)]
                count = handle.readinto(view)
                if not count:
                    raise OSError(f"{self.path} ends at {self.position:,} bytes")
                self.digest.update(view[:count])
                self.position += count


class TransferFailed(LocalLLMError):
    """The transfer kept failing after its retries; the partial file stays for a later resume."""


class TransferCancelled(LocalLLMError):
    """The caller asked the transfer to stop; the partial file stays for a later resume, as after a kill."""


class WriteError(TransferFailed):
    """The disk refused a write (full, I/O error): not retried, the partial file stays."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot write {path}: {error.strerror or error}",
                         hint="check the free disk space, then pull again to resume")
        self.error = error


def write_at(fd: int, view: memoryview, offset: int, path: Path) -> None:
    try:
        while view:
            written = pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    except OSError as exc:
        raise WriteError(path, exc) from None


ProgressCallback = Callable[[int, int], None]
"""Called with (bytes present in the partial file, total bytes)."""
