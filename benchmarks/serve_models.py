"""`localllm serve` loading a second model beside the first and unloading it: the memory before the second model,
with both loaded, and after the second is unloaded (Ollama's keep_alive 0), read three ways: the machine's memory in
use (MemTotal - MemAvailable), serve's own resident memory, and serve's with its runners'. Each model runs in a
runner process of its own, so unloading it is ending that process: its memory goes back to the system. The machine's
memory in use moves with every other process on it too: the load and unload are repeated and the medians taken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_stream import _free_port


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def _tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its children (serve and its runners)."""
    import psutil

    process = psutil.Process(pid)
    total = int(process.memory_info().rss)
    for child in process.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return total


def _in_use() -> int:
    """The machine's memory in use: MemTotal - MemAvailable, from /proc/meminfo."""
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


def _settle(pid: int, seconds: float = 2.0) -> dict[str, int]:
    """The readings once they stop moving (a process ending, or the allocator handing pages back, takes a moment)."""
    time.sleep(seconds)
    return {"serve": _rss(pid), "tree": _tree_rss(pid), "machine": _in_use()}


def measure(model: Path, rounds: int = 3) -> dict[str, dict[str, list[int]]]:
    """For each reading (serve, tree, machine) and each moment (before, both, after): one value per round."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="localllm-bench-models-") as work:
        root = Path(work)
        (root / "home" / "config").mkdir(parents=True)
        (root / "models").mkdir()
        shutil.copyfile(model, root / "models" / "second.gguf")  # a second model: another file, its own pages
        (root / "home" / "config" / "config.toml").write_text(f'model_dirs = ["{root / "models"}"]\n')
        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "localllm", "serve", "-m", str(model), "--port", str(port),
                                    "-o", "ctx=2048", "--keep-alive", "-1"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "LOCALLLM_HOME": str(root / "home")})
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(1200):
                try:
                    httpx.get(f"{url}/api/version", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            ask = {"max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": "Name a colour."}]}
            httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=120)  # the first model, warm
            readings: dict[str, dict[str, list[int]]] = {kind: {"before": [], "both": [], "after": []}
                                                         for kind in ("serve", "tree", "machine")}

            def read(moment: str) -> None:
                for kind, value in _settle(process.pid).items():
                    readings[kind][moment].append(value)

            for _ in range(rounds):
                read("before")
                httpx.post(f"{url}/v1/chat/completions", json={**ask, "model": "second"}, timeout=120)
                read("both")
                httpx.post(f"{url}/api/generate", json={"model": "second", "keep_alive": 0}, timeout=120)
                for _ in range(100):  # the unload runs after the reply
                    if len(httpx.get(f"{url}/api/ps", timeout=10).json()["models"]) == 1:
                        break
                    time.sleep(0.1)
                read("after")
        finally:
            process.terminate()
            process.wait(timeout=30)
    return readings
