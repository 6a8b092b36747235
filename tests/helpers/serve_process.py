"""`localllm serve` as a real process on loopback for a test: started in a home of the test's, waited for until it
answers, stopped at the end."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from conftest import cli_executable

from helpers.backend_servers import free_port


@contextmanager
def serving(home: Path, *args: str, log_path: Path | None = None, startup_s: float = 120) -> Iterator[str]:
    """The server's URL while it runs with ``args``; its log (stdout and stderr) goes to ``log_path`` (default
    HOME/serve.log). Fails with the log if it ends or does not answer within ``startup_s``."""
    log_path = log_path or home / "serve.log"
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen([cli_executable(), "serve", "--port", str(port), *args], stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, "LOCALLLM_HOME": str(home)})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_s
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{url}/api/version", timeout=2).status_code in (200, 401):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"serve did not answer in {startup_s:g} s: " + log_path.read_text()
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
