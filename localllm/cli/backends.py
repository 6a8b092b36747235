"""`localllm backends`: each backend's state on this machine, and why `auto` picks what it picks."""

from __future__ import annotations

import argparse

from localllm.cli.arguments import Commands, server_args
from localllm.cli.output import console, print_json
from localllm.core.settings import Settings


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def backends_command(args: argparse.Namespace, settings: Settings) -> int:
    from rich.table import Table

    from localllm.tasks.backends import backends_report

    result = backends_report(settings, args.model)
    if args.json:
        print_json(result.to_dict())
        return 0
    out = console()
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in ("BACKEND", "INSTALLED", "VERSION", "REACHABLE", "GPU", "WHERE"):
        table.add_column(column, overflow="fold")
    for status in result.backends:
        table.add_row(status.name, _yes_no(status.installed), status.version or "-", _yes_no(status.reachable),
                      status.gpu, status.where or "-")
    out.print(table)
    for status in result.backends:
        if status.self_check:
            out.print(f"{status.name} self-check: {status.self_check}", markup=False)
        if status.problem:
            out.print(f"{status.name}: {status.problem}", markup=False)
        if status.models:
            running = f" (loaded now: {', '.join(status.running)})" if status.running else ""
            out.print(f"{status.name} serves: {', '.join(status.models)}{running}", markup=False)
    if result.choice:
        out.print(f"auto picks {result.choice.name}:", markup=False)
        for reason in result.choice.reasons:
            out.print(f"  - {reason}", markup=False)
        for reason in result.passed_over:
            out.print(f"  not {reason}", markup=False)
    else:
        out.print(f"auto cannot pick a backend: {result.choice_error}", markup=False)
    return 0


def register(commands: Commands) -> None:
    backends = commands.add_parser("backends", help="each backend: installed, reachable, GPU, version; why auto picks")
    backends.add_argument("-m", "--model", help="explain the choice for this model (default: the configured one)")
    backends.add_argument("--json", action="store_true")
    server_args(backends)
    backends.set_defaults(handler=backends_command)
