"""`localllm run` and `localllm chat`: streaming answers in the plain terminal."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from localllm.cli.arguments import Commands, log_args, model_args
from localllm.cli.output import error_line, note, print_json
from localllm.cli.tools import add_tool_args
from localllm.core.chunks import Response, TextChunk, ThinkingChunk, ToolCallChunk, ToolResultChunk
from localllm.core.errors import LocalLLMError
from localllm.core.finish import finish_of
from localllm.core.options import GenerationOptions, apply_assignments, preset, with_think
from localllm.core.printable import inert_text
from localllm.core.settings import Settings
from localllm.core.units import human_size

if TYPE_CHECKING:
    from localllm.tasks.loading import LoadedModel


def options_from(args: argparse.Namespace, settings: Settings) -> GenerationOptions:
    return with_think(apply_assignments(preset(args.preset or settings.preset), args.option),
                      getattr(args, "think", None))


def model_options(args: argparse.Namespace, settings: Settings) -> GenerationOptions:
    """The options of `run` and `chat`: as options_from, with a named model's parameters under the flags."""
    from localllm.tasks.named import decoding_options

    return decoding_options(settings, args.model, preset_name=args.preset, assignments=args.option,
                            think=getattr(args, "think", None))


def model_system(args: argparse.Namespace, settings: Settings, conversation: str | None) -> str | None:
    """-s, else the continued conversation's system prompt, else a named model's."""
    from localllm.tasks.named import system_prompt

    return system_prompt(settings, args.model, args.system or conversation)


def read_stdin() -> str | None:
    if sys.stdin is None or sys.stdin.isatty():
        return None
    from localllm.tasks.documents import read_limited
    from localllm.tasks.prompting import decode_input

    decoded = decode_input(read_limited(sys.stdin.buffer, "stdin", text_only=False))
    if decoded.binary:
        note("note: stdin looks like binary data; it was decoded as UTF-8 anyway")
    if decoded.replaced:
        note(f"note: stdin is not valid UTF-8: {decoded.replaced} byte(s) were replaced with U+FFFD")
    return decoded.text


def describe_plan(loaded: LoadedModel) -> str:
    plan = loaded.plan
    if loaded.served is not None:
        counts = "exact token counts" if loaded.backend.capabilities.tokenize else "token counts are estimates"
        return f"{loaded.ref.name} via {loaded.choice.name} on {loaded.served.where}: context {plan.n_ctx:,}, {counts}"
    threads = "" if plan.speed and plan.placement != "gpu" else \
        f", {plan.n_threads} thread{'s' if plan.n_threads != 1 else ''}"  # else the speed says them
    line = (f"{loaded.ref.name} via {loaded.choice.name}: {plan.verdict_with_speed}, context {plan.n_ctx:,}"
            f"{threads}, predicted memory {human_size(plan.memory.total)}")
    verdict = getattr(loaded.backend, "build_verdict", None)
    if verdict is not None:
        line += f"; llama.cpp self-check {verdict.outcome}, setting: {verdict.setting}"
    chat_format = getattr(loaded.backend, "chat_format", None)
    if chat_format:
        line += f"; chat format {chat_format} (-o template)"
    return line


def stream_to_stdout(response: Response, show_thinking: bool = True,
                     on_text: Callable[[str], None] | None = None) -> str:
    """Print chunks as they arrive; Ctrl-C stops decoding and leaves the partial answer on screen. A reasoning
    model's thinking goes to stderr (dimmed on a terminal), so stdout holds only the answer, also in a pipe.
    ``on_text``: given the answer so far after each piece (the conversation log saves it now and then)."""
    last = ""
    thinking = ""
    dim, undim = ("\x1b[2m", "\x1b[0m") if sys.stderr.isatty() else ("", "")
    try:
        for chunk in response:
            if isinstance(chunk, ThinkingChunk) and chunk.text and show_thinking:
                sys.stderr.write(f"{dim}{inert_text(chunk.text)}{undim}")
                sys.stderr.flush()
                thinking += chunk.text
            elif isinstance(chunk, (ToolCallChunk, ToolResultChunk)):
                from localllm.cli.tools import show_tool_chunk

                show_tool_chunk(chunk)
            elif isinstance(chunk, TextChunk) and chunk.text:
                if thinking and not thinking.endswith("\n"):
                    sys.stderr.write("\n")
                thinking = ""
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk.text
                if on_text is not None:
                    on_text(response.partial_text)
    finally:
        response.close()
        if last and not last.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
    return response.partial_text


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.conversation_log import ConversationLog

    options = model_options(args, settings)
    document = read_stdin()
    log = ConversationLog(settings, origin="run", continue_last=args.continue_last, conversation_id=args.cid)
    try:
        return _run_logged(args, settings, options, document, log)
    finally:
        log.close()


