"""The llama.cpp build's story for `localllm hw` and `localllm backends`: what it was compiled for, what this CPU
offers, the self-check's verdict and the setting in force, and the rebuild command when a rebuild would be faster
or safer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localllm.backends.llamacpp_check import BuildVerdict, cached_verdict, check_build
from localllm.core.errors import LocalLLMError
from localllm.core.settings import Settings
from localllm.hardware.detect import reinstall_hint
from localllm.hardware.llama_build import (
    PLAIN_REINSTALL,
    BuildComparison,
    build_identity,
    cpu_features,
    read_cpu_flags,
    rebuild_command,
    simd_summary,
)
from localllm.hardware.report import HardwareReport

NOT_CHECKED = "not run yet: it runs before the first load (or `localllm hw`)"


@dataclass(frozen=True)
class BuildStory:
    installed: bool
    version: str | None
    compiled: tuple[str, ...]
    cpu: tuple[str, ...]
    unused: tuple[str, ...]
    """Features this CPU has that the build leaves unused (a rebuild is faster)."""
    missing_on_cpu: tuple[str, ...]
    """Features compiled in that this CPU lacks (the build may die with SIGILL)."""
    verdict: BuildVerdict | None
    verdict_note: str | None
    """Why there is no verdict."""
    rebuild: str | None
    rebuild_why: str | None

    @property
    def setting(self) -> str:
        return self.verdict.setting if self.verdict else "default"

    def to_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "version": self.version, "compiled": list(self.compiled),
                "cpu": list(self.cpu), "unused": list(self.unused), "missing_on_cpu": list(self.missing_on_cpu),
                "self_check": self.verdict.to_dict() if self.verdict else {"status": None, "note": self.verdict_note},
                "setting": self.setting, "rebuild": self.rebuild, "rebuild_why": self.rebuild_why}


def simd_text(cpu_simd: tuple[str, ...], build: BuildStory | None) -> str:
    """`hw`'s SIMD line: what matters of this CPU's vector extensions for llama.cpp and whether the build uses them,
    in a line (``AVX2; the llama.cpp build uses all of it``); the full lists are in `hw --json`. ``cpu_simd``: the
    CPU's extensions as detected (the line where the build's story is unknown: no build, no /proc/cpuinfo)."""
    if build is None or not build.installed or not build.cpu:
        return ", ".join(cpu_simd) or "none detected"
    text = simd_summary(build.cpu)
    if build.missing_on_cpu:
        return f"{text}; the llama.cpp build uses {simd_summary(build.missing_on_cpu)}, which this CPU lacks"
    if build.unused:
        return f"{text}; the llama.cpp build leaves {simd_summary(build.unused)} unused"
    return f"{text}; the llama.cpp build uses all of it" if build.compiled else text


def build_story(settings: Settings, hardware: HardwareReport, *, check: bool = False, recheck: bool = False,
                flags: tuple[str, ...] | None = None) -> BuildStory:
    """``check``: run the self-check now (on the configured model) when no verdict is known; ``recheck``: always.
    ``flags``: the CPU's raw feature flags (default: this machine's)."""
    build = hardware.llama_cpp
    flags = read_cpu_flags() if flags is None else flags
    comparison = BuildComparison(build.features, cpu_features(flags))
    verdict, note = None, None
    if build.installed:
        identity = build_identity(flags)
        verdict = None if recheck else cached_verdict(settings.paths.cache_dir, identity)
        if verdict is None and (check or recheck):
            verdict, note = _check_now(settings, recheck)
        elif verdict is None:
            note = NOT_CHECKED
    else:
        note = "llama-cpp-python is not installed"
    rebuild, why = _rebuild(hardware, comparison, verdict, flags)
    return BuildStory(build.installed, build.version, comparison.compiled, comparison.cpu,
                      comparison.unused if build.installed else (), comparison.missing_on_cpu, verdict, note,
                      rebuild, why)


def _check_now(settings: Settings, recheck: bool) -> tuple[BuildVerdict | None, str | None]:
    from localllm.store.locate import resolve_model

    try:
        model = resolve_model(settings.model, settings)
        return check_build(settings.paths.cache_dir, model.path, recheck=recheck), None
    except LocalLLMError as exc:
        return None, f"could not run: {exc.message}"


def _rebuild(hardware: HardwareReport, comparison: BuildComparison, verdict: BuildVerdict | None,
             flags: tuple[str, ...]) -> tuple[str | None, str | None]:
    if not hardware.llama_cpp.installed:
        return None, None
    if verdict is not None and verdict.status in ("safe", "broken"):
        return rebuild_command(flags), (f"the default build dies with {verdict.signal} on this CPU"
                                        + ("; the safe setting is slower" if verdict.status == "safe" else ""))
    if comparison.missing_on_cpu:
        return rebuild_command(flags), (f"the build uses {', '.join(comparison.missing_on_cpu)}, which this CPU "
                                        "lacks: it may die with SIGILL")
    gpu = reinstall_hint(hardware)
    if gpu:
        return gpu, "a GPU is present but this build runs on the CPU only"
    if comparison.unused and comparison.compiled:
        command = rebuild_command(flags)
        if "AMX_INT8" not in comparison.cpu:
            command = PLAIN_REINSTALL  # a native build takes every feature of a CPU without AMX
        return command, f"the build leaves {', '.join(comparison.unused)} unused: a build for this CPU is faster"
    return None, None
