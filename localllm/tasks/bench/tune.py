"""`localllm bench --tune`: which thread count and prompt batch size are really faster here, saved for the planner.

Each setting is swept on its own, with short runs, the candidates interleaved round by round (each round in another
order) so that a change in the machine's load hits every candidate alike. A candidate replaces the default only
when it is clearly better: its median at least ``MARGIN`` above the default's, and faster than the default in the
same round in at least ``WIN_SHARE`` of the rounds. Otherwise the default stays, and nothing is pinned for it: the
planner keeps choosing the threads from the cores free when a model loads.

Threads are judged by generation (tokens decoded per second), the speed an answer is written at; they are changed
between runs without a reload (llama.cpp takes the thread count per call). The batch size is judged by prompt
reading, the only thing it changes; each size is its own context, so each is a load.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.core.settings import Settings, Tuned, save_tuned
from localllm.hardware.report import HardwareReport
from localllm.tasks.bench.machine import machine_line
from localllm.tasks.bench.run import CTX_STEP, Progress, _quiet
from localllm.tasks.bench.runners import LlamaRunner
from localllm.tasks.bench.stats import Spread

BACKEND = "llama.cpp"
DEFAULT_BATCHES = (64, 128, 256, 512)
MARGIN = 0.05
"""How much faster (by the medians) a candidate must be than the default to replace it."""
WIN_SHARE = 2 / 3
"""In how many of the rounds it must beat the default measured beside it."""


@dataclass(frozen=True)
class TuneRequest:
    model: str | None = None
    threads: tuple[int, ...] = ()
    """Thread counts to try; empty: ``thread_candidates``."""
    batches: tuple[int, ...] = ()
    """Batch sizes to try; empty: DEFAULT_BATCHES."""
    rounds: int = 5
    prompt_tokens: int = 512
    gen_tokens: int = 32

    def check(self) -> None:
        for flag, value, example in (("-r", self.rounds, "-r 5"), ("-p", self.prompt_tokens, "-p 512"),
                                     ("-n", self.gen_tokens, "-n 32")):
            if value < 1:
                raise UsageError(f"{flag} {value}: must be at least 1", hint=f"for example {example}")
        for flag, values in (("--threads", self.threads), ("--batch", self.batches)):
            bad = [value for value in values if value < 1]
            if bad:
                raise UsageError(f"{flag} {bad[0]}: must be at least 1", hint=f"for example {flag} 1,2,4")


@dataclass
class Sweep:
    """One setting's candidates, each measured once per round."""

    setting: str
    """threads or batch."""
    metric: str
    """What decides: ``tg32`` (tokens generated per second) or ``pp512`` (prompt tokens read per second)."""
    default: int
    rates: dict[int, list[float]] = field(default_factory=dict)
    chosen: int = 0
    why: str = ""

    def spread(self, candidate: int) -> Spread:
        return Spread.of(self.rates[candidate])

    @property
    def changed(self) -> bool:
        return self.chosen != self.default

    @property
    def ratio(self) -> float:
        """The chosen candidate's median over the default's (1.0 when the default stays)."""
        return self.spread(self.chosen).median / self.spread(self.default).median

    def decide(self) -> None:
        self.chosen, self.why = decide(self.default, self.rates)

    def line(self) -> str:
        """``tg32 tokens/s: 1 thread 48.1, 2 threads 31.0 (default) → 1 thread: ...``"""
        cells = [f"{self._name(candidate)} {self.spread(candidate).median:.1f}"
                 + (" (default)" if candidate == self.default else "") for candidate in sorted(self.rates)]
        return f"{self.metric} tokens/s: {', '.join(cells)} → {self.why}"

    def _name(self, value: int) -> str:
        return f"{value} thread{'s' if value != 1 else ''}" if self.setting == "threads" else f"batch {value}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "default": self.default, "chosen": self.chosen, "changed": self.changed,
                "ratio": round(self.ratio, 3), "why": self.why,
                "candidates": {str(value): self.spread(value).to_dict() for value in sorted(self.rates)}}


