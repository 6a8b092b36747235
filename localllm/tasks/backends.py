"""What each backend can do on this machine: installed, reachable, GPU support, version, and what ``auto`` picks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from localllm.backends import BUILTIN_BACKENDS, backend_class
from localllm.backends.choice import BackendChoice, choose_backend, installed_version
from localllm.core.errors import LocalLLMError
from localllm.core.settings import Settings
from localllm.hardware.detect import detect_hardware
from localllm.hardware.report import HardwareReport

REPORT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class BackendStatus:
    name: str
    installed: bool
    version: str | None
    """The library's version; for a server, also the server's own where it says."""
    reachable: bool | None
    """For servers: whether it answered; None for in-process backends."""
    where: str | None
    gpu: str
    models: tuple[str, ...] = ()
    """What the server serves (Ollama: pulled models; an OpenAI-compatible server: /v1/models)."""
    running: tuple[str, ...] = ()
    """Ollama: the models loaded in memory now (`ollama ps`)."""
    problem: str | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    self_check: str | None = None
    """llama.cpp: the self-check's verdict for this build on this CPU and the setting in force."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"], data["running"] = list(self.models), list(self.running)
        return data


@dataclass(frozen=True)
class BackendsReport:
    backends: tuple[BackendStatus, ...]
    choice: BackendChoice | None
    choice_error: str | None
    passed_over: tuple[str, ...] = ()
    """Why ``auto`` did not take each of the other backends."""

    def to_dict(self) -> dict[str, Any]:
        return {"backends": [status.to_dict() for status in self.backends],
                "auto": {"name": self.choice.name, "reasons": list(self.choice.reasons),
                         "passed_over": list(self.passed_over)} if self.choice else None,
                "auto_error": self.choice_error}


def _passed_over(statuses: list[BackendStatus], chosen: str, settings: Settings, model: str) -> tuple[str, ...]:
    why = []
    for status in statuses:
        if status.name == chosen:
            continue
        if settings.backend != "auto":
            why.append(f"{status.name}: the config sets backend = {settings.backend!r}")
        elif not status.installed:
            why.append(f"{status.name}: not installed")
        elif status.name == "openai" and not settings.base_url:
            why.append("openai: no base URL is configured (--base-url, OPENAI_BASE_URL or base_url)")
        elif status.reachable is False:
            why.append(f"{status.name}: its server does not answer")
        elif status.name == "ollama":
            why.append(f"ollama: {model} is not an ollama/NAME model (use -b ollama, or -m ollama/NAME)")
        elif status.name == "openai":
            why.append("openai: another rule came first")
        else:
            why.append(f"{status.name}: {chosen} comes first in the rules")
    return tuple(why)


def _llama_cpp(report: HardwareReport, settings: Settings) -> BackendStatus:
    build = report.llama_cpp
    if not build.installed:
        return BackendStatus("llama.cpp", False, None, None, None, "-", problem=build.error or "not installed: "
                             'pip install "localllm[llama]"')
    from localllm.tasks.llama_build import build_story

    gpu = "yes (built with GPU offload)" if build.gpu_offload else "no (CPU build)"
    story = build_story(settings, report)
    verdict = story.verdict
    self_check = (f"{verdict.summary()}; setting: {verdict.setting}" if verdict else story.verdict_note)
    problem = f"{story.rebuild_why}; rebuild with: {story.rebuild}" if story.rebuild else None
    return BackendStatus("llama.cpp", True, build.version, None, "in this process", gpu, problem=problem,
                         self_check=self_check)


def _gpt4all() -> BackendStatus:
    version = installed_version("gpt4all")
    if version is None:
        return BackendStatus("gpt4all", False, None, None, None, "-",
                             problem='not installed: pip install "localllm[gpt4all]"')
    from localllm.backends.gpt4all import captured_stderr

    with captured_stderr():  # loading the library logs every GPU runtime it does not find
        try:
            from gpt4all import GPT4All

            devices = GPT4All.list_gpus()
        except (ValueError, RuntimeError, OSError, ImportError):
            devices = []
    gpu = f"yes: {', '.join(devices)}" if devices else "no Vulkan or CUDA device found (runs on the CPU)"
    return BackendStatus("gpt4all", True, version, None, "in this process", gpu)


