"""`localllm catalog`, `pull`, `create`, `rm`, `downloads` and `verify`."""

from __future__ import annotations

import argparse
import re
import sys
import time

from localllm.cli.arguments import Commands, server_args
from localllm.cli.output import console, note, print_json
from localllm.core.errors import UsageError, WontFit
from localllm.core.settings import Settings
from localllm.core.units import human_size, parameter_count


def parse_rate(text: str | None) -> int | None:
    """``5M`` → 5,000,000 bytes/s; K, M, G are powers of 1000, Ki, Mi, Gi of 1024."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?)?B?(?:/s)?\s*", text, re.IGNORECASE)
    if not match:
        raise UsageError(f"--max-rate {text!r} is not a rate", hint="for example --max-rate 5M (5 MB/s)")
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    factor = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KI": 1024, "MI": 1024**2, "GI": 1024**3}[unit]
    value = int(number * factor)
    if value <= 0:
        raise UsageError("--max-rate must be above zero", hint="for example --max-rate 5M")
    return value


def parse_connections(text: str | None) -> int | None:
    """``--connections N``: a whole number from 1 to the transfer's limit; None lets the transfer choose."""
    from localllm.store.transfer import MAX_CONNECTIONS

    if text is None:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_CONNECTIONS:
        raise UsageError(f"--connections {text!r} is not a number of connections from 1 to {MAX_CONNECTIONS}",
                         hint="for example --connections 4; 1 downloads over a single connection")
    return int(text)


def catalog_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.models import catalog_rows

    rows = catalog_rows(settings, detect_hardware(include_llama_cpp="if-gpu"), use=args.use, fits_only=args.fits)
    if args.json:
        print_json([row.to_dict() for row in rows])
        return 0
    from rich.table import Table

    threads = {row.plan.n_threads for row in rows if row.plan is not None and row.plan.speed}
    caption = (f"EST. SPEED: estimated for {threads.pop()} thread(s), the next load's; slower as the context fills"
               if len(threads) == 1 else None)
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", caption=caption,
                  caption_justify="left")
    for column in ("NAME", "QUANT", "PARAMS", "USES", "DOWNLOAD", "MEMORY", "CTX", "VERDICT", "EST. SPEED", ""):
        table.add_column(column)
    for row in rows:
        plan = row.plan
        table.add_row(row.model.name, row.quant.quant.lower(), parameter_count(row.model.parameters * 1e9),
                      ",".join(row.model.uses),
                      ("~" if row.quant.approximate else "") + human_size(row.quant.size),
                      human_size(plan.memory.total) if plan else "?", f"{plan.n_ctx:,}" if plan else "?",
                      row.verdict, (plan.speed if plan else None) or "-",
                      "installed" if row.installed else "")
    console().print(table)
    return 0


class _ProgressBar:
    """A rich progress bar on stderr: bytes, speed and time left. Only on a terminal: in a pipe or a log it would
    be one line of bar at the end, which the summary line says better (and rich's progress costs 0.1 s to load)."""

    def __init__(self, label: str) -> None:
        self.progress = None
        self.done = self.total = 0
        self.started = time.monotonic()
        self.last = 0.0
        if not sys.stderr.isatty():
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Speed(ProgressColumn):
            """rich's TransferSpeedColumn in the app's units (it writes decimal MB/s)."""

            def render(self, task) -> Text:
                return Text(f"{human_size(task.speed)}/s" if task.speed else "?", style="progress.data.speed")

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                                 Speed(), TimeRemainingColumn(), console=console(stderr=True), transient=False)
        self.task = self.progress.add_task(label, total=None)

    def __call__(self, done: int, total: int) -> None:
        # Called for every block received; ten updates a second are plenty for the eye and cost nothing.
        self.done, self.total = done, total
        now = time.monotonic()
        if self.progress is not None and (now - self.last >= 0.1 or done >= total):
            self.last = now
            self.progress.update(self.task, completed=done, total=total)

    def __enter__(self) -> _ProgressBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def summary(self) -> str:
        """The size and speed, for the closing line (in a pipe, where no bar was drawn)."""
        if not self.done:
            return ""
        seconds = time.monotonic() - self.started
        return f" ({human_size(self.done)}" + (f", {human_size(self.done / seconds)}/s)" if seconds > 0 else ")")


