"""Reports about models and this machine, as plain data for the CLI's tables and JSON and for the TUI panes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localllm.backends import backend_class
from localllm.backends.base import ServedModel
from localllm.backends.choice import BackendChoice, choose_backend
from localllm.core.errors import LocalLLMError
from localllm.core.model import ModelInfo, ModelRef
from localllm.core.plan import LoadPlan
from localllm.core.settings import Settings
from localllm.hardware.detect import detect_hardware, reinstall_hint
from localllm.hardware.report import HardwareReport
from localllm.store.gguf_info import ModelInfoCache
from localllm.store.locate import installed_models
from localllm.tasks.loading import describe_model, load_model, plan_for


@dataclass(frozen=True)
class InstalledModel:
    ref: ModelRef
    info: ModelInfo | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": self.ref.name, "path": str(self.ref.path), "where": self.ref.source,
            "size": info.file_size if info else None, "quant": info.quant if info else self.ref.quant,
            "architecture": info.architecture if info else None,
            "context_length": info.context_length if info else None, "problem": self.problem,
        }


def list_installed(settings: Settings) -> list[InstalledModel]:
    cache = ModelInfoCache(settings.paths.cache_dir)
    rows = []
    for ref in installed_models(settings):
        try:
            rows.append(InstalledModel(ref, cache.get(ref.path)))
        except LocalLLMError as exc:  # one damaged file must not hide the others
            rows.append(InstalledModel(ref, None, exc.message))
    return rows


@dataclass(frozen=True)
class ModelReport:
    ref: ModelRef
    info: ModelInfo
    plan: LoadPlan
    choice: BackendChoice

    def to_dict(self) -> dict[str, Any]:
        info = self.info.to_dict()
        info["tokenizer_kind"] = self.info.tokenizer_kind
        return {"name": self.ref.name, "where": self.ref.source, "model": info, "backend": self.choice.name,
                "plan": self.plan.to_dict()}


@dataclass(frozen=True)
class ServedModelReport:
    """`show` for a model a server runs: what the server says of it (there is no local file to read or plan)."""

    served: ServedModel
    choice: BackendChoice

    def to_dict(self) -> dict[str, Any]:
        served = self.served
        return {"name": served.name, "where": served.where, "context": served.n_ctx,
                "context_length": served.context_length, "details": dict(served.details),
                "backend": {"name": self.choice.name, "reasons": list(self.choice.reasons)}}


def model_report(settings: Settings, name: str, *, ctx: int | None = None, backend: str = "auto",
                 report: HardwareReport | None = None) -> ModelReport | ServedModelReport:
    report = report or detect_hardware()
    choice = choose_backend(backend, settings.backend, report, model=name, settings=settings)
    if not backend_class(choice.name).local_files:
        with load_model(settings, name, backend=choice.name, ctx=ctx, report=report) as loaded:
            return ServedModelReport(loaded.served, loaded.choice)
    ref, info = describe_model(settings, name)
    return ModelReport(ref, info, plan_for(settings, info, report, ctx=ctx, backend=choice.name), choice)


@dataclass(frozen=True)
class MachineReport:
    hardware: HardwareReport
    choice: BackendChoice | None
    choice_error: str | None
    reinstall: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware.to_dict(),
                "backend": {"name": self.choice.name, "reasons": list(self.choice.reasons)} if self.choice else None,
                "backend_error": self.choice_error, "gpu_reinstall_command": self.reinstall}


def machine_report(settings: Settings, hardware: HardwareReport | None = None) -> MachineReport:
    """``hardware``: an already detected report (or a fixed one, for a reproducible display)."""
    hardware = hardware or detect_hardware()
    try:
        # With the settings, auto also weighs the servers (a configured base URL, a running Ollama), as `run` does.
        choice = choose_backend("auto", settings.backend, hardware, model=settings.model, settings=settings)
        error = None
    except LocalLLMError as exc:
        choice, error = None, f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    return MachineReport(hardware, choice, error, reinstall_hint(hardware))


def tokenize_text(settings: Settings, name: str | None, text: str, backend: str = "auto"):
    """Token ids and pieces from the model's own tokenizer (loaded without weights where the backend can)."""
    from localllm.backends import backend_class

    ref, info = describe_model(settings, name or settings.model)
    chosen = "llama.cpp" if backend == "auto" else backend
    with backend_class(chosen)() as instance:
        instance.load_tokenizer(ref)
        return ref, info, instance.tokenize(text)
