"""Shell completions from the parser itself, through argcomplete: `localllm completions bash|zsh|fish` prints the
script to source; at each Tab the shell asks `localllm`, which answers from its parser (and with the installed
models' names for -m) before doing anything else."""

from __future__ import annotations

import argparse
import os

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


def completions_command(args: argparse.Namespace) -> int:
    import argcomplete

    script = argcomplete.shellcode(["localllm"], shell=args.shell)
    if getattr(args, "install", False):
        from localllm.cli.install import install_completions

        return install_completions(args.shell, script)
    print(script)
    return 0
