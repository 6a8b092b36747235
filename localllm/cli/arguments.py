"""The flags many commands share (model, backend, server, decoding, conversation) and the settings they make.

Every command module adds its own flags with these, so a flag means the same wherever it appears."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from localllm.cli.completions import model_names
from localllm.core.options import OPTION_TYPES, PRESETS, GenerationOptions, apply_assignments

if TYPE_CHECKING:
    from localllm.core.settings import Settings

Commands = argparse._SubParsersAction
"""What ``add_subparsers`` returns: each command module's ``register`` adds its commands to it."""


def backend_names() -> tuple[str, ...]:
    # The names belong to the backends package; its __init__ names them without importing any backend library, so
    # reading them while the parser is built costs little.
    from localllm.backends import BACKEND_NAMES

    return BACKEND_NAMES


def server_args(parser: argparse.ArgumentParser, *, serving: bool = False) -> None:
    """Where the server backends find their server; each also comes from the config and the environment.
    ``serving``: for `serve`, whose --host and --api-key are its own (the backend's come from OLLAMA_HOST,
    OPENAI_API_KEY or the config there)."""
    group = parser.add_argument_group("servers (Ollama, OpenAI-compatible)")
    if not serving:
        group.add_argument("--host", metavar="URL",
                           help="Ollama server (default: OLLAMA_HOST, else 127.0.0.1:11434)")
    group.add_argument("--base-url", metavar="URL", help="OpenAI-compatible /v1 URL (default: OPENAI_BASE_URL)")
    if not serving:
        group.add_argument("--api-key", metavar="KEY",
                           help="key for the OpenAI-compatible server (better: OPENAI_API_KEY); never printed")
    group.add_argument("--server", metavar="PROFILE",
                       help="known server: vllm, llamafile, llama-server, llama-cpp-python, lmstudio, openllm, "
                            "tgi, trtllm-serve (default ports and request fields)")
    group.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="how long a server may stay silent before the request fails (default 120)")


def model_args(parser: argparse.ArgumentParser, *, generation: bool, serving: bool = False) -> None:
    model = parser.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    model.completer = model_names  # type: ignore[attr-defined]  # read by argcomplete
    parser.add_argument("-b", "--backend", choices=backend_names(), help="backend (default: auto)")
    server_args(parser, serving=serving)
    if generation:
        parser.add_argument("-s", "--system", help="system prompt")
        parser.add_argument("--preset", choices=tuple(PRESETS), help="decoding preset (default: balanced)")
        parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                            help=f"decoding option, repeatable; keys: {', '.join(OPTION_TYPES)}")
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="print the plan and tokens/s on stderr")
        parser.add_argument("--hide-thinking", action="store_true",
                            help="drop a reasoning model's thinking (shown dimmed on stderr by default)")
        thinking = parser.add_mutually_exclusive_group()
        thinking.add_argument("--think", nargs="?", const="on", metavar="LEVEL",
                              help="turn a reasoning model's thinking on, or set its level (low, medium, high) where "
                                   "the backend has levels; same as -o think=...")
        thinking.add_argument("--no-think", dest="think", action="store_const", const="off",
                              help="turn a reasoning model's thinking off, where it has a switch")


def log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                        help="continue the conversation changed last (the app's or the CLI's)")
    parser.add_argument("--cid", type=int, metavar="ID", help="continue conversation ID (`localllm logs` lists them)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings, with this command's backend and server flags applied over the config and environment."""
    from localllm.core.errors import UsageError
    from localllm.core.settings import SERVER_URL_EXAMPLES, Settings, server_url_problem

    settings = Settings.load()
    backend = getattr(args, "backend", None)
    if getattr(args, "server", None):
        from localllm.backends.profiles import server_profile

        server_profile(args.server)  # an unknown profile is a usage error before anything runs
    for flag, value in (("--host", getattr(args, "host", None)), ("--base-url", getattr(args, "base_url", None))):
        problem = server_url_problem(value) if value else None
        if problem:
            example = SERVER_URL_EXAMPLES["ollama_host" if flag == "--host" else "base_url"]
            raise UsageError(f"{flag} {value!r} {problem}", hint=f"for example {flag} {example}")
    # -o threads=N and -o template=NAME choose how the model is loaded: they travel in the settings.
    load = apply_assignments(GenerationOptions(), getattr(args, "option", None) or [])
    return settings.with_overrides(
        threads=load.threads, template=load.template,
        backend=backend if backend not in (None, "localllm") else None, ollama_host=getattr(args, "host", None),
        base_url=getattr(args, "base_url", None), api_key=getattr(args, "api_key", None),
        server=getattr(args, "server", None), request_timeout=_timeout(getattr(args, "timeout", None)))


def _timeout(seconds: float | None) -> float | None:
    from localllm.core.errors import UsageError
    from localllm.core.settings import MAX_REQUEST_TIMEOUT

    if seconds is not None and not 0 < seconds <= MAX_REQUEST_TIMEOUT:  # inf and nan: the clients' clocks overflow
        raise UsageError(f"--timeout {seconds:g} must be above zero and at most {MAX_REQUEST_TIMEOUT:,} seconds (a "
                         "day)", hint="for example --timeout 30")
    return seconds
