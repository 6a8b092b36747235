"""CPU model, cores and SIMD flags from /proc/cpuinfo (Linux), sysctl (macOS) or the platform module."""

from __future__ import annotations

import platform

from localllm.hardware.report import CPUInfo

# /proc/cpuinfo flag → the name llama.cpp's build and users know
_X86_FLAGS = {
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "avx_vnni": "AVX-VNNI",
    "amx_tile": "AMX",
}
_ARM_FLAGS = {"asimd": "NEON", "neon": "NEON", "sve": "SVE", "sve2": "SVE2", "asimddp": "DOTPROD", "i8mm": "I8MM"}


def proc_cpuinfo_flags(text: str) -> set[str]:
    """The first processor's feature flags (x86: ``flags``, ARM: ``Features``) from the text of /proc/cpuinfo."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def parse_proc_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """Return the CPU model and its SIMD extensions from the text of /proc/cpuinfo."""
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "cpu model"):
            model = value.strip()
            break
    raw_flags = proc_cpuinfo_flags(text)
    table = {**_X86_FLAGS, **_ARM_FLAGS}
    simd = sorted({table[f] for f in raw_flags if f in table}, key=list(dict.fromkeys(table.values())).index)
    return model, tuple(simd)


def parse_sysctl(text: str) -> dict[str, str]:
    """Parse ``sysctl key key ...`` output (``key: value`` lines)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def cpu_from_sysctl(values: dict[str, str], arch: str) -> CPUInfo:
    arm = arch in ("arm64", "aarch64") or values.get("hw.optional.arm64") == "1"
    simd = ("NEON",) if arm else tuple(
        name for key, name in (("hw.optional.avx1_0", "AVX"), ("hw.optional.avx2_0", "AVX2"),
                               ("hw.optional.avx512f", "AVX-512")) if values.get(key) == "1"
    )
    return CPUInfo(
        model=values.get("machdep.cpu.brand_string", "unknown"),
        arch=arch,
        physical_cores=int(values.get("hw.physicalcpu", "0") or 0),
        logical_cores=int(values.get("hw.logicalcpu", "0") or 0),
        simd=simd,
    )


def detect_cpu(run_sysctl) -> CPUInfo:
    """``run_sysctl(keys)`` returns sysctl's text or None; injected so the macOS path is testable anywhere."""
    import psutil

    arch = platform.machine().lower()
    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    if platform.system() == "Darwin":
        text = run_sysctl(SYSCTL_KEYS)
        if text:
            info = cpu_from_sysctl(parse_sysctl(text), arch)
            return CPUInfo(info.model, arch, info.physical_cores or physical, info.logical_cores or logical, info.simd)
    model, simd = "", tuple[str, ...]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            model, simd = parse_proc_cpuinfo(handle.read())
    except OSError:
        pass
    return CPUInfo(model=model or platform.processor() or "unknown", arch=arch, physical_cores=physical,
                   logical_cores=logical, simd=simd)


SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.optional.arm64",
    "hw.optional.avx1_0",
    "hw.optional.avx2_0",
    "hw.optional.avx512f",
)
