"""What the installed llama-cpp-python build was compiled for, what this CPU offers, and how to rebuild it.

The build is identified without importing llama_cpp (its import loads the shared libraries, ~0.2 s): the package's
folder comes from its import spec and the version from its distribution metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
import re
from dataclasses import dataclass
from pathlib import Path

# /proc/cpuinfo flag → (the feature's name in llama_print_system_info(), the CMake option that compiles it in)
X86_FEATURES: dict[str, tuple[str, str]] = {
    "avx": ("AVX", "GGML_AVX"),
    "avx2": ("AVX2", "GGML_AVX2"),
    "fma": ("FMA", "GGML_FMA"),
    "f16c": ("F16C", "GGML_F16C"),
    "bmi2": ("BMI2", "GGML_BMI2"),
    "avx512f": ("AVX512", "GGML_AVX512"),
    "avx512vbmi": ("AVX512_VBMI", "GGML_AVX512_VBMI"),
    "avx512_vnni": ("AVX512_VNNI", "GGML_AVX512_VNNI"),
    "avx512_bf16": ("AVX512_BF16", "GGML_AVX512_BF16"),
    "avx_vnni": ("AVX_VNNI", "GGML_AVX_VNNI"),
    "amx_int8": ("AMX_INT8", "GGML_AMX_INT8"),
}
ARM_FEATURES: dict[str, tuple[str, str]] = {
    "asimd": ("NEON", ""),
    "asimddp": ("DOTPROD", ""),
    "i8mm": ("MATMUL_INT8", ""),
    "sve": ("SVE", ""),
    "sme": ("SME", ""),
}
# Compiled in by a native build on an AMX CPU, and the one that crashes there (see the self-check).
UNSAFE_FEATURES = ("AMX_INT8",)
PLAIN_REINSTALL = "pip install --no-cache-dir --force-reinstall llama-cpp-python"


def read_cpu_flags() -> tuple[str, ...]:
    """The CPU's raw feature flags (Linux: /proc/cpuinfo); empty where unreadable."""
    from localllm.hardware.cpu import proc_cpuinfo_flags

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return tuple(sorted(proc_cpuinfo_flags(handle.read())))
    except OSError:
        return ()


def cpu_features(flags: tuple[str, ...]) -> tuple[str, ...]:
    """This CPU's features under the names llama.cpp's system info uses, in its order."""
    table = {**X86_FEATURES, **ARM_FEATURES}
    return tuple(name for flag, (name, _) in table.items() if flag in flags)


# For simd_summary: each feature's short name beside the extension it extends (None: unsaid beside it, as every
# CPU with that extension has it), that extension, and its name alone.
SIMD_PARTS: dict[str, tuple[str, str | None, str]] = {
    "AVX": ("AVX2", None, "AVX"),
    "FMA": ("AVX2", None, "FMA"),
    "F16C": ("AVX2", None, "F16C"),
    "BMI2": ("AVX2", None, "BMI2"),
    "AVX2": ("AVX512", None, "AVX2"),
    "AVX_VNNI": ("AVX512_VNNI", None, "AVX-VNNI"),
    "AVX512_VBMI": ("AVX512", "VBMI", "AVX-512 VBMI"),
    "AVX512_VNNI": ("AVX512", "VNNI", "AVX-512 VNNI"),
    "AVX512_BF16": ("AVX512", "BF16", "AVX-512 BF16"),
    "AMX_INT8": ("", None, "AMX"),
    "AVX512": ("", None, "AVX-512"),
    "DOTPROD": ("NEON", "DOTPROD", "DOTPROD"),
    "MATMUL_INT8": ("NEON", "I8MM", "I8MM"),
}

SIMD_ORDER = ("AVX-512", "AVX2", "AVX", "AVX-VNNI", "AVX-512 VBMI", "AVX-512 VNNI", "AVX-512 BF16", "FMA", "F16C",
              "BMI2", "AMX", "NEON", "DOTPROD", "I8MM", "SVE", "SME")
