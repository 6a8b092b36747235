"""Writing the user's files so that a failure (a full disk, a kill half-way) never destroys what was there."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from localllm.core.errors import LocalLLMError


def write_text_atomically(target: Path, text: str, *, private: bool = False) -> None:
    """``text`` into ``target`` through a temporary file beside it, renamed over it once complete and on disk: the
    old file stays whole until the new one is. The new file keeps the old one's permissions (a new one gets the
    user's umask, as any editor's would); ``private``: readable by the user alone (0600), for files that hold a
    key."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.chmod(temporary, 0o600 if private else _mode_for(target))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        kept = "; the file that was there is unchanged" if target.exists() else ""
        raise LocalLLMError(f"cannot write {target}: {exc.strerror or exc}{kept}",
                            hint="free some space or choose another folder, then try again") from None


def free_name(wanted: Path) -> Path:
    """``wanted``, or the first of ``name_2.ext``, ``name_3.ext``... beside it that does not exist: files the user
    already has are never written over."""
    candidate, number = wanted, 2
    while candidate.exists():
        candidate = wanted.with_name(f"{wanted.stem}_{number}{wanted.suffix}")
        number += 1
    return candidate


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux says it without changing it; os.umask() can only read it by setting it, for every thread at once
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
