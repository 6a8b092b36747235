"""Starts the local Hub stand-in (tests/helpers/hub_standin.py) as a real server process on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STANDIN = Path(__file__).parent / "hub_standin.py"
REPO = "test-owner/SmolLM2-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class HubStandin:
    url: str
    root: Path
    process: subprocess.Popen

    def control(self, **faults) -> None:
        request = urllib.request.Request(f"{self.url}/_control", data=json.dumps(faults).encode(), method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(f"{self.url}/_stats", timeout=10).read())

    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def add_file(self, repo: str, name: str, source: Path) -> Path:
        path = self.root / repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(source)
        return path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_hub(root: Path, bundled_model: Path, *, connection_rate: int | None = None) -> HubStandin:
    """``connection_rate``: bytes a second for each connection, as a CDN caps one connection (None: no cap)."""
    (root / REPO).mkdir(parents=True, exist_ok=True)
    (root / REPO / FILE).symlink_to(bundled_model)
    command = [sys.executable, str(STANDIN), str(root)]
    if connection_rate:
        command += ["--connection-rate", str(connection_rate)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("PORT "), line
    return HubStandin(f"http://127.0.0.1:{int(line.split()[1])}", root, process)


def copy_model(bundled_model: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled_model, target)
    return target


def write_header_only_gguf(path: Path, *, layers: int = 80, embedding: int = 8192, ffn: int = 28672) -> Path:
    """A GGUF header that describes a 70B-sized llama model, without its tensor data: enough for the remote fit
    check, which reads only the header, to judge the model too large for this machine."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(embedding)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_vocab_size(128256)
    writer.add_file_type(1)
    for layer in range(layers):
        for name, shape in (("attn_q", (embedding, embedding)), ("ffn_up", (ffn, embedding)),
                            ("ffn_down", (embedding, ffn)), ("ffn_gate", (ffn, embedding))):
            count = shape[0] * shape[1]
            writer.add_tensor_info(f"blk.{layer}.{name}.weight", shape, np.dtype(np.float16), count * 2,
                                   raw_dtype=GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path
