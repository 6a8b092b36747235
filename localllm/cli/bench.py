"""`localllm bench` and `localllm bench --tune`: a table (or --json, --csv, --md) of each model's speed on each
backend, and the sweep that saves the fastest threads and batch size for the planner.

Only argparse and the shared flags are imported at start-up; the measuring code and rich are imported when the
command runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from localllm.cli.arguments import Commands, server_args

if TYPE_CHECKING:
    from localllm.core.settings import Settings
    from localllm.tasks.bench.run import BenchReport, BenchResult
    from localllm.tasks.bench.tune import TuneResult

BENCH_DEFAULTS = {"prompt_tokens": 512, "gen_tokens": 128, "repetitions": 3}
TUNE_DEFAULTS = {"prompt_tokens": 512, "gen_tokens": 32, "repetitions": 5}


def register(commands: Commands) -> None:
    bench = commands.add_parser(
        "bench", help="prompt and generation speed, time to first token, load time and peak memory per model and "
                      "backend; --tune saves the fastest threads and batch size here")
    model = bench.add_argument("-m", "--model", dest="models", action="append", metavar="MODEL",
                               help="model to measure, repeatable (default: the configured one)")
    backend = bench.add_argument("-b", "--backend", dest="backends", action="append", metavar="BACKEND",
                                 help="backend to measure on, repeatable: auto, llama.cpp, ollama, openai, gpt4all "
                                      "(default: auto)")
    try:
        from localllm.backends import BACKEND_NAMES
        from localllm.cli.completions import model_names

        model.completer = model_names  # type: ignore[attr-defined]  # read by argcomplete
        backend.completer = lambda **_: BACKEND_NAMES  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - both are localllm's own
        pass
    bench.add_argument("-p", dest="prompt_tokens", type=int, metavar="N",
                       help="prompt tokens read at once, pp (default 512)")
    bench.add_argument("-n", dest="gen_tokens", type=int, metavar="N",
                       help="tokens generated one by one, tg (default 128; 32 with --tune)")
    bench.add_argument("-d", "--depth", type=int, default=0, metavar="DEPTH",
                       help="also time the generation after DEPTH tokens are in the context (as llama-bench's -d)")
    bench.add_argument("-r", dest="repetitions", type=int, metavar="N",
                       help="repetitions, for the median and the spread (default 3; rounds with --tune: 5)")
    bench.add_argument("--tune", action="store_true",
                       help="sweep threads and batch size on llama.cpp here, save what is really faster in the "
                            "config (the planner uses it from then on)")
    bench.add_argument("--threads", metavar="LIST", help="with --tune: thread counts to try, e.g. 1,2,4 "
                                                         "(default 1 up to the physical cores)")
    bench.add_argument("--batch", metavar="LIST", help="with --tune: batch sizes to try (default 64,128,256,512)")
    output = bench.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="everything, for scripts")
    output.add_argument("--csv", action="store_true", help="one CSV row per model and backend")
    output.add_argument("--md", action="store_true", help="a Markdown table")
    server_args(bench)
    bench.set_defaults(handler=bench_command)


def _numbers(flag: str, text: str | None) -> tuple[int, ...]:
    from localllm.core.errors import UsageError

    if text is None:
        return ()
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not a list of whole numbers", hint=f"for example {flag} 1,2,4") from None
    if not values:
        raise UsageError(f"{flag} is empty", hint=f"for example {flag} 1,2,4")
    return values


def _value(args: argparse.Namespace, name: str, defaults: dict[str, int]) -> int:
    value = getattr(args, name)
    return defaults[name] if value is None else value


def bench_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.backends import canonical_name
    from localllm.core.errors import UsageError

    backends = tuple(canonical_name(name) for name in args.backends or ["auto"])
    models = tuple(args.models or [None])
    threads, batches = _numbers("--threads", args.threads), _numbers("--batch", args.batch)
    if args.tune:
        if len(models) > 1:
            raise UsageError("--tune measures one model", hint="localllm bench --tune -m MODEL")
        if any(name not in ("auto", "llama.cpp") for name in backends):
            raise UsageError("--tune sweeps llama.cpp's threads and batch size in this process; a server's "
                             "settings are its own", hint="localllm bench --tune (or -b llama.cpp)")
        if args.csv or args.md:
            raise UsageError("--tune prints a summary, or --json", hint="localllm bench --tune --json")
        if args.depth:
            raise UsageError("--tune does not take -d", hint="localllm bench -d DEPTH measures at a depth")
        return _tune(args, settings, models[0], threads, batches)
    if threads or batches:
        raise UsageError("--threads and --batch choose what --tune sweeps",
                         hint="localllm bench --tune --threads 1,2 --batch 128,512")
    from localllm.tasks.bench.run import BenchRequest, run_bench

    request = BenchRequest(models=models, backends=backends,
                           prompt_tokens=_value(args, "prompt_tokens", BENCH_DEFAULTS),
                           gen_tokens=_value(args, "gen_tokens", BENCH_DEFAULTS), depth=args.depth,
                           repetitions=_value(args, "repetitions", BENCH_DEFAULTS))
    request.check()
    with _progress() as progress:
        report = run_bench(settings, request, progress=progress)
    if args.json:
        from localllm.cli.output import print_json

        print_json(report.to_dict())
    elif args.csv:
        sys.stdout.write(csv_text(report))
    elif args.md:
        sys.stdout.write(markdown_text(report))
    else:
        _print_table(report)
    from localllm.cli.output import error_line

    for failed in report.failed:
        print(error_line(f"{failed.model} on {failed.backend}: {failed.error}", failed.hint), file=sys.stderr)
    return 1 if report.failed else 0


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr while the runs go on (nothing when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        yield lambda what, done, total: None
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from localllm.cli.output import console

    # Redrawn four times a second: the drawing takes CPU time from the runs it shows, on a small machine.
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True, refresh_per_second=4) as bar:
        task = bar.add_task("starting", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=escape(what), completed=done, total=total)

        yield update


# -- the results as rows ---------------------------------------------------------------------------------------------
def _median(result: BenchResult, name: str) -> float | None:
    spread = getattr(result, name)
    return spread.median if spread is not None else None


def _stdev(result: BenchResult, name: str) -> float | None:
    spread = getattr(result, name)
    return spread.stdev if spread is not None else None


CSV_COLUMNS = ("model", "backend", "measured", "threads", "batch", "n_ctx", "prompt_tokens", "gen_tokens", "depth",
               "pp_tokens_per_s", "pp_stdev", "tg_tokens_per_s", "tg_stdev", "tg_at_depth_tokens_per_s",
               "tg_at_depth_stdev", "ttft_s", "ttft_stdev", "load_s", "peak_memory_bytes", "bytes_per_token",
               "bandwidth_percent", "bandwidth_percent_at_depth", "error")


def csv_row(result: BenchResult) -> dict[str, Any]:
    def rounded(value: float | None, digits: int = 2) -> float | None:
        return round(value, digits) if value is not None else None

    return {
        "model": result.model, "backend": result.backend, "measured": result.measured, "threads": result.threads,
        "batch": result.batch, "n_ctx": result.n_ctx, "prompt_tokens": result.prompt_tokens,
        "gen_tokens": result.gen_tokens, "depth": result.depth,
        "pp_tokens_per_s": rounded(_median(result, "pp")), "pp_stdev": rounded(_stdev(result, "pp")),
        "tg_tokens_per_s": rounded(_median(result, "tg")), "tg_stdev": rounded(_stdev(result, "tg")),
        "tg_at_depth_tokens_per_s": rounded(_median(result, "tg_depth")),
        "tg_at_depth_stdev": rounded(_stdev(result, "tg_depth")),
        "ttft_s": rounded(_median(result, "ttft"), 4), "ttft_stdev": rounded(_stdev(result, "ttft"), 4),
        "load_s": rounded(result.load_s, 4), "peak_memory_bytes": result.peak_memory,
        "bytes_per_token": result.bound.bytes_per_token if result.bound else None,
        "bandwidth_percent": round(result.bound.percent, 1) if result.bound else None,
        "bandwidth_percent_at_depth": round(result.bound_depth.percent, 1) if result.bound_depth else None,
        "error": result.error,
    }


def csv_text(report: BenchReport) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in report.results:
        writer.writerow({key: "" if value is None else value for key, value in csv_row(result).items()})
    return out.getvalue()


def _cells(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """The human table's header and rows (shared by the terminal table and --md)."""
    from localllm.core.units import human_size

    request = report.request
    header = ["model", "backend", "measured", "threads", f"pp{request.prompt_tokens} t/s",
              f"tg{request.gen_tokens} t/s"]
    if request.depth:
        header.append(f"tg{request.gen_tokens} @ d{request.depth} t/s")
    header += ["TTFT", "load", "peak memory", "bandwidth"]
    rows = []

    def rate(result: BenchResult, name: str) -> str:
        spread = getattr(result, name)
        return spread.text(1) if spread is not None else "-"

    for result in report.results:
        if result.error:
            rows.append([result.model, result.backend, "failed", "-", "-", "-", *(["-"] if request.depth else []),
                         "-", "-", "-", "-"])
            continue
        bound = result.bound
        bandwidth = f"{bound.percent:.0f} %" if bound else "-"
        if result.bound_depth:
            bandwidth += f" ({result.bound_depth.percent:.0f} % @ d{request.depth})"
        row = [result.model, result.backend, result.measured, str(result.threads or "-"), rate(result, "pp"),
               rate(result, "tg")]
        if request.depth:
            row.append(rate(result, "tg_depth"))
        row += [f"{result.ttft.median * 1000:.0f} ms" if result.ttft else "-",
                f"{result.load_s:.2f} s" if result.load_s is not None else "-",
                human_size(result.peak_memory) if result.peak_memory else "-", bandwidth]
        rows.append(row)
    return header, rows


