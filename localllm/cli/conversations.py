"""`localllm logs`: the recorded conversations (the app's and the CLI's), listed, searched, turned off and on."""

from __future__ import annotations

import argparse

from localllm.cli.arguments import Commands
from localllm.cli.output import console, inert, note, print_json
from localllm.core.errors import UsageError
from localllm.core.settings import Settings


def logs_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.conversation_log import logging_on, off_marker, open_store, set_logging, store_error

    if args.switch in ("off", "on"):
        set_logging(settings, args.switch == "on")
        note(f"conversations are {'recorded' if args.switch == 'on' else 'no longer recorded'} "
             f"({off_marker(settings)} {'removed' if args.switch == 'on' else 'written'})")
        return 0
    if args.switch == "status":
        print("on" if logging_on(settings) else "off")
        return 0
    if args.n < 1:
        raise UsageError(f"-n {args.n} shows nothing", hint="ask for at least 1")
    store = open_store(settings)
    try:
        # In memory, the store would list nothing and say no conversation was ever recorded.
        if store.problem is not None:
            raise store_error(store.problem)
        if args.query is not None:
            found = store.search(args.query, limit=args.n)
            if args.json:
                print_json([{"conversation": conversation.id, "title": conversation.title,
                             "origin": conversation.origin, "message": message.id, "role": message.role,
                             "created": message.created, "content": message.content}
                            for conversation, message, _ in found])
                return 0
            if not found:
                note(f"no message holds every word of {args.query!r}")
                return 1
            table = _table("ID", "WHEN", "TITLE", "WHO", "MATCH")
            for conversation, message, snippet in found:
                table.add_row(str(conversation.id), message.created[:16].replace("T", " "),
                              inert(conversation.title), message.role, inert(" ".join(snippet.split())))
            console().print(table)
            return 0
        conversations = store.list()[:args.n]
        if args.json:
            print_json([{"id": c.id, "title": c.title, "model": c.model, "origin": c.origin, "created": c.created,
                         "updated": c.updated,
                         "messages": [{"role": m.role, "content": m.content, "finish": m.finish,
                                       "meta": store.meta(m.id)} for m in store.messages(c.id)]}
                        for c in conversations])
            return 0
        if not conversations:
            note("no conversations recorded yet" + ("" if logging_on(settings) else " (recording is off: "
                                                                                      "`localllm logs on`)"))
            return 0
        table = _table("ID", "UPDATED", "FROM", "TITLE", "MODEL", "MESSAGES")
        for c in conversations:
            table.add_row(str(c.id), c.updated[:16].replace("T", " "), c.origin or "-", inert(c.title),
                          inert(c.model or "-"), f"{len(store.messages(c.id)):,}")
        console().print(table)
        if not logging_on(settings):
            note("note: recording is off (`localllm logs on` resumes it)")
    finally:
        store.close()
    return 0


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def register(commands: Commands) -> None:
    logs = commands.add_parser("logs", help="recorded conversations (the app's and the CLI's): list, search, "
                                            "turn off or on")
    logs.add_argument("switch", nargs="?", choices=("off", "on", "status"),
                      help="stop or resume recording, or say which it is")
    logs.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    logs.add_argument("-q", "--query", metavar="TEXT", help="messages holding every word of TEXT (word* for a prefix)")
    logs.add_argument("--json", action="store_true")
    logs.set_defaults(handler=logs_command)
