"""The shared part of the tests' fake HTTP servers (each fake says which real wire format it reproduces and why no
real server can play its part): JSON answers, no request log on stderr, a threaded server on a free loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The handler on a free loopback port; yields its OpenAI-style /v1 base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted on ``folder`` (``ro,size=64k``: read-only; ``size=64k``: a disk that fills up); the
    test skips where mounting is not allowed."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (made here) that nobody can write to: a read-only tmpfs for root, who ignores permissions, else
    mode 0555."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0:
        with tmpfs(folder, "ro,size=64k"):
            yield folder
        return
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
