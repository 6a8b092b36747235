"""The connections of one download: up to N threads, each with its own keep-alive HTTP connection (urllib3),
taking pieces in order and writing them into the partial file (the layout on disk is store/pieces.py's).

Every answer is checked before a byte of it is written: a 206 must start where it was asked to and name the size
the Hub reported; a 200 (the server ignores Range) is accepted only for the first request, and then one
connection reads the whole file from byte 0; a 416 or a changed size is an error that says so. Transient failures
(a dropped connection, 5xx, 408, 429, a timeout) are retried with growing pauses, from the last byte recorded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from localllm.core.errors import LocalLLMError
from localllm.store.hub import HubError, HubFile
from localllm.store.pieces import (
    BINARY,
    BLOCK,
    Hasher,
    PieceMap,
    ProgressCallback,
    RateLimiter,
    Stopped,
    TransferCancelled,
    TransferFailed,
    WriteError,
    write_at,
)

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
JOIN_GRACE = 10.0
"""Seconds to wait for the connections to put down their blocks after a stop, before leaving them be."""
FLUSH_EVERY = 64 * 1024 * 1024
"""Bytes written between two flushes to disk while the download runs, so the last fsync has little left to do."""


def http_failure(status: int, headers, url: str) -> LocalLLMError | None:
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


def pool_manager(url: str, timeout: float):
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


def open_url(manager, url: str, headers: dict[str, str]):
    return manager.urlopen("GET", url, headers=headers, preload_content=False, decode_content=False)


def content_range(value: str) -> tuple[int, int, int | None] | None:
    """``bytes 100-199/1000`` → (100, 199, 1000); the total is None when the server writes ``*``."""
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        if unit.lower() != "bytes":
            return None
        return int(first), int(last), None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def size_changed(now: int, expected: int) -> TransferFailed:
    return TransferFailed(f"the file on the server is {now:,} bytes, not the {expected:,} the Hub reported: it "
                          "changed during the download", hint="pull again: a changed file starts over")


class Fetch:
    """Fetches the bytes ``pieces`` lacks into ``partial`` over up to ``connections`` connections; ``run`` returns
    the sha256 of the whole file once it is complete and flushed to disk."""

    def __init__(self, partial: Path, pieces: PieceMap, remote: HubFile, *, headers: dict[str, str],
                 connections: int, max_rate: int | None, timeout: float, progress: ProgressCallback | None,
                 cancel: threading.Event | None, sleep: Callable[[float], None] | None) -> None:
        self.partial = partial
        self.pieces = pieces
        self.remote = remote
        self.size = remote.size
        self.headers = headers
        self.connections = connections
        self.limiter = RateLimiter(max_rate)
        self.timeout = timeout
        self.progress = progress
        self.cancel = cancel
        self.sleep = sleep
        self.lock = threading.Lock()
        self.hasher = Hasher(partial, pieces, self.lock)
        self.stop = threading.Event()
        self.probed = threading.Event()
        """Set once the first answer has said whether the server honours Range: the other connections wait."""
        self.whole = False
        """The server ignores Range: one connection reads the whole file."""
        self.claimed: set[int] = set()
        self.reading: set = set()
        """The responses being read, so that a stop can wake a connection blocked on a silent server."""
        self.error: BaseException | None = None
        self.present = pieces.present()
        self.transferred = 0
        self.fd = -1
        self.received = threading.Event()
        """Set when no connection is running any more: the flusher stops."""

    # -- the calling thread ----------------------------------------------------------------------------------------
    def run(self) -> str:
        import urllib3  # noqa: F401  (imported once here, not by each connection's thread at once)

        missing = [index for index in range(self.pieces.count) if not self.pieces.complete(index)]
        threads = [threading.Thread(target=self._connection, args=(number == 0,), name=f"download-{number}",
                                    daemon=True) for number in range(min(self.connections, len(missing)))]
        flusher = threading.Thread(target=self._flush, name="flush", daemon=True)
        self.fd = os.open(self.partial, os.O_WRONLY | BINARY)
        self.pieces.open()
        try:
            self.hasher.start()
            for thread in threads:
                thread.start()
            flusher.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)  # wakes for Ctrl-C, and for a cancel
                    if self._cancelled():
                        self._halt()  # connections blocked on a slow server wake now, not after their block
            self.received.set()
            if self.error is None and not self._cancelled():
                self._fsync()  # while the hash catches up with the last pieces
        except BaseException:
            self._halt()
            raise
        finally:
            self.received.set()
            self._halt_hasher_unless_done()
            if self._join([*threads, flusher]):  # a connection still writing keeps its descriptors
                os.close(self.fd)
                self.pieces.close()
        if self.error is not None:
            raise self.error
        if self._cancelled():
            raise TransferCancelled(f"the download was cancelled at {self.present:,} of {self.size:,} bytes",
                                    hint="pull it again to resume from there, or `localllm downloads clean` to "
                                    "drop it")
        if self.pieces.present() != self.size:
            raise TransferFailed(f"the download ended at {self.present:,} of {self.size:,} bytes",
                                 hint="run the same pull again: it resumes from here")
        try:
            return self.hasher.result()
        except OSError as exc:
            raise TransferFailed(f"cannot read {self.partial} back to hash it: {exc.strerror or exc}",
                                 hint="pull again to resume") from None

    def _flush(self) -> None:
        """Flush the file to disk every FLUSH_EVERY bytes while the connections run: the disk works alongside
        the network instead of after it."""
        flush = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
        flushed = self.present
        while not self.received.wait(0.1):
            if self.present - flushed >= FLUSH_EVERY:
                flushed = self.present
                try:
                    flush(self.fd)
                except OSError:
                    return  # the last fsync reports it

    def _fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise WriteError(self.partial, exc) from None

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _halt(self) -> None:
        self.stop.set()
        self.probed.set()
        self.hasher.abandon.set()
        self.hasher.progressed.set()
        with self.lock:
            reading = list(self.reading)
        for response in reading:
            try:
                response.shutdown()  # its read returns at once; the connection sees the stop and leaves
            except (ValueError, RuntimeError, OSError):
                pass

    def _halt_hasher_unless_done(self) -> None:
        if self.error is not None or self.stop.is_set():
            self._halt()

    def _join(self, threads: list[threading.Thread]) -> bool:
        deadline = time.monotonic() + JOIN_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    # -- each connection -------------------------------------------------------------------------------------------
    def _connection(self, probe: bool) -> None:
        manager = pool_manager(self.remote.url, self.timeout)
        try:
            if not probe:
                self.probed.wait()
            while not self.stop.is_set():
                job = self._claim(owner=probe)
                if job is None:
                    return
                try:
                    self._fetch(manager, *job)
                finally:
                    with self.lock:
                        self.claimed.difference_update(range(*job))
        except Stopped:
            pass
        except BaseException as exc:  # the first failure ends the download; the others stop after their block
            with self.lock:
                if self.error is None:
                    self.error = exc
            self._halt()
        finally:
            if probe:
                self.probed.set()
            manager.clear()

    def _claim(self, owner: bool) -> tuple[int, int] | None:
        """The next piece nobody holds that is not complete, in file order; a single connection (or the one
        reading a server that ignores Range) takes the whole run of empty pieces after it in one request."""
        with self.lock:
            if self.whole and not owner:
                return None
            first = next((index for index in range(self.pieces.count)
                          if index not in self.claimed and not self.pieces.complete(index)), None)
            if first is None:
                return None
            last = first + 1
            if self.connections == 1 or self.whole:
                while last < self.pieces.count and last not in self.claimed and self.pieces.done[last] == 0:
                    last += 1
            self.claimed.update(range(first, last))
            return first, last

    def _missing_from(self, first: int, last: int) -> int | None:
        """The first byte the pieces first..last-1 lack (the ones after it are empty: this connection holds them)."""
        for index in range(first, last):
            if not self.pieces.complete(index):
                return self.pieces.start(index) + self.pieces.done[index]
        return None

    def _fetch(self, manager, first: int, last: int) -> None:
        import urllib3

        failures = 0
        while True:
            start = self._missing_from(first, last)
            if start is None:
                return
            end = self.pieces.start(last - 1) + self.pieces.length(last - 1)
            response = None
            try:
                response = open_url(manager, self.remote.url, {**self.headers, "Range": f"bytes={start}-{end - 1}"})
                with self.lock:
                    self.reading.add(response)
                if self.stop.is_set():
                    raise Stopped
                offset, end = self._accept(response, start, end)
                self._receive(response, offset, end)
                with self.lock:
                    self.reading.discard(response)
                response.release_conn()  # read to its end: the connection serves the next piece
                response = None
                if self.whole:
                    first, last = 0, self.pieces.count
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if self.stop.is_set():
                    raise Stopped from None
                failures = 1 if self._missing_from(first, last) != start else failures + 1
                if failures > len(RETRY_DELAYS):
                    raise TransferFailed(f"the download stopped at {self.present:,} of {self.size:,} bytes: {exc}",
                                         hint="run the same pull again: it resumes from here") from None
                self._pause(RETRY_DELAYS[failures - 1])
            finally:
                if response is not None:
                    with self.lock:
                        self.reading.discard(response)
                    response.close()  # never return a half-read connection to the pool

    def _pause(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        elif self.stop.wait(seconds):
            raise Stopped

    def _accept(self, response, start: int, end: int) -> tuple[int, int]:
        """Where the answer's body goes in the file, (offset, end), or an error; the first 200 starts over."""
        import urllib3

        if response.status == 206:
            span = content_range(response.headers.get("content-range", ""))
            if span is None:
                raise urllib3.exceptions.ProtocolError("a 206 answer without a readable Content-Range")
            if span[2] is not None and span[2] != self.size:
                raise size_changed(span[2], self.size)
            if span[0] != start:
                raise urllib3.exceptions.ProtocolError(f"asked for byte {start:,}, got a range from {span[0]:,}")
            self.probed.set()
            return start, min(end, span[1] + 1)
        if response.status == 200:
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != self.size:
                raise size_changed(int(length), self.size)
            with self.lock:
                if self.probed.is_set() and not self.whole:
                    raise urllib3.exceptions.ProtocolError("the server stopped honouring Range requests part-way")
                self.whole = True  # the server ignores Range: the whole file from byte 0, over this connection
                self.pieces.reset()
                self.present = 0
            self.hasher.restart()
            self.probed.set()
            return 0, self.size
        if response.status == 416:
            raise TransferFailed(f"the server has no byte {start:,} (416): its copy of the file is shorter than "
                                 f"the {self.size:,} bytes the Hub reported",
                                 hint="pull again later; `localllm downloads clean` drops this partial download")
        failure = http_failure(response.status, response.headers, self.remote.url)
        if failure is not None:
            raise failure
        raise urllib3.exceptions.ProtocolError(f"HTTP {response.status}")

    def _receive(self, response, offset: int, end: int) -> None:
        import urllib3

        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        while offset < end:
            count = response.readinto(view[:min(BLOCK, end - offset)])
            if not count:
                raise urllib3.exceptions.ProtocolError("the server closed the connection before the end")
            if self.stop.is_set():
                raise Stopped
            write_at(self.fd, view[:count], offset, self.partial)
            self._record(offset, count)
            offset += count
            self.limiter.consumed(count)

    def _record(self, offset: int, count: int) -> None:
        """Count a block written; a cancel set meanwhile leaves it unrecorded (fetched again on resume)."""
        with self.lock:
            if self.stop.is_set() or self._cancelled():
                self.stop.set()
                raise Stopped
            self.pieces.add(offset, count)
            self.present += count
            self.transferred += count
            if self.progress is not None:
                self.progress(self.present, self.size)
        self.hasher.progressed.set()
