"""The CLI run as a child whose peak memory is read back (wait4's rusage), under an address-space cap so that a
regression fails its test rather than taking the machine's memory."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from conftest import cli_executable


def peak_memory_of(args: list[str], home: Path, cap: int = 6 << 30) -> tuple[int, str, int]:
    """(exit status, stderr, peak resident memory in bytes) of `localllm ARGS`; stdout is dropped."""

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    process = subprocess.Popen([cli_executable(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, preexec_fn=capped,
                               env={**os.environ, "LOCALLLM_HOME": str(home)})
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, errors, usage.ru_maxrss * 1024