"""The widest first; names it does not know come last, in their own order."""


def simd_summary(features: tuple[str, ...]) -> str:
    """What matters of a list of features (llama.cpp's names) for llama.cpp's speed, in a few words: each widest
    extension with its additions in brackets, and what comes with it left out (AVX and FMA with AVX2, AVX2 with
    AVX-512): ``AVX2``, ``AVX-512 (VBMI, VNNI, BF16), AMX``, ``NEON (DOTPROD, I8MM)``."""
    have = set(features)
    shown: dict[str, list[str]] = {}  # a feature named on its own → the additions in its brackets
    for name in features:
        extends, short, alone = SIMD_PARTS.get(name, ("", None, name))
        if extends in have:
            if short is not None:
                shown.setdefault(SIMD_PARTS.get(extends, ("", None, extends))[2], []).append(short)
        else:
            shown.setdefault(alone, [])
    names = sorted(shown, key=lambda alone: SIMD_ORDER.index(alone) if alone in SIMD_ORDER else len(SIMD_ORDER))
    return ", ".join(f"{name} ({', '.join(shown[name])})" if shown[name] else name for name in names)


def compiled_features(system_info: str) -> tuple[str, ...]:
    """The CPU features a build reports as compiled in: the ``NAME = 1`` pairs of llama_print_system_info()."""
    names = [name for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\d+)", system_info) if value != "0"]
    known = {name for name, _ in (*X86_FEATURES.values(), *ARM_FEATURES.values())}
    return tuple(dict.fromkeys(name for name in names if name in known))


def rebuild_command(flags: tuple[str, ...], version: str | None = None) -> str:
    """The pip command that rebuilds llama-cpp-python for this CPU (``version``: the same version again).

    On x86 the features are named one by one with the native build off: a native build turns on AMX where the CPU
    has it, and that is the code that dies (llama.cpp asks for AMX tile permission on the main thread only).
    """
    reinstall = PLAIN_REINSTALL + (f"=={version}" if version and version != "unknown" else "")
    options = [option for flag, (name, option) in X86_FEATURES.items()
               if flag in flags and name not in UNSAFE_FEATURES]
    if not options:
        return reinstall
    cmake = " ".join(["-DGGML_NATIVE=OFF", *(f"-D{option}=ON" for option in options)])
    return f'CMAKE_ARGS="{cmake}" {reinstall}'


@dataclass(frozen=True)
class BuildComparison:
    """The build's features against the CPU's: what it leaves unused (slower) and what the CPU lacks (unsafe)."""

    compiled: tuple[str, ...]
    cpu: tuple[str, ...]

    @property
    def unused(self) -> tuple[str, ...]:
        return tuple(name for name in self.cpu if name not in self.compiled and name not in UNSAFE_FEATURES)

    @property
    def missing_on_cpu(self) -> tuple[str, ...]:
        return tuple(name for name in self.compiled if name not in self.cpu)


@dataclass(frozen=True)
class BuildIdentity:
    """What a self-check verdict is valid for: this llama-cpp-python build on this CPU."""

    version: str
    library: str
    """The folder of the build's shared libraries."""
    digest: str
    """A hash of the version, every shared library's name, size and modification time, and the CPU's flags."""


def build_identity(flags: tuple[str, ...] | None = None) -> BuildIdentity | None:
    """None when llama-cpp-python is not installed."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return identity_of(version, folder, read_cpu_flags() if flags is None else flags)


def identity_of(version: str, folder: Path, flags: tuple[str, ...]) -> BuildIdentity:
    digest = hashlib.sha256(version.encode())
    try:
        libraries = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    except OSError:
        libraries = []
    for library in libraries:
        stat = library.stat()
        digest.update(f"\0{library.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(("\0cpu:" + platform.machine() + ":" + " ".join(flags)).encode())
    return BuildIdentity(version, str(folder), digest.hexdigest()[:32])
