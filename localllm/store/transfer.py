"""A resumable, verified download: ranged requests over parallel connections into ``FILE.partial``, sha256
checked over the whole file, then an atomic rename.

``FILE.partial`` is created at its full size and filled piece by piece at each piece's offset (store/pieces.py);
``FILE.partial.parts`` records how much of each piece is present, after every block, so a later run resumes every
piece where it stopped; ``FILE.partial.json`` records what the partial file is meant to become (URL, size, sha256,
revision, piece size), so `localllm downloads` lists it and a changed upstream file is never glued onto old bytes.
A lock file keeps two processes from writing the same file; its owner file says who holds it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from localllm.core.errors import LocalLLMError
from localllm.store.hub import HubFile
from localllm.store.manifest import write_json_atomic
from localllm.store.parallel import RETRY_DELAYS, Fetch, http_failure, open_url, pool_manager
from localllm.store.pieces import MAX_CONNECTIONS as MAX_CONNECTIONS
from localllm.store.pieces import PieceMap, default_connections, piece_size
from localllm.store.pieces import ProgressCallback as ProgressCallback
from localllm.store.pieces import TransferCancelled as TransferCancelled
from localllm.store.pieces import TransferFailed as TransferFailed

CHUNK = 1024 * 1024
PARTIAL_SUFFIX = ".partial"


class VerificationFailed(LocalLLMError):
    """The bytes received do not have the sha256 the Hub recorded; nothing was installed."""


@dataclass(frozen=True)
class PartialRecord:
    url: str
    repo: str
    path: str
    revision: str
    size: int
    sha256: str | None
    started: str
    piece: int = 0
    """The piece size of FILE.partial.parts; 0 in a record from before pieces, whose partial file is a prefix."""


@dataclass(frozen=True)
class TransferResult:
    path: Path
    transferred: int
    """Bytes received over the network in this run."""
    resumed_from: int
    """Bytes already present when this run started."""
    sha256: str


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def record_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX + ".json")


def parts_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX + ".parts")


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def owner_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock.owner")


def read_record(target: Path) -> PartialRecord | None:
    try:
        return PartialRecord(**json.loads(record_path(target).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def present(target: Path) -> int:
    """Bytes of the partial download of ``target`` that are on disk (0 when there is none)."""
    record = read_record(target)
    if record is None:
        return 0
    if record.piece == 0:
        try:
            return partial_path(target).stat().st_size
        except OSError:
            return 0
    pieces = PieceMap.load(parts_path(target), record.size, record.piece)
    return pieces.present() if pieces is not None else 0


class TransferLock:
    """An exclusive lock on one target file, with a note of the holder for whoever has to wait."""

    def __init__(self, target: Path) -> None:
        from filelock import FileLock

        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        self._lock = FileLock(str(lock_path(target)))

    def try_acquire(self) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        self._write_owner()
        return True

    def acquire(self) -> None:
        self._lock.acquire()
        self._write_owner()

    def holder(self) -> str:
        try:
            owner = json.loads(owner_path(self.target).read_text(encoding="utf-8"))
            return f"process {owner['pid']} on {owner['host']} (since {owner['since']})"
        except (OSError, ValueError, KeyError):
            return "another process"

    def _write_owner(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.now(UTC).isoformat(timespec="seconds")}
        owner_path(self.target).write_text(json.dumps(owner), encoding="utf-8")

    def release(self) -> None:
        try:
            owner_path(self.target).unlink(missing_ok=True)
        finally:
            self._lock.release()


def download(target: Path, remote: HubFile, *, headers: dict[str, str] | None = None,
             progress: ProgressCallback | None = None, max_rate: int | None = None,
             timeout: float = 30.0, sleep: Callable[[float], None] | None = None,
             cancel: threading.Event | None = None, connections: int | None = None) -> TransferResult:
    """Fetch ``remote`` into ``target`` (the caller holds the TransferLock). Resumes a matching partial file.

    ``connections``: how many ranged requests at once (None: one per piece, up to 8). Setting ``cancel`` stops
    the transfer after the blocks in hand: what was recorded so far stays in the partial file.
    """
    if not _resumable(target, remote):
        _start_partial(target, remote)
    record = read_record(target)
    pieces = PieceMap.load(parts_path(target), remote.size, record.piece) if record else None
    if pieces is None:  # removed under us, or unreadable: start again
        _start_partial(target, remote)
        pieces = PieceMap(parts_path(target), remote.size, piece_size(remote.size))
    resumed_from = pieces.present()
    fetch = Fetch(partial_path(target), pieces, remote, headers=dict(headers or {}),
                  connections=max(1, min(connections or default_connections(remote.size), MAX_CONNECTIONS)),
                  max_rate=max_rate, timeout=timeout, progress=progress, cancel=cancel, sleep=sleep)
    actual = fetch.run()
    if remote.sha256 and actual != remote.sha256:
        discard_partial(target)
        raise VerificationFailed(
            f"the downloaded file's sha256 is {actual[:16]}…, not the {remote.sha256[:16]}… the Hub recorded; "
            "nothing was installed and the partial download was discarded",
            hint="pull again; if it fails again the server or a proxy is changing the file")
    os.replace(partial_path(target), target)
    record_path(target).unlink(missing_ok=True)
    parts_path(target).unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return TransferResult(path=target, transferred=fetch.transferred, resumed_from=resumed_from, sha256=actual)


def _resumable(target: Path, remote: HubFile) -> bool:
    """True when the partial file on disk is part of this same remote file, with its record of pieces."""
    record = read_record(target)
    partial = partial_path(target)
    if record is None or not partial.exists():
        return False
    if (record.sha256, record.size) != (remote.sha256, remote.size):
        return False
    if remote.sha256 is None and record.url != remote.url:
        return False
    if record.piece == 0:
        return _upgrade_partial(target, record)
    pieces = PieceMap.load(parts_path(target), remote.size, record.piece)
    return pieces is not None and partial.stat().st_size == remote.size


def _upgrade_partial(target: Path, record: PartialRecord) -> bool:
    """A partial file written before pieces holds the file's first bytes: keep them as the first pieces."""
    partial = partial_path(target)
    have = partial.stat().st_size
    if have > record.size:
        return False
    piece = piece_size(record.size)
    with partial.open("r+b") as handle:
        handle.truncate(record.size)
    PieceMap(parts_path(target), record.size, piece).create(have)
    write_json_atomic(record_path(target), {**asdict(record), "piece": piece})
    return True


