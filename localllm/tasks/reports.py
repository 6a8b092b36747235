"""Reports about models and this machine, as plain data for the CLI's tables and JSON and for the TUI panes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from localllm.tasks.llama_build import BuildStory, build_story
from localllm.tasks.loading import choice_and_hardware, describe_model, described_file, load_model, plan_for


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
            "chat": bool(info.chat_template) if info else None,
            "named": named_dict(self.ref),
        }


def named_dict(ref: ModelRef) -> dict[str, Any] | None:
    """A named model's base, system prompt and parameters, as JSON; None for any other model."""
    if ref.named is None:
        return None
    return {"base": ref.named.base, "system": ref.named.system,
            "parameters": {key: list(value) if isinstance(value, tuple) else value
                           for key, value in ref.named.parameters}}


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
    chat_formats: tuple[str, ...] = ()
    """For a model without a chat template: the formats ``-o template=NAME`` can pick."""
    suggested_format: str | None = None
    """The one conventional format of the model's architecture, where there is one."""

    def to_dict(self) -> dict[str, Any]:
        info = self.info.to_dict()
        info["tokenizer_kind"] = self.info.tokenizer_kind
        info["chat"] = bool(self.info.chat_template)
        return {"name": self.ref.name, "where": self.ref.source, "model": info, "backend": self.choice.name,
                "plan": self.plan.to_dict(), "chat_formats": list(self.chat_formats),
                "suggested_format": self.suggested_format, "named": named_dict(self.ref)}


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
    described = described_file(settings, name, backend)
    choice, report = choice_and_hardware(settings, name, backend, report)
    if report is None:
        with load_model(settings, name, backend=choice.name, ctx=ctx) as loaded:
            assert loaded.served is not None, "a server backend's model is served"
            return ServedModelReport(loaded.served, loaded.choice)
    ref, info = described or describe_model(settings, name)
    if ctx is None and ref.named is not None:  # a named model loads with its own window
        ctx = ref.named.value("ctx")
    formats, suggested = _chat_formats(info)
    return ModelReport(ref, info, plan_for(settings, info, report, ctx=ctx, backend=choice.name), choice, formats,
                       suggested)


def _chat_formats(info: ModelInfo) -> tuple[tuple[str, ...], str | None]:
    if info.chat_template:
        return (), None
    from localllm.backends.llamacpp import CONVENTIONAL_FORMATS, chat_format_names

    try:
        names = chat_format_names()
    except LocalLLMError:  # llama-cpp-python is not installed
        return (), None
    suggested = CONVENTIONAL_FORMATS.get(info.architecture)
    return names, suggested if suggested in names else None


@dataclass(frozen=True)
class MachineReport:
    hardware: HardwareReport
    choice: BackendChoice | None
    choice_error: str | None
    reinstall: str | None
    build: BuildStory | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware.to_dict(),
                "backend": {"name": self.choice.name, "reasons": list(self.choice.reasons)} if self.choice else None,
                "backend_error": self.choice_error, "gpu_reinstall_command": self.reinstall,
                "llama_cpp_build": self.build.to_dict() if self.build else None}


def machine_report(settings: Settings, hardware: HardwareReport | None = None, *, check: bool = False,
                   recheck: bool = False) -> MachineReport:
    """``hardware``: an already detected report (or a fixed one, for a reproducible display). ``check``: run the
    llama.cpp self-check now if this build has no verdict yet; ``recheck``: run it again whatever it said."""
    fixed = hardware is not None
    hardware = hardware or detect_hardware()
    try:
        # With the settings, auto also weighs the servers (a configured base URL, a running Ollama), as `run` does.
        choice = choose_backend("auto", settings.backend, hardware, model=settings.model, settings=settings)
        error = None
    except LocalLLMError as exc:
        choice, error = None, f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    # A fixed report describes another machine: this machine's build and CPU do not belong in it.
    build = None if fixed else build_story(settings, hardware, check=check, recheck=recheck)
    return MachineReport(hardware, choice, error, reinstall_hint(hardware), build)


def tokenize_text(settings: Settings, name: str | None, text: str, backend: str = "auto"):
    """Token ids and pieces from the model's own tokenizer (loaded without weights where the backend can)."""
    from localllm.backends import backend_class

    ref, info = describe_model(settings, name or settings.model)
    chosen = "llama.cpp" if backend == "auto" else backend
    with backend_class(chosen)() as instance:
        instance.load_tokenizer(ref)
        return ref, info, instance.tokenize(text)
