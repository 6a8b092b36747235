"""A local Hub stand-in: a real HTTP server on loopback that speaks the Hugging Face Hub routes localllm uses.

    python tests/helpers/hub_standin.py ROOT [PORT] [--connection-rate BYTES_PER_S]
        serves ROOT/<owner>/<repo>/<file>; prints "PORT <n>" when ready. --connection-rate (or
        HUB_STANDIN_CONNECTION_RATE) caps each connection at that many bytes a second, as a CDN caps one
        connection: more connections get more.

Routes, in the Hub's wire format:
  POST /api/models/<owner>/<repo>/paths-info/<revision>   (form: paths=...)  → [{type, path, size, oid, lfs}]
  GET  /api/models/<owner>/<repo>[/revision/<revision>]                      → {id, sha, siblings}
  GET|HEAD /<owner>/<repo>/resolve/<revision>/<file>   with Range requests, ETag / X-Linked-Etag, X-Repo-Commit,
                                                       X-Linked-Size; errors carry X-Error-Code like the Hub's.
Test controls (not part of the Hub): POST /_control with a JSON body of faults (rate: the link's bytes a second,
all connections together; connection_rate: each connection's, in place of --connection-rate; ignore_range;
statuses; drop_after; corrupt_from; serve_size: answer as if the file had that many bytes; gated; tokens);
GET /_stats: bytes_served, and each request with its Range, the client's port (one per connection) and the body
bytes it was sent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class State:
    def __init__(self, root: Path, connection_rate: int | None = None) -> None:
        self.root = root
        self.connection_rate = connection_rate
        """Bytes a second for each connection; a ``connection_rate`` fault overrides it (0: no cap)."""
        self.link_free_at = 0.0
        self.lock = threading.Lock()
        self.hashes: dict[Path, tuple[str, str]] = {}
        self.faults: dict = {}
        self.bytes_served = 0
        self.requests: list[dict] = []

    def digests(self, path: Path) -> tuple[str, str]:
        """(sha256, git blob sha1) of a file, computed once."""
        with self.lock:
            if path not in self.hashes:
                data = path.read_bytes()
                sha256 = hashlib.sha256(data).hexdigest()
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                self.hashes[path] = (sha256, blob)
            return self.hashes[path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real servers and CDNs: no 40 ms wait for a delayed ACK after the headers
    state: State

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- helpers ---------------------------------------------------------------------------------------------------
    def send_json(self, status: int, data, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hub_error(self, status: int, code: str, message: str) -> None:
        self.send_json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def repo_gate(self, repo: str) -> bool:
        """Apply the repo-level faults; True when a response was sent."""
        faults = self.state.faults
        if repo in faults.get("gated", []):
            self.hub_error(403, "GatedRepo", "Access to model is restricted")
            return True
        token = faults.get("tokens", {}).get(repo)
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.hub_error(401, "RepoNotFound", "Invalid username or password.")
            return True
        if not (self.state.root / repo).is_dir():
            self.hub_error(404, "RepoNotFound", "Repository not found")
            return True
        return False

    def record(self) -> None:
        self.entry: dict[str, Any] = {
            "method": self.command, "path": self.path, "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization") is not None, "client": self.client_address[1], "bytes": 0}
        with self.state.lock:
            self.state.requests.append(self.entry)

    def count(self, sent: int) -> None:
        with self.state.lock:
            self.state.bytes_served += sent
            self.entry["bytes"] += sent

    # -- routes ----------------------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self.record()
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path == "/_control":
            self.state.faults = json.loads(body or b"{}")
            self.send_json(200, {"ok": True})
            return
        parts = unquote(self.path).split("/")
        # /api/models/<owner>/<repo>/paths-info/<revision>
        if len(parts) >= 7 and parts[1:3] == ["api", "models"] and parts[5] == "paths-info":
            repo = "/".join(parts[3:5])
            if self.repo_gate(repo):
                return
            form = parse_qs(body.decode())
            found = []
            for wanted in form.get("paths", []):
                file = self.state.root / repo / wanted
                if file.is_file():
                    sha256, blob = self.state.digests(file)
                    size = file.stat().st_size
                    found.append({"type": "file", "oid": blob, "size": size, "path": wanted,
                                  "lfs": {"oid": sha256, "size": size, "pointerSize": 135}})
            self.send_json(200, found)
            return
        self.hub_error(404, "EntryNotFound", "no such route")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self.record()
        path = unquote(self.path.split("?")[0])
        if path == "/_stats":
            self.send_json(200, {"bytes_served": self.state.bytes_served, "requests": self.state.requests})
            return
        parts = path.split("/")
        if len(parts) >= 5 and parts[1:3] == ["api", "models"]:
            repo = "/".join(parts[3:5])
            if self.repo_gate(repo):
                return
            files = sorted(p for p in (self.state.root / repo).rglob("*") if p.is_file())
            siblings = [{"rfilename": str(p.relative_to(self.state.root / repo))} for p in files]
            self.send_json(200, {"_id": repo, "id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                 "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                                 "siblings": siblings})
            return
        if len(parts) >= 6 and parts[3] == "resolve":
            self.serve_file("/".join(parts[1:3]), "/".join(parts[5:]))
            return
        self.hub_error(404, "EntryNotFound", "no such route")

    def serve_file(self, repo: str, name: str) -> None:
        faults = self.state.faults
        statuses = faults.get("statuses", [])
        if statuses:
            status = statuses.pop(0)
            self.send_json(status, {"error": f"injected {status}"})
            return
        if self.repo_gate(repo):
            return
        file = self.state.root / repo / name
        if not file.is_file():
            self.hub_error(404, "EntryNotFound", f"{name} does not exist")
            return
        sha256, _ = self.state.digests(file)
        size = min(file.stat().st_size, faults.get("serve_size", file.stat().st_size))  # a file that changed
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and not faults.get("ignore_range"):
            first, _, last = wanted[6:].partition("-")
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("X-Repo-Commit", COMMIT)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        drop_after = faults.pop("drop_after", None)
        rate = faults.get("rate")
        connection_rate = faults.get("connection_rate", self.state.connection_rate)
        sent = 0
        with file.open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                block = handle.read(min(64 * 1024, remaining))
                corrupt_from = faults.get("corrupt_from")
                if corrupt_from is not None and start + sent >= corrupt_from:
                    block = bytes(b ^ 0xFF for b in block[:16]) + block[16:]
                if drop_after is not None and sent + len(block) > drop_after:
                    block = block[: max(drop_after - sent, 0)]
                    self.wfile.write(block)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    self.count(len(block))
                    return
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(block)
                remaining -= len(block)
                self.count(len(block))
                if connection_rate:
                    self.pace(len(block), connection_rate)
                if rate:
                    self.pace_link(len(block), rate)

    def pace(self, sent: int, rate: int) -> None:
        """Hold this connection (one handler serves every request on it) to ``rate`` bytes a second, with no credit
        for the time it spent idle between requests."""
        now = time.monotonic()
        self.free_at = max(getattr(self, "free_at", now), now - 0.05) + sent / rate
        if self.free_at > now:
            time.sleep(self.free_at - now)

    def pace_link(self, sent: int, rate: int) -> None:
        """Hold all connections together to ``rate`` bytes a second, as one link of that speed would."""
        with self.state.lock:
            now = time.monotonic()
            self.state.link_free_at = max(self.state.link_free_at, now - 0.05) + sent / rate
            wait = self.state.link_free_at - now
        if wait > 0:
            time.sleep(wait)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # parallel downloads open several connections at once

    def handle_error(self, request, client_address) -> None:
        """A client that went away (killed mid-download, its idle keep-alive connections reset) is not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a local Hugging Face Hub stand-in")
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--connection-rate", type=int,
                        default=int(os.environ.get("HUB_STANDIN_CONNECTION_RATE") or 0),
                        help="bytes a second for each connection (default: HUB_STANDIN_CONNECTION_RATE, or no cap)")
    args = parser.parse_args(argv)
    Handler.state = State(args.root, args.connection_rate or None)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
