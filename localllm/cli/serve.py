"""`localllm serve`: the model behind OpenAI's, Anthropic's and Ollama's APIs at once, for the user's other tools."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localllm.cli.arguments import Commands, model_args
from localllm.cli.output import note
from localllm.core.settings import Settings

if TYPE_CHECKING:
    from localllm.core.access import AccessPolicy

DEFAULT_PARALLEL = 4
"""The most answers a model decodes at once unless --parallel says otherwise (LM Studio's default too)."""
MAX_PARALLEL = 64
EMBEDDING_CTX = 2048
"""The default window of the model instance serve loads for embeddings. A text is embedded in one batch, so its
buffers grow with the text's length (a chat model's also hold its logits: vocabulary x tokens); 2048 takes the
chunks retrieval tools cut (up to about 1,000 tokens) with room to spare, and keeps that growth bounded."""


def register(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="serve models to other tools by name: OpenAI, Anthropic and Ollama APIs")
    serve.add_argument("--host", dest="bind", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on (default 127.0.0.1; any other needs --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", dest="serve_key", metavar="KEY",
                       help="clients must send KEY (Authorization: Bearer KEY, or x-api-key); better: "
                            "LOCALLLM_SERVE_KEY")
    add_access_args(serve)
    serve.add_argument("--parallel", type=int, default=None, metavar="N",
                       help="answers each model decodes at once, each with the whole window (default: up to "
                            f"{DEFAULT_PARALLEL} where memory holds their caches; 1: one at a time); llama.cpp only")
    serve.add_argument("--queue", type=int, default=8, metavar="N",
                       help="requests that may wait for a model beyond those it answers (default 8); more get 503 "
                            "with Retry-After")
    serve.add_argument("--stream-interval", type=float, default=50.0, metavar="MS",
                       help="a streamed answer's events at most this often (default 50 ms): the first piece at once, "
                            "the next ones gathered meanwhile; 0: an event per token")
    serve.add_argument("--keep-alive", default="5m", metavar="DURATION",
                       help="how long a model stays loaded after its last request (default 5m; 0: unload at once; "
                            "-1: until serve stops); Ollama's keep_alive overrides it per request")
    serve.add_argument("--max-loaded", type=int, default=0, metavar="N",
                       help="models loaded at once at most (default 0: as many as the memory holds); the least "
                            "recently used is unloaded to make room")
    serve.add_argument("--embedding-ctx", type=int, default=EMBEDDING_CTX, metavar="N",
                       help=f"window of the model instance loaded for /v1/embeddings and /api/embed (default "
                            f"{EMBEDDING_CTX}); a longer text is refused")
    model_args(serve, generation=True, serving=True)
    serve.set_defaults(handler=serve_command)


def add_access_args(parser: argparse.ArgumentParser) -> None:
    """The Host and Origin allow-lists (localllm/server/origins.py), the same for serve and web."""
    parser.add_argument("--allow-host", dest="allow_hosts", action="append", default=[], metavar="NAME",
                        help="a Host name to answer besides localhost, 127.x and [::1] while on loopback "
                             "(repeatable; config: allowed_hosts)")
    parser.add_argument("--allow-origin", dest="allow_origins", action="append", default=[], metavar="ORIGIN",
                        help="a web page origin allowed to call the server, * as a wildcard, e.g. "
                             "'https://*.example.com' (repeatable; config: allowed_origins; OLLAMA_ORIGINS)")


def access_from(args: argparse.Namespace, settings: Settings) -> AccessPolicy:
    """The AccessPolicy for this command: the flags added to the config's lists and OLLAMA_ORIGINS."""
    from localllm.core.access import access_policy

    return access_policy(args.bind, [*settings.allowed_hosts, *args.allow_hosts],
                         [*settings.allowed_origins, *args.allow_origins])


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from localllm.backends import backend_class
    from localllm.backends.choice import choose_backend
    from localllm.cli.generate import describe_plan, options_from
    from localllm.core.errors import ModelNotFound, UsageError
    from localllm.core.units import duration_text
    from localllm.hardware.detect import detect_hardware
    from localllm.server.app import build_app, check_bind
    from localllm.server.engine import Engine
    from localllm.server.runner_engine import RunnerModels, make_runner_engine
    from localllm.server.scheduler import Scheduler
    from localllm.tasks.loading import load_model
    from localllm.tasks.serving import LocalModels, ServerModels, served_key

    api_key = args.serve_key or os.environ.get("LOCALLLM_SERVE_KEY") or None
    check_bind(args.bind, api_key)
    access = access_from(args, settings)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a port", hint="use 1 to 65535, e.g. --port 8000")
    if args.max_loaded < 0:
        raise UsageError("--max-loaded must be 0 (no limit) or more", hint="e.g. --max-loaded 2")
    if args.parallel is not None and not 1 <= args.parallel <= MAX_PARALLEL:
        raise UsageError(f"--parallel {args.parallel} is out of range",
                         hint=f"use 1 (one answer at a time) to {MAX_PARALLEL}, e.g. --parallel 4")
    if args.queue < 0:
        raise UsageError("--queue must be 0 or more", hint="e.g. --queue 8")
    if not 0 <= args.stream_interval <= 10_000:
        raise UsageError(f"--stream-interval {args.stream_interval:g} is out of range",
                         hint="use 0 (an event per token) to 10000 ms, e.g. --stream-interval 50")
    if not 16 <= args.embedding_ctx <= 1 << 20:
        raise UsageError(f"--embedding-ctx {args.embedding_ctx} is not a usable window",
                         hint=f"use 16 or more, e.g. --embedding-ctx {EMBEDDING_CTX}")
    try:
        import uvicorn
    except ImportError:
        raise UsageError("serving needs uvicorn and starlette", hint='pip install "localllm[serve]"') from None
    keep_alive = keep_alive_from(args.keep_alive)
    options = options_from(args, settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    served_log = logging.getLogger("localllm.serve")
    served_log.addHandler(handler)
    served_log.setLevel(logging.INFO)
    served_log.propagate = False
    report = detect_hardware()
    choice = choose_backend(args.backend or "auto", settings.backend, report, model=args.model or settings.model,
                            settings=settings)
    runners: RunnerModels | None = None
    if backend_class(choice.name).local_files:  # each model in a runner process of its own
        # --parallel N plans each model with N slots' caches; without it a runner takes the slots that fit beside
        # its model once loaded (up to DEFAULT_PARALLEL), and its process's size is counted as it is.
        runners = RunnerModels(settings, report, backend=choice.name, ctx=options.ctx, max_queue=args.queue,
                               stream_interval=args.stream_interval / 1000, embedding_ctx=args.embedding_ctx,
                               slots=args.parallel or 1, parallel=args.parallel, most_parallel=DEFAULT_PARALLEL)
    loaded: Any = None
    try:
        if runners is not None:
            try:
                loaded = runners.load(args.model, [])
            except ModelNotFound:
                runners.close()
                runners = None  # a name no local store knows may be a model Ollama has (load_model asks it)
        if loaded is None:
            loaded = load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx,
                                report=report)
        backend = loaded.choice.name
        source: Any = runners
        if runners is None:  # a server backend's models (or a model Ollama has): nothing loads here
            source = LocalModels(settings, report, backend=backend, ctx=options.ctx) \
                if backend_class(backend).local_files else ServerModels(settings, backend=backend, ctx=options.ctx)

        def make_engine(model: Any) -> Any:
            if runners is not None:
                return make_runner_engine(model)
            from localllm.hardware.planner import parallel_slots

            parallel = args.parallel if args.parallel is not None else parallel_slots(model.plan, DEFAULT_PARALLEL)
            return Engine(model, max_queue=args.queue, embedder=embedder_for(settings, model, args.embedding_ctx),
                          stream_interval=args.stream_interval / 1000, parallel=parallel)

        scheduler = Scheduler(source, make_engine, keep_alive=keep_alive, max_loaded=args.max_loaded)
        key = served_key(loaded.ref) if loaded.served is None else loaded.ref.name
        engine = make_engine(loaded)
        scheduler.adopt(key, engine, loaded, default=True)
    except BaseException:
        if loaded is not None:
            loaded.close()
        if runners is not None:
            runners.close()
        raise
    try:
        app = build_app(scheduler, options, api_key, access=access)
        host = f"[{args.bind}]" if ":" in args.bind else args.bind
        note(describe_plan(loaded))
        slots = f"{engine.slots} answers at once, " if engine.slots > 1 else ""
        note(f"serving {loaded.ref.name} ({slots}and every model `localllm list` shows, by name, loaded at its first "
             f"request and unloaded after {duration_text(keep_alive)} unused) on http://{host}:{args.port}: "
             f"OpenAI /v1 (chat/completions, responses, completions, embeddings), Anthropic /v1/messages, Ollama "
             f"/api (chat, generate, embed){' (API key required)' if api_key else ''}; Ctrl-C stops")
        terminated = serve_until_stopped(uvicorn, app, args.bind, args.port)
    finally:
        scheduler.close()
    if terminated:  # ended as SIGTERM ends a process, now that the models are closed
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    return 0


class _Terminated(Exception):
    """SIGTERM, raised where uvicorn hands the signal back once it has shut down."""


def serve_until_stopped(uvicorn: Any, app: Any, bind: str, port: int) -> bool:
    """Runs the server until Ctrl-C or SIGTERM; True for SIGTERM. uvicorn shuts down gracefully on either, then
    raises the signal again for its default action: SIGTERM's would end the process before the models are closed
    (runners end with it anyway, but unannounced and killed)."""
    def terminated(_signum: int, _frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        uvicorn.run(app, host=bind, port=port, log_level="warning", access_log=False)
    except _Terminated:
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    return False


def keep_alive_from(text: str) -> float:
    from localllm.core.errors import UsageError
    from localllm.core.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise UsageError(f"--keep-alive {text}: {error}", hint="e.g. --keep-alive 5m, 1h, 0, or -1 (forever)") \
            from None


def embedder_for(settings: Settings, loaded: Any, window: int = EMBEDDING_CTX) -> Callable[[], Any] | None:
    """How the engine loads its embedding model when the first request for one comes: the same file, a second
    instance in embedding mode with a small window (at most ``window``, and no more than the model was trained
    for). None where the backend computes no embeddings. Its weights stay on the CPU (mapped from the same file as
    the chat model's, so they take no second copy of memory); a GPU holding the chat model may have no room for a
    second copy."""
    from localllm.backends import backend_class

    if not loaded.backend.capabilities.embeddings or loaded.served is not None:
        return None

    def load() -> Any:
        from dataclasses import replace

        plan = replace(loaded.plan, n_ctx=min(window, loaded.info.context_length or window), n_gpu_layers=0)
        instance = backend_class(loaded.choice.name).from_settings(settings)
        try:
            instance.load_for_embeddings(loaded.ref, plan)
        except BaseException:
            instance.close()
            raise
        return instance

    return load
