"""Inputs whose message used to say something else than what happened (a traceback, "unexpected ...", the wrong
cause, a screenful): a config nested deeply enough to make the parser recurse, a CSV that starts with Excel's
byte-order mark, an API key no HTTP client could send, a tool name with a line break in it, a model name of 5 MB,
a seed over 64 bits and an infinite time-out, and a Unix socket where a file was expected. Each is one line that
names what is wrong (or, for the CSV, simply works)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from helpers.gguf_files import write_gguf

HOSTILE_MCP = Path(__file__).parents[1] / "helpers" / "hostile_mcp_server.py"


def one_error_line(done, *fragments: str) -> str:
    assert done.returncode in (1, 2), done.stdout_text + done.stderr_text  # 2: a usage error
    lines = done.stderr_text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr_text, \
        done.stderr_text[:2000]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_config_nested_too_deeply_is_one_error(home: Path) -> None:
    """config.toml and mcp.json nested 100,000 levels deep (a RecursionError traceback, "unexpected
    RecursionError")."""
    config = home / "config"
    config.mkdir(exist_ok=True)
    (config / "config.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_error_line(run_cli("list", home=home), "config.toml: its arrays or tables are nested too deeply to read")
    from localllm.core.errors import UsageError
    from localllm.tasks.tools.mcp_config import read_servers

    (config / "mcp.json").write_text('{"mcpServers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UsageError, match="mcp.json: its arrays or objects are nested too deeply to read"):
        read_servers(config / "mcp.json")


def test_a_csv_with_a_byte_order_mark_is_read_by_its_first_columns_name(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark, which became part of the first column's name."""
    from localllm.tasks.documents import read_document
    from localllm.tasks.rows import read_rows

    sheet = tmp_path / "reviews.csv"
    sheet.write_bytes("\ufeffreview,stars\r\nGreat product,5\r\nBroke in a day,1\r\n".encode())
    rows = list(read_rows(str(sheet), "review"))
    assert [row.text for row in rows] == ["Great product", "Broke in a day"]
    assert list(rows[0].record) == ["review", "stars"]
    assert read_document(str(sheet)).text.startswith("row 1: review=Great product; stars=5")


def test_an_api_key_no_client_could_send_is_refused_at_start(home: Path) -> None:
    """A key with an accent: serve took it (no client could ever send it); the OpenAI-compatible backend failed
    with "the server sent something that is not the expected JSON"."""
    one_error_line(run_cli("serve", "--port", "1", "--api-key", "clé", home=home),
                   "the key given with --api-key (or its environment variable) holds characters no HTTP client "
                   "can send")
    from localllm.core.errors import ConfigError
    from localllm.core.settings import Settings

    for key in ("clé", "line\nbreak"):
        with pytest.raises(ConfigError, match=r"the API key \(api_key, OPENAI_API_KEY or --api-key\) holds "):
            Settings.load({"LOCALLLM_HOME": str(home), "OPENAI_API_KEY": key})


def test_a_tool_name_with_a_line_break_is_one_line_of_the_listing(tmp_path: Path, home: Path) -> None:
    """An MCP server names its tool "ship\\nfake.tool  Pretends to be another tool" (and an escape sequence): the
    `tools` listing showed a tool that does not exist on a line of its own."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"odd": {"command": sys.executable,
                                                         "args": [str(HOSTILE_MCP), "odd-names"]}}}))
    done = run_cli("tools", "--mcp-config", str(config), home=home, timeout=120)
    assert done.returncode == 0, done.stderr_text
    tools = [line for line in done.stdout_text.splitlines() if line.startswith("  ")]
    assert tools == ["  odd.ship\\nfake.tool  Pretends to be another tool\\x1b[2J  Ship a parcel to a ZIP code"]
    assert "\x1b" not in done.stdout_text


def test_a_5_mb_model_name_is_shortened_in_show(tmp_path: Path, home: Path) -> None:
    """A GGUF whose general.name is 5 MB: `show` printed all of it, twice."""
    model = write_gguf(tmp_path / "long-name.gguf", name="N" * 5_000_000)
    done = run_cli("show", str(model), home=home)
    assert done.returncode == 0, done.stderr_text
    assert len(done.stdout_text) < 20_000 and "N" * 199 + "…" in done.stdout_text


def test_a_seed_over_64_bits_and_an_infinite_timeout_are_refused(home: Path) -> None:
    """A seed over 64 bits was wrapped without a word; `request_timeout = inf` ended in "unexpected OverflowError:
    timestamp out of range for platform time_t"."""
    from localllm.cli.arguments import _timeout
    from localllm.core.errors import ConfigError, UsageError
    from localllm.core.options import coerce_option
    from localllm.core.settings import Settings

    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(UsageError, match=f"option seed={seed} is out of range"):
            coerce_option("seed", str(seed))
    assert coerce_option("seed", str(2**63 - 1)) == 2**63 - 1
    with pytest.raises(UsageError, match="--timeout inf must be above zero and at most 86,400 seconds"):
        _timeout(float("inf"))
    for value in ("inf", "nan", "1e300"):
        with pytest.raises(ConfigError, match=f"at most 86,400 seconds \\(a day\\), got '{value}'"):
            Settings.load({"LOCALLLM_HOME": str(home), "LOCALLLM_REQUEST_TIMEOUT": value})
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text("request_timeout = inf\n")
    one_error_line(run_cli("list", home=home), "request_timeout must be above zero and at most 86,400 seconds (a "
                                               "day), got inf")


def test_a_unix_socket_given_as_a_file_is_named_as_a_socket(tmp_path: Path, home: Path) -> None:
    """`summarize` said "cannot read ...: No such device or address — check its permissions", `classify` said
    "no such file"."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        one_error_line(run_cli("summarize", str(path), home=home), f"{path} is a Unix socket, not a file")
        from localllm.tasks.documents import InputError
        from localllm.tasks.rows import read_rows

        with pytest.raises(InputError, match="is a Unix socket, not a file"):
            list(read_rows(str(path), "text"))
