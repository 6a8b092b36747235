"""`localllm serve` loading a second model beside the first and unloading it: the server's resident memory before
the second model, with both loaded, and after the second is unloaded (Ollama's keep_alive 0). Unloading ends the
model's use of memory: its weights are unmapped and its cache and compute buffers freed."""

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


def _settle(pid: int, seconds: float = 2.0) -> int:
    """The RSS once it stops moving (the allocator hands pages back a moment after a free)."""
    time.sleep(seconds)
    return _rss(pid)


def measure(model: Path) -> dict[str, int]:
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
            before = _settle(process.pid)
            httpx.post(f"{url}/v1/chat/completions", json={**ask, "model": "second"}, timeout=120)
            both = _settle(process.pid)
            httpx.post(f"{url}/api/generate", json={"model": "second", "keep_alive": 0}, timeout=120)
            for _ in range(100):  # the unload runs after the reply
                if len(httpx.get(f"{url}/api/ps", timeout=10).json()["models"]) == 1:
                    break
                time.sleep(0.1)
            after = _settle(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return {"before": before, "both": both, "after": after}
