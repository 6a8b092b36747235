"""What a package manager would put in place, for a user who installed localllm with pipx, uv or pip: the shell
completions where each shell looks for them (`localllm completions SHELL --install`) and a Linux desktop launcher
with its icon (`localllm desktop --install`). Files go under the user's XDG folders, never system-wide."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.cli.output import note
from localllm.core.errors import UsageError
from localllm.core.files import write_text_atomically

if TYPE_CHECKING:
    from localllm.cli.arguments import Commands
    from localllm.core.settings import Settings


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def completion_target(shell: str) -> Path:
    """Where each shell finds a user's completions by itself (zsh: a folder to add to $fpath once)."""
    return {"bash": data_home() / "bash-completion" / "completions" / "localllm",
            "zsh": data_home() / "zsh" / "site-functions" / "_localllm",
            "fish": config_home() / "fish" / "completions" / "localllm.fish"}[shell]


def install_completions(shell: str, script: str) -> int:
    target = completion_target(shell)
    write_text_atomically(target, script + "\n")
    print(f"wrote {target}")
    if shell == "bash":
        note("bash-completion loads it in new shells (with the bash-completion package installed)")
    elif shell == "zsh":
        note(f"add this line to ~/.zshrc before compinit, once: fpath=({target.parent} $fpath)")
    else:
        note("fish loads it in new shells")
    return 0


def launcher_files() -> tuple[str, str]:
    """The desktop entry and the icon shipped in the package (the wheel carries packaging/linux's files)."""
    from importlib import resources

    shipped = resources.files("localllm") / "desktop"
    source = Path(__file__).resolve().parents[2] / "packaging" / "linux"  # a source checkout (editable install)
    for folder in (shipped, source):
        entry, icon = folder / "localllm.desktop", folder / "localllm.svg"
        if entry.is_file() and icon.is_file():
            return entry.read_text(encoding="utf-8"), icon.read_text(encoding="utf-8")
    raise UsageError("the desktop entry is not in this installation", hint="reinstall localllm from its wheel")


def desktop_entry(executable: str) -> str:
    """The shipped entry with the absolute path of this installation's `localllm`: a desktop session's PATH often
    lacks ~/.local/bin, where pipx puts it."""
    entry, _ = launcher_files()
    quoted = f'"{executable}"' if " " in executable else executable
    return "\n".join(f"Exec={quoted}" if line.startswith("Exec=") else line for line in entry.splitlines()) + "\n"


def this_executable() -> str:
    found = shutil.which("localllm", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                             os.environ.get("PATH", "")]))
    return str(Path(found).resolve()) if found else "localllm"


def desktop_command(args: argparse.Namespace, settings: Settings) -> int:
    applications = data_home() / "applications" / "localllm.desktop"
    icon = data_home() / "icons" / "hicolor" / "scalable" / "apps" / "localllm.svg"
    if args.remove:
        removed = [path for path in (applications, icon) if path.exists()]
        for path in removed:
            path.unlink()
        print("removed " + ", ".join(str(p) for p in removed) if removed else "nothing to remove")
        return 0
    entry = desktop_entry(this_executable())
    if not args.install:
        sys.stdout.write(entry)
        return 0
    _, svg = launcher_files()
    write_text_atomically(applications, entry)
    write_text_atomically(icon, svg)
    print(f"wrote {applications}\nwrote {icon}")
    note("the launcher opens the app in your terminal; `localllm desktop --remove` takes it away")
    return 0


def register(commands: Commands) -> None:
    desktop = commands.add_parser("desktop", help="the Linux desktop launcher: print it, or --install it with its icon")
    placing = desktop.add_mutually_exclusive_group()
    placing.add_argument("--install", action="store_true", help="into ~/.local/share/applications (and the icon)")
    placing.add_argument("--remove", action="store_true", help="take the launcher and its icon away again")
    desktop.set_defaults(handler=desktop_command)