def _run_logged(args: argparse.Namespace, settings: Settings, options: GenerationOptions, document: str | None,
                log) -> int:
    from localllm.cli.tools import ask_on_terminal, tool_loop
    from localllm.tasks.ask import ask, open_for
    from localllm.tasks.chat import ChatSession
    from localllm.tasks.prompting import build_messages

    system = model_system(args, settings, log.system)
    messages = build_messages(" ".join(args.prompt), document, system)
    history = log.history()
    # The tools' servers first: a tool that is not there is said before a model is loaded for nothing.
    with tool_loop(args, settings, ask_on_terminal) as tools, \
            open_for(settings, messages, options, model=args.model, backend=args.backend or "auto",
                     piped=document is not None) as loaded:
        if args.verbose:
            note(describe_plan(loaded))
        if history or tools:  # a recorded conversation goes on: its oldest turns give way if the window is full
            session = ChatSession(loaded, options, system=system, history=history, tools=tools)
            response = session.send(messages[-1].content)
            window_notes(session, loaded)
        else:
            response = ask(loaded, messages, options)
        exchange = log.begin(messages[-1].content, model=loaded.ref.name, system=system)
        try:
            code = _answer(args, loaded, response, options, lambda text: log.progress(exchange, text),
                           recorded=lambda: exchange is not None and log.enabled)
        finally:
            log.end(exchange, response, model=loaded.ref.name, backend=loaded.choice.name, options=options)
        if code == 0:
            say_starter_once(settings, loaded)
        return code


def window_notes(session, loaded: LoadedModel) -> None:
    """What the window being full did to the conversation's oldest turns: condensed, or left out."""
    if session.condensed:
        messages, freed = session.condensed
        note(f"note: {messages} earlier message(s) condensed into a summary so the conversation fits the "
             f"{loaded.plan.n_ctx:,}-token window ({freed:,} tokens freed)")
    if session.dropped:
        note(f"note: {session.dropped} earlier message(s) left out so the conversation fits the "
             f"{loaded.plan.n_ctx:,}-token window")


def _answer(args: argparse.Namespace, loaded: LoadedModel, response: Response, options: GenerationOptions,
            on_text: Callable[[str], None] | None = None, recorded: Callable[[], bool] = lambda: False) -> int:
    """``recorded``: whether the answer is in the conversation log, asked once it has ended (a write can fail on
    the way)."""
    if args.json:
        try:
            for chunk in response:  # the calls on stderr as they happen, as without --json
                if isinstance(chunk, TextChunk) and on_text is not None:
                    on_text(response.partial_text)
                if isinstance(chunk, (ToolCallChunk, ToolResultChunk)):
                    from localllm.cli.tools import show_tool_chunk

                    show_tool_chunk(chunk)
            text, stopped = response.partial_text, False
        except KeyboardInterrupt:  # the answer so far is still the answer, as JSON
            response.close()
            text, stopped = response.partial_text, True
        final = response.final
        finish = finish_of(final, options.max_tokens)
        print_json({
            "model": loaded.ref.name, "backend": loaded.choice.name, "text": text,
            **({"thinking": response.thinking} if response.thinking and not args.hide_thinking else {}),
            **({"tool_calls": [result.to_dict() for result in response.tool_results]}
               if response.tool_results else {}),
            "finish_reason": "cancelled" if finish.kind == "stopped" else finish.reason,
            "finish": finish.kind,
            **({"stop_sequence": finish.stop} if finish.stop else {}),
            "usage": {"prompt_tokens": final.usage.prompt_tokens,
                      "completion_tokens": final.usage.completion_tokens,
                      "thinking_tokens": final.usage.thinking_tokens,
                      "cached_tokens": final.usage.cached_tokens} if final else None,
            "tokens_per_second": final.tokens_per_second if final else None,
            "first_token_s": final.timings.first_token_s if final else None,
        })
        return 130 if stopped else 0
    try:
        stream_to_stdout(response, show_thinking=not args.hide_thinking, on_text=on_text)
    except KeyboardInterrupt:
        note("[stopped]")
        return 130
    say_cut(response, options, recorded=recorded())
    if args.verbose:
        from localllm.tasks.answer_stats import stats_line

        note(stats_line(response.final, loaded.load_s))
    return 0


