"""Build a HardwareReport. Every probe is bounded to PROBE_TIMEOUT_S and a failing probe becomes a stated fact."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import platform
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from localllm.hardware import cpu as cpu_probe
from localllm.hardware import gpus as gpu_probe
from localllm.hardware.report import CPUInfo, GPUInfo, HardwareReport, LlamaCppBuild

PROBE_TIMEOUT_S = 2.0
T = TypeVar("T")


def run_tool(args: list[str] | tuple[str, ...], facts: list[str]) -> str | None:
    """Run a probe command for at most PROBE_TIMEOUT_S; None (and a fact) if it is missing, slow or failing."""
    if shutil.which(args[0]) is None:
        facts.append(f"{args[0]} not found")
        return None
    # A little under the probe deadline, so the fact names the tool rather than the probe around it.
    limit = PROBE_TIMEOUT_S * 0.9
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        facts.append(f"{args[0]} did not answer within {limit:.1f} s")
        return None
    except OSError as exc:
        facts.append(f"{args[0]} could not run: {exc.strerror}")
        return None
    if done.returncode != 0:
        facts.append(f"{args[0]} exited with status {done.returncode}: {done.stderr.strip()[:120]}")
        return None
    return done.stdout


def bounded(fn: Callable[[], T], what: str, facts: list[str], limit: float = PROBE_TIMEOUT_S
            ) -> Callable[[], T | None]:
    """Start ``fn`` in a daemon thread now; the returned function waits for it until ``limit`` seconds from now.

    Daemon threads, not an executor: a driver call that hangs must not hold the process open at exit.
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # delivered to the waiting side below
            future.set_exception(exc)

    threading.Thread(target=target, name=f"probe: {what}", daemon=True).start()
    deadline = time.monotonic() + limit

    def result() -> T | None:
        try:
            return future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError:
            facts.append(f"{what} did not answer within {limit:g} s")
        except Exception as exc:  # a probe's failure is a fact about the machine, never a crash
            facts.append(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))
        return None

    return result


LLAMA_PROBE_TIMEOUT_S = 30.0
"""The llama-cpp-python probe imports the library in this process and asks it about its GPUs, which starts their
drivers: seconds on a busy machine or at a GPU's first use. Taking a slow answer for "not installed" chose another
backend for a model only llama.cpp could run."""


def probe_llama_cpp() -> LlamaCppBuild:
    try:
        import llama_cpp
    except ImportError as exc:
        return LlamaCppBuild(installed=False, error=str(exc))
    except OSError as exc:  # the shared library failed to load
        return LlamaCppBuild(installed=False, error=f"library failed to load: {exc}")
    from localllm.hardware.llama_build import compiled_features

    info = llama_cpp.llama_print_system_info()
    return LlamaCppBuild(
        installed=True,
        version=getattr(llama_cpp, "__version__", None),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        features=compiled_features(info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)),
    )


def probe_nvidia(facts: list[str]) -> list[GPUInfo]:
    try:
        return gpu_probe.nvidia_from_nvml()
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound, DriverNotLoaded, ... : fall back
        facts.append(f"NVML unavailable ({type(exc).__name__})")
    text = run_tool(gpu_probe.NVIDIA_SMI_ARGS, facts)
    return gpu_probe.parse_nvidia_smi(text) if text else []


def probe_amd(facts: list[str]) -> list[GPUInfo]:
    text = run_tool(gpu_probe.ROCM_SMI_ARGS, facts)
    if text:
        try:
            return gpu_probe.parse_rocm_smi(text)
        except (ValueError, TypeError) as exc:
            facts.append(f"rocm-smi printed unreadable JSON ({exc})")
    return gpu_probe.amd_from_sysfs()


MIN_BUSY_WINDOW_S = 0.15
"""Below this, /proc/stat's 10 ms ticks are too coarse to tell how many cores other processes keep busy. A detection
for a load (the llama-cpp-python probe included) lasts at least this long; its import takes most of it anyway."""


def cpu_time_sample() -> tuple[float, float, float]:
    """(now, CPU seconds all processes spent busy, CPU seconds this process spent), to compare with a later one."""
    import psutil

    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest and guest_nice are already counted in user and nice
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    own = os.times()
    return time.monotonic(), total - idle, own.user + own.system


