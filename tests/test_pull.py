"""`localllm pull` against the local Hub stand-in: a real HTTP server process on loopback that speaks the Hub's
routes (paths-info, model info, resolve with Range) and serves the real bundled GGUF."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from conftest import cli_executable, run_cli
from helpers.hub_fixture import FILE, REPO, start_hub, write_header_only_gguf

from localllm.store.transfer import present

URI = f"hf://{REPO}/{FILE}"
NAME = FILE.removesuffix(".gguf").lower()
SIZE_MIB = 1024 * 1024


@pytest.fixture
def hub(tmp_path, bundled_model):
    server = start_hub(tmp_path / "hub-root", bundled_model)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bundled_sha256(bundled_model):
    return hashlib.sha256(bundled_model.read_bytes()).hexdigest()


def installed_path(home):
    return home / "data" / "models" / NAME / FILE


def pull(home, hub, *args, env=None):
    return run_cli("pull", *args, home=home, env={**hub.env(), **(env or {})})


def resolve_requests(hub):
    return [r for r in hub.stats()["requests"] if "/resolve/" in r["path"]]


def kill_pull_part_way(home, hub, at_least: int):
    """Start a throttled pull, SIGKILL it once its partial file holds ``at_least`` bytes; return that file. Slow
    enough that the kill lands well before the end however late a loaded machine schedules this process."""
    hub.control(rate=10_000_000)
    env = {**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)}
    process = subprocess.Popen([cli_executable(), "pull", URI, "--connections", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = installed_path(home).with_name(FILE + ".partial")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and present(installed_path(home)) < at_least:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return partial


def test_full_pull_verifies_installs_and_answers(home, hub, bundled_sha256):
    done = pull(home, hub, URI)
    assert done.returncode == 0, done.stderr_text
    path = installed_path(home)
    assert done.stdout_text.strip() == str(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bundled_sha256
    manifest = json.loads(path.with_name(FILE + ".manifest.json").read_text())
    assert manifest["sha256"] == bundled_sha256 and manifest["source"] == URI and manifest["repo"] == REPO
    assert manifest["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert manifest["size"] == path.stat().st_size
    assert "will it fit? CPU only · est. ~" in done.stderr_text and "sha256 verified" in done.stderr_text
    assert not list(path.parent.glob("*.partial*"))
    answer = run_cli("run", "-m", NAME, "--preset", "precise", "-o", "max_tokens=6", "Hi", home=home)
    assert answer.returncode == 0 and answer.stdout_text.strip()
    listed = json.loads(run_cli("list", "--json", home=home).stdout_text)
    assert any(row["name"] == NAME and row["where"] == "localllm" for row in listed)
    assert run_cli("verify", home=home).returncode == 0
    again = pull(home, hub, URI)
    assert again.returncode == 0 and "already installed" in again.stderr_text


def test_catalog_name_without_quant_picks_one_and_says_why(home, hub, bundled_model):
    # The stand-in serves the bundled file's bytes under the catalog's Q8_0 name; the Hub reports the real size.
    hub.add_file("bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q8_0.gguf", bundled_model)
    done = pull(home, hub, "smollm2-135m")
    assert done.returncode == 0, done.stderr_text
    assert "Q8_0: the largest quant" in done.stderr_text
    listed = json.loads(run_cli("list", "--json", home=home).stdout_text)
    assert any(row["name"] == "smollm2-135m" and row["where"] == "localllm" for row in listed)


def test_sigkill_half_way_then_pull_resumes(home, hub, bundled_model, bundled_sha256):
    partial = kill_pull_part_way(home, hub, 40 * SIZE_MIB)
    have = present(installed_path(home))
    assert partial.stat().st_size == bundled_model.stat().st_size  # preallocated: each piece at its offset
    total = bundled_model.stat().st_size
    assert 40 * SIZE_MIB <= have < total
    listed = json.loads(run_cli("downloads", "--json", home=home).stdout_text)
    assert listed[0]["have"] == have and listed[0]["size"] == total and listed[0]["active"] is None
    hub.control()
    served_before = hub.stats()["bytes_served"]
    done = pull(home, hub, URI)
    assert done.returncode == 0, done.stderr_text
    assert hub.stats()["bytes_served"] - served_before <= (total - have) + SIZE_MIB
    assert "resumed at" in done.stderr_text
    assert hashlib.sha256(installed_path(home).read_bytes()).hexdigest() == bundled_sha256


def test_wrong_bytes_fail_verification_and_install_nothing(home, hub):
    hub.control(corrupt_from=8 * SIZE_MIB)
    done = pull(home, hub, URI)
    assert done.returncode == 1
    assert "sha256" in done.stderr_text and "nothing was installed" in done.stderr_text
    assert "partial download was discarded" in done.stderr_text
    assert not installed_path(home).exists()
    assert not list(installed_path(home).parent.glob("*.partial*"))


@pytest.mark.parametrize("faults, uri, fragment", [
    ({}, "hf://nobody/missing-GGUF/model.gguf", "was not found"),
    ({}, f"hf://{REPO}/absent.gguf", "has no file 'absent.gguf'"),
    ({"gated": [REPO]}, URI, "gated repository"),
    ({"tokens": {REPO: "s3cret"}}, URI, "HF_TOKEN"),
])
def test_hub_errors_are_one_clear_line(home, hub, faults, uri, fragment):
    hub.control(**faults)
    done = pull(home, hub, uri)
    assert done.returncode == 1
    lines = done.stderr_text.strip().splitlines()
    assert lines[-1].startswith("error: ") and fragment in lines[-1], done.stderr_text
    assert "Traceback" not in done.stderr_text
    assert not installed_path(home).exists()


def test_token_is_sent_and_never_printed(home, hub):
    hub.control(tokens={REPO: "s3cret"})
    done = pull(home, hub, URI, env={"HF_TOKEN": "s3cret"})
    assert done.returncode == 0, done.stderr_text
    assert "s3cret" not in done.stderr_text + done.stdout_text
    assert all(r["auth"] for r in resolve_requests(hub))


def test_server_errors_and_dropped_connections_are_retried(home, hub, bundled_sha256):
    hub.control(statuses=[500, 503], drop_after=20 * SIZE_MIB)
    done = pull(home, hub, URI)
    assert done.returncode == 0, done.stderr_text
    assert hashlib.sha256(installed_path(home).read_bytes()).hexdigest() == bundled_sha256
    ranges = [r["range"] for r in resolve_requests(hub)]
    assert len(ranges) >= 4 and any(r and not r.startswith("bytes=0-") for r in ranges)


def test_not_enough_disk_is_refused_before_the_first_byte(home, hub):
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("min_free_disk_mb = 100000000\n")
    done = pull(home, hub, URI)
    assert done.returncode == 1 and "not enough disk space" in done.stderr_text
    assert resolve_requests(hub) == []


def test_model_that_will_not_fit_is_refused_before_download(home, hub, tmp_path):
    huge = write_header_only_gguf(tmp_path / "huge" / "Huge-70B-F16.gguf")
    hub.add_file("test-owner/Huge-GGUF", huge.name, huge)
    done = pull(home, hub, f"hf://test-owner/Huge-GGUF/{huge.name}")
    assert done.returncode == 1, done.stderr_text
    assert "needs about" in done.stderr_text and "GiB free" in done.stderr_text and "--force" in done.stderr_text
    assert hub.stats()["bytes_served"] <= huge.stat().st_size
    assert not list((home / "data" / "models").rglob("*.partial"))


def test_two_pulls_at_once_give_one_good_file(home, hub, bundled_model, bundled_sha256):
    # About 15 s of download: the second pull starts once the first is writing, and still finds it writing however
    # long a loaded machine takes to start the CLI (a fixed sleep raced both).
    hub.control(rate=6_000_000)
    env = {**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)}
    first = subprocess.Popen([cli_executable(), "pull", URI], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while present(installed_path(home)) == 0 and first.poll() is None:
        assert time.monotonic() < deadline, "the first pull never started writing"
        time.sleep(0.05)
    second = subprocess.Popen([cli_executable(), "pull", URI], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert "is downloading this model; waiting" in outputs[1][1]
    assert "already installed" in outputs[1][1]
    assert hashlib.sha256(installed_path(home).read_bytes()).hexdigest() == bundled_sha256
    assert hub.stats()["bytes_served"] <= bundled_model.stat().st_size + SIZE_MIB


def test_max_rate_caps_bandwidth(home, hub, bundled_model):
    rate = 40_000_000
    started = time.monotonic()
    done = pull(home, hub, URI, "--max-rate", "40M")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr_text
    # a lower bound only: the cap must hold however fast or slow the machine is
    assert elapsed >= 0.8 * (bundled_model.stat().st_size - 2 * SIZE_MIB) / rate


def test_offline_mode_is_a_clear_error(home, hub):
    done = pull(home, hub, URI, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "HF_HUB_OFFLINE" in done.stderr_text


def test_downloads_clean_and_rm(home, hub):
    partial = kill_pull_part_way(home, hub, 10 * SIZE_MIB)
    shown = run_cli("downloads", home=home)
    assert FILE in shown.stdout_text and "paused" in shown.stdout_text
    cleaned = run_cli("downloads", "clean", home=home)
    assert cleaned.returncode == 0 and "removed the partial download" in cleaned.stderr_text
    assert not partial.exists()
    hub.control()
    assert pull(home, hub, URI).returncode == 0
    refused = run_cli("rm", NAME, home=home)
    assert refused.returncode == 2 and "pass -y" in refused.stderr_text and installed_path(home).exists()
    removed = run_cli("rm", NAME, "-y", home=home)
    assert removed.returncode == 0 and not installed_path(home).exists()
    package = run_cli("rm", "smollm2-135m", "-y", home=home)
    assert package.returncode == 1 and "pip uninstall" in package.stderr_text


def test_verify_detects_a_changed_file(home, hub):
    assert pull(home, hub, URI).returncode == 0
    path = installed_path(home)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    done = run_cli("verify", NAME, home=home)
    assert done.returncode == 1 and "mismatch" in done.stdout_text