def decide(default: int, rates: dict[int, list[float]], *, margin: float = MARGIN,
           share: float = WIN_SHARE) -> tuple[int, str]:
    """The candidate to keep, and why: the default unless another is clearly faster (see the module's text). The
    rates of one round are at the same index in every list."""
    base = rates[default]
    needed = math.ceil(share * len(base))
    best, best_median, why = default, statistics.median(base), ""
    for candidate, values in sorted(rates.items()):
        if candidate == default:
            continue
        ratio = statistics.median(values) / statistics.median(base)
        wins = sum(value > against for value, against in zip(values, base, strict=True))
        if ratio >= 1 + margin and wins >= needed and statistics.median(values) > best_median:
            best, best_median = candidate, statistics.median(values)
            why = f"{candidate}: {100 * (ratio - 1):.0f} % faster, and faster in {wins} of {len(base)} rounds"
    if best == default:
        why = (f"kept the default {default}: no candidate was {100 * margin:.0f} % faster and faster in {needed} of "
               f"{len(base)} rounds")
    return best, why


ALL_COUNTS_UP_TO = 8
"""Every thread count up to this many is tried; above it, the powers of two (a sweep of 1..64 would take long)."""


def thread_candidates(report: HardwareReport) -> list[int]:
    """1 up to the physical cores (above ALL_COUNTS_UP_TO, the powers of two and the physical count), and the
    logical count where it differs."""
    physical = max(report.cpu.physical_cores or 1, 1)
    logical = max(report.cpu.logical_cores or physical, physical)
    powers = {1 << shift for shift in range(physical.bit_length()) if 1 << shift <= physical}
    return sorted({*range(1, min(physical, ALL_COUNTS_UP_TO) + 1), *powers, physical, logical})


@dataclass
class TuneResult:
    model: str
    measured_at: str
    hardware: HardwareReport
    request: TuneRequest
    threads: Sweep
    batch: Sweep
    saved: Tuned
    comment: list[str]
    config_file: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": BACKEND, "measured_at": self.measured_at,
                "machine": machine_line(self.hardware), "rounds": self.request.rounds,
                "threads": self.threads.to_dict(), "batch": self.batch.to_dict(),
                "tuned_tg_over_default_tg": round(self.threads.ratio, 3),
                "saved": {"threads": self.saved.threads, "batch": self.saved.batch},
                "config_file": str(self.config_file) if self.config_file else None,
                "comment": list(self.comment), "notes": list(self.notes)}


class _Models:
    """The model loaded once per batch size: all at once where they fit in memory together (the weights are
    mapped from the file, so they share them), else one at a time, loaded for each run."""

    def __init__(self, settings: Settings, model: str | None, ctx: int, report: HardwareReport,
                 batches: list[int], default_batch: int) -> None:
        self.settings, self.model, self.ctx, self.report = settings, model, ctx, report
        self.default_batch = default_batch
        self.kept: dict[int, Any] = {}
        self.all_at_once = True
        self.name = ""
        first = self._load(default_batch)
        self.kept[default_batch] = first
        self.all_at_once = first.plan.memory.cpu * len(batches) <= report.ram_available * 0.6

    def _load(self, batch: int):
        from localllm.tasks.loading import load_model

        tuned = None if batch == self.default_batch else Tuned(batch=batch)
        loaded = load_model(replace(self.settings, tuned=tuned), self.model, backend=BACKEND, ctx=self.ctx,
                            report=self.report)
        self.name = loaded.ref.name
        return loaded

    @contextmanager
    def runner(self, batch: int, threads: int) -> Iterator[LlamaRunner]:
        loaded = self.kept.get(batch)
        fresh = loaded is None
        if loaded is None:
            loaded = self._load(batch)
            if self.all_at_once:
                self.kept[batch] = loaded
                fresh = False
        try:
            runner = LlamaRunner.of(loaded.backend)
            if runner is None:  # load_model was asked for llama.cpp: nothing else comes back
                raise UsageError("bench --tune needs the llama.cpp backend", hint="pip install 'localllm[llama]'")
            runner.set_threads(threads)
            yield runner
        finally:
            if fresh:
                loaded.close()

    def close(self) -> None:
        for loaded in self.kept.values():
            loaded.close()
        self.kept.clear()


