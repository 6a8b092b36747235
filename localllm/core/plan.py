"""A load plan: how a model will run on this machine, and how much memory it will take."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Placement = Literal["gpu", "partial", "cpu", "none", "server"]


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    gpu: int
    """The part of the total that lands in GPU memory."""

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def cpu(self) -> int:
        return self.total - self.gpu


@dataclass(frozen=True)
class LoadPlan:
    backend: str
    n_ctx: int
    n_gpu_layers: int
    """Layers offloaded to the GPU; equal to ``n_layers`` + 1 when the output head is offloaded too."""
    n_layers: int
    n_threads: int
    memory: MemoryEstimate
    placement: Placement
    fits: bool
    ram_available: int
    gpu_available: int
    reasons: tuple[str, ...] = field(default_factory=tuple)
    suggestion: str | None = None

    @property
    def verdict(self) -> str:
        if not self.fits:
            return "will not fit"
        if self.placement == "server":
            return "runs on the server"
        if self.placement == "gpu":
            return "fits on GPU"
        if self.placement == "partial":
            return f"partial offload ({min(self.n_gpu_layers, self.n_layers)} of {self.n_layers} layers)"
        return "CPU only"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory"]["total"] = self.memory.total
        data["memory"]["cpu"] = self.memory.cpu
        data["verdict"] = self.verdict
        data["reasons"] = list(self.reasons)
        return data
