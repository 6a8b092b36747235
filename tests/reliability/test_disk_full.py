"""A full disk never destroys the user's file: `code gen --write F --force` writes beside F and renames only a
complete file over it (a real, tiny tmpfs fills up; the tests skip where mounting is not allowed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.fake_http import tmpfs

from localllm.core.errors import LocalLLMError
from localllm.core.files import write_text_atomically


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    with tmpfs(mount, "size=64k"):
        yield mount


def test_a_full_disk_leaves_the_old_file_whole(tiny_disk: Path) -> None:
    target = tiny_disk / "app.py"
    target.write_text("print('the user wrote this')\n" * 100)  # about 3 KB of the 64 KB
    before = target.read_bytes()
    with pytest.raises(LocalLLMError) as raised:
        write_text_atomically(target, "x = 1\n" * 20_000)  # 120 KB: more than the disk holds
    assert "No space left on device" in raised.value.message and "unchanged" in raised.value.message
    assert target.read_bytes() == before
    assert [p.name for p in tiny_disk.iterdir()] == ["app.py"]  # no temporary file left behind


def test_a_complete_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "app.py"
    write_text_atomically(target, "print('new')\n")
    write_text_atomically(target, "print('newer')\n")
    assert target.read_text() == "print('newer')\n"
    assert [p.name for p in target.parent.iterdir()] == ["app.py"]


def test_a_rewritten_file_keeps_its_permissions(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text("print('old')\n")
    script.chmod(0o755)
    write_text_atomically(script, "print('new')\n")
    assert script.stat().st_mode & 0o777 == 0o755 and script.read_text() == "print('new')\n"
