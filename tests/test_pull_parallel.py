"""`localllm pull` over parallel ranged connections, against the local Hub stand-in (a real server process on
loopback) serving a 32 MiB GGUF-looking file: the start of the bundled model, cut into four 8 MiB pieces."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import cli_executable, run_cli
from helpers.hub_fixture import start_hub

from localllm.store.transfer import present

REPO = "test-owner/Parallel-GGUF"
FILE = "Parallel-Q4_1.gguf"
URI = f"hf://{REPO}/{FILE}"
NAME = FILE.removesuffix(".gguf").lower()
MIB = 1024 * 1024
SIZE = 32 * MIB
CONNECTIONS = 4


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, bundled_model):
    path = tmp_path_factory.mktemp("parallel") / FILE
    with bundled_model.open("rb") as source:
        path.write_bytes(source.read(SIZE))
    return path


@pytest.fixture
def hub(tmp_path, bundled_model, small_model):
    server = start_hub(tmp_path / "hub-root", bundled_model)
    server.add_file(REPO, FILE, small_model)
    yield server
    server.stop()


def installed(home):
    return home / "data" / "models" / NAME / FILE


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def downloads(hub):
    """The stand-in's GET requests for the file's bytes."""
    return [r for r in hub.stats()["requests"] if "/resolve/" in r["path"] and r["method"] == "GET"]


def pull(home, hub, *args):
    return run_cli("pull", URI, *args, home=home, env=hub.env())


def start_pull(home, hub, *args):
    env = {**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)}
    return subprocess.Popen([cli_executable(), "pull", URI, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(home, at_least):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and present(installed(home)) < at_least:
        time.sleep(0.02)
    assert present(installed(home)) >= at_least


def test_a_parallel_pull_writes_the_exact_file_over_several_connections(home, hub, small_model):
    hub.control(connection_rate=16_000_000)  # each 8 MiB piece takes half a second: every connection gets one
    done = pull(home, hub, "--connections", str(CONNECTIONS))
    assert done.returncode == 0, done.stderr_text
    assert sha256(installed(home)) == sha256(small_model) and "sha256 verified" in done.stderr_text
    assert json.loads(installed(home).with_name(FILE + ".manifest.json").read_text())["size"] == SIZE
    assert not list(installed(home).parent.glob("*.partial*"))
    ranged = downloads(hub)[1:]  # after the header, read before the download for the fit check
    assert len({r["client"] for r in ranged}) == CONNECTIONS
    assert all(r["range"] and r["range"].startswith("bytes=") and r["range"][6:].split("-")[1] for r in ranged)
    assert sum(r["bytes"] for r in downloads(hub)) == SIZE  # no byte fetched twice


def test_a_sigkill_mid_way_then_pull_resends_at_most_a_block_per_connection(home, hub, small_model):
    # 8 MB/s in all: the kill lands seconds before the end, however late a loaded machine schedules this test.
    hub.control(connection_rate=2_000_000)
    process = start_pull(home, hub, "--connections", str(CONNECTIONS))
    wait_for(home, 14 * MIB)
    process.send_signal(signal.SIGKILL)
    process.wait()
    have = present(installed(home))
    assert 14 * MIB <= have < SIZE and not installed(home).exists()
    assert len({r["client"] for r in downloads(hub)[1:]}) == CONNECTIONS  # every connection was mid-piece
    listed = json.loads(run_cli("downloads", "--json", home=home).stdout_text)
    assert listed[0]["have"] == have and listed[0]["size"] == SIZE and listed[0]["active"] is None

    hub.control()
    done = pull(home, hub, "--connections", str(CONNECTIONS))
    assert done.returncode == 0, done.stderr_text
    assert "resumed at" in done.stderr_text
    assert sha256(installed(home)) == sha256(small_model)
    resent = hub.stats()["bytes_served"] - SIZE
    assert 0 <= resent <= CONNECTIONS * MIB, f"{resent:,} bytes sent twice"


def test_ctrl_c_keeps_the_partial_download(home, hub):
    # 4 MB/s in all: the 26 MiB left take longer than a loaded machine needs to stop the pull.
    hub.control(connection_rate=1_000_000)
    process = start_pull(home, hub)
    wait_for(home, 6 * MIB)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert 6 * MIB <= present(installed(home)) < SIZE and not installed(home).exists()


def test_a_server_that_ignores_range_gets_one_connection(home, hub, small_model):
    hub.control(ignore_range=True)
    done = pull(home, hub)
    assert done.returncode == 0, done.stderr_text
    assert sha256(installed(home)) == sha256(small_model)
    header, whole = downloads(hub)  # the header for the fit check, then the whole file over one connection
    assert whole["bytes"] == SIZE


def test_a_corrupted_part_fails_the_sha256_and_installs_nothing(home, hub):
    hub.control(corrupt_from=20 * MIB)  # inside the third piece
    done = pull(home, hub, "--connections", str(CONNECTIONS))
    assert done.returncode == 1
    last = done.stderr_text.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sha256" in last and "nothing was installed" in last
    assert not installed(home).exists() and not list(installed(home).parent.glob("*.partial*"))


def test_a_file_that_changes_on_the_server_is_a_clear_error_and_keeps_the_partial(home, hub):
    hub.control(serve_size=SIZE - MIB)
    done = pull(home, hub)
    assert done.returncode == 1
    last = done.stderr_text.strip().splitlines()[-1]
    assert last.startswith("error: the file on the server is 32,505,856 bytes, not the 33,554,432"), last
    assert "Traceback" not in done.stderr_text
    have = present(installed(home))
    assert have >= 2 * MIB  # the header, kept

    hub.control(serve_size=MIB)  # now shorter than the first byte the resume asks for
    done = pull(home, hub)
    assert done.returncode == 1
    last = done.stderr_text.strip().splitlines()[-1]
    assert last.startswith(f"error: the server has no byte {have:,} (416)"), last
    assert present(installed(home)) == have and not installed(home).exists()


def test_a_partial_file_from_before_pieces_is_resumed_not_refetched(home, hub, small_model):
    """A partial download left by a version that wrote one stream: its bytes are the file's start."""
    target = installed(home)
    target.parent.mkdir(parents=True)
    with small_model.open("rb") as source:
        target.with_name(FILE + ".partial").write_bytes(source.read(5 * MIB))
    target.with_name(FILE + ".partial.json").write_text(json.dumps({
        "url": f"{hub.url}/{REPO}/resolve/main/{FILE}", "repo": REPO, "path": FILE, "revision": "main",
        "size": SIZE, "sha256": sha256(small_model), "started": "2025-01-01T00:00:00+00:00"}))
    assert present(target) == 5 * MIB
    done = pull(home, hub, "--connections", str(CONNECTIONS))
    assert done.returncode == 0, done.stderr_text
    assert "resumed at 5.00 MiB" in done.stderr_text and sha256(target) == sha256(small_model)
    assert hub.stats()["bytes_served"] == SIZE - 5 * MIB  # the header came from the partial file too


@pytest.mark.parametrize("value", ["0", "x", "33", "-2"])
def test_bad_connections_is_one_line(home, hub, value):
    done = pull(home, hub, f"--connections={value}")
    assert done.returncode == 2
    (line,) = done.stderr_text.strip().splitlines()
    assert line.startswith(f"error: --connections '{value}' is not a number") and " — hint: " in line
    assert downloads(hub) == []