def pull_command(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "backend", "localllm") == "ollama":
        return _pull_on_ollama(args, settings)
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.models import pull, resolve_pull

    max_rate = parse_rate(args.max_rate)
    connections = parse_connections(args.connections)
    report = detect_hardware(include_llama_cpp="if-gpu")
    target = resolve_pull(settings, args.model, report)
    note(f"{target.name}: {target.remote.repo}/{target.remote.path} ({human_size(target.remote.size)}), "
         f"{target.why}")

    def on_plan(plan) -> None:
        note(f"will it fit? {plan.verdict_with_speed}: about {human_size(plan.memory.total)} with {plan.n_ctx:,} "
             f"tokens of context; {human_size(plan.ram_available)} RAM and {human_size(plan.gpu_available)} GPU free")

    try:
        with _ProgressBar(target.name) as bar:
            result = pull(settings, target, report, force=args.force, progress=bar, max_rate=max_rate,
                          connections=connections,
                          on_wait=lambda who: note(f"{who} is downloading this model; waiting for it to finish"),
                          on_plan=on_plan)
    except WontFit as error:
        anyway = "pass --force to download it anyway"
        error.hint = f"{error.hint}; or {anyway}" if error.hint else anyway
        raise
    if result.already_installed:
        note(f"{target.name} is already installed and intact: {result.path}")
    else:
        resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
        speed = f", {human_size(result.transferred / result.seconds)}/s" if result.seconds > 0 else ""
        note(f"installed {target.name} ({human_size(result.path.stat().st_size)}, sha256 verified{resumed}"
             f"{speed}): {result.path}")
    print(result.path)
    return 0


def _pull_on_ollama(args: argparse.Namespace, settings: Settings) -> int:
    """The Ollama server downloads; the same progress bar shows its bytes over all layers."""
    from localllm.tasks.backends import pull_on_ollama

    if args.max_rate or args.force or args.connections:
        raise UsageError("--max-rate, --connections and --force apply to localllm's own downloads",
                         hint="Ollama's server manages its pulls; drop them with --backend ollama")
    with _ProgressBar(args.model) as bar:
        name = pull_on_ollama(settings, args.model, progress=bar, status=note)
    note(f"Ollama has {name}{bar.summary()}; run it with: localllm run -b ollama -m {name}")
    print(name)
    return 0


def create_command(args: argparse.Namespace, settings: Settings) -> int:
    """A named model: a name for a model (or a GGUF) with a system prompt and parameters, from the flags or from a
    Modelfile's FROM, SYSTEM and PARAMETER lines (the flags win)."""
    from pathlib import Path

    from localllm.store.named import parameters_from
    from localllm.tasks.named import create_from_modelfile, create_named, describe_parameters, resolve_base

    pairs = []
    for item in args.parameters:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {item!r} is not key=value", hint="for example: -o temperature=0.2")
        pairs.append((key.strip().replace("-", "_"), raw if key.strip() == "stop" else raw.strip()))
    parameters = parameters_from(pairs, "")
    if args.file:
        file = Path(args.file).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read the Modelfile {args.file}: {getattr(error, 'strerror', None) or error}",
                             hint="check the path") from None
        model = create_from_modelfile(settings, args.name, text, paths_allowed=True, relative_to=file.parent,
                                      base_override=args.base, system=args.system, parameters=parameters)
    elif args.base:
        model = create_named(settings, args.name, resolve_base(settings, args.base, paths_allowed=True),
                             system=args.system, parameters=parameters)
    else:
        raise UsageError("create needs what to build on: --from MODEL (a name or a .gguf path) or -f Modelfile",
                         hint='localllm create my-helper --from smollm2-135m -s "Answer briefly."')
    said = [f"built on {model.base}"]
    if model.system:
        said.append("with a system prompt")
    if model.parameters:
        said.append(describe_parameters(model.parameters))
    note(f"created {model.name} ({', '.join(said)}); run it with: localllm run -m {model.name}")
    print(model.name)
    return 0


