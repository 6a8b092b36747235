"""`localllm eval perplexity|kld|choice`, `localllm quantize` and `localllm compare`: quality measured on local
files, a model quantized into the store, and kept speed and quality results side by side (docs/eval.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.cli.arguments import Commands, server_args

if TYPE_CHECKING:
    from localllm.core.settings import Settings

STOPPED_EXIT = 130


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    parser.add_argument("-b", "--backend", default="auto", help="backend (default: auto; llama.cpp gives "
                                                                "log-probabilities)")
    parser.add_argument("--json", action="store_true", help="the result as JSON")
    server_args(parser)


def register(commands: Commands) -> None:
    evaluate = commands.add_parser("eval", help="quality on your own files: perplexity, KL divergence against a "
                                                "reference, multiple-choice accuracy")
    # The subcommands share the parent's handler, which dispatches on the kind (as `code`'s do).
    evaluate.set_defaults(handler=eval_command)
    kinds = evaluate.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    perplexity = kinds.add_parser("perplexity", help="perplexity of texts, by llama-perplexity's method")
    _model_flags(perplexity)
    perplexity.add_argument("files", nargs="+", metavar="FILE", help="text files (or - for stdin)")
    perplexity.add_argument("-c", "--ctx", type=int, default=512, metavar="N",
                            help="window size in tokens (default 512; llama-perplexity's -c)")
    perplexity.add_argument("--chunks", type=int, metavar="N", help="score only the first N windows")
    perplexity.add_argument("--save-logits", type=Path, metavar="FILE",
                            help="keep the log-probabilities (16-bit, llama.cpp's --kl-divergence-base layout) "
                                 "for `eval kld --base FILE`")
    kld = kinds.add_parser("kld", help="KL divergence, top-token agreement and Δ perplexity against a reference's "
                                       "saved log-probabilities")
    _model_flags(kld)
    kld.add_argument("base_file", nargs="?", type=Path, metavar="FILE", help="the reference file (or --base)")
    kld.add_argument("--base", type=Path, metavar="FILE", help="the file --save-logits wrote")
    kld.add_argument("--chunks", type=int, metavar="N", help="compare only the first N windows")
    choice = kinds.add_parser("choice", help="multiple-choice accuracy by log-likelihood (MMLU, ARC, HellaSwag "
                                             "columns, or question/choices/answer) from JSONL, CSV or Parquet")
    _model_flags(choice)
    choice.add_argument("data", type=Path, metavar="DATA", help="a .jsonl, .csv or .parquet file")
    choice.add_argument("--limit", type=int, metavar="N", help="the first N items only")
    choice.add_argument("--ctx", type=int, metavar="N", help="context window (default: the configured one)")
    task = kinds.add_parser("task", help="your labelled rows through classify, sentiment or extract: accuracy, "
                                         "per-label precision/recall and the confusion table, or field matches")
    _model_flags(task)
    task.add_argument("--task", choices=("classify", "sentiment", "extract"), help="which task (required)")
    task.add_argument("data", metavar="DATA", help="JSONL or CSV rows")
    task.add_argument("--gold", metavar="FIELD", help="the column holding the right answer (required)")
    task.add_argument("--field", default="text", metavar="FIELD", help="the column holding the text (default text)")
    task.add_argument("--labels", help="classify: the labels (default: those in the gold column)")
    task.add_argument("--schema", help="extract: the JSON schema file")
    task.add_argument("--limit", type=int, metavar="N", help="the first N rows only")
    task.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                      help="decoding option, repeatable (default: greedy, as the tasks run)")
    task.set_defaults(preset=None)

    quantize = commands.add_parser("quantize", help="quantize a model with llama.cpp into localllm's store "
                                                    "(Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0...)")
    quantize.add_argument("source", metavar="MODEL", help="model name or .gguf path (F16/BF16/F32 is best)")
    quantize.add_argument("type", metavar="TYPE", help="quantization type, e.g. Q4_K_M")
    quantize.add_argument("--threads", type=int, metavar="N", help="threads (default: half the logical CPUs)")
    quantize.add_argument("--json", action="store_true", help="the result as JSON")
    quantize.set_defaults(handler=quantize_command)

    compare = commands.add_parser("compare", help="kept speed and quality results of models side by side")
    compare.add_argument("models", nargs="+", metavar="MODEL", help="models to compare")
    compare.add_argument("--json", action="store_true", help="the results as JSON")
    compare.set_defaults(handler=compare_command)


def eval_command(args: argparse.Namespace, settings: Settings) -> int:
    handlers = {"perplexity": perplexity_command, "kld": kld_command, "choice": choice_command,
                "task": task_command}
    return handlers[args.eval_kind](args, settings)


def _positive(flag: str, value: int | None) -> None:
    from localllm.core.errors import UsageError

    if value is not None and value < 1:
        raise UsageError(f"{flag} must be 1 or more, not {value}", hint=f"for example {flag} 8")


@contextmanager
def _progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A rich bar with an ETA on stderr (nothing when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from localllm.cli.output import console

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console(stderr=True), transient=True, refresh_per_second=4) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _finish(result: dict[str, Any], as_json: bool, lines: list[str]) -> int:
    if as_json:
        from localllm.cli.output import print_json

        print_json(result)
    else:
        for line in lines:
            print(line)
    if result.get("stopped"):
        print("stopped: the result covers the part done before Ctrl-C", file=sys.stderr)
        return STOPPED_EXIT
    return 0


def _pm(value: float | None, error: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" ± {error:.{digits}f}" if error is not None else "")


def perplexity_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.evaluate.run import run_perplexity

    _positive("-c", args.ctx)
    _positive("--chunks", args.chunks)
    with _progress("perplexity: windows") as progress:
        result = run_perplexity(settings, args.model, args.files, args.ctx, backend=args.backend,
                                chunks=args.chunks, save_logits=args.save_logits, progress=progress)
    lines = [f"{f['file']}: PPL = {_pm(f['perplexity'], f['error'])} ({f['tokens_scored']:,} tokens scored, "
             f"{f['windows']} windows)" for f in result["files"]] if len(result["files"]) > 1 else []
    lines.append(f"{result['model']}: PPL = {_pm(result['perplexity'], result['error'])} over "
                 f"{result['tokens_scored']:,} tokens ({result['windows']} windows of {result['n_ctx']}, "
                 f"{result['tokens_per_s'] or 0:.1f} tokens/s)")
    if result["saved_logits"]:
        lines.append(f"log-probabilities saved to {result['saved_logits']}")
    return _finish(result, args.json, lines)


def kld_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.core.errors import UsageError
    from localllm.tasks.evaluate.run import run_divergence

    _positive("--chunks", args.chunks)
    base = args.base or args.base_file
    if base is None or (args.base and args.base_file):
        raise UsageError("name the reference file once: --base FILE",
                         hint="made by: localllm eval perplexity -m BASE TEXT --save-logits FILE")
    args.base = base
    with _progress("KL divergence: windows") as progress:
        result = run_divergence(settings, args.model, base, backend=args.backend, chunks=args.chunks,
                                progress=progress)
    lines = [f"{result['model']} against {args.base.name} ({result['tokens_scored']:,} tokens, "
             f"{result['windows']} windows of {result['n_ctx']}):"]
    if "kld" in result:
        lines += [f"  KL divergence   {_pm(result['kld'], result['kld_error'], 6)} (median "
                  f"{result['kld_median']:.6f}, 99% {result['kld_p99']:.6f}, max {result['kld_max']:.6f})",
                  f"  same top token  {_pm(100 * result['same_top'], 100 * result['same_top_error'], 2)} %",
                  f"  perplexity      {_pm(result['perplexity'], result['perplexity_error'])} (reference "
                  f"{_pm(result['perplexity_base'], result['perplexity_base_error'])})",
                  f"  Δ perplexity    {_pm(result['delta_perplexity'], result['delta_perplexity_error'])}",
                  f"  RMS Δp          {100 * result['rms_delta_p']:.3f} %"]
    return _finish(result, args.json, lines)


def choice_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.evaluate.run import run_choice

    _positive("--limit", args.limit)
    with _progress("multiple choice: items") as progress:
        result = run_choice(settings, args.model, args.data, backend=args.backend, limit=args.limit,
                            ctx=args.ctx, progress=progress)
    lines = [f"{result['model']} on {args.data.name} ({result['items']} items): "
             f"acc {_pm(result['acc'], result['acc_stderr'])}, acc_norm "
             f"{_pm(result['acc_norm'], result['acc_norm_stderr'])}"]
    return _finish(result, args.json, lines)


def task_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.cli.tasks import task_options
    from localllm.core.errors import UsageError
    from localllm.tasks.evaluate.run import run_labelled
    from localllm.tasks.structured import load_schema, parse_labels

    if not args.task or not args.gold:
        raise UsageError("eval task needs --task and --gold",
                         hint="localllm eval task -m MODEL --task classify rows.jsonl --gold label")
    _positive("--limit", args.limit)
    labels = parse_labels(args.labels) if args.labels else None
    schema = load_schema(args.schema) if args.schema else None
    with _progress(f"{args.task}: rows") as progress:
        result = run_labelled(settings, args.model, args.task, args.data, args.gold, field=args.field,
                              options=task_options(args), labels=labels, schema=schema, backend=args.backend,
                              limit=args.limit, progress=progress)
    lines = [f"{result['model']} on {args.data} ({result['rows']} rows, {len(result['failed'])} failed):"]
    if args.task == "extract":
        lines.append(f"  exact match  {_pm(result['exact'], result['exact_stderr'], 3)}")
        lines += [f"  {key:<12} {value:.3f}" for key, value in result["fields"].items()]
    else:
        lines.append(f"  accuracy  {_pm(result['accuracy'], result['accuracy_stderr'], 3)}")
        for label, figures in result["labels"].items():
            precision = "-" if figures["precision"] is None else f"{figures['precision']:.3f}"
            recall = "-" if figures["recall"] is None else f"{figures['recall']:.3f}"
            lines.append(f"  {label:<12} precision {precision}  recall {recall}  (n={figures['support']})")
        labels_seen = list(result["confusion"])
        lines.append("  confusion (rows: gold, columns: predicted): " + ", ".join(labels_seen))
        lines += [f"  {gold:<12} " + " ".join(f"{result['confusion'][gold][p]:>4}" for p in labels_seen)
                  for gold in labels_seen]
    return _finish(result, args.json, lines)


def quantize_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.core.units import human_size
    from localllm.tasks.quantize import plan_quantize, quantize

    _positive("--threads", args.threads)
    plan = plan_quantize(settings, args.source, args.type)
    print(f"quantizing {plan.source_name} to {plan.kind}: about {human_size(plan.estimate)} into {plan.target} "
          f"({human_size(plan.free)} free)", file=sys.stderr)
    if sys.stderr.isatty():
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from localllm.cli.output import console

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console(stderr=True), transient=True,
                      refresh_per_second=4) as bar:
            task = bar.add_task("starting", total=None)
            done = quantize(settings, plan, threads=args.threads, progress=lambda d, t, name: bar.update(
                task, completed=d, total=t, description=escape(name)))
    else:
        done = quantize(settings, plan, threads=args.threads)
    if args.json:
        from localllm.cli.output import print_json

        print_json(done.to_dict())
    else:
        print(f"{done.name}: {done.path} ({human_size(done.size)}, sha256 {done.sha256[:16]}…, "
              f"{done.seconds:.1f} s)")
    return 0


COMPARE_COLUMNS = (("tokens/s (gen)", "bench", "tg_tokens_per_s", "{:.1f}"),
                   ("tokens/s (prompt)", "bench", "pp_tokens_per_s", "{:.1f}"),
                   ("memory", "bench", "peak_memory_bytes", None),
                   ("perplexity", "perplexity", "perplexity", "{:.3f}"),
                   ("KLD", "kld", "kld", "{:.5f}"),
                   ("same top", "kld", "same_top", "{:.1%}"),
                   ("accuracy", "choice", "acc", "{:.1%}"),
                   ("task", "task", "accuracy", "{:.1%}"))


def compare_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.core.units import human_size
    from localllm.tasks.results import latest_results

    rows = []
    for model in args.models:
        name, path, newest = latest_results(settings, model)
        rows.append((name, path, newest))
    if args.json:
        from localllm.cli.output import print_json

        print_json([{"model": name, "path": str(path) if path else None,
                     "results": {kind: {"figures": result.figures, "settings": result.settings,
                                        "measured": result.measured, "machine": result.machine}
                                 for kind, result in newest.items()}} for name, path, newest in rows])
        return 0
    from rich.table import Table

    from localllm.cli.output import console

    table = Table("model", *(title for title, *_ in COMPARE_COLUMNS))
    for name, _, newest in rows:
        cells = []
        for _, kind, key, form in COMPARE_COLUMNS:
            value = newest[kind].figures.get(key) if kind in newest else None
            cells.append("-" if value is None else human_size(value) if form is None else form.format(value))
        table.add_row(name, *cells)
    console().print(table)
    if not any(newest for _, _, newest in rows):
        print("nothing measured yet: run localllm bench, localllm eval perplexity/kld/choice first",
              file=sys.stderr)
    return 0