def _start_partial(target: Path, remote: HubFile, first_bytes: bytes = b"") -> None:
    """A new partial file at its full size (sparse: each piece is written where it belongs), holding
    ``first_bytes`` at its start, with its pieces' record and the record of what it will become."""
    partial = partial_path(target)
    partial.parent.mkdir(parents=True, exist_ok=True)
    piece = piece_size(remote.size)
    with partial.open("wb") as handle:
        handle.write(first_bytes)
        handle.truncate(remote.size)
    PieceMap(parts_path(target), remote.size, piece).create(len(first_bytes))
    write_json_atomic(record_path(target), asdict(PartialRecord(
        url=remote.url, repo=remote.repo, path=remote.path, revision=remote.revision, size=remote.size,
        sha256=remote.sha256, started=datetime.now(UTC).isoformat(timespec="seconds"), piece=piece)))


def _contiguous_prefix(target: Path, remote: HubFile) -> int:
    record = read_record(target)
    pieces = PieceMap.load(parts_path(target), remote.size, record.piece) if record and record.piece else None
    return pieces.contiguous() if pieces is not None else 0


def discard_partial(target: Path) -> None:
    """Remove a partial download and its records (the caller holds the lock or knows nobody does)."""
    partial_path(target).unlink(missing_ok=True)
    parts_path(target).unlink(missing_ok=True)
    record_path(target).unlink(missing_ok=True)
    try:
        target.parent.rmdir()  # only if nothing else is in the model's folder
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fetch_range(manager, remote: HubFile, wanted: int, headers: dict[str, str],
                 sleep: Callable[[float], None]) -> bytes:
    """The first ``wanted`` bytes, retrying transient failures as the main transfer does."""
    import urllib3

    for attempt in range(len(RETRY_DELAYS) + 1):
        response = None
        try:
            response = open_url(manager, remote.url, {**headers, "Range": f"bytes=0-{wanted - 1}"})
            if response.status not in (200, 206):
                failure = http_failure(response.status, response.headers, remote.url)
                if failure is not None:
                    raise failure
                raise urllib3.exceptions.ProtocolError(f"HTTP {response.status}")
            data = response.read(wanted) if response.status == 200 else response.read()
            if len(data) >= min(wanted, remote.size):
                return data[:wanted]
            raise urllib3.exceptions.ProtocolError("the server sent too few bytes")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if attempt == len(RETRY_DELAYS):
                raise TransferFailed(f"cannot read the header of {remote.url}: {exc}",
                                     hint="try again later") from None
            sleep(RETRY_DELAYS[attempt])
        finally:
            if response is not None:
                response.close()
    raise AssertionError("unreachable")


def remote_model_info(target: Path, remote: HubFile, headers: dict[str, str] | None = None, *,
                      timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep):
    """The remote GGUF's header, so "will it fit?" is answered from the file's real metadata before the download.

    The header comes from the partial file when a resumable one holds it; otherwise the first few MiB are fetched
    with a Range request and kept as the start of the partial file, so no byte is fetched twice.
    """
    from localllm.core.errors import InvalidModelFile
    from localllm.store.gguf_header import GGUFFormatError, parse_header
    from localllm.store.gguf_info import info_from_header

    def parse(data: bytes):
        return info_from_header(parse_header(data), remote.url, remote.size)

    resumable = _resumable(target, remote)
    prefix = _contiguous_prefix(target, remote) if resumable else 0
    if prefix:
        try:
            with partial_path(target).open("rb") as handle:
                return parse(handle.read(min(prefix, 256 * CHUNK)))
        except GGUFFormatError:
            pass
    length = 2 * CHUNK
    manager = pool_manager(remote.url, timeout)
    while True:
        wanted = min(length, remote.size)
        data = _fetch_range(manager, remote, wanted, headers or {}, sleep)
        try:
            info = parse(data)
        except GGUFFormatError as exc:
            truncated = "ends early" in str(exc) or "past the end" in str(exc)
            if not truncated or wanted >= remote.size or length >= 256 * CHUNK:
                raise InvalidModelFile(f"{remote.repo}/{remote.path} is not a readable GGUF file ({exc})",
                                       hint="choose another file") from None
            length *= 4
            continue
        if not resumable:
            _start_partial(target, remote, data)
        return info
