"""Kills and deletions that must not cost the user a file: `code gen --write F --force` killed with SIGKILL while
the answer streams leaves F as it was (the new file is written whole, then renamed, only once the answer is done);
`rm` of a model whose store entry is a link removes the link, never the file it points to outside the store; a
pull into a models folder that cannot be written is one clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli_executable, run_cli
from helpers.fake_http import tmpfs
from helpers.hub_fixture import FILE, REPO, start_hub

URI = f"hf://{REPO}/{FILE}"
NAME = FILE.removesuffix(".gguf").lower()


@pytest.mark.model
def test_a_kill_while_code_is_written_leaves_the_old_file(tmp_path: Path, shared_home: Path) -> None:
    target = tmp_path / "tool.py"
    target.write_text("print('the user wrote this')\n")
    env = {**os.environ, "LOCALLLM_HOME": str(shared_home)}
    process = subprocess.Popen([cli_executable(), "code", "gen", "--write", str(target), "--force", "--preset",
                                "creative", "-o", "max_tokens=2000", "a long Python module with twenty functions"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    started = time.monotonic()
    first = process.stdout.read(40)  # the answer streams: the kill lands mid-answer
    assert first and process.poll() is None, "the answer was still being written"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert time.monotonic() - started < 120
    assert target.read_text() == "print('the user wrote this')\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tool.py"]


@pytest.fixture
def pulled(tmp_path: Path, bundled_model: Path, home: Path) -> Path:
    hub = start_hub(tmp_path / "hub-root", bundled_model)
    try:
        assert run_cli("pull", URI, home=home, env=hub.env()).returncode == 0
    finally:
        hub.stop()
    return home / "data" / "models" / NAME / FILE


def test_rm_removes_a_link_in_the_store_never_what_it_points_to(pulled: Path, home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious.gguf"
    pulled.rename(outside)
    pulled.symlink_to(outside)
    done = run_cli("rm", NAME, "-y", home=home)
    assert done.returncode == 0, done.stderr_text
    assert not pulled.is_symlink() and outside.stat().st_size > 50_000_000


def test_a_pull_into_a_folder_that_cannot_be_written_is_one_clear_error(tmp_path: Path, bundled_model: Path,
                                                                        home: Path) -> None:
    models = home / "data" / "models"
    models.mkdir(parents=True)
    hub = start_hub(tmp_path / "hub-root", bundled_model)
    try:
        if os.geteuid() == 0:  # root writes through permissions: a read-only filesystem it is
            with tmpfs(models, "ro,size=64k"):
                done = run_cli("pull", URI, home=home, env=hub.env())
        else:
            models.chmod(0o555)
            done = run_cli("pull", URI, home=home, env=hub.env())
            models.chmod(0o755)
    finally:
        hub.stop()
    assert done.returncode == 1, done.stderr_text
    lines = done.stderr_text.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr_text, lines
    assert lines[-1].startswith(f"error: cannot write {models}"), lines
    assert "Read-only file system" in lines[-1] or "Permission denied" in lines[-1], lines


def test_a_gguf_dropped_into_the_models_folder_can_be_removed(home: Path, bundled_model: Path) -> None:
    dropped = home / "data" / "models" / "mine" / "mine.gguf"
    dropped.parent.mkdir(parents=True)
    dropped.symlink_to(bundled_model)  # as good as a copy here: rm removes the entry, and a link only as a link
    listed = run_cli("list", home=home)
    assert "mine" in listed.stdout_text
    done = run_cli("rm", "mine", "-y", home=home)
    assert done.returncode == 0, done.stderr_text
    assert not dropped.is_symlink() and bundled_model.exists()
