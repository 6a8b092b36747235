"""A resumable, verified download: Range requests into ``FILE.partial``, sha256 checked, then an atomic rename.

``FILE.partial.json`` records what the partial file is meant to become (URL, size, sha256, revision), so a later
run resumes it, `localllm downloads` lists it, and a changed upstream file is never glued onto old bytes.
A lock file keeps two processes from writing the same file; its owner file says who holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from localllm.core.errors import LocalLLMError
from localllm.store.hub import HubError, HubFile
from localllm.store.manifest import write_json_atomic

CHUNK = 1024 * 1024
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
PARTIAL_SUFFIX = ".partial"


class VerificationFailed(LocalLLMError):
    """The bytes received do not have the sha256 the Hub recorded; nothing was installed."""


class TransferFailed(LocalLLMError):
    """The transfer kept failing after its retries; the partial file stays for a later resume."""


class TransferCancelled(LocalLLMError):
    """The caller asked the transfer to stop; the partial file stays for a later resume, as after a kill."""


@dataclass(frozen=True)
class PartialRecord:
    url: str
    repo: str
    path: str
    revision: str
    size: int
    sha256: str | None
    started: str


@dataclass(frozen=True)
class TransferResult:
    path: Path
    transferred: int
    """Bytes received over the network in this run."""
    resumed_from: int
    sha256: str


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def record_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX + ".json")


def lock_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock")


def owner_path(target: Path) -> Path:
    return target.with_name(target.name + ".lock.owner")


def read_record(target: Path) -> PartialRecord | None:
    try:
        return PartialRecord(**json.loads(record_path(target).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


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


ProgressCallback = Callable[[int, int], None]
"""Called with (bytes present in the partial file, total bytes)."""


class RateLimiter:
    """Sleeps so that the average rate stays at or under ``bytes_per_second``."""

    def __init__(self, bytes_per_second: int | None) -> None:
        self.rate = bytes_per_second
        self.started = time.monotonic()
        self.count = 0

    def consumed(self, n: int) -> None:
        if not self.rate:
            return
        self.count += n
        ahead = self.count / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def _sha256_of_prefix(path: Path, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        remaining = length
        while remaining > 0:
            block = handle.read(min(CHUNK * 8, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


def _http_failure(status: int, headers, url: str) -> LocalLLMError | None:
    """A non-retryable answer becomes a clear error; None means retry."""
    code = headers.get("x-error-code", "")
    if status == 401:
        return HubError(f"the Hub refused the download (401 unauthorised) of {url}",
                        hint="log in with `hf auth login` or set HF_TOKEN")
    if status == 403:
        if code == "GatedRepo":
            return HubError("this is a gated repository: accept its licence on the Hub first",
                            hint="then log in with `hf auth login` or set HF_TOKEN")
        return HubError(f"the Hub refused the download (403 forbidden) of {url}", hint="check your access token")
    if status == 404:
        return HubError(f"the file was not found (404) at {url}", hint="check the repository and file name")
    if status in (408, 429) or status >= 500:
        return None
    if status >= 400:
        return HubError(f"the download failed with HTTP {status}", hint="try again later")
    return None


class _HashingWriter:
    """Hashes and writes received blocks on a worker thread, so reading the network overlaps with both
    (hashlib and os.write release the GIL for large buffers). Buffers are reused from a small pool."""

    def __init__(self, fd: int, digest, block_size: int = CHUNK, depth: int = 8) -> None:
        self.fd = fd
        self.digest = digest
        self.error: OSError | None = None
        self.free: queue.Queue = queue.Queue()
        self.full: queue.Queue = queue.Queue()
        for _ in range(depth):
            self.free.put(bytearray(block_size))
        self.thread = threading.Thread(target=self._run, name="hash-and-write", daemon=True)
        self.thread.start()

    def buffer(self) -> bytearray:
        self._raise()
        return self.free.get()

    def give_back(self, buffer: bytearray) -> None:
        self.free.put(buffer)

    def submit(self, buffer: bytearray, length: int) -> None:
        self.full.put((buffer, length))

    def drain(self) -> None:
        """Wait until every submitted block is hashed and on disk."""
        self.full.join()
        self._raise()

    def close(self) -> None:
        self.drain()
        self.full.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.full.get()
            if item is None:
                return
            buffer, length = item
            if self.error is None:
                try:
                    view = memoryview(buffer)[:length]
                    self.digest.update(view)
                    while view:
                        view = view[os.write(self.fd, view):]
                except OSError as exc:  # disk full, I/O error: reported to the reading side
                    self.error = exc
            self.free.put(buffer)
            self.full.task_done()


def _pool_manager(url: str, timeout: float):
    """urllib3 for the transfer: it reads the body through http.client's C readinto, where httpx's pure-Python
    HTTP/1.1 parser reached about 60 % of curl's throughput on loopback. Proxies come from the usual environment
    variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY); redirects to another host drop the Authorization header."""
    import urllib.parse
    import urllib.request

    import urllib3

    timeouts = urllib3.Timeout(connect=min(timeout, 15.0), read=timeout)
    retries = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10,
                            raise_on_redirect=True, raise_on_status=False)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(urllib.parse.urlsplit(url).scheme)
    if proxy and not urllib.request.proxy_bypass(urllib.parse.urlsplit(url).hostname or ""):
        return urllib3.ProxyManager(proxy, timeout=timeouts, retries=retries)
    return urllib3.PoolManager(timeout=timeouts, retries=retries)


def _open(manager, url: str, headers: dict[str, str]):
    return manager.urlopen("GET", url, headers=headers, preload_content=False, decode_content=False)


def download(target: Path, remote: HubFile, *, headers: dict[str, str] | None = None,
             progress: ProgressCallback | None = None, max_rate: int | None = None,
             timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
             cancel: threading.Event | None = None) -> TransferResult:
    """Fetch ``remote`` into ``target`` (the caller holds the TransferLock). Resumes a matching partial file.

    Setting ``cancel`` stops the transfer after the block in hand: what arrived so far stays in the partial file.
    """
    import urllib3

    partial = partial_path(target)
    if not _resumable(target, remote):
        _start_partial(target, remote)
    offset = partial.stat().st_size
    resumed_from = offset
    digest = _sha256_of_prefix(partial, offset)
    limiter = RateLimiter(max_rate)
    transferred = 0
    failures = 0
    manager = _pool_manager(remote.url, timeout)
    fd = os.open(partial, os.O_WRONLY)
    writer = _HashingWriter(fd, digest)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        while offset < remote.size:
            _stop_if_cancelled(cancel, writer, offset, remote.size)
            request_headers = dict(headers or {})
            if offset:
                request_headers["Range"] = f"bytes={offset}-"
            response = None
            try:
                response = _open(manager, remote.url, request_headers)
                if response.status == 200 and offset:
                    # The server ignored the Range header: start over rather than append a whole file.
                    writer.drain()
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    offset = 0
                    writer.digest = digest = hashlib.sha256()
                elif response.status == 206:
                    start = _content_range_start(response.headers.get("content-range", ""))
                    if start != offset:
                        raise urllib3.exceptions.ProtocolError(f"asked for byte {offset}, got a range from {start}")
                elif response.status != 200:
                    failure = _http_failure(response.status, response.headers, remote.url)
                    if failure is not None:
                        raise failure
                    raise urllib3.exceptions.ProtocolError(f"HTTP {response.status}")
                while offset < remote.size:
                    buffer = writer.buffer()
                    wanted = min(len(buffer), remote.size - offset)
                    count = response.readinto(memoryview(buffer)[:wanted])
                    if not count:
                        writer.give_back(buffer)
                        raise urllib3.exceptions.ProtocolError("the server closed the connection before the end")
                    writer.submit(buffer, count)
                    offset += count
                    transferred += count
                    failures = 0
                    if progress:
                        progress(offset, remote.size)
                    _stop_if_cancelled(cancel, writer, offset, remote.size)
                    limiter.consumed(count)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if writer.error is not None:
                    raise TransferFailed(f"cannot write {partial}: {writer.error.strerror}",
                                         hint="check the free disk space, then pull again to resume") from None
                writer.drain()
                failures += 1
                if failures > len(RETRY_DELAYS):
                    raise TransferFailed(
                        f"the download stopped at {offset:,} of {remote.size:,} bytes: {exc}",
                        hint="run the same pull again: it resumes from here") from None
                sleep(RETRY_DELAYS[failures - 1])
            finally:
                if response is not None:
                    response.close()  # never return a half-read connection to the pool
        writer.close()
        os.fsync(fd)
    finally:
        os.close(fd)

    actual = digest.hexdigest()
    if remote.sha256 and actual != remote.sha256:
        discard_partial(target)
        raise VerificationFailed(
            f"the downloaded file's sha256 is {actual[:16]}…, not the {remote.sha256[:16]}… the Hub recorded; "
            "nothing was installed and the partial download was discarded",
            hint="pull again; if it fails again the server or a proxy is changing the file")
    os.replace(partial, target)
    record_path(target).unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return TransferResult(path=target, transferred=transferred, resumed_from=resumed_from, sha256=actual)


def _stop_if_cancelled(cancel: threading.Event | None, writer: _HashingWriter, offset: int, size: int) -> None:
    if cancel is None or not cancel.is_set():
        return
    writer.close()  # every block received is on disk before the partial file is left for a resume
    raise TransferCancelled(f"the download was cancelled at {offset:,} of {size:,} bytes",
                            hint="pull it again to resume from there, or `localllm downloads clean` to drop it")


def _resumable(target: Path, remote: HubFile) -> bool:
    """True when the partial file on disk is the start of this same remote file."""
    record = read_record(target)
    partial = partial_path(target)
    if record is None or not partial.exists() or partial.stat().st_size > remote.size:
        return False
    if (record.sha256, record.size) != (remote.sha256, remote.size):
        return False
    return remote.sha256 is not None or record.url == remote.url


def _start_partial(target: Path, remote: HubFile, first_bytes: bytes = b"") -> None:
    partial = partial_path(target)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as handle:
        handle.write(first_bytes)
    write_json_atomic(record_path(target), asdict(PartialRecord(
        url=remote.url, repo=remote.repo, path=remote.path, revision=remote.revision, size=remote.size,
        sha256=remote.sha256, started=datetime.now(UTC).isoformat(timespec="seconds"))))


def discard_partial(target: Path) -> None:
    """Remove a partial download and its record (the caller holds the lock or knows nobody does)."""
    partial_path(target).unlink(missing_ok=True)
    record_path(target).unlink(missing_ok=True)
    try:
        target.parent.rmdir()  # only if nothing else is in the model's folder
    except OSError:
        pass


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


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
            response = _open(manager, remote.url, {**headers, "Range": f"bytes=0-{wanted - 1}"})
            if response.status not in (200, 206):
                failure = _http_failure(response.status, response.headers, remote.url)
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
    if resumable:
        try:
            with partial_path(target).open("rb") as handle:
                return parse(handle.read(256 * CHUNK))
        except GGUFFormatError:
            pass
    length = 2 * CHUNK
    manager = _pool_manager(remote.url, timeout)
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
