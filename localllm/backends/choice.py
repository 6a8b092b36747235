"""Which backend ``auto`` means on this machine, and why."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from localllm.backends import canonical_name
from localllm.core.errors import BackendUnavailable, LocalLLMError
from localllm.core.settings import Settings
from localllm.hardware.report import HardwareReport

# How long `auto` waits for a local server before deciding it is not running.
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reasons: tuple[str, ...]


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, read from its metadata without importing it."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def ollama_version(settings: Settings, timeout: float = PROBE_TIMEOUT_S) -> tuple[str | None, str]:
    """(the server's version, or None when it does not answer; where it was asked)."""
    if installed_version("ollama") is None:
        return None, "the ollama client is not installed"
    from localllm.backends.ollama import OllamaBackend

    with OllamaBackend(settings.ollama_host, timeout) as backend:
        try:
            return backend.version(), backend.where
        except LocalLLMError:
            return None, backend.where


def is_ollama_name(name: str | None) -> bool:
    return name is not None and name.lower().startswith("ollama/")


def settled_choice(requested: str, configured: str, *, model: str | None = None,
                   settings: Settings | None = None) -> BackendChoice | None:
    """The choice where nothing about this machine or its servers needs asking: a backend asked for or
    configured, or a configured base URL for a model that is not an Ollama name. None where ``auto`` must look."""
    requested, configured = canonical_name(requested), canonical_name(configured)
    if requested != "auto":
        return BackendChoice(requested, (f"{requested} was asked for on the command line",))
    if configured != "auto":
        return BackendChoice(configured, (f"{configured} is set as backend in the config",))
    if settings is not None and settings.base_url and not is_ollama_name(model):
        return _base_url_choice(settings, [])
    return None


def _base_url_choice(settings: Settings, why: list[str]) -> BackendChoice:
    from localllm.backends.openai_compat import display_url

    return BackendChoice("openai", (*why, f"a base URL is configured ({display_url(settings.base_url)}): "
                                          "the OpenAI-compatible server runs the model",))


def choose_backend(requested: str, configured: str, report: HardwareReport, *, model: str | None = None,
                   settings: Settings | None = None) -> BackendChoice:
    """An explicit choice wins over the config file, which wins over the rules for this hardware.

    With ``settings`` the rules also consider servers: Ollama for an ``ollama/NAME`` model when its server answers,
    and an OpenAI-compatible server when a base URL is configured. Without, only what runs in this process.
    """
    settled = settled_choice(requested, configured, model=model, settings=settings)
    if settled is not None:
        return settled
    why: list[str] = []
    if settings is not None and is_ollama_name(model):
        version, where = ollama_version(settings)
        if version:
            return BackendChoice("ollama", (f"{model} is an Ollama model and Ollama {version} answers at "
                                            f"{where.removeprefix('Ollama at ')}",))
        why.append(f"{model} is an Ollama model but Ollama does not answer ({where}); its file runs in place")
    if settings is not None and settings.base_url:
        return _base_url_choice(settings, why)
    llama = report.llama_cpp
    if llama.installed:
        gpu = "with GPU offload" if llama.gpu_offload else "CPU build"
        why.append(f"llama-cpp-python {llama.version} is installed ({gpu}): models run in-process")
        if report.gpus and not llama.gpu_offload:
            why.append(f"a {report.gpus[0].vendor} GPU is present but this build cannot use it; see the reinstall hint")
        return BackendChoice("llama.cpp", tuple(why))
    gpt4all = installed_version("gpt4all")
    if gpt4all:
        why.append(f"llama-cpp-python is not installed; gpt4all {gpt4all} is (prebuilt, Vulkan GPUs)")
        return BackendChoice("gpt4all", tuple(why))
    if settings is not None:
        version, where = ollama_version(settings)
        if version:
            why.append(f"no in-process backend is installed; Ollama {version} answers at "
                       f"{where.removeprefix('Ollama at ')}")
            return BackendChoice("ollama", tuple(why))
    raise BackendUnavailable(
        "no backend is available: llama-cpp-python is not installed",
        hint='pip install "localllm[llama]" (or "localllm[gpt4all]" for prebuilt wheels, or run Ollama)',
    )
