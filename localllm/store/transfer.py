"""A resumable, verified download: Range requests into ``FILE.partial``, sha256 checked, then an atomic rename.

``FILE.partial.json`` records what the partial file is meant to become (URL, size, sha256, revision), so a later
run resumes it, `localllm downloads` lists it, and a changed upstream file is never glued onto old bytes.
A lock file keeps two processes from writing the same file; its owner file says who holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
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
                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
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


def _sha256_of_prefix(path: Path, length: int) -> "hashlib._Hash":
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


def download(target: Path, remote: HubFile, *, headers: dict[str, str] | None = None,
             progress: ProgressCallback | None = None, max_rate: int | None = None,
             timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> TransferResult:
    """Fetch ``remote`` into ``target`` (the caller holds the TransferLock). Resumes a matching partial file."""
    import httpx

    partial = partial_path(target)
    if not _resumable(target, remote):
        _start_partial(target, remote)
    offset = partial.stat().st_size
    resumed_from = offset
    digest = _sha256_of_prefix(partial, offset)
    limiter = RateLimiter(max_rate)
    transferred = 0
    failures = 0
    last_error = ""
    if progress:
        progress(offset, remote.size)
    with httpx.Client(follow_redirects=True, timeout=timeout, headers=headers or {}) as client, \
            partial.open("r+b") as out:
        out.seek(offset)
        while offset < remote.size:
            request_headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with client.stream("GET", remote.url, headers=request_headers) as response:
                    if response.status_code == 200 and offset:
                        # The server ignored the Range header: start over rather than append a whole file.
                        out.seek(0)
                        out.truncate()
                        offset, digest = 0, hashlib.sha256()
                    elif response.status_code == 206:
                        start = _content_range_start(response.headers.get("content-range", ""))
                        if start != offset:
                            raise httpx.RemoteProtocolError(f"asked for byte {offset}, got a range from {start}")
                    elif response.status_code != 200:
                        failure = _http_failure(response.status_code, response.headers, remote.url)
                        if failure is not None:
                            raise failure
                        raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                                    response=response)
                    for block in response.iter_bytes(CHUNK):
                        if offset + len(block) > remote.size:
                            block = block[: remote.size - offset]
                        out.write(block)
                        digest.update(block)
                        offset += len(block)
                        transferred += len(block)
                        failures = 0
                        if progress:
                            progress(offset, remote.size)
                        limiter.consumed(len(block))
                        if offset >= remote.size:
                            break
                    out.flush()
                    if offset < remote.size:
                        raise httpx.RemoteProtocolError("the server closed the connection before the end")
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                out.flush()
                failures += 1
                last_error = str(exc) or type(exc).__name__
                if failures > len(RETRY_DELAYS):
                    raise TransferFailed(
                        f"the download stopped at {offset:,} of {remote.size:,} bytes: {last_error}",
                        hint="run the same pull again: it resumes from here") from None
                sleep(RETRY_DELAYS[failures - 1])
        os.fsync(out.fileno())

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
        sha256=remote.sha256, started=datetime.now(timezone.utc).isoformat(timespec="seconds"))))


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


def _fetch_range(client, remote: HubFile, wanted: int, sleep: Callable[[float], None]) -> bytearray:
    """The first ``wanted`` bytes, retrying transient failures as the main transfer does."""
    import httpx

    for attempt in range(len(RETRY_DELAYS) + 1):
        data = bytearray()
        try:
            with client.stream("GET", remote.url, headers={"Range": f"bytes=0-{wanted - 1}"}) as response:
                if response.status_code not in (200, 206):
                    failure = _http_failure(response.status_code, response.headers, remote.url)
                    if failure is not None:
                        raise failure
                    raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                                response=response)
                for block in response.iter_bytes(CHUNK):
                    data.extend(block)
                    if len(data) >= wanted:
                        return data
            if len(data) >= min(wanted, remote.size):
                return data
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if attempt == len(RETRY_DELAYS):
                raise TransferFailed(f"cannot read the header of {remote.url}: {exc}",
                                     hint="try again later") from None
            sleep(RETRY_DELAYS[attempt])
    raise TransferFailed(f"the server sent too few bytes of {remote.url}", hint="try again later")


def remote_model_info(target: Path, remote: HubFile, headers: dict[str, str] | None = None, *,
                      timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep):
    """The remote GGUF's header, so "will it fit?" is answered from the file's real metadata before the download.

    The header comes from the partial file when a resumable one holds it; otherwise the first few MiB are fetched
    with a Range request and kept as the start of the partial file, so no byte is fetched twice.
    """
    import httpx

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
    with httpx.Client(follow_redirects=True, timeout=timeout, headers=headers or {}) as client:
        while True:
            wanted = min(length, remote.size)
            data = _fetch_range(client, remote, wanted, sleep)
            data = bytes(data[:wanted])
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
