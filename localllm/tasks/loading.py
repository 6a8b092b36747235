"""Resolve a model, plan it for this machine, refuse what will not fit, and load it into a backend.

A backend that runs local files gets a GGUF from the store and a memory plan; a server backend (Ollama, an
OpenAI-compatible server) has no local file: the model is found on the server, the window comes from the server
where it says, and the memory is the server's business. Both end in the same LoadedModel.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from localllm.backends import backend_class, canonical_name
from localllm.backends.base import Backend, ServedModel
from localllm.backends.choice import BackendChoice, choose_backend, is_ollama_name, ollama_version, settled_choice
from localllm.core.errors import BackendUnavailable, ModelNotFound, WontFit
from localllm.core.model import ModelInfo, ModelRef
from localllm.core.plan import LoadPlan, MemoryEstimate
from localllm.core.settings import Settings
from localllm.core.units import human_size
from localllm.hardware.detect import detect_hardware
from localllm.hardware.planner import PlanRequest, plan_load
from localllm.hardware.report import HardwareReport
from localllm.store.catalog import find_model, load_catalog
from localllm.store.gguf_info import ModelInfoCache
from localllm.store.locate import looks_like_path, resolve_model

logger = logging.getLogger("localllm")


@dataclass
class LoadedModel:
    """A model ready to generate. For a model a server runs, ``served`` says where; ``ref.path`` is then empty,
    ``info`` holds what the server reported, and ``plan`` the window with placement "server"."""

    ref: ModelRef
    info: ModelInfo
    plan: LoadPlan
    choice: BackendChoice
    backend: Backend
    served: ServedModel | None = None
    load_s: float | None = None
    """Seconds the weights took to load (None for a model a server runs)."""

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_model(settings: Settings, name: str) -> tuple[ModelRef, ModelInfo]:
    ref = resolve_model(name, settings)
    return ref, ModelInfoCache(settings.paths.cache_dir).get(ref.path)


def described_file(settings: Settings, name: str | None, backend: str) -> tuple[ModelRef, ModelInfo] | None:
    """A model given by its file path, described before the hardware is probed where a backend that runs files
    will take it: a missing or damaged file is then said at once, without the probe's import of llama.cpp (a third
    of a second), and a path is never sent to ask Ollama whether it has such a model. A server backend's model names
    can look like paths on the server, so those are left to it."""
    if not name or not looks_like_path(name) or is_ollama_name(name):
        return None  # an ollama/NAME model is the Ollama server's to name first
    wanted = canonical_name(backend if backend != "auto" else settings.backend)
    if (wanted == "auto" and settings.base_url) or (wanted != "auto" and not backend_class(wanted).local_files):
        return None
    return describe_model(settings, name)


def plan_for(settings: Settings, info: ModelInfo, report: HardwareReport, *, ctx: int | None = None,
             backend: str = "llama.cpp") -> LoadPlan:
    tuned = settings.tuned
    return plan_load(report, info, PlanRequest(
        ctx=ctx, default_ctx=settings.ctx, threads=settings.threads,
        tuned_threads=tuned.threads if tuned else None, batch=tuned.batch if tuned else None,
        tuned_at=tuned.when if tuned else "",
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
    need = human_size(plan.memory.total)
    have = human_size(plan.ram_available + plan.gpu_available)
    hint = plan.suggestion
    if smaller_quant:
        hint = f"{hint}; or the smaller quant {smaller_quant} fits" if hint else f"{smaller_quant} fits"
    return WontFit(
        f"{name} needs about {need} at a {plan.n_ctx:,}-token context, "
        f"but this machine has {have} free (RAM + GPU)",
        hint=hint,
        plan=plan,
    )


def choice_and_hardware(settings: Settings, name: str | None, backend: str, report: HardwareReport | None
                        ) -> tuple[BackendChoice, HardwareReport | None]:
    """The backend for this model, and this machine's report where that backend runs the model here (None where
    a server runs it). A server asked for by name is not made to wait for the probe: importing llama.cpp to ask
    about its GPUs costs 0.4 s of processor time, which a model on another machine does not need."""
    model = name or settings.model
    choice = settled_choice(backend, settings.backend, model=model, settings=settings)
    if choice is not None and not backend_class(choice.name).local_files:
        return choice, None
    report = report or detect_hardware()
    choice = choice or choose_backend(backend, settings.backend, report, model=model, settings=settings)
    return choice, report if backend_class(choice.name).local_files else None


def load_model(settings: Settings, name: str | None = None, *, backend: str = "auto", ctx: int | None = None,
               needed_ctx: int | None = None, report: HardwareReport | None = None,
               embeddings: bool = False) -> LoadedModel:
    """Everything between a model name and a backend ready to generate. Raises WontFit before loading.

    ``needed_ctx`` is an estimate of the window the input needs: when it exceeds the default window and no ``ctx``
    was asked for, the window grows (by powers of two, up to what the model was trained on) instead of failing.
    The backend is ``backend``, else ``settings.backend``, else the rules of ``choose_backend``.
    """
    described = described_file(settings, name, backend)
    choice, report = choice_and_hardware(settings, name, backend, report)
    if report is None:
        return connect_model(settings, choice, name, ctx=ctx, needed_ctx=needed_ctx, embeddings=embeddings)
    try:
        ref, info = described or describe_model(settings, name or settings.model)
    except ModelNotFound:
        served_by_ollama = _on_ollama(settings, name, backend, ctx, needed_ctx, embeddings)
        if served_by_ollama is None:
            raise
        return served_by_ollama
    if ref.named is not None:  # a named model's load settings, where nothing more explicit set them
        ctx = ctx if ctx is not None else ref.named.value("ctx")
        if settings.threads is None and ref.named.value("threads"):
            settings = replace(settings, threads=ref.named.value("threads"))
        if not settings.template and ref.named.value("template"):
            settings = replace(settings, template=ref.named.value("template"))
    trained = info.context_length or settings.ctx
    if ctx is None and needed_ctx and needed_ctx > min(settings.ctx, trained):
        ctx = min(trained, 1 << (needed_ctx - 1).bit_length())
    plan = plan_for(settings, info, report, ctx=ctx, backend=choice.name)
    if info.context_length and plan.n_ctx > info.context_length:
        logger.warning(f"note: a context of {plan.n_ctx:,} tokens is beyond the {info.context_length:,} "
                       f"{ref.name} was trained on: answers may lose the thread past that (-o ctx="
                       f"{info.context_length} keeps to it)")
    if plan.n_threads > report.cpu.logical_cores:
        logger.warning(f"note: {plan.n_threads} threads on {report.cpu.logical_cores} logical CPUs: the threads "
                       "wait for each other, so this is slower, not faster (remove threads, or lower it)")
    if not plan.fits:
        raise refusal(plan, ref.name, smaller_quant_that_fits(settings, ref, info, report, plan))
    instance = backend_class(choice.name).from_settings(settings)
    if plan.n_batch and "n_batch" in instance.option_values:  # the tuned batch size, where the backend has one
        instance.option_values["n_batch"] = plan.n_batch
    started = time.monotonic()
    if embeddings:
        instance.load_for_embeddings(ref, plan)
    else:
        instance.load(ref, plan)
    return LoadedModel(ref, info, plan, choice, instance, load_s=time.monotonic() - started)


def connect_model(settings: Settings, choice: BackendChoice, name: str | None, *, ctx: int | None = None,
                  needed_ctx: int | None = None, embeddings: bool = False) -> LoadedModel:
    """A model a server runs: found by name there (without -m: the configured model if served, else the first)."""
    if embeddings:
        raise BackendUnavailable(f"backend {choice.name} does not compute embeddings in localllm",
                                 hint="use --backend llama.cpp")
    instance = backend_class(choice.name).from_settings(settings)
    try:
        served = instance.connect(name, ctx=ctx, default=settings.model)
        trained = served.context_length
        if ctx is None and needed_ctx and needed_ctx > served.n_ctx and trained and trained > served.n_ctx \
                and choice.name == "ollama":  # Ollama takes the window per request; other servers fix it
            served = instance.connect(served.name, ctx=min(trained, 1 << (needed_ctx - 1).bit_length()))
    except BaseException:
        instance.close()
        raise
    details = dict(served.details)
    info = ModelInfo(path=served.where, file_size=0, architecture=details.get("family", "?"), name=served.name,
                     quant=details.get("quantization_level"), context_length=served.context_length or served.n_ctx,
                     block_count=0, embedding_length=0, feed_forward_length=0, head_count=0, head_count_kv=0,
                     key_length=0, value_length=0, vocab_size=0, layer_bytes=0, non_layer_bytes=0, parameters=0,
                     tokenizer_model=None, tokenizer_pre=None, chat_template=None,
                     size_label=details.get("parameter_size"))
    plan = LoadPlan(backend=choice.name, n_ctx=served.n_ctx, n_gpu_layers=0, n_layers=0, n_threads=0,
                    memory=MemoryEstimate(0, 0, 0, 0), placement="server", fits=True, ram_available=0,
                    gpu_available=0, reasons=(f"{served.name} runs on {served.where}",))
    return LoadedModel(ModelRef(served.name, Path(), served.where), info, plan, choice, instance, served)


def _on_ollama(settings: Settings, name: str | None, backend: str, ctx: int | None, needed_ctx: int | None,
               embeddings: bool) -> LoadedModel | None:
    """``auto`` with a name no local store knows: the model may be one the Ollama server has pulled."""
    if not name or backend != "auto" or settings.backend != "auto" or embeddings:
        return None
    version, where = ollama_version(settings)
    if version is None:
        return None
    choice = BackendChoice("ollama", (f"{name} is not a local model, but Ollama {version} answers at "
                                      f"{where.removeprefix('Ollama at ')} and has it",))
    try:
        return connect_model(settings, choice, name, ctx=ctx, needed_ctx=needed_ctx)
    except ModelNotFound:
        return None