def busy_cores(before: tuple[float, float, float], after: tuple[float, float, float]) -> float | None:
    """Cores other processes kept busy between two samples (this process's own work taken out)."""
    wall = after[0] - before[0]
    if wall < MIN_BUSY_WINDOW_S:
        return None
    others = (after[1] - before[1]) - (after[2] - before[2])
    return round(max(others, 0.0) / wall, 2)


def _sample_after(started: tuple[float, float, float], seconds: float) -> tuple[float, float, float]:
    remaining = started[0] + seconds - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    return cpu_time_sample()


def detect_hardware(*, include_llama_cpp: bool | str = True) -> HardwareReport:
    """``include_llama_cpp="if-gpu"`` probes the llama-cpp-python build only when a GPU is found: planning needs
    its GPU support then, and nothing else about it (model management skips the 0.2 s import otherwise)."""
    import psutil

    facts: list[str] = []
    started = cpu_time_sample()
    system = platform.system()
    arch = platform.machine().lower()
    memory = psutil.virtual_memory()

    def sysctl(keys: tuple[str, ...]) -> str | None:
        return run_tool(["sysctl", *keys], facts)

    cpu_result = bounded(lambda: cpu_probe.detect_cpu(sysctl), "CPU probe", facts)
    llama_result = bounded(probe_llama_cpp, "llama-cpp-python probe", facts, LLAMA_PROBE_TIMEOUT_S) \
        if include_llama_cpp is True else None
    if system == "Darwin":
        gpu_results = [bounded(lambda: gpu_probe.apple_from_sysctl(
            cpu_probe.parse_sysctl(sysctl(cpu_probe.SYSCTL_KEYS) or ""), arch), "sysctl", facts)]
    else:
        gpu_results = [bounded(lambda: probe_nvidia(facts), "NVIDIA probe", facts),
                       bounded(lambda: probe_amd(facts), "AMD probe", facts)]
    cpu = cpu_result() or CPUInfo("unknown", arch, os.cpu_count() or 1, os.cpu_count() or 1, ())
    found: list[GPUInfo] = []
    for result in gpu_results:
        found.extend(result() or [])
    if include_llama_cpp == "if-gpu" and found:
        llama_result = bounded(probe_llama_cpp, "llama-cpp-python probe", facts, LLAMA_PROBE_TIMEOUT_S)
    llama = llama_result() if llama_result else None
    if llama is None and llama_result is not None and importlib.util.find_spec("llama_cpp") is not None:
        # It is there, but did not say what it can do in time: installed, not "missing"
        llama = LlamaCppBuild(installed=True, error="the llama-cpp-python probe did not finish")

    # Unified memory: what Metal may use is also bounded by the RAM that is free right now.
    found = [g if not g.unified_memory else _cap_free(g, memory.available) for g in found]
    if not found:
        facts.append("no GPU found")
    return HardwareReport(
        os=f"{system} {platform.release()}",
        cpu=cpu,
        ram_total=memory.total,
        ram_available=memory.available,
        gpus=tuple(found),
        llama_cpp=llama or LlamaCppBuild(installed=False, error="not probed"),
        facts=tuple(facts),
        cpu_busy=busy_cores(started, _sample_after(started, MIN_BUSY_WINDOW_S if include_llama_cpp is True else 0)),
    )


def _cap_free(gpu: GPUInfo, ram_available: int) -> GPUInfo:
    return replace(gpu, free_bytes=min(gpu.free_bytes, ram_available))


def reinstall_hint(report: HardwareReport) -> str | None:
    """The pip command that rebuilds llama-cpp-python for the GPU found, when the installed build cannot use it."""
    if not report.gpus or (report.llama_cpp.installed and report.llama_cpp.gpu_offload):
        return None
    flag = {"nvidia": "-DGGML_CUDA=on", "apple": "-DGGML_METAL=on", "amd": "-DGGML_HIP=on"}.get(report.gpus[0].vendor)
    if flag is None:
        return None
    return f'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir llama-cpp-python'