def _ollama(settings: Settings) -> BackendStatus:
    version = installed_version("ollama")
    if version is None:
        return BackendStatus("ollama", False, None, None, settings.ollama_host or None, "-",
                             problem='the client is not installed: pip install "localllm[ollama]"')
    from localllm.backends.ollama import OllamaBackend

    with OllamaBackend(settings.ollama_host, REPORT_TIMEOUT_S) as backend:
        try:
            server = backend.version()
            models = tuple(str(m.get("model")) for m in backend.list_models())
            running = backend.running()
        except LocalLLMError as exc:
            return BackendStatus("ollama", True, f"client {version}", False, backend.where, "-", problem=exc.message)
        on_gpu = [str(m.get("model")) for m in running if m.get("size_vram")]
        gpu = f"in use by {', '.join(on_gpu)}" if on_gpu else "the server decides (CUDA, ROCm or Metal)"
        return BackendStatus("ollama", True, f"client {version}, server {server}", True, backend.where, gpu,
                             models, tuple(str(m.get("model")) for m in running))


def _openai(settings: Settings) -> BackendStatus:
    version = installed_version("openai")
    if version is None:
        return BackendStatus("openai", False, None, None, settings.base_url or None, "-",
                             problem='the client is not installed: pip install "localllm[openai]"')
    from localllm.backends.openai_compat import OpenAICompatBackend

    with OpenAICompatBackend(settings.base_url, settings.api_key, settings.server, REPORT_TIMEOUT_S) as backend:
        try:
            models = tuple(str(m.get("id")) for m in backend.list_models())
        except LocalLLMError as exc:
            problem = exc.message if settings.base_url else \
                f"no base URL configured and nothing answers at the default ({exc.message})"
            return BackendStatus("openai", True, version, False, backend.where, "-", problem=problem)
        return BackendStatus("openai", True, version, True, backend.where, "the server decides", models)


def backends_report(settings: Settings, model: str | None = None, *,
                    report: HardwareReport | None = None) -> BackendsReport:
    report = report or detect_hardware()
    probes: dict[str, Callable[[], BackendStatus]] = {
        "llama.cpp": lambda: _llama_cpp(report, settings), "ollama": lambda: _ollama(settings),
        "openai": lambda: _openai(settings), "gpt4all": _gpt4all,
    }
    statuses = []
    for name in BUILTIN_BACKENDS:
        status = probes[name]()
        capabilities = asdict(backend_class(name).capabilities) if status.installed else {}
        statuses.append(BackendStatus(**{**asdict(status), "capabilities": capabilities}))
    try:
        choice, error = choose_backend("auto", settings.backend, report, model=model or settings.model,
                                       settings=settings), None
    except LocalLLMError as exc:
        choice, error = None, f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    passed_over = _passed_over(statuses, choice.name, settings, model or settings.model) if choice else ()
    return BackendsReport(tuple(statuses), choice, error, passed_over)


def pull_on_ollama(settings: Settings, name: str, progress: Callable[[int, int], None] | None = None,
                   status: Callable[[str], None] | None = None) -> str:
    """Pull ``name`` through the Ollama server; returns the name Ollama stores it under."""
    from localllm.backends.ollama import OllamaBackend, ollama_name

    with OllamaBackend.from_settings(settings) as backend:
        backend.pull(name, progress, status)
        return ollama_name(name)


def remove_from_ollama(settings: Settings, name: str) -> None:
    from localllm.backends.ollama import OllamaBackend

    with OllamaBackend.from_settings(settings) as backend:
        backend.delete(name)