def say_starter_once(settings: Settings, loaded: LoadedModel) -> None:
    """After the first answer from the bundled starter model, once: what it is and what to pull instead."""
    from localllm.tasks.models import is_starter, starter_note

    if is_starter(loaded.ref):
        said = starter_note(settings, loaded.ref)
        if said:
            note(said)


def say_cut(response: Response, options: GenerationOptions, *, recorded: bool = True, in_chat: bool = False) -> None:
    """A cut answer ends with the marker the app shows, on stderr (the answer is what was asked for: exit 0). It
    offers `chat -c` only for an answer the log holds, and inside `chat` the ways on that work there."""
    finish = finish_of(response.final, options.max_tokens)
    if finish.cut:
        note(finish.marker(continued_with="`localllm chat -c`" if recorded and not in_chat else None,
                           raised_with="it with /set max_tokens N" if in_chat else "-o max_tokens") or "")


CHAT_HELP = """\
/exit               leave (Ctrl-D too)
/reset              forget the conversation
/system TEXT        set the system prompt (empty TEXT clears it)
/set KEY VALUE      change a decoding option, e.g. /set temperature 0.2
/stats              tokens and speed so far
/help               this list
Ctrl-C stops an answer and keeps what was written."""


def chat_command(args: argparse.Namespace, settings: Settings) -> int:
    options = model_options(args, settings)
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # a line that is not UTF-8 is a note, not the end of the chat
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    from localllm.tasks.conversation_log import ConversationLog

    log = ConversationLog(settings, origin="chat", continue_last=args.continue_last, conversation_id=args.cid)
    try:
        return _chat(args, settings, options, interactive, log)
    finally:
        log.close()


def _chat(args: argparse.Namespace, settings: Settings, options: GenerationOptions, interactive: bool, log) -> int:
    from localllm.cli.tools import ask_on_stdin, tool_loop
    from localllm.tasks.answer_stats import stats_line
    from localllm.tasks.chat import ChatSession
    from localllm.tasks.loading import load_model

    with tool_loop(args, settings, ask_on_stdin) as tools, \
            load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        session = ChatSession(loaded, options, system=model_system(args, settings, log.system),
                              history=log.history(), tools=tools)
        if interactive or args.verbose:
            note(describe_plan(loaded))
            if tools is not None:
                asked = "run without asking" if args.approve_tools else "each call asks first"
                note(f"tools: {', '.join(tool.qualified for tool in tools.tools)} ({asked})")
            if log.conversation is not None:
                note(f"continuing conversation {log.conversation.id} ({log.conversation.title!r}, "
                     f"{len(session.history):,} messages)")
                show_last_turns(session.history)
            note("type /help for commands, /exit to leave")
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                return 0
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return 130
            text = line.strip()
            if not text:
                continue
            if "\ufffd" in text:
                note("note: that line was not valid UTF-8; the bytes that were not are sent as U+FFFD")
            if text.startswith("/"):
                if _chat_command(text, session):
                    return 0
                if text.split()[0] == "/reset":
                    log.forget()
                elif text.split()[0] == "/system":
                    log.set_system(session.system)
                continue
            try:
                response = session.send(text)
            except LocalLLMError as exc:
                print(error_line(exc.message, exc.hint), file=sys.stderr)
                continue
            window_notes(session, loaded)
            # The prompt is recorded as it is sent and the answer when it ends (stopped, if Ctrl-C ends it).
            exchange = log.begin(text, model=loaded.ref.name, system=session.system)
            try:
                stream_to_stdout(response, show_thinking=not args.hide_thinking,
                                 on_text=functools.partial(log.progress, exchange))
                say_cut(response, session.options, in_chat=True)
                say_starter_once(settings, loaded)
            except KeyboardInterrupt:
                note("[stopped]")
            finally:
                log.end(exchange, response, model=loaded.ref.name, backend=loaded.choice.name,
                        options=session.options)
            if args.verbose:
                note(stats_line(response.final))


