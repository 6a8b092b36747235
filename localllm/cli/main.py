"""Entry point: parse arguments, dispatch to a command module, turn errors into one line.

Only argparse and localllm's small core modules are imported here, so `localllm --help` stays fast; each command
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from localllm import __version__
from localllm.backends import BACKEND_NAMES
from localllm.cli.bench import add_bench_args
from localllm.cli.output import error_line
from localllm.cli.serve import add_serve_args
from localllm.cli.tools import add_tool_args
from localllm.cli.web import add_web_args
from localllm.core.errors import LocalLLMError
from localllm.core.options import OPTION_TYPES, PRESETS, GenerationOptions, apply_assignments

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


def _server_args(parser: argparse.ArgumentParser, *, serving: bool = False) -> None:
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


def _model_args(parser: argparse.ArgumentParser, *, generation: bool, serving: bool = False) -> None:
    from localllm.cli.completions import model_names

    model = parser.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    model.completer = model_names  # type: ignore[attr-defined]  # read by argcomplete
    parser.add_argument("-b", "--backend", choices=BACKEND_NAMES, help="backend (default: auto)")
    _server_args(parser, serving=serving)
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


def _log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                        help="continue the conversation changed last (the app's or the CLI's)")
    parser.add_argument("--cid", type=int, metavar="ID", help="continue conversation ID (`localllm logs` lists them)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localllm", description="Run large language models on your own machine.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"localllm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="answer one prompt (piped text becomes a document in the prompt)")
    run.add_argument("prompt", nargs="*", help="the prompt; piped stdin is added as a delimited document")
    _model_args(run, generation=True)
    run.add_argument("--json", action="store_true", help="print the answer and its statistics as JSON")
    _log_args(run)
    add_tool_args(run)

    chat = commands.add_parser("chat", help="chat in the terminal (/exit /reset /system /set /stats /help)")
    _model_args(chat, generation=True)
    _log_args(chat)
    add_tool_args(chat)

    completions = commands.add_parser("completions", help="the shell completion script: source it in your shell")
    completions.add_argument("shell", choices=("bash", "zsh", "fish"))
    completions.add_argument("--install", action="store_true",
                             help="write it where the shell looks for completions (in your home), not to stdout")
    desktop = commands.add_parser("desktop", help="the Linux desktop launcher: print it, or --install it with its icon")
    placing = desktop.add_mutually_exclusive_group()
    placing.add_argument("--install", action="store_true", help="into ~/.local/share/applications (and the icon)")
    placing.add_argument("--remove", action="store_true", help="take the launcher and its icon away again")

    add_web_args(commands)
    serve = add_serve_args(commands)
    _model_args(serve, generation=True, serving=True)

    tools = commands.add_parser("tools", help="the MCP servers in mcp.json: whether each starts, and its tools")
    tools.add_argument("--mcp-config", metavar="FILE", help="read the servers from FILE instead of mcp.json")
    tools.add_argument("--json", action="store_true")

    logs = commands.add_parser("logs", help="recorded conversations (the app's and the CLI's): list, search, "
                                            "turn off or on")
    logs.add_argument("switch", nargs="?", choices=("off", "on", "status"),
                      help="stop or resume recording, or say which it is")
    logs.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    logs.add_argument("-q", "--query", metavar="TEXT", help="messages holding every word of TEXT (word* for a prefix)")
    logs.add_argument("--json", action="store_true")

    listing = commands.add_parser("list", aliases=["ls"], help="installed models")
    listing.add_argument("--json", action="store_true")

    show = commands.add_parser("show", help="a model's metadata and this machine's load plan")
    show.add_argument("model", help="model name, NAME:QUANT, or path to a .gguf file")
    show.add_argument("--ctx", type=int, help="plan for this context window")
    show.add_argument("-b", "--backend", choices=BACKEND_NAMES)
    _server_args(show)
    show.add_argument("--json", action="store_true")

    _server_args(add_bench_args(commands))

    hw = commands.add_parser("hw", help="hardware, the llama.cpp build and its self-check, the backend auto picks")
    hw.add_argument("--recheck", action="store_true", help="run the llama.cpp self-check again")
    hw.add_argument("--json", action="store_true", help="the whole report as JSON")

    backends = commands.add_parser("backends", help="each backend: installed, reachable, GPU, version; why auto picks")
    backends.add_argument("-m", "--model", help="explain the choice for this model (default: the configured one)")
    backends.add_argument("--json", action="store_true")
    _server_args(backends)

    catalog = commands.add_parser("catalog", help="known models, each quant's size and whether it fits this machine")
    catalog.add_argument("--use", choices=("chat", "code", "summarize"), help="only models for this use")
    catalog.add_argument("--fits", action="store_true", help="only quants that fit this machine")
    catalog.add_argument("--json", action="store_true")

    pull = commands.add_parser("pull", help="download a model: NAME[:QUANT] from the catalog or hf://OWNER/REPO/FILE")
    pull.add_argument("model", help="e.g. qwen2.5-1.5b-instruct:q4_k_m, or hf://OWNER/REPO/FILE.gguf")
    pull.add_argument("--max-rate", help="bandwidth cap, e.g. 5M (bytes per second; K, M, G or Ki, Mi, Gi)")
    pull.add_argument("--connections", metavar="N",
                      help="parallel ranged connections (default: one per piece of the file, up to 8; 1 for a "
                      "single stream)")
    pull.add_argument("--force", action="store_true", help="download even if the model will not fit this machine")
    pull.add_argument("-b", "--backend", choices=("localllm", "ollama"), default="localllm",
                      help="ollama: pull NAME[:TAG] into the Ollama server instead (default: localllm's own store)")
    _server_args(pull)

    rm = commands.add_parser("rm", help="delete a model localllm downloaded (never another tool's files)")
    rm.add_argument("model")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument("-b", "--backend", choices=("localllm", "ollama"), default="localllm",
                    help="ollama: delete the model from the Ollama server")
    _server_args(rm)

    downloads = commands.add_parser("downloads", help="partial downloads and their progress; `clean` removes them")
    downloads.add_argument("action", nargs="?", choices=("list", "clean"), default="list")
    downloads.add_argument("--json", action="store_true")

    verify = commands.add_parser("verify", help="re-hash installed models against their recorded sha256")
    verify.add_argument("model", nargs="?")
    verify.add_argument("--json", action="store_true")

    summarize = commands.add_parser("summarize", help="summarize files or piped text of any length")
    summarize.add_argument("files", nargs="*", help="files to summarize; - for stdin (default: stdin)")
    summarize.add_argument("--style", choices=("tldr", "bullets", "executive", "detailed"), default="bullets")
    summarize.add_argument("--words", type=int, help="about how many words the summary should have")
    summarize.add_argument("--plan", action="store_true", help="show the chunk plan only; nothing is generated")
    summarize.add_argument("--json", action="store_true", help="the summary, per-chunk notes and token counts")
    _model_args(summarize, generation=True)

    classify = commands.add_parser("classify", help="label each row (JSONL/CSV) or a text file; JSONL out")
    classify.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    classify.add_argument("--labels", required=True, help="comma-separated labels, e.g. bug,feature,question")
    classify.add_argument("--field", help="the column or key that holds the text (for JSONL/CSV)")
    _model_args(classify, generation=True)

    sentiment = commands.add_parser("sentiment", help="sentiment and a score for each row or a text file")
    sentiment.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    sentiment.add_argument("--field")
    _model_args(sentiment, generation=True)

    extract = commands.add_parser("extract", help="fill a JSON schema's fields from text; always valid JSON")
    extract.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    extract.add_argument("--schema", required=True, help="a JSON schema file")
    extract.add_argument("--field")
    _model_args(extract, generation=True)

    ner = commands.add_parser("ner", help="persons, organisations, places and dates named in a text")
    ner.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    ner.add_argument("--field")
    _model_args(ner, generation=True)

    ask = commands.add_parser("ask", help="answer a question from documents only, citing passages")
    ask.add_argument("inputs", nargs="+", metavar="FILE ... QUESTION", help="the documents, then the question")
    ask.add_argument("--json", action="store_true", help="the answer with the passages sent and their scores")
    _model_args(ask, generation=True)

    feedback = commands.add_parser("feedback", help="top themes in feedback rows, with counts and quotes")
    feedback.add_argument("file", nargs="?", default="-", help="JSONL or CSV of feedback (default: stdin)")
    feedback.add_argument("--field", help="the column or key that holds the text")
    feedback.add_argument("--top", type=int, default=5, help="how many themes to show (default 5)")
    feedback.add_argument("--json", action="store_true", help="every theme with its count, rows and quotes")
    _model_args(feedback, generation=True)

    segment = commands.add_parser("segment", help="named customer segments with descriptions and members")
    segment.add_argument("file", nargs="?", default="-", help="JSONL or CSV of customers (default: stdin)")
    segment.add_argument("--field", help="the column or key that describes each customer")
    segment.add_argument("--segments", type=int, default=4, help="at most this many segments (default 4)")
    segment.add_argument("--json", action="store_true")
    _model_args(segment, generation=True)

    recommend = commands.add_parser("recommend", help="ranked catalogue items for a customer profile, with reasons")
    recommend.add_argument("--catalog", required=True, help="CSV or JSONL, one item per row")
    recommend.add_argument("--profile", required=True, help='e.g. "likes hiking, budget under 100"')
    recommend.add_argument("--top", type=int, default=3, help="how many items (default 3)")
    recommend.add_argument("--json", action="store_true")
    _model_args(recommend, generation=True)

    translate = commands.add_parser("translate", help="translate files or piped text of any length")
    translate.add_argument("files", nargs="*", help="files to translate; - for stdin (default: stdin)")
    translate.add_argument("--to", required=True, help="target language, e.g. German or de")
    _model_args(translate, generation=True)

    simplify = commands.add_parser("simplify", help="rewrite files or piped text in plain language")
    simplify.add_argument("files", nargs="*", help="files; - for stdin (default: stdin)")
    simplify.add_argument("--level", default="beginner", choices=("beginner", "intermediate", "expert"))
    _model_args(simplify, generation=True)

    write = commands.add_parser("write", help="write a story, script, docs, manual, blog or social post")
    write.add_argument("kind", choices=("story", "script", "docs", "manual", "blog", "social"))
    write.add_argument("--topic", required=True)
    write.add_argument("--audience", help="who it is for (default: general readers)")
    write.add_argument("--words", type=int, default=300, help="about how many words (default 300)")
    _model_args(write, generation=True)

    embed = commands.add_parser("embed", help="dense vectors for a text, a file, or each row (--field)")
    embed.add_argument("input", nargs="?", help="text, or a file (default: stdin)")
    embed.add_argument("--field", help="for JSONL/CSV: the column or key to embed, one vector per row")
    embed.add_argument("--json", action="store_true")
    _model_args(embed, generation=True)

    reply = commands.add_parser("reply", help="draft a reply to a customer message")
    reply.add_argument("file", nargs="?", default="-", help="the customer's message (default: stdin)")
    reply.add_argument("--tone", default="polite", choices=("polite", "friendly", "formal", "apologetic", "firm"))
    _model_args(reply, generation=True)

    code = commands.add_parser("code", help="explain, fix, convert, document, test or generate code")
    actions = code.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("explain", "explain FILE[:START-END]"), ("fix", "fix FILE with its error or traceback"),
                         ("convert", "convert FILE to another language"), ("doc", "document FILE"),
                         ("test", "write tests for FILE"), ("gen", "generate code from a description")):
        sub = actions.add_parser(action, help=text)
        if action == "gen":
            sub.add_argument("description", nargs="+", help="what the code should do")
            sub.add_argument("--lang", default="python", help="language (default: python)")
        else:
            sub.add_argument("target", metavar="FILE[:START-END]")
        if action == "fix":
            sub.add_argument("--error", help="file with the error or traceback (default: stdin)")
        if action == "convert":
            sub.add_argument("--to", required=True, help="target language")
        sub.add_argument("--write", metavar="PATH", help="write the answer's code block to a new file")
        sub.add_argument("--force", action="store_true", help="let --write replace an existing file")
        _model_args(sub, generation=True)

    tui = commands.add_parser("tui", help="the terminal app (also what `localllm` alone opens)")
    tui.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    tui.add_argument("-b", "--backend", choices=BACKEND_NAMES, help="backend (default: auto)")
    _server_args(tui)

    tokenize = commands.add_parser("tokenize", help="token pieces, ids and count for some text")
    tokenize.add_argument("text", nargs="*", help="text to tokenize (default: stdin)")
    _model_args(tokenize, generation=False)
    tokenize.add_argument("--json", action="store_true")
    return parser


def settings_from(args: argparse.Namespace):
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

    if seconds is not None and not seconds > 0:
        raise UsageError(f"--timeout {seconds:g} must be above zero", hint="for example --timeout 30")
    return seconds


def _dispatch(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.command == "tui":
        # A browser tab (localllm web) runs the app with textual-serve's driver on pipes.
        if not (sys.stdin.isatty() and sys.stdout.isatty()) and not os.environ.get("TEXTUAL_DRIVER"):
            from localllm.core.errors import UsageError

            raise UsageError("the app needs a terminal, and stdin or stdout is not one",
                             hint="run `localllm` in a terminal; in scripts use `localllm run` or `localllm chat`")
        from localllm.core.options import preset
        from localllm.tui.app import LocalLLMApp, end_process

        if os.environ.get("TEXTUAL_DRIVER"):
            from localllm.cli.web import end_with_server

            end_with_server()
        app = LocalLLMApp(settings, preset(settings.preset), args.model)
        app.run()
        end_process(app, app.return_code or 0)
    if args.command == "run":
        from localllm.cli.generate import run_command

        return run_command(args, settings)
    if args.command == "chat":
        from localllm.cli.generate import chat_command

        return chat_command(args, settings)
    if args.command == "web":
        from localllm.cli.web import web_command

        return web_command(args, settings)
    if args.command == "completions":
        from localllm.cli.completions import completions_command

        return completions_command(args)
    if args.command == "desktop":
        from localllm.cli.install import desktop_command

        return desktop_command(args)
    if args.command == "serve":
        from localllm.cli.serve import serve_command

        return serve_command(args, settings)
    if args.command == "tools":
        from localllm.cli.tools import tools_command

        return tools_command(args, settings)
    if args.command == "logs":
        from localllm.cli.conversations import logs_command

        return logs_command(args, settings)
    if args.command in ("summarize", "classify", "sentiment", "extract", "ner", "code", "ask", "translate", "reply",
                        "feedback", "simplify", "write", "embed", "segment",
                        "recommend"):
        from localllm.cli import tasks

        return getattr(tasks, f"{args.command}_command")(args, settings)
    if args.command == "bench":
        from localllm.cli.bench import bench_command

        return bench_command(args, settings)
    if args.command == "backends":
        from localllm.cli.backends import backends_command

        return backends_command(args, settings)
    if args.command in ("catalog", "pull", "rm", "downloads", "verify"):
        from localllm.cli import models

        return getattr(models, f"{args.command}_command")(args, settings)
    from localllm.cli import reports

    handler = {"list": reports.list_command, "ls": reports.list_command, "show": reports.show_command,
               "hw": reports.hw_command, "tokenize": reports.tokenize_command}[args.command]
    return handler(args, settings)


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
            args.command, args.model = "tui", None
        else:
            parser.print_help()
            return 0
    try:
        if args.command != "tui":  # the app shows them as notifications
            _show_notices()
        return _dispatch(args)
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
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # anything unforeseen still ends in one line unless --debug
        if args.debug:
            raise
        _report(args, f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        return 1
