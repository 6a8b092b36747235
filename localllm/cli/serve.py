"""`localllm serve`: the model behind OpenAI's, Anthropic's and Ollama's APIs at once, for the user's other tools."""

from __future__ import annotations

import argparse
import logging
import sys

from localllm.cli.output import note
from localllm.core.settings import Settings


def add_serve_args(commands) -> argparse.ArgumentParser:
    serve = commands.add_parser("serve", help="serve the model to other tools: OpenAI, Anthropic and Ollama APIs")
    serve.add_argument("--host", dest="bind", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on (default 127.0.0.1; any other needs --api-key)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key", dest="serve_key", metavar="KEY",
                       help="clients must send KEY (Authorization: Bearer KEY, or x-api-key); better: "
                            "LOCALLLM_SERVE_KEY")
    serve.add_argument("--queue", type=int, default=8, metavar="N",
                       help="requests that may wait for the model (default 8); more get 503 with Retry-After")
    return serve


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from localllm.cli.generate import describe_plan, options_from
    from localllm.core.errors import UsageError
    from localllm.server.app import build_app, check_bind
    from localllm.server.engine import Engine
    from localllm.tasks.loading import load_model

    key = args.serve_key or os.environ.get("LOCALLLM_SERVE_KEY") or None
    check_bind(args.bind, key)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a port", hint="use 1 to 65535, e.g. --port 8000")
    if args.queue < 0:
        raise UsageError("--queue must be 0 or more", hint="e.g. --queue 8")
    try:
        import uvicorn
    except ImportError:
        raise UsageError("serving needs uvicorn and starlette", hint='pip install "localllm[serve]"') from None
    options = options_from(args, settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    served_log = logging.getLogger("localllm.serve")
    served_log.addHandler(handler)
    served_log.setLevel(logging.INFO)
    served_log.propagate = False
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        app = build_app(Engine(loaded, max_queue=args.queue), options, key)
        host = f"[{args.bind}]" if ":" in args.bind else args.bind
        note(describe_plan(loaded))
        note(f"serving {loaded.ref.name} on http://{host}:{args.port}: OpenAI /v1/chat/completions, Anthropic "
             f"/v1/messages, Ollama /api/chat{' (API key required)' if key else ''}; Ctrl-C stops")
        uvicorn.run(app, host=args.bind, port=args.port, log_level="warning", access_log=False)
    return 0
