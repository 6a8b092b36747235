"""Unbounded and crafted inputs: an endless input (/dev/zero) or one over the limit is refused without filling the
memory; a crafted GGUF header that claims absurd counts is refused at once, never walked for minutes."""

from __future__ import annotations

import io
import os
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import cli_executable, run_cli

from localllm.store.gguf_header import GGUFFormatError, parse_header
from localllm.tasks.documents import InputError, read_limited


def test_summarize_refuses_dev_zero_as_a_file_and_on_stdin(home: Path) -> None:
    done = run_cli("summarize", "/dev/zero", home=home, timeout=60)
    assert done.returncode == 1 and "/dev/zero" not in done.stdout_text
    assert "looks like a binary file" in done.stderr_text
    with open("/dev/zero", "rb") as zeros:
        piped = subprocess.run([cli_executable(), "summarize"], stdin=zeros, capture_output=True, timeout=60,
                               env={**os.environ, "LOCALLLM_HOME": str(home)})
    assert piped.returncode == 1 and b"looks like a binary file" in piped.stderr


def test_an_input_over_the_limit_is_refused_as_it_is_read() -> None:
    class Endless(io.RawIOBase):
        read_so_far = 0

        def read(self, size: int = -1) -> bytes:
            self.read_so_far += size
            return b"words " * (size // 6)

    endless = Endless()
    with pytest.raises(InputError, match="larger than 4 MiB"):
        read_limited(endless, "stdin", limit=4 << 20)
    assert endless.read_so_far < 8 << 20  # it stopped soon after the limit


def header(kv_count: int, tensor_count: int = 0, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body


def key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize("data, message", [
    (header(1 << 40), "metadata entries"),
    (header(0, tensor_count=1 << 40), "tensors"),
    (header(1, body=key("a") + struct.pack("<IIQ", 9, 8, 1 << 40)), "an array of"),
    (header(1, body=key("a") + struct.pack("<IQ", 8, 1 << 40)), "a string of"),
    (header(1, body=key("a") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 50), "nested more than"),
], ids=["kv-count", "tensor-count", "string-array", "string-length", "nesting"])
def test_crafted_counts_are_refused_at_once(data: bytes, message: str) -> None:
    with pytest.raises(GGUFFormatError, match=message):
        parse_header(data + b"\0" * 64)


def test_a_crafted_header_is_one_clear_error_from_show(tmp_path: Path, home: Path) -> None:
    crafted = tmp_path / "crafted.gguf"
    crafted.write_bytes(header(1, body=key("a") + struct.pack("<IIQ", 9, 8, 1 << 40)) + b"\0" * 1024)
    done = run_cli("show", str(crafted), home=home, timeout=60)
    assert done.returncode == 1
    assert done.stderr_text.startswith("error: ") and "an array of" in done.stderr_text
