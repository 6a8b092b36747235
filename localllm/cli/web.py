"""`localllm web`: the app in a browser, through textual-serve (each browser tab runs its own `localllm tui`)."""

from __future__ import annotations

import argparse
import hmac
import shlex
import sys
from typing import TYPE_CHECKING

from localllm.cli.arguments import Commands
from localllm.cli.output import note
from localllm.cli.serve import access_from, add_access_args
from localllm.core.errors import UsageError
from localllm.core.settings import Settings

if TYPE_CHECKING:
    from localllm.core.access import AccessPolicy

KEY_COOKIE = "localllm_web_key"


def register(commands: Commands) -> None:
    web = commands.add_parser("web", help="the app in a browser (textual-serve), on this machine only by default")
    web.add_argument("--host", dest="bind", default="127.0.0.1", metavar="ADDRESS",
                     help="address to listen on (default 127.0.0.1; any other needs --key)")
    web.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    web.add_argument("--key", dest="web_key", metavar="KEY",
                     help="the page asks for ?key=KEY once (then a cookie); better: LOCALLLM_WEB_KEY")
    web.add_argument("-m", "--model", help="model name, NAME:QUANT, or path to a .gguf file")
    add_access_args(web)
    web.set_defaults(handler=web_command)


def web_command(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from localllm.server.app import check_bind

    key = args.web_key or os.environ.get("LOCALLLM_WEB_KEY") or None
    check_bind(args.bind, key, "--key")
    access = access_from(args, settings)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a port", hint="use 1 to 65535, e.g. --port 8001")
    try:
        from textual_serve.server import Server
    except ImportError:
        raise UsageError("the web app needs textual-serve", hint='pip install "localllm[web]"') from None
    command = [sys.executable, "-m", "localllm", "tui"] + (["-m", args.model] if args.model else [])
    # exec: textual-serve starts the command through a shell; without it the app's parent would be that shell,
    # which outlives the server, and end_with_server could not tell the server went away.
    server = guarded_server(Server, key, access)("exec " + shlex.join(command), host=args.bind, port=args.port,
                                                 title="localllm")
    note(f"the app is at http://{args.bind}:{args.port}/{f'?key={key}' if key else ''} (each tab runs its own "
         "app; Ctrl-C stops)")
    server.serve()
    return 0


def guarded_server(base: type, key: str | None, access: AccessPolicy) -> type:
    """textual-serve's server (it checks nothing itself) with the Host and Origin rule in front of every request, the
    page, its static files and the websocket alike, then the key if there is one: ``?key=`` once, then a cookie."""
    import logging

    from aiohttp import web

    logger = logging.getLogger("localllm.web")
    secret = key or ""

    @web.middleware
    async def check_host_and_origin(request, handler):
        reason = access.refusal(request.headers.get("Host"), request.headers.get("Origin"))
        if reason is not None:
            # aiohttp's access log has the request's line; this says why it was refused.
            logger.warning("refused %s %s: %s", request.method, request.path, reason)
            return web.Response(status=403, text=f"localllm web: {reason}")
        return await handler(request)

    @web.middleware
    async def require_key(request, handler):
        given = request.query.get("key") or request.cookies.get(KEY_COOKIE, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return web.Response(status=401, text="localllm web: add ?key=KEY to the address (the key given to "
                                                 "`localllm web --key`)")
        response = await handler(request)
        if request.query.get("key"):
            response.set_cookie(KEY_COOKIE, secret, httponly=True, samesite="Strict")
        return response

    class GuardedServer(base):  # type: ignore[misc,valid-type]  # textual-serve's class, chosen at run time
        async def _make_app(self):
            app = await super()._make_app()
            app.middlewares.append(check_host_and_origin)
            if key:
                app.middlewares.append(require_key)
            return app

    return GuardedServer


def end_with_server() -> None:
    """In an app a browser tab runs: end the process when the server that started it is gone (killed, crashed).
    Without this, the app would go on alone, reading a closed pipe (textual's web driver then spins on it)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="end-with-server", daemon=True).start()
