"""GPU probes: NVML, nvidia-smi, rocm-smi, Linux sysfs (AMD) and sysctl (Apple Silicon).

Each parser takes the text a tool printed, so the tests feed them recorded outputs kept as fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

from localllm.hardware.report import GPUInfo

MIB = 1024 * 1024
NVIDIA_SMI_QUERY = "index,name,memory.total,memory.free,driver_version,compute_cap"
NVIDIA_SMI_ARGS = ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"]
ROCM_SMI_ARGS = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]


def nvidia_from_nvml() -> list[GPUInfo]:
    """Query NVML (nvidia-ml-py). Raises if the library or the driver is missing."""
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GPUInfo(
                vendor="nvidia", name=_text(pynvml.nvmlDeviceGetName(handle)), total_bytes=int(memory.total),
                free_bytes=int(memory.free), index=index, driver=driver, compute_capability=f"{major}.{minor}",
                source="nvml", memory_bandwidth=nvml_bandwidth(pynvml, handle),
            ))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def nvml_bandwidth(pynvml, handle) -> int | None:
    """Peak bytes/s: bus width (bits) / 8 × the highest memory clock (MHz) × 2 transfers a clock, the rule the
    published figures follow (A100: 5120 bits at 1215 MHz, 1.56 TB/s; RTX 3090: 384 bits at 9751 MHz, 936 GB/s).
    None where the board does not report either."""
    try:
        bits = int(pynvml.nvmlDeviceGetMemoryBusWidth(handle))
        mhz = int(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM))
    except Exception:  # NVMLError_NotSupported on some boards, a missing function in an old nvidia-ml-py
        return None
    return bits // 8 * mhz * 1_000_000 * 2 if bits > 0 and mhz > 0 else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_nvidia_smi(text: str) -> list[GPUInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap
    --format=csv,noheader,nounits`` (memory in MiB)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            index, total, free = int(parts[0]), int(float(parts[2])), int(float(parts[3]))
        except ValueError:
            continue  # "[N/A]" or "[Not Supported]" on some boards
        gpus.append(GPUInfo(
            vendor="nvidia", name=parts[1], total_bytes=total * MIB, free_bytes=free * MIB, index=index,
            driver=parts[4] if len(parts) > 4 else None,
            compute_capability=parts[5] if len(parts) > 5 and parts[5] not in ("[N/A]", "") else None,
            source="nvidia-smi",
        ))
    return gpus


def parse_rocm_smi(text: str) -> list[GPUInfo]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram --json``: {"card0": {"VRAM Total Memory (B)": ...}}."""
    data = json.loads(text)
    gpus = []
    for key, card in sorted(data.items()):
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        total = int(card.get("VRAM Total Memory (B)", 0))
        used = int(card.get("VRAM Total Used Memory (B)", 0))
        name = card.get("Card Series") or card.get("Card series") or card.get("Card model") or "AMD GPU"
        gpus.append(GPUInfo(
            vendor="amd", name=str(name), total_bytes=total, free_bytes=max(total - used, 0),
            index=int(key.removeprefix("card") or 0), driver=card.get("Driver version"), source="rocm-smi",
        ))
    return gpus


def amd_from_sysfs(drm_root: Path = Path("/sys/class/drm")) -> list[GPUInfo]:
    """AMD GPUs from amdgpu's sysfs files, for machines without rocm-smi."""
    gpus = []
    for card in sorted(drm_root.glob("card[0-9]*")):
        device = card / "device"
        try:
            if (device / "vendor").read_text().strip() != "0x1002":
                continue
            total = int((device / "mem_info_vram_total").read_text())
            used = int((device / "mem_info_vram_used").read_text())
        except (OSError, ValueError):
            continue
        name_file = device / "product_name"
        name = name_file.read_text().strip() if name_file.is_file() else "AMD GPU"
        gpus.append(GPUInfo(vendor="amd", name=name or "AMD GPU", total_bytes=total, free_bytes=max(total - used, 0),
                            index=int(card.name.removeprefix("card")), source="sysfs"))
    return gpus


def apple_working_set(ram_total: int) -> int:
    """Metal's recommendedMaxWorkingSetSize as macOS sets it by default: about 2/3 of RAM up to 36 GB, 3/4 above.

    Reading the real value needs the Metal API (pyobjc); this rule matches what llama.cpp logs on M-series Macs.
    """
    fraction = 0.75 if ram_total > 36 * 1024**3 else 2 / 3
    return int(ram_total * fraction)


def apple_from_sysctl(values: dict[str, str], arch: str) -> list[GPUInfo]:
    if arch not in ("arm64", "aarch64") and values.get("hw.optional.arm64") != "1":
        return []
    ram = int(values.get("hw.memsize", "0") or 0)
    working_set = apple_working_set(ram)
    chip = values.get("machdep.cpu.brand_string", "Apple Silicon")
    return [GPUInfo(vendor="apple", name=f"{chip} GPU (Metal)", total_bytes=working_set, free_bytes=working_set,
                    unified_memory=True, source="sysctl")]
