"""Shell completions from the parser itself, through argcomplete: `localllm completions bash|zsh|fish` prints the
script to source; at each Tab the shell asks `localllm`, which answers from its parser (and with the installed
models' names for -m) before doing anything else."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localllm.cli.arguments import Commands
    from localllm.core.settings import Settings

SHELLS = ("bash", "zsh", "fish")


def complete_if_asked(parser: argparse.ArgumentParser) -> None:
    """When a shell is asking for completions (argcomplete's variable is set), answer and exit."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def model_names(prefix: str, **_: object) -> list[str]:
    """The installed and discovered models, for -m (read from the local files only: a Tab never waits on a
    server)."""
    try:
        from localllm.core.settings import Settings
        from localllm.store.locate import installed_models

        return [ref.name for ref in installed_models(Settings.load()) if ref.name.startswith(prefix)]
    except Exception:  # noqa: BLE001 - a completion that fails offers nothing rather than a traceback mid-line
        return []


def completions_command(args: argparse.Namespace, settings: Settings) -> int:
    import argcomplete

    script = argcomplete.shellcode(["localllm"], shell=args.shell)
    if getattr(args, "install", False):
        from localllm.cli.install import install_completions

        return install_completions(args.shell, script)
    print(script)
    return 0


def register(commands: Commands) -> None:
    completions = commands.add_parser("completions", help="the shell completion script: source it in your shell")
    completions.add_argument("shell", choices=("bash", "zsh", "fish"))
    completions.add_argument("--install", action="store_true",
                             help="write it where the shell looks for completions (in your home), not to stdout")
    completions.set_defaults(handler=completions_command)