def _machine_line(report: BenchReport) -> str:
    text = f"machine: {report.machine}"
    if report.bandwidth:
        text += f"; memory bandwidth {report.bandwidth.bytes_per_s / 1e9:.1f} GB/s (copy test)"
    return text


def markdown_text(report: BenchReport) -> str:
    header, rows = _cells(report)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [_machine_line(report), "", line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(row) for row in rows]
    notes = [f"- {result.model} on {result.backend}: {note}" for result in report.results for note in result.notes]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _print_table(report: BenchReport) -> None:
    from localllm.cli.output import console, inert
    from localllm.cli.reports import _table

    out = console()
    out.print(inert(_machine_line(report)))
    header, rows = _cells(report)
    table = _table(*header)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    request = report.request
    out.print(inert(f"{request.repetitions} repetitions: median ± standard deviation; bandwidth: bytes read per "
                    "generated token (the weights and the KV cache) × tokens/s, as a share of the memory bandwidth"))
    for result in report.results:
        for note in result.notes:
            out.print(inert(f"note: {result.model} on {result.backend}: {note}"))


# -- --tune ----------------------------------------------------------------------------------------------------------
def _tune(args: argparse.Namespace, settings: Settings, model: str | None, threads: tuple[int, ...],
          batches: tuple[int, ...]) -> int:
    from localllm.tasks.bench.tune import TuneRequest, tune

    request = TuneRequest(model=model, threads=threads, batches=batches,
                          rounds=_value(args, "repetitions", TUNE_DEFAULTS),
                          prompt_tokens=_value(args, "prompt_tokens", TUNE_DEFAULTS),
                          gen_tokens=_value(args, "gen_tokens", TUNE_DEFAULTS))
    request.check()
    with _progress() as progress:
        result = tune(settings, request, progress=progress)
    if args.json:
        from localllm.cli.output import print_json

        print_json(result.to_dict())
        return 0
    _print_tune(result)
    return 0


def _print_tune(result: TuneResult) -> None:
    from localllm.cli.output import console, inert
    from localllm.tasks.bench.machine import machine_line

    out = console()
    out.print(inert(f"tuned {result.model} on llama.cpp: {result.request.rounds} interleaved rounds, medians"))
    out.print(inert(f"machine: {machine_line(result.hardware)}"))
    out.print(inert(f"threads: {result.threads.line()}"))
    out.print(inert(f"batch:   {result.batch.line()}"))
    saved = result.saved
    what = [f"threads {saved.threads}" if saved.threads else "threads: the planner's default (not pinned)",
            f"batch {saved.batch}" if saved.batch else f"batch: the default {result.batch.default} (not pinned)"]
    out.print(inert(f"saved in {result.config_file} [tuned]: {'; '.join(what)}"))
    out.print(inert(f"tuned tg ÷ default tg: {result.threads.ratio:.2f}"))
    for note in result.notes:
        out.print(inert(f"note: {note}"))