def rm_command(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "backend", "localllm") == "ollama":
        from localllm.tasks.backends import remove_from_ollama

        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(f"this would delete {args.model} from the Ollama server", hint="pass -y to confirm")
            if input(f"delete {args.model} from the Ollama server? [y/N] ").strip().lower() not in ("y", "yes"):
                note("nothing deleted")
                return 1
        remove_from_ollama(settings, args.model)
        note(f"deleted {args.model} from the Ollama server")
        return 0
    from localllm.tasks.models import find_installed, removable, remove

    refs = find_installed(settings, args.model)
    named = next((ref for ref in refs if ref.named is not None), None)
    if named is not None:  # the name alone goes: the file it names stays where it is
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(f"this would remove the name {named.name} (its system prompt and parameters)",
                                 hint="pass -y to confirm")
            if input(f"remove the name {named.name}? its file stays [y/N] ").strip().lower() not in ("y", "yes"):
                note("nothing removed")
                return 1
        remove(settings, named)
        note(f"removed the name {named.name} (its file stays: {named.path})")
        return 0
    owned = [ref for ref in refs if removable(ref) is None]
    if not owned:
        from localllm.core.errors import LocalLLMError

        raise LocalLLMError(f"not removed: {removable(refs[0])}", hint="remove it with the tool that owns it")
    if not args.yes:
        listing = ", ".join(f"{ref.path} ({human_size(ref.path.stat().st_size)})" for ref in owned)
        if not sys.stdin.isatty():
            raise UsageError(f"this would delete {listing}", hint="pass -y to confirm")
        answer = input(f"delete {listing}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            note("nothing deleted")
            return 1
    for ref in owned:
        freed = remove(settings, ref)
        note(f"deleted {ref.path} ({human_size(freed)})")
    for ref in refs:
        if ref not in owned:
            note(f"kept: {removable(ref)}")
    return 0


def downloads_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.models import clean_downloads, clean_uploads, partial_downloads

    if args.action == "clean":
        removed = clean_downloads(settings)
        for item in removed:
            note(f"removed the partial download of {item.target.name} ({human_size(item.have)})")
        if not removed:
            note("no partial downloads to remove")
        for path, size in clean_uploads(settings):
            note(f"removed {path.name}, uploaded to serve and used by no named model ({human_size(size)})")
        return 0
    items = partial_downloads(settings)
    if args.json:
        print_json([{"file": str(item.target), "have": item.have, "size": item.size, "source": item.source,
                     "started": item.started, "active": item.active} for item in items])
        return 0
    if not items:
        console().print("no partial downloads")
        return 0
    for item in items:
        share = f"{100 * item.have / item.size:.1f} %" if item.size else "?"
        state = f"downloading now ({item.active})" if item.active else "paused: `localllm pull` resumes it"
        console().print(f"{item.target.name}: {human_size(item.have)} of {human_size(item.size)} ({share}) "
                        f"from {item.source}, started {item.started}, {state}")
    return 0


def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.models import verify

    results = verify(settings, args.model)
    if args.json:
        print_json([{"name": r.ref.name, "path": str(r.ref.path), "status": r.status, "detail": r.detail}
                    for r in results])
    else:
        if not results:
            console().print("no models installed by localllm to verify")
        for result in results:
            console().print(f"{result.status:12} {result.ref.name} ({result.ref.path})"
                            + (f": {result.detail}" if result.detail else ""))
    return 1 if any(r.status in ("mismatch", "size differs") for r in results) else 0


def register(commands: Commands) -> None:
    catalog = commands.add_parser("catalog", help="known models, each quant's size and whether it fits this machine")
    catalog.add_argument("--use", choices=("chat", "code", "summarize"), help="only models for this use")
    catalog.add_argument("--fits", action="store_true", help="only quants that fit this machine")
    catalog.add_argument("--json", action="store_true")
    catalog.set_defaults(handler=catalog_command)

    pull = commands.add_parser("pull", help="download a model: NAME[:QUANT] from the catalog or hf://OWNER/REPO/FILE")
    pull.add_argument("model", help="e.g. qwen2.5-1.5b-instruct:q4_k_m, or hf://OWNER/REPO/FILE.gguf")
    pull.add_argument("--max-rate", help="bandwidth cap, e.g. 5M (bytes per second; K, M, G or Ki, Mi, Gi)")
    pull.add_argument("--connections", metavar="N",
                      help="parallel ranged connections (default: one per piece of the file, up to 8; 1 for a "
                      "single stream)")
    pull.add_argument("--force", action="store_true", help="download even if the model will not fit this machine")
    pull.add_argument("-b", "--backend", choices=("localllm", "ollama"), default="localllm",
                      help="ollama: pull NAME[:TAG] into the Ollama server instead (default: localllm's own store)")
    server_args(pull)
    pull.set_defaults(handler=pull_command)

    create = commands.add_parser(
        "create", help="name a model with a system prompt and parameters (--from MODEL, or -f Modelfile)")
    create.add_argument("name", help="the new name, NAME or NAME:TAG (letters, digits, _ . -)")
    create.add_argument("--from", dest="base", metavar="MODEL",
                        help="what it is built on: an installed model's name, a named model, or a .gguf path")
    create.add_argument("-f", "--file", metavar="MODELFILE",
                        help="an Ollama Modelfile: FROM, SYSTEM, PARAMETER and LICENSE lines (TEMPLATE is refused)")
    create.add_argument("-s", "--system", help="its system prompt")
    # dest is not "option": settings_from reads every command's -o as run's load options
    create.add_argument("-o", "--parameter", dest="parameters", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter, repeatable: run's -o keys or Ollama's (num_ctx, num_predict)")
    create.set_defaults(handler=create_command)

    rm = commands.add_parser("rm", help="delete a model localllm downloaded, or a named model's name (never another "
                             "tool's files)")
    rm.add_argument("model")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument("-b", "--backend", choices=("localllm", "ollama"), default="localllm",
                    help="ollama: delete the model from the Ollama server")
    server_args(rm)
    rm.set_defaults(handler=rm_command)

    downloads = commands.add_parser("downloads", help="partial downloads and their progress; `clean` removes them "
                                    "(and uploads no named model uses)")
    downloads.add_argument("action", nargs="?", choices=("list", "clean"), default="list")
    downloads.add_argument("--json", action="store_true")
    downloads.set_defaults(handler=downloads_command)

    verify = commands.add_parser("verify", help="re-hash installed models against their recorded sha256")
    verify.add_argument("model", nargs="?")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=verify_command)
