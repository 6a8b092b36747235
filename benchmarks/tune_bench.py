"""`localllm bench --tune` on a busy machine: generation with the tuned settings against the defaults.

    python benchmarks/tune_bench.py [--rounds 5] [--tokens 64]

One CPU-bound process competes for the cores throughout. `bench --tune` runs in a fresh LOCALLLM_HOME and writes its
[tuned] table there; then `localllm bench` runs, one process at a time, in that home (the tuned settings) and in a
second fresh home (the defaults: the planner's rule, which counts the cores other work keeps busy when the model
loads), alternating which goes first, round after round. The bar: tuned tg ÷ default tg ≥ 1.0, by the medians.

Where the tune kept the planner's rule for threads (the batch size does not change decoding, one token at a time),
the tuned and the default runs load by the very same rule: the ratio is then 1 by construction, and what the rounds
measure, the ratio between two identical setups, is printed as this machine's noise rather than taken for the bar.

``bench(record)`` is what benchmarks/run.py calls; ``record(name, value, bar, ok)`` is called once per bar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BAR = ">= 1.0"
NAME = "bench --tune on a busy machine: tuned tg / default tg"


def _localllm() -> str:
    found = shutil.which("localllm", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        sys.exit("localllm is not installed: pip install -e '.[dev]'")
    return found


def _run(args: list[str], home: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "LOCALLLM_THREADS"}
    done = subprocess.run([_localllm(), *args], capture_output=True, text=True, timeout=1800,
                          env={**env, "LOCALLLM_HOME": str(home)})
    if done.returncode != 0:
        raise RuntimeError(f"localllm {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _generation(home: Path, tokens: int) -> tuple[float, int]:
    """One `localllm bench` process: its tg median and the threads its plan chose."""
    (result,) = _run(["bench", "--json", "-p", "64", "-n", str(tokens), "-r", "3"], home)["results"]
    return result["tg_tokens_per_s"]["median"], result["threads"]


def bench(record: Callable[..., None], rounds: int = 5, tokens: int = 64) -> None:
    print(f"tune: `localllm bench --tune` beside one CPU-bound process, then tuned vs default tg{tokens} in "
          f"{rounds} interleaved rounds (one process each)", flush=True)
    with tempfile.TemporaryDirectory(prefix="localllm-tune-") as folder:
        tuned_home, default_home = Path(folder) / "tuned", Path(folder) / "default"
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)  # let it show in the load the planner sees
            _generation(default_home, 4)  # the first run in a home also runs llama.cpp's self-check: not timed
            tuned = _run(["bench", "--tune", "--json"], tuned_home)
            print(f"  tune: threads {tuned['threads']['why']}; batch {tuned['batch']['why']}")
            print(f"  tune's own rounds: tg medians {_medians(tuned['threads'])}; saved {tuned['saved']}")
            rates: dict[str, list[float]] = {"tuned": [], "default": []}
            threads: dict[str, set[int]] = {"tuned": set(), "default": set()}
            for index in range(rounds):
                order = (("tuned", tuned_home), ("default", default_home))
                for name, home in order if index % 2 == 0 else order[::-1]:
                    rate, used = _generation(home, tokens)
                    rates[name].append(rate)
                    threads[name].add(used)
        finally:
            competitor.kill()
            competitor.wait()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratio = medians["tuned"] / medians["default"]
    paired = statistics.median(t / d for t, d in zip(rates["tuned"], rates["default"], strict=True))
    for name in ("tuned", "default"):
        values = rates[name]
        print(f"  {name}: tg{tokens} median {medians[name]:.1f} tokens/s (min {min(values):.1f}, max "
              f"{max(values):.1f}), threads {sorted(threads[name])}")
    print(f"  measured: ratio of the medians {ratio:.3f}; median of the rounds' ratios {paired:.3f}")
    pinned = tuned["saved"]["threads"]
    if pinned is None:
        print("  the tune kept the planner's rule for threads: tuned and default runs load by the same rule, so "
              f"the ratio is 1 by construction; {ratio:.3f} is the noise between two identical setups here")
        ratio = 1.0
    else:
        print(f"  the tune pinned {pinned} threads")
    pairs = [t / d for t, d in zip(rates["tuned"], rates["default"], strict=True)]
    record(NAME, ratio, BAR, ratio >= 1.0, (min(pairs), max(pairs)), rounds)


def _medians(sweep: dict) -> str:
    return ", ".join(f"{key}: {value['median']:.1f}" for key, value in sweep["candidates"].items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    results: list[bool] = []

    def record(name: str, value: float, bar: str, ok: bool, *_: object) -> None:
        results.append(ok)
        print(f"  {name}: {value:.3f} (bar {bar}) {'PASS' if ok else 'FAIL'}", flush=True)

    bench(record, rounds=args.rounds, tokens=args.tokens)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
