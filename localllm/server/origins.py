"""The Host and Origin rule (localllm.core.access) in front of every route of `localllm serve`, present and future, as
ASGI middleware; CORS for the origins it allows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from localllm.core.access import AccessPolicy

# -- ASGI (serve) ------------------------------------------------------------------------------------------------------
PREFLIGHT_MAX_AGE = "600"
"""Seconds a browser may reuse a preflight's answer."""


def guard(policy: AccessPolicy | None, refuse: Callable[[str, str], Any], logger: logging.Logger) -> list[Any]:
    """Starlette's ``middleware=`` list that puts ``policy`` in front of every route, present and future; none for no
    policy. ``refuse(path, reason)`` makes the 403 response in the format the path speaks.

    Starlette's own CORSMiddleware is not used: it lets a request from a refused origin through to the route (it only
    leaves out the CORS headers, so a simple request's side effects still happen) and refuses a preflight with a bare
    400 in no API's error shape."""
    if policy is None:
        return []
    from starlette.middleware import Middleware

    return [Middleware(HostOriginGuard, policy=policy, refuse=refuse, logger=logger)]


class HostOriginGuard:
    """Pure ASGI, so that streamed answers pass through untouched."""

    def __init__(self, app: Any, policy: AccessPolicy, refuse: Callable[[str, str], Any],
                 logger: logging.Logger) -> None:
        self.app, self.policy, self.refuse, self.logger = app, policy, refuse, logger

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        host, origin = headers.get("host"), headers.get("origin")
        method, path = scope.get("method", "WEBSOCKET"), scope["path"]
        reason = self.policy.refusal(host, origin)
        if reason is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # before the accept: the server answers 403
            else:
                await self.refuse(path, reason)(scope, receive, send)
            self.logger.info("%s %s %s %.2f s: %s", method, path, 403, time.monotonic() - started, reason)
            return
        if origin is None or scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if method == "OPTIONS" and "access-control-request-method" in headers:
            await preflight(send, origin, headers)
            self.logger.info("%s %s %s %.2f s", method, path, 204, time.monotonic() - started)
            return

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *cors_headers(origin)]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    # Echoed, never "*": the answer differs by origin, so caches must keep them apart (Vary).
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
            (b"access-control-expose-headers", b"Retry-After")]


async def preflight(send: Callable[..., Any], origin: str, headers: Mapping[str, str]) -> None:
    answer = [*cors_headers(origin), (b"access-control-allow-methods",
                                      headers["access-control-request-method"].encode("latin-1")),
              (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode())]
    if "access-control-request-headers" in headers:
        answer.append((b"access-control-allow-headers", headers["access-control-request-headers"].encode("latin-1")))
    if headers.get("access-control-request-private-network") == "true":
        # Chrome asks this of a public page reaching a private address; the user allowed that origin by name.
        answer.append((b"access-control-allow-private-network", b"true"))
    await send({"type": "http.response.start", "status": 204, "headers": answer})
    await send({"type": "http.response.body", "body": b""})
