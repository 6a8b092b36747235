"""`localllm tui` (also what `localllm` alone opens in a terminal): the terminal app, started from the CLI."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from localllm.cli.arguments import Commands, backend_names, server_args
from localllm.core.errors import UsageError

if TYPE_CHECKING:
    from localllm.core.settings import Settings


def register(commands: Commands) -> None:
    tui = commands.add_parser("tui", help="the terminal app (also what `localllm` alone opens)")
    tui.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    tui.add_argument("-b", "--backend", choices=backend_names(), help="backend (default: auto)")
    server_args(tui)
    tui.set_defaults(handler=tui_command)


def tui_command(args: argparse.Namespace, settings: Settings) -> int:
    # A browser tab (localllm web) runs the app with textual-serve's driver on pipes.
    if not (sys.stdin.isatty() and sys.stdout.isatty()) and not os.environ.get("TEXTUAL_DRIVER"):
        raise UsageError("the app needs a terminal, and stdin or stdout is not one",
                         hint="run `localllm` in a terminal; in scripts use `localllm run` or `localllm chat`")
    from localllm.tasks.named import decoding_options
    from localllm.tui.app import LocalLLMApp, end_process

    if os.environ.get("TEXTUAL_DRIVER"):
        from localllm.cli.web import end_with_server

        end_with_server()
    # A named model's parameters under the app's own saved ones (the app applies those over these)
    app = LocalLLMApp(settings, decoding_options(settings, args.model), args.model)
    app.run()
    end_process(app, app.return_code or 0)
