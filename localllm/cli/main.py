"""Entry point: build the parser from the command modules, run the handler the command set, turn errors into one
line.

Each command module adds its own commands and names its handler (``set_defaults(handler=...)``); at module level
they import only argparse, the standard library, localllm.core and each other, so `localllm --help` stays fast,
and a handler imports the rest when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from localllm import __version__
from localllm.cli import (
    app,
    backends,
    bench,
    completions,
    conversations,
    evaluate,
    generate,
    install,
    models,
    reports,
    serve,
    tasks,
    tools,
    web,
)
from localllm.cli.arguments import settings_from
from localllm.cli.output import error_line
from localllm.core.errors import LocalLLMError

EPILOG = """\
examples:
  localllm run "What is a GGUF file?"
  cat notes.txt | localllm run "List the action items"
  localllm run -m smollm2-135m -s "Answer in French" --preset precise "Name three rivers"
  localllm chat
  localllm chat -T time               (tools of the MCP server "time" in mcp.json)
  localllm show smollm2-135m
  localllm hw
  localllm bench -p 512 -n 128      (prompt and generation tokens/s; --tune saves the fastest threads)
  localllm catalog --fits
  localllm pull qwen2.5-1.5b-instruct
  localllm backends
  localllm run -b ollama -m llama3.2:1b "Hello"
  localllm run -b openai --base-url http://gpu-box:8000/v1 "Hello"
  localllm serve                      (OpenAI, Anthropic and Ollama APIs on 127.0.0.1:8000)
"""


# In the order `localllm --help` lists the commands.
REGISTER = (generate.register, completions.register, install.register, web.register, serve.register, tools.register,
            conversations.register, reports.register_installed, bench.register, evaluate.register, reports.register_hw,
            backends.register, models.register, tasks.register, app.register, reports.register_tokenize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localllm", description="Run large language models on your own machine.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"localllm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTER:
        register(commands)
    return parser


def _report(args: argparse.Namespace, message: str, hint: str | None) -> None:
    """The one-line error on stderr; with --json also a JSON object on stdout, so a script always gets JSON."""
    from localllm.cli.output import print_json, redact

    secrets = _secrets(args)
    print(error_line(message, hint, secrets), file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": redact(message, secrets), "hint": redact(hint, secrets) if hint else None})


def _secrets(args: argparse.Namespace) -> tuple[str, ...]:
    """The keys to keep out of an error line: --api-key and those the config and the environment hold."""
    from localllm.core.errors import ConfigError
    from localllm.core.settings import Paths, Settings

    try:
        held = Settings.load().secrets()
    except ConfigError:  # a config that cannot be read: the environment's keys still count
        held = Settings(paths=Paths.from_environment()).secrets()
    given = getattr(args, "api_key", None)
    return (given, *held) if given else held


def _show_notices() -> None:
    """What the lower layers tell the user while they work (the "localllm" logger's warnings) goes to stderr."""
    import logging

    from localllm.cli.output import note

    class NoteHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            note(record.getMessage())

    logger = logging.getLogger("localllm")
    if not any(getattr(handler, "localllm_cli", False) for handler in logger.handlers):
        handler = NoteHandler(logging.WARNING)
        handler.localllm_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        from localllm.cli.completions import complete_if_asked

        complete_if_asked(parser)
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    if args.command is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            args.command, args.model, args.handler = "tui", None, app.tui_command
        else:
            parser.print_help()
            return 0
    try:
        if args.command != "tui":  # the app shows them as notifications
            _show_notices()
        return args.handler(args, settings_from(args))
    except LocalLLMError as exc:
        if args.debug:
            raise
        _report(args, exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away; nothing more to say. Point stdout at devnull so exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # anything unforeseen still ends in one line unless --debug
        if args.debug:
            raise
        _report(args, f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        return 1
