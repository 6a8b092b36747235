"""Unbounded and crafted inputs: an endless input (/dev/zero) or one over the limit is refused without filling the
memory, and a row far over the window is refused by its length before it is tokenized; a crafted GGUF header that
claims absurd counts is refused at once, never walked for minutes; an MCP server that writes garbage on its stdout
is one message, and one that floods its stderr costs a bounded buffer, whose last lines are quoted when it fails; a
request body trickled into `serve` a byte a second is refused once the server has waited long enough."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
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


@pytest.mark.usefixtures("bundled_model")
def test_a_50_mb_row_is_refused_before_it_is_tokenized(tmp_path: Path, home: Path) -> None:
    """`classify` on a JSONL line of 50 MB (it took 117 s and 5.5 GB to be refused): the row fails by its length
    alone, and the batch's peak memory stays within a few times the input."""
    from helpers.measured import peak_memory_of

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "word " * 10_000_000}) + "\n")
    code, errors, peak = peak_memory_of(["classify", "--labels", "bug,feature", str(rows), "--field", "text"], home)
    assert code == 1, errors
    assert "row 1: the prompt has 50,000," in errors and "tokens with the answer: over the 8,192-token window" \
        in errors, errors
    assert peak < 1 << 30, f"classify peaked at {peak >> 20} MiB"


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


HOSTILE_MCP = Path(__file__).parents[1] / "helpers" / "hostile_mcp_server.py"


def mcp_config(folder: Path, **servers: str) -> Path:
    """An mcp.json whose servers run the hostile MCP server, each misbehaving as its value says."""
    path = folder / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {name: {"command": sys.executable, "args": [str(HOSTILE_MCP), how]}
                                               for name, how in servers.items()}}))
    return path


def test_an_mcp_servers_stdout_garbage_is_one_message_and_its_stderr_is_quoted(tmp_path: Path, home: Path) -> None:
    """A server that writes 20,000 lines that are not JSON-RPC (the SDK logged 22,000 lines of tracebacks for
    them) and one that writes 10,000 lines on its stderr before it exits: one line each in `tools`."""
    config = mcp_config(tmp_path, garbage="garbage", crash="crash")
    done = run_cli("tools", "--mcp-config", str(config), home=home, timeout=120)
    assert done.returncode == 1
    text = done.stdout_text + done.stderr_text
    assert "Traceback" not in text and len(text.splitlines()) < 10, text[:3000]
    garbage = next(line for line in text.splitlines() if line.startswith("garbage "))
    assert "not started: it wrote 51 lines that are not MCP (JSON-RPC) on its stdout, the first: " \
           "'not json-rpc, line 0'" in garbage
    crash = next(line for line in text.splitlines() if line.startswith("crash "))
    assert crash.endswith("the end of its stderr: warming up, step 9998 | warming up, step 9999 | fatal: the "
                          "database at /nowhere cannot be opened"), crash


def test_an_mcp_server_flooding_its_stderr_costs_a_bounded_buffer(tmp_path: Path) -> None:
    """A server that writes its stderr as fast as it can while it serves: the tool is still called, and no file
    of this process grows (the stderr went to a temporary file: 700 MB in 15 s)."""
    from localllm.core.tools import ToolCall
    from localllm.tasks.tools.mcp_config import read_servers
    from localllm.tasks.tools.mcp_servers import McpServers

    def open_file_bytes() -> int:
        total = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                found = os.stat(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if found.st_mode & 0o170000 == 0o100000:  # a regular file
                total += found.st_size
        return total

    before = open_file_bytes()
    with McpServers(read_servers(mcp_config(tmp_path, flood="stderr-flood")), start_timeout=60) as servers:
        [status] = servers.start()
        assert status.started, status.error
        time.sleep(1.5)
        result = servers.call(ToolCall("ship", {"zip": "90210"}, server="flood"))
        assert result.content == "shipped" and not result.is_error
        assert open_file_bytes() - before < 1 << 20


@pytest.mark.usefixtures("bundled_model")  # serve loads the default model as it starts
def test_a_request_body_trickled_into_serve_is_refused(home: Path) -> None:
    """A client that sends its body a byte a second gets a 408 in its API's shape once a window of 10 s has
    brought less than 10 KiB (it held its connection for as long as it liked), and the log has one line for it."""
    import socket
    from urllib.parse import urlsplit

    from helpers.serve_process import serving

    body = json.dumps({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi " * 100}]}).encode()
    with serving(home) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=1) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            answer, started = b"", time.monotonic()
            for byte in body:
                sock.sendall(bytes([byte]))
                try:
                    answer += sock.recv(4096)
                except TimeoutError:
                    continue
                if answer or time.monotonic() - started > 60:
                    break
            while answer:  # the rest of the answer, until the server closes the connection
                try:
                    more = sock.recv(4096)
                except TimeoutError:
                    break
                if not more:
                    break
                answer += more
        log = (home / "serve.log").read_text()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(payload)["error"]["message"] == "the request body arrived too slowly (under 10 KiB in 10 s)"
    assert len([line for line in log.splitlines() if "POST /v1/chat/completions 408" in line]) == 1, log
    assert "Traceback" not in log
