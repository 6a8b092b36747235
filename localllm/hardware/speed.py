"""An estimate of decode speed: how many tokens a second an answer is written at, before anything is loaded.

Writing one token reads every weight once, so decoding is bound by how fast memory is read: tokens/s ≈ bytes/s ÷
bytes read per token. The bytes per token are the weights (the part on the GPU read at the GPU's rate, the rest at
the CPU's); the KV cache read grows as the context fills, so the estimate holds for a short conversation and the
speed drops as the window fills. Counting the whole token-embedding table, of which a token reads one row, errs on
the slow side too.

Nothing here is measured at run time: a read-bandwidth benchmark would cost every start time (or a cache of a
number that changes with what else runs), and the raw bandwidth is not what llama.cpp reaches on a few cores anyway,
where dequantising is the bound. The rates are what llama.cpp was measured to reach, so that the estimate is near
what `run -v` then measures rather than a floor under it:

- CPU: ``CPU_BYTES_ONE_THREAD_S`` for one llama.cpp thread, times ``threads ** THREAD_SCALING`` for more (the
  threads wait for each other at every step, so each one adds less), up to the ceiling of the memory kind.
  llama-cpp-python 0.3.36 decoded the bundled 96.6 MB of weights on a 2-core EPYC VM, idle (`localllm run -v -o
  threads=T --preset precise -o max_tokens=128 "Write a long story about a dragon."`, 2026-12-07, three runs each,
  interleaved): 46.9 tokens/s (41.8-48.4) on one thread, 4.5 GB/s; 61.0 (45.5-67.1) on two, 1.3 times one. The
  estimate says 47 and 71. (The 0.3.9 build of docs/llama-cpp.md's "Threads" table read 3.1 GB/s on one.)
- Memory kind: the module's type is not readable without root (dmidecode), so a PC's RAM counts as dual-channel
  DDR4-3200 (51.2 GB/s peak) of which llama.cpp reaches about half, ``DDR_BYTES_S``; a server with more channels is
  faster than this says. Apple Silicon's unified memory counts as the slowest M-series chip's (M1, 68 GB/s) at the
  same share of its peak as a GPU reaches, ``UNIFIED_BYTES_S``.
- GPU: the peak the driver reports (NVML: bus width × memory clock) times ``GPU_EFFICIENCY``, the share of peak
  llama.cpp's decode kernels reach; Apple's GPU reads the same unified memory. A GPU whose bandwidth is unknown
  (rocm-smi, sysfs, nvidia-smi without NVML) gets no estimate rather than a guess.
"""

from __future__ import annotations

from localllm.hardware.report import HardwareReport

GB = 10**9
CPU_BYTES_ONE_THREAD_S = 4.5 * GB
THREAD_SCALING = 0.6
DDR_BYTES_S = 25 * GB
GPU_EFFICIENCY = 0.6
UNIFIED_BYTES_S = 68 * GB * GPU_EFFICIENCY


def is_apple_silicon(report: HardwareReport) -> bool:
    return report.unified_memory or report.cpu.model.startswith("Apple M")


def cpu_rate(report: HardwareReport, threads: int) -> float:
    """Bytes a second llama.cpp's CPU threads read weights at, by this module's rule."""
    ceiling = UNIFIED_BYTES_S if is_apple_silicon(report) else DDR_BYTES_S
    return min(max(threads, 1) ** THREAD_SCALING * CPU_BYTES_ONE_THREAD_S, ceiling)


def gpu_rate(report: HardwareReport) -> float | None:
    """Bytes a second the slowest GPU reads weights at (layers are spread over them and run one after another);
    None when one of them does not report its bandwidth."""
    rates = []
    for gpu in report.gpus:
        if gpu.unified_memory:
            rates.append(UNIFIED_BYTES_S)
        elif gpu.memory_bandwidth:
            rates.append(gpu.memory_bandwidth * GPU_EFFICIENCY)
        else:
            return None
    return min(rates) if rates else None


READING_TOKENS_S = 8.0
"""About how fast people read (250-300 words a minute, some 6-7 tokens a second), with a little room: an answer
written slower than this makes its reader wait for every line."""


def decode_tokens_per_s(report: HardwareReport, *, cpu_bytes: int, gpu_bytes: int, threads: int) -> float | None:
    """Tokens a second when each token reads ``cpu_bytes`` of weights in RAM and ``gpu_bytes`` in GPU memory."""
    seconds = cpu_bytes / cpu_rate(report, threads)
    if gpu_bytes:
        rate = gpu_rate(report)
        if rate is None:
            return None
        seconds += gpu_bytes / rate
    return 1 / seconds if seconds > 0 else None