def tune(settings: Settings, request: TuneRequest, *, progress: Progress = _quiet,
         report: HardwareReport | None = None, save: bool = True) -> TuneResult:
    """Sweep the threads, then the batch size (at the threads chosen), and save what won in the config."""
    request.check()
    from localllm.backends import backend_class
    from localllm.hardware.detect import detect_hardware
    from localllm.hardware.planner import default_threads

    report = report or detect_hardware()
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    default_batch = next(option.default for option in backend_class(BACKEND).options if option.name == "n_batch")
    planner_threads, _ = default_threads(report)
    thread_list = sorted({*(request.threads or thread_candidates(report)), planner_threads})
    p, n, rounds = request.prompt_tokens, request.gen_tokens, request.rounds
    batch_list, alike = _distinct_batches(request.batches or DEFAULT_BATCHES, default_batch, p)
    ctx = -(-max(p, n + 1, 512) // CTX_STEP) * CTX_STEP
    threads = Sweep("threads", f"tg{n}", planner_threads)
    batch = Sweep("batch", f"pp{p}", default_batch)
    total = 1 + rounds * (len(thread_list) + len(batch_list))
    done = 0
    progress("loading", done, total)
    # Measured against the untuned defaults: an earlier [tuned] table is what is being redone.
    models = _Models(replace(settings, tuned=None, threads=None), request.model, ctx, report, batch_list,
                     default_batch)
    try:
        done += 1
        with models.runner(default_batch, planner_threads) as runner:
            runner.generate(2)  # warm-up
            for round_index in range(rounds):
                for candidate in _rotated(thread_list, round_index):
                    progress(f"threads {candidate}: tg{n} (round {round_index + 1}/{rounds})", done, total)
                    runner.set_threads(candidate)
                    threads.rates.setdefault(candidate, []).append(n / runner.generate(n))
                    done += 1
        threads.decide()
        for round_index in range(rounds):
            for candidate in _rotated(batch_list, round_index):
                progress(f"batch {candidate}: pp{p} at {threads.chosen} threads (round {round_index + 1}/{rounds})",
                         done, total)
                with models.runner(candidate, threads.chosen) as runner:
                    if round_index == 0:
                        runner.prompt(min(p, 16))  # warm-up
                    batch.rates.setdefault(candidate, []).append(p / runner.prompt(p)[0])
                done += 1
        batch.decide()
    finally:
        models.close()
    progress("done", total, total)
    saved = Tuned(threads=threads.chosen if threads.changed else None,
                  batch=batch.chosen if batch.changed else None, measured_at=measured_at, model=models.name)
    result = TuneResult(models.name, measured_at, report, request, threads, batch, saved,
                        _comment(saved, report, request, threads, batch))
    if alike:
        result.notes.append(f"batch {', '.join(map(str, alike))} left out: a {p}-token prompt is read in the "
                            "same batches as with a size already tried (-p sets the prompt)")
    if settings.threads and saved.threads:
        result.notes.append(f"threads = {settings.threads} (the config, LOCALLLM_THREADS or -o threads) still wins "
                            f"over the tuned {saved.threads}: remove it to use the tuned value")
    if save:
        save_tuned(settings.paths.config_file, saved, result.comment)
        result.config_file = settings.paths.config_file
    return result


def _distinct_batches(wanted: tuple[int, ...], default: int, prompt: int) -> tuple[list[int], list[int]]:
    """The batch sizes worth trying, the default first among equals: a size at or above the prompt's length reads it
    in one batch, as any other such size does. And those left out for that."""
    kept: dict[int, int] = {min(default, prompt): default}
    alike = []
    for size in sorted(set(wanted)):
        if min(size, prompt) in kept:
            if size != default:
                alike.append(size)
        else:
            kept[min(size, prompt)] = size
    return sorted(kept.values()), alike


def _rotated(values: list[int], by: int) -> list[int]:
    """Round ``by``'s order: turned by one place each round (each candidate runs first in turn), and backwards every
    other full turn (each follows a different neighbour)."""
    shift = by % len(values)
    order = values[shift:] + values[:shift]
    return order[::-1] if (by // len(values)) % 2 else order


def _comment(saved: Tuned, report: HardwareReport, request: TuneRequest, threads: Sweep, batch: Sweep) -> list[str]:
    kept = [name for name, value in (("threads", saved.threads), ("batch", saved.batch)) if value is None]
    return [
        f"Written by `localllm bench --tune` on {saved.when}: {saved.model} on {BACKEND}, in this process.",
        f"Machine: {machine_line(report)}.",
        f"Medians of {request.rounds} interleaved rounds; a candidate replaces the default only when "
        f"{100 * MARGIN:.0f} % faster and faster in {math.ceil(WIN_SHARE * request.rounds)} of the rounds.",
        threads.line(),
        f"{batch.line()} (at {threads.chosen} thread{'s' if threads.chosen != 1 else ''})",
        *([f"Not pinned ({', '.join(kept)}): the planner's default stays."] if kept else []),
        "`threads = N` above, LOCALLLM_THREADS or -o threads win over this table; delete it to go back.",
    ]
