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
    n_batch: int | None = None
    """Tokens evaluated per batch while reading a prompt (llama.cpp's n_batch); None: the backend's default."""
    decode_tokens_per_s: float | None = None
    """An estimate of the answer's speed from memory bandwidth (see localllm.hardware.speed), never a measurement;
    None where there is no ground for one (a server, a GPU whose bandwidth is not known)."""

    @property
    def speed(self) -> str | None:
        """``~12 tokens/s``, rounded as far as an estimate deserves; None when there is none or it will not run."""
        if self.decode_tokens_per_s is None or not self.fits:
            return None
        text = rounded_rate(self.decode_tokens_per_s)
        unit = "token/s" if text == "1" else "tokens/s"
        return f"{text} {unit}" if text.startswith("<") else f"~{text} {unit}"

    @property
    def rounded_speed(self) -> float | None:
        """The estimate to one decimal, for JSON; None as for ``speed``."""
        return round(self.decode_tokens_per_s, 1) if self.decode_tokens_per_s is not None and self.fits else None

    @property
    def speed_with_threads(self) -> str | None:
        """``~12 tokens/s on 2 threads``: the estimate with what it assumes (the threads the load will use), where
        the CPU does part of the work."""
        if self.speed is None:
            return None
        if self.placement == "gpu":
            return self.speed
        return f"{self.speed} on {self.n_threads} thread{'s' if self.n_threads != 1 else ''}"

    @property
    def verdict_with_speed(self) -> str:
        """The verdict and, where there is one, the estimated speed marked as such: ``CPU only · est. ~12 tokens/s
        on 2 threads``."""
        return f"{self.verdict} · est. {self.speed_with_threads}" if self.speed else self.verdict

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
        data["decode_tokens_per_s"] = self.rounded_speed
        data["memory"]["total"] = self.memory.total
        data["memory"]["cpu"] = self.memory.cpu
        data["verdict"] = self.verdict
        data["reasons"] = list(self.reasons)
        return data


def rounded_rate(rate: float) -> str:
    """Two significant digits at most (``12``, ``120``, ``1,200``), one decimal under 1 (``0.4``): an estimate from a
    bandwidth guess is not worth more. Anything under 0.05 is ``0.1`` at most: ``<0.1``."""
    if rate < 0.05:
        return "<0.1"
    if rate < 0.95:
        return f"{rate:.1f}"
    if rate < 9.5:
        return f"{rate:.0f}"
    digits = len(str(int(round(rate)))) - 2
    return f"{int(round(rate, -digits)):,}"
