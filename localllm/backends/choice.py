"""Which backend ``auto`` means on this machine, and why."""

from __future__ import annotations

from dataclasses import dataclass

from localllm.backends import canonical_name
from localllm.core.errors import BackendUnavailable
from localllm.hardware.report import HardwareReport


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reasons: tuple[str, ...]


def choose_backend(requested: str, configured: str, report: HardwareReport) -> BackendChoice:
    """An explicit choice wins over the config file, which wins over the rules for this hardware."""
    requested, configured = canonical_name(requested), canonical_name(configured)
    if requested != "auto":
        return BackendChoice(requested, (f"{requested} was asked for on the command line",))
    if configured != "auto":
        return BackendChoice(configured, (f"{configured} is set as backend in the config",))
    llama = report.llama_cpp
    if llama.installed:
        gpu = "with GPU offload" if llama.gpu_offload else "CPU build"
        why = [f"llama-cpp-python {llama.version} is installed ({gpu}): models run in-process"]
        if report.gpus and not llama.gpu_offload:
            why.append(f"a {report.gpus[0].vendor} GPU is present but this build cannot use it; see the reinstall hint")
        return BackendChoice("llama.cpp", tuple(why))
    raise BackendUnavailable(
        "no backend is available: llama-cpp-python is not installed",
        hint='pip install "localllm[llama]"',
    )
