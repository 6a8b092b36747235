"""The hardware report's types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Vendor = Literal["nvidia", "amd", "apple", "intel", "other"]


@dataclass(frozen=True)
class CPUInfo:
    model: str
    arch: str
    physical_cores: int
    logical_cores: int
    simd: tuple[str, ...]
    """Vector extensions that llama.cpp uses: AVX, AVX2, AVX-512, FMA, F16C, NEON, SVE..."""


@dataclass(frozen=True)
class GPUInfo:
    vendor: Vendor
    name: str
    total_bytes: int
    free_bytes: int
    index: int = 0
    driver: str | None = None
    compute_capability: str | None = None
    unified_memory: bool = False
    """Apple Silicon: GPU and CPU share RAM; ``free_bytes`` is the recommended working set, not all of RAM."""
    source: str = ""
    """Which probe found it: nvml, nvidia-smi, rocm-smi, sysfs, sysctl."""
    memory_bandwidth: int | None = None
    """Peak memory bandwidth in bytes/s as the driver reports it (NVML); None where no probe tells."""


@dataclass(frozen=True)
class LlamaCppBuild:
    installed: bool
    version: str | None = None
    gpu_offload: bool = False
    error: str | None = None
    features: tuple[str, ...] = ()
    """CPU features compiled in, as llama_print_system_info() names them (AVX2, AVX512, AMX_INT8, NEON...)."""


@dataclass(frozen=True)
class HardwareReport:
    os: str
    cpu: CPUInfo
    ram_total: int
    ram_available: int
    gpus: tuple[GPUInfo, ...] = ()
    llama_cpp: LlamaCppBuild = field(default_factory=lambda: LlamaCppBuild(installed=False))
    facts: tuple[str, ...] = ()
    """What the probes could not do (a missing tool, a time-out), stated rather than raised."""
    cpu_busy: float | None = None
    """Cores kept busy by other processes while the hardware was detected; None when the window was too short to
    tell. The planner leaves them to those processes."""

    @property
    def gpu_free(self) -> int:
        return sum(g.free_bytes for g in self.gpus)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified_memory for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["facts"] = list(self.facts)
        return data