LAST_TURNS = 4
"""Messages of a continued conversation shown before its prompt: the exchange it goes on from, and the one before."""
TURN_CHARACTERS = 400


def show_last_turns(history) -> None:
    """The end of a continued conversation, so the user sees where it stands (on stderr, as the other notes)."""
    shown = [message for message in history if message.role in ("user", "assistant")][-LAST_TURNS:]
    for message in shown:
        text = " ".join(message.content.split())
        if len(text) > TURN_CHARACTERS:
            text = text[:TURN_CHARACTERS - 1] + "…"
        note(f"{'you' if message.role == 'user' else 'assistant'}: {inert_text(text)}")


def in_set_syntax(text: str | None) -> str | None:
    """A message about options as `/set` takes them inside the chat (the shared checks name the -o flag)."""
    import re

    if text is None:
        return None
    text = re.sub(r"-o (\w+)=(\S+)", r"/set \1 \2", text)
    return re.sub(r"option (\w+)=(\S+)", r"\1 \2", text)


def _chat_command(text: str, session) -> bool:
    """Handle a /command; True means leave the chat."""
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    if name in ("/exit", "/quit", "/bye"):
        return True
    if name == "/reset":
        session.reset()
        note("conversation cleared")
    elif name == "/system":
        session.system = rest or None
        note(f"system prompt {'set' if rest else 'cleared'}")
    elif name == "/set":
        key, _, value = rest.partition(" ")
        if not key or not value:
            note("usage: /set KEY VALUE, e.g. /set temperature 0.2")
            return False
        try:
            session.set_option(key, value.strip())
            note(f"{key} = {getattr(session.options, key.replace('-', '_'))}")
        except LocalLLMError as exc:
            note(error_line(in_set_syntax(exc.message) or exc.message, in_set_syntax(exc.hint)))
    elif name == "/stats":
        from localllm.tasks.answer_stats import stats_line

        stats = session.stats
        if not stats.turns:
            note("no answer yet: /stats says what each answer cost once there is one")
        else:
            note(f"{stats.turns:,} turn(s), {stats.prompt_tokens:,} prompt tokens, {stats.completion_tokens:,} "
                 f"generated; last answer: {stats_line(stats.last)}")
    elif name == "/help":
        note(CHAT_HELP)
    else:
        note(f"unknown command {name}; /help lists them")
    return False


def register(commands: Commands) -> None:
    run = commands.add_parser("run", help="answer one prompt (piped text becomes a document in the prompt)")
    run.add_argument("prompt", nargs="*", help="the prompt; piped stdin is added as a delimited document")
    model_args(run, generation=True)
    run.add_argument("--json", action="store_true", help="print the answer and its statistics as JSON")
    log_args(run)
    add_tool_args(run)
    run.set_defaults(handler=run_command)

    chat = commands.add_parser("chat", help="chat in the terminal (/exit /reset /system /set /stats /help)")
    model_args(chat, generation=True)
    log_args(chat)
    add_tool_args(chat)
    chat.set_defaults(handler=chat_command)
