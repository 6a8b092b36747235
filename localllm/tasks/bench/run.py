"""`localllm bench`: each model on each backend, measured ``repetitions`` times; medians and spreads; how close the
generation comes to what this machine's memory bandwidth allows."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localllm.core.errors import LocalLLMError, UsageError
from localllm.core.settings import Settings
from localllm.hardware.report import HardwareReport
from localllm.tasks.bench.machine import Bandwidth, PeakMemory, machine_line, machine_summary, memory_bandwidth
from localllm.tasks.bench.runners import LlamaRunner, StreamRunner
from localllm.tasks.bench.stats import Spread

Progress = Callable[[str, int, int], None]
"""Called as the work goes on: what is being done, steps done, steps in all."""

IN_PROCESS = "in-process"
THROUGH_API = "through the API"
THROUGH_STREAM = "through the chat stream"
WARM_UP_TOKENS = 16
CTX_STEP = 256
SERVER_MARGIN = 64
"""Tokens a server's window must hold beyond the prompt and the answer: the chat template's own."""


def _quiet(_what: str, _done: int, _total: int) -> None:
    pass


@dataclass(frozen=True)
class BenchRequest:
    models: tuple[str | None, ...] = (None,)
    """Model names; None: the configured model."""
    backends: tuple[str, ...] = ("auto",)
    prompt_tokens: int = 512
    gen_tokens: int = 128
    depth: int = 0
    """Tokens already in the context when a second generation is timed (llama-bench's -d); 0: none."""
    repetitions: int = 3

    def check(self) -> None:
        """A UsageError for input that cannot be measured."""
        for flag, value, least, example in (("-p", self.prompt_tokens, 1, "-p 512"),
                                            ("-n", self.gen_tokens, 1, "-n 128"),
                                            ("-r", self.repetitions, 1, "-r 3"), ("-d", self.depth, 0, "-d 4096")):
            if value < least:
                what = "zero or more" if least == 0 else "at least 1"
                raise UsageError(f"{flag} {value}: must be {what}", hint=f"for example {example}")

    @property
    def window(self) -> int:
        """The context the runs need (with room for a chat template's tokens, through a server), rounded up as
        llama.cpp rounds it."""
        needed = max(self.prompt_tokens, self.depth) + self.gen_tokens + SERVER_MARGIN
        return -(-needed // CTX_STEP) * CTX_STEP

    @property
    def steps(self) -> int:
        """Steps of one model on one backend: the load, then each repetition's runs."""
        return 1 + self.repetitions * (2 + (1 if self.depth else 0))


@dataclass(frozen=True)
class Bound:
    """Generation against the memory bandwidth: each token reads the weights and the KV cache so far."""

    bytes_per_token: int
    tokens_per_s: float
    bandwidth: float
    against: str

    @property
    def percent(self) -> float:
        return 100 * self.bytes_per_token * self.tokens_per_s / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        return {"bytes_per_token": self.bytes_per_token,
                "bytes_per_s": round(self.bytes_per_token * self.tokens_per_s),
                "bandwidth_bytes_per_s": round(self.bandwidth), "against": self.against,
                "percent": round(self.percent, 1)}


@dataclass
class BenchResult:
    model: str
    backend: str
    measured: str = IN_PROCESS
    """in-process, through the API (a server), or through the chat stream (another in-process backend)."""
    notes: list[str] = field(default_factory=list)
    where: str | None = None
    threads: int | None = None
    batch: int | None = None
    n_ctx: int | None = None
    placement: str | None = None
    prompt_tokens: int = 0
    gen_tokens: int = 0
    depth: int = 0
    pp: Spread | None = None
    """Prompt tokens read per second."""
    tg: Spread | None = None
    """Tokens generated per second, from an empty context."""
    tg_depth: Spread | None = None
    """Tokens generated per second after ``depth`` tokens."""
    ttft: Spread | None = None
    """Seconds to the first token of a ``prompt_tokens`` prompt."""
    load_s: float | None = None
    peak_memory: int | None = None
    """This process's peak resident bytes while the model loaded and ran (None for a server)."""
    baseline_memory: int | None = None
    weights_bytes: int | None = None
    kv_bytes_per_position: int | None = None
    bound: Bound | None = None
    bound_depth: Bound | None = None
    error: str | None = None
    path: str | None = None
    """The model's file (None for a model a server runs), by which the result is kept for `localllm compare`."""
    quant: str | None = None
    hint: str | None = None

    def bytes_per_token(self, depth: int) -> int | None:
        """Bytes one generated token reads, on average over ``gen_tokens`` tokens after ``depth``: the weights and
        the KV cache of every position before it."""
        if not self.weights_bytes:
            return None
        average_positions = depth + (self.gen_tokens + 1) / 2
        return round(self.weights_bytes + (self.kv_bytes_per_position or 0) * average_positions)

    def to_dict(self) -> dict[str, Any]:
        def spread(value: Spread | None, digits: int = 2) -> dict[str, Any] | None:
            return value.to_dict(digits) if value is not None else None

        return {
            "model": self.model, "backend": self.backend, "measured": self.measured, "where": self.where,
            "notes": list(self.notes), "threads": self.threads, "batch": self.batch, "n_ctx": self.n_ctx,
            "placement": self.placement, "prompt_tokens": self.prompt_tokens, "gen_tokens": self.gen_tokens,
            "depth": self.depth, "pp_tokens_per_s": spread(self.pp), "tg_tokens_per_s": spread(self.tg),
            "tg_at_depth_tokens_per_s": spread(self.tg_depth), "ttft_s": spread(self.ttft, 4),
            "load_s": round(self.load_s, 4) if self.load_s is not None else None,
            "peak_memory_bytes": self.peak_memory, "baseline_memory_bytes": self.baseline_memory,
            "weights_bytes": self.weights_bytes,
            "bandwidth_bound": self.bound.to_dict() if self.bound else None,
            "bandwidth_bound_at_depth": self.bound_depth.to_dict() if self.bound_depth else None,
            "error": self.error, "hint": self.hint,
        }


@dataclass
class BenchReport:
    request: BenchRequest
    hardware: HardwareReport
    results: list[BenchResult]
    bandwidth: Bandwidth | None
    started_at: str

    @property
    def machine(self) -> str:
        return machine_line(self.hardware)

    @property
    def failed(self) -> list[BenchResult]:
        return [result for result in self.results if result.error]

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at, "machine": machine_summary(self.hardware),
            "memory_bandwidth": self.bandwidth.to_dict() if self.bandwidth else None,
            "prompt_tokens": self.request.prompt_tokens, "gen_tokens": self.request.gen_tokens,
            "depth": self.request.depth, "repetitions": self.request.repetitions,
            "results": [result.to_dict() for result in self.results],
        }


def run_bench(settings: Settings, request: BenchRequest, *, progress: Progress = _quiet,
              report: HardwareReport | None = None) -> BenchReport:
    """Every model on every backend, one after the other. With one pair, an error (an unknown model, a backend
    that is not there) is raised; with more, it is kept in that pair's result and the others still run."""
    request.check()
    from localllm.hardware.detect import detect_hardware

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = report or detect_hardware()
    pairs = [(model, backend) for model in request.models for backend in request.backends]
    results = []
    for model, backend in pairs:
        try:
            results.append(bench_one(settings, model, backend, request, report, progress))
        except LocalLLMError as exc:
            if len(pairs) == 1:
                raise
            results.append(BenchResult(model or settings.model, backend, error=exc.message, hint=exc.hint))
    bandwidth = None
    if any(result.weights_bytes and result.tg and result.placement == "cpu" for result in results):
        progress("measuring the memory bandwidth (a copy test)", 0, 1)
        bandwidth = memory_bandwidth(report)
    for result in results:
        _bound(result, report, bandwidth)
    _keep(settings, results, report)
    return BenchReport(request, report, results, bandwidth, started_at)


def _keep(settings: Settings, results: list[BenchResult], report: HardwareReport) -> None:
    """Each measured result is kept for `localllm compare` (store/results.py)."""
    from localllm.tasks.results import keep_result, machine_description

    measured = [result for result in results if result.error is None and (result.tg or result.pp)]
    machine = machine_description(report)
    for result in measured:
        figures = {"pp_tokens_per_s": result.pp.median if result.pp else None,
                   "tg_tokens_per_s": result.tg.median if result.tg else None,
                   "ttft_s": result.ttft.median if result.ttft else None, "load_s": result.load_s,
                   "peak_memory_bytes": result.peak_memory}
        keep_result(settings, result.model, Path(result.path) if result.path else None, result.quant, "bench",
                    figures, {"backend": result.backend, "n_ctx": result.n_ctx, "threads": result.threads,
                              "prompt_tokens": result.prompt_tokens, "gen_tokens": result.gen_tokens}, machine)


def bench_one(settings: Settings, model: str | None, backend: str, request: BenchRequest, report: HardwareReport,
              progress: Progress = _quiet) -> BenchResult:
    from localllm.backends import backend_class, canonical_name
    from localllm.tasks.loading import load_model

    backend = canonical_name(backend)
    name = model or settings.model
    progress(f"{name}{'' if backend == 'auto' else f' on {backend}'}: loading", 0, request.steps)
    _check_build_first(settings, name, backend)
    with PeakMemory() as memory:
        loaded = load_model(settings, model, backend=backend, ctx=request.window, report=report)
        with loaded:
            result = BenchResult(loaded.ref.name or name, loaded.choice.name, prompt_tokens=request.prompt_tokens,
                                 gen_tokens=request.gen_tokens, depth=request.depth, n_ctx=loaded.plan.n_ctx,
                                 placement=loaded.plan.placement, load_s=loaded.load_s,
                                 path=str(loaded.ref.path) if loaded.served is None else None,
                                 quant=loaded.info.quant)
            label = f"{result.model} on {result.backend}"
            runner = LlamaRunner.of(loaded.backend)
            if runner is not None:
                result.threads = loaded.plan.n_threads
                result.batch = loaded.backend.option_values.get("n_batch")
                _in_process(runner, request, result, lambda what, done: progress(f"{label}: {what}", done,
                                                                                  request.steps))
            else:
                served = not backend_class(loaded.choice.name).local_files
                result.measured = THROUGH_API if served else THROUGH_STREAM
                result.where = loaded.served.where if loaded.served else None
                if served:
                    _check_window(loaded.plan.n_ctx, request, result.where or result.backend)
                _streamed(StreamRunner(loaded.backend), request, result,
                          lambda what, done: progress(f"{label}: {what}", done, request.steps))
            if loaded.served is None:
                result.weights_bytes = loaded.info.weights_bytes or None
                from localllm.hardware.planner import kv_cache_bytes

                result.kv_bytes_per_position = kv_cache_bytes(loaded.info, 1) or None
    if loaded.served is None:
        result.peak_memory, result.baseline_memory = memory.peak, memory.baseline
    return result


def _check_build_first(settings: Settings, name: str, backend: str) -> None:
    """The first load with a llama-cpp-python build runs its self-check (a test generation, once per build): run it
    here, so that the load time is the load's. Any failure is left for the load to report."""
    if backend not in ("auto", "llama.cpp"):
        return
    try:
        from localllm.backends.llamacpp_check import check_build
        from localllm.store.locate import resolve_model

        check_build(settings.paths.cache_dir, resolve_model(name, settings).path)
    except LocalLLMError:
        pass


def _check_window(window: int, request: BenchRequest, where: str) -> None:
    needed = max(request.prompt_tokens, request.depth) + request.gen_tokens + SERVER_MARGIN
    if window < needed:
        raise UsageError(f"{where} gives a {window:,}-token window, and -p {request.prompt_tokens} "
                         f"-n {request.gen_tokens}" + (f" -d {request.depth}" if request.depth else "")
                         + f" needs about {needed:,}",
                         hint="lower -p, -n or -d, or start the server with a larger context")


def _in_process(runner: LlamaRunner, request: BenchRequest, result: BenchResult,
                step: Callable[[str, int], None]) -> None:
    p, n, d = request.prompt_tokens, request.gen_tokens, request.depth
    runner.prompt(min(p, WARM_UP_TOKENS))  # warm-up, as llama-bench's: the first pass touches every weight
    runner.generate(2)
    pp, ttft, tg, tg_depth = [], [], [], []
    done = 1
    for repetition in range(1, request.repetitions + 1):
        step(f"pp{p} ({repetition}/{request.repetitions})", done)
        read, first = runner.prompt(p)
        pp.append(p / read)
        ttft.append(first)
        done += 1
        step(f"tg{n} ({repetition}/{request.repetitions})", done)
        tg.append(n / runner.generate(n))
        done += 1
        if d:
            step(f"tg{n} at depth {d} ({repetition}/{request.repetitions})", done)
            tg_depth.append(n / runner.generate(n, depth=d))
            done += 1
    step("done", done)
    result.pp, result.ttft, result.tg = Spread.of(pp), Spread.of(ttft), Spread.of(tg)
    result.tg_depth = Spread.of(tg_depth) if tg_depth else None
    result.notes.append(f"llama-bench's method: a prompt of {p} random tokens read in batches of {result.batch}; "
                        f"{n} tokens decoded one by one, each the greedy pick of the last; {result.threads} "
                        f"thread{'s' if result.threads != 1 else ''}")


def _streamed(runner: StreamRunner, request: BenchRequest, result: BenchResult,
              step: Callable[[str, int], None]) -> None:
    p, n, d = request.prompt_tokens, request.gen_tokens, request.depth
    runner.run(WARM_UP_TOKENS, 2)  # warm-up: a server may load the model on its first request
    pp, ttft, tg, tg_depth, prompt_sizes, short = [], [], [], [], [], 0
    done = 1
    for repetition in range(1, request.repetitions + 1):
        step(f"pp{p} and tg{n} ({repetition}/{request.repetitions})", done)
        sample = runner.run(p, n)
        pp.append(sample.prompt_per_s)
        ttft.append(sample.first_token_s)
        prompt_sizes.append(sample.prompt_tokens)
        if sample.tokens_per_s is not None:
            tg.append(sample.tokens_per_s)
        short += sample.completion_tokens < n
        done += 2
        if d:
            step(f"tg{n} at depth {d} ({repetition}/{request.repetitions})", done)
            deep = runner.run(d, n)
            if deep.tokens_per_s is not None:
                tg_depth.append(deep.tokens_per_s)
            short += deep.completion_tokens < n
            done += 1
    step("done", done)
    result.pp, result.ttft = Spread.of(pp), Spread.of(ttft)
    result.tg = Spread.of(tg) if tg else None
    result.tg_depth = Spread.of(tg_depth) if tg_depth else None
    result.prompt_tokens = round(statistics.median(prompt_sizes))
    served = result.measured == THROUGH_API
    what = "the server's API" if served else f"{result.backend}'s chat stream"
    result.notes.append(f"measured through {what}: pp is the prompt's {result.prompt_tokens} tokens (as "
                        f"{'the server reported them' if served else 'counted'}) over the time to the first token, "
                        f"{'the round trip' if served else 'the chat template'} included; tg is the stream's pace "
                        "after its first token")
    if short:
        result.notes.append(f"{short} answer{'s' if short > 1 else ''} ended before {n} tokens: the model stopped "
                            "by itself, so tg counts fewer tokens")
    if result.tg is None:
        result.notes.append("no answer had two tokens or more: no generation rate")


def _bound(result: BenchResult, report: HardwareReport, bandwidth: Bandwidth | None) -> None:
    """The bandwidth bound, where there is ground for one: the weights in RAM against the copy test, or all on one
    kind of GPU against its peak as the driver reports it."""
    if result.error or not result.weights_bytes:
        if result.measured == THROUGH_API:
            result.notes.append("no bandwidth bound: the model's size is not known through the API")
        return
    against: tuple[float, str] | None = None
    if result.placement == "cpu" and bandwidth is not None:
        against = (bandwidth.bytes_per_s, "RAM bandwidth (copy test)")
    elif result.placement == "gpu" and report.gpus and all(gpu.memory_bandwidth for gpu in report.gpus):
        against = (float(min(gpu.memory_bandwidth or 0 for gpu in report.gpus)), "GPU peak bandwidth (driver)")
    if against is None:
        result.notes.append("no bandwidth bound: the weights are split between RAM and GPU memory")
        return
    for attribute, rate, depth in (("bound", result.tg, 0), ("bound_depth", result.tg_depth, result.depth)):
        size = result.bytes_per_token(depth)
        if rate is not None and size:
            setattr(result, attribute, Bound(size, rate.median, against[0], against[1]))
