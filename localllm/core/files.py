"""Writing the user's files so that a failure (a full disk, a kill half-way) never destroys what was there."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from localllm.core.errors import LocalLLMError


def write_text_atomically(target: Path, text: str) -> None:
    """``text`` into ``target`` through a temporary file beside it, renamed over it once complete and on disk: the
    old file stays whole until the new one is."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
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
