"""What the machine itself can do: its memory bandwidth (a copy test), a process's peak memory, and the summary of
the machine that `localllm hw` reports, to print beside every benchmark."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm.hardware.report import HardwareReport

MIB = 1024 * 1024
COPY_BYTES = 256 * MIB
"""Bytes each copy moves: far beyond any CPU cache, so the copy runs at the speed of memory."""
COPY_TRIES = 4


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float
    """The best of the tries: bytes read plus bytes written, per second (as STREAM's Copy counts)."""
    copied: int
    """Bytes in each copy."""
    threads: int
    """How many threads copied at the best (one, or one per physical core)."""

    def to_dict(self) -> dict[str, Any]:
        return {"bytes_per_s": round(self.bytes_per_s), "gb_per_s": round(self.bytes_per_s / 1e9, 2),
                "copied_bytes": self.copied, "threads": self.threads,
                "method": "numpy copy, best of a few tries, read + write bytes counted"}


def memory_bandwidth(report: HardwareReport, *, size: int = COPY_BYTES, tries: int = COPY_TRIES) -> Bandwidth:
    """RAM bandwidth by a copy far larger than the caches: once on one thread and once split over the physical
    cores (numpy lets go of the GIL while it copies), the best try of either. About a second, and twice ``size``
    of memory while it runs (less where little is free)."""
    import numpy as np

    size = max(min(size, report.ram_available // 8), 16 * MIB)
    source = np.ones(size // 8, dtype=np.float64)
    target = np.zeros_like(source)  # both written once, so no page is first touched inside the timing
    best: tuple[float, int] | None = None
    cores = max(report.cpu.physical_cores or 1, 1)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=cores) as pool:
        for threads in dict.fromkeys((1, cores)):
            bounds = [len(source) * i // threads for i in range(threads + 1)]
            parts = [(target[a:b], source[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
            for _ in range(tries):
                started = time.perf_counter()
                if threads == 1:
                    np.copyto(target, source)
                else:
                    list(pool.map(lambda pair: np.copyto(*pair), parts))
                seconds = time.perf_counter() - started
                if best is None or seconds < best[0]:
                    best = (seconds, threads)
    assert best is not None
    copied = source.nbytes
    del source, target
    return Bandwidth(bytes_per_s=2 * copied / best[0], copied=copied, threads=best[1])


STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """This process's peak resident memory while the block runs. On Linux the kernel's own high-water mark is reset
    at the start (``5`` into /proc/self/clear_refs) and read at the end; elsewhere the resident size is sampled
    every 10 ms. ``baseline``: what was resident at the start (the interpreter and its libraries)."""

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0
        self._kernel = False
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        import psutil

        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._kernel = _reset_high_water_mark()
        if not self._kernel:
            self._sampler = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        rss = self._process.memory_info().rss
        high = _high_water_mark() if self._kernel else None
        self.peak = max(self.peak, rss, high or 0)


def _reset_high_water_mark() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _high_water_mark() is not None


def _high_water_mark() -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_summary(report: HardwareReport) -> dict[str, Any]:
    """The machine as `localllm hw` describes it, in brief."""
    cpu = report.cpu
    return {
        "os": report.os, "cpu": cpu.model, "arch": cpu.arch, "physical_cores": cpu.physical_cores,
        "logical_cores": cpu.logical_cores, "simd": list(cpu.simd), "ram_total_bytes": report.ram_total,
        "ram_available_bytes": report.ram_available,
        "gpus": [{"name": gpu.name, "vendor": gpu.vendor, "total_bytes": gpu.total_bytes,
                  "memory_bandwidth_bytes_per_s": gpu.memory_bandwidth} for gpu in report.gpus],
        "llama_cpp": report.llama_cpp.version if report.llama_cpp.installed else None,
        "llama_cpp_gpu_offload": report.llama_cpp.gpu_offload,
        "cpu_busy": report.cpu_busy,
    }


def machine_line(report: HardwareReport) -> str:
    """One line for people: ``AMD EPYC (x86_64), 2 cores (2 logical), 23.5 GiB RAM, no GPU, llama.cpp 0.3.36``."""
    from localllm.core.units import human_size

    cpu = report.cpu
    parts = [f"{cpu.model} ({cpu.arch})", f"{cpu.physical_cores} cores ({cpu.logical_cores} logical)",
             f"{human_size(report.ram_total)} RAM"]
    parts.append(", ".join(gpu.name for gpu in report.gpus) if report.gpus else "no GPU")
    if report.llama_cpp.installed:
        parts.append(f"llama-cpp-python {report.llama_cpp.version}"
                     + (" (GPU offload)" if report.llama_cpp.gpu_offload else ""))
    if report.cpu_busy is not None and report.cpu_busy >= 0.5:
        parts.append(f"about {report.cpu_busy:.1f} cores busy with other work")
    return ", ".join(parts)
