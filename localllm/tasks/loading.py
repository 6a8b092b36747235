"""Resolve a model, plan it for this machine, refuse what will not fit, and load it into a backend."""

from __future__ import annotations

from dataclasses import dataclass, replace

from localllm.backends import backend_class
from localllm.backends.base import Backend
from localllm.backends.choice import BackendChoice, choose_backend
from localllm.core.errors import WontFit
from localllm.core.model import ModelInfo, ModelRef
from localllm.core.plan import LoadPlan
from localllm.core.settings import Settings
from localllm.hardware.detect import detect_hardware
from localllm.hardware.planner import PlanRequest, plan_load
from localllm.hardware.report import HardwareReport
from localllm.store.catalog import find_model, load_catalog
from localllm.store.gguf_info import ModelInfoCache
from localllm.store.locate import resolve_model

GIB = 1024**3


@dataclass
class LoadedModel:
    ref: ModelRef
    info: ModelInfo
    plan: LoadPlan
    choice: BackendChoice
    backend: Backend

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_model(settings: Settings, name: str) -> tuple[ModelRef, ModelInfo]:
    ref = resolve_model(name, settings)
    return ref, ModelInfoCache(settings.paths.cache_dir).get(ref.path)


def plan_for(settings: Settings, info: ModelInfo, report: HardwareReport, *, ctx: int | None = None,
             backend: str = "llama.cpp") -> LoadPlan:
    return plan_load(report, info, PlanRequest(
        ctx=ctx, default_ctx=settings.ctx, threads=settings.threads,
        gpu_headroom=settings.gpu_headroom_mb * 1024 * 1024, backend=backend,
    ))


def smaller_quant_that_fits(settings: Settings, ref: ModelRef, info: ModelInfo, report: HardwareReport,
                            plan: LoadPlan) -> str | None:
    """The largest catalog quant of the same model that would fit, judged by scaling the weights to its size."""
    entry = find_model(ref.name, load_catalog())
    if entry is None or info.file_size <= 0:
        return None
    for quant in sorted(entry.quants, key=lambda q: q.size, reverse=True):
        if quant.size >= info.file_size:
            continue
        scale = quant.size / info.file_size
        scaled = replace(info, layer_bytes=int(info.layer_bytes * scale),
                         non_layer_bytes=int(info.non_layer_bytes * scale))
        if plan_for(settings, scaled, report, ctx=plan.n_ctx, backend=plan.backend).fits:
            return f"{entry.name}:{quant.quant.lower()}"
    return None


def refusal(plan: LoadPlan, name: str, smaller_quant: str | None = None) -> WontFit:
    need = plan.memory.total / GIB
    have = (plan.ram_available + plan.gpu_available) / GIB
    hint = plan.suggestion
    if smaller_quant:
        hint = f"{hint}; or the smaller quant {smaller_quant} fits" if hint else f"{smaller_quant} fits"
    return WontFit(
        f"{name} needs about {need:.1f} GiB at a {plan.n_ctx}-token context, "
        f"but this machine has {have:.1f} GiB free (RAM + GPU)",
        hint=hint,
        plan=plan,
    )


def load_model(settings: Settings, name: str | None = None, *, backend: str = "auto", ctx: int | None = None,
               needed_ctx: int | None = None, report: HardwareReport | None = None,
               embeddings: bool = False) -> LoadedModel:
    """Everything between a model name and a backend ready to generate. Raises WontFit before loading.

    ``needed_ctx`` is an estimate of the window the input needs: when it exceeds the default window and no ``ctx``
    was asked for, the window grows (by powers of two, up to what the model was trained on) instead of failing.
    """
    ref, info = describe_model(settings, name or settings.model)
    trained = info.context_length or settings.ctx
    if ctx is None and needed_ctx and needed_ctx > min(settings.ctx, trained):
        ctx = min(trained, 1 << (needed_ctx - 1).bit_length())
    report = report or detect_hardware()
    choice = choose_backend(backend, settings.backend, report)
    plan = plan_for(settings, info, report, ctx=ctx, backend=choice.name)
    if not plan.fits:
        raise refusal(plan, ref.name, smaller_quant_that_fits(settings, ref, info, report, plan))
    instance = backend_class(choice.name)()
    if embeddings:
        instance.load_for_embeddings(ref, plan)
    else:
        instance.load(ref, plan)
    return LoadedModel(ref, info, plan, choice, instance)
