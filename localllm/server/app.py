"""The ASGI app: the three formats' routes over one engine, the API key, the body size limit, errors in each
format's own shape, and one log line per request (never the key)."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from localllm.core.chunks import Chunk
from localllm.core.errors import UsageError
from localllm.core.options import GenerationOptions
from localllm.server import anthropic_api, ollama_api, openai_api
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.origins import AccessPolicy, guard

logger = logging.getLogger("localllm.serve")
MAX_BODY = 8 * 1024 * 1024
"""Bytes a request body may have (a long document fits; a runaway client does not)."""


def check_bind(host: str, api_key: str | None, flag: str = "--api-key") -> None:
    """Loopback needs no key; any other address does (a model behind it is anyone's on the network)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise UsageError(f"serving on {host} without an API key would let anyone on the network use the model",
                         hint=f"pass {flag} KEY, or keep the default --host 127.0.0.1")


def build_app(engine: Engine, options: GenerationOptions, api_key: str | None = None, max_body: int = MAX_BODY,
              access: AccessPolicy | None = None):
    """``access``: the Host and Origin rule in front of every route (serve always passes one; None, for tests that
    call the app in-process, checks neither)."""
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def format_of(path: str) -> Any:
        return anthropic_api if path.startswith("/v1/messages") else ollama_api if path.startswith("/api/") \
            else openai_api

    def error_response(path: str, error: ApiError) -> Response:
        return JSONResponse(format_of(path).error_body(error), status_code=error.status, headers=error.headers)

    async def body_of(request: HttpRequest) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise ApiError(413, f"the request body is over {max_body // (1024 * 1024)} MiB")
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > max_body:
                raise ApiError(413, f"the request body is over {max_body // (1024 * 1024)} MiB")
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def authorized(request: HttpRequest) -> bool:
        if not api_key:
            return True
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        import hmac

        return hmac.compare_digest(given.encode(), api_key.encode())

    def endpoint(handler: Callable[[HttpRequest], Awaitable[Response]]):
        async def run(request: HttpRequest) -> Response:
            started = time.monotonic()
            try:
                if not authorized(request):
                    raise ApiError(401, "a valid API key is needed (Authorization: Bearer KEY, or x-api-key)",
                                   "authentication_error")
                response = await handler(request)
            except ApiError as error:
                response = error_response(request.url.path, error)
            logger.info("%s %s %s %.2f s", request.method, request.url.path, response.status_code,
                        time.monotonic() - started)
            return response
        return run

    async def generation(request: HttpRequest, parsed: Request, stream: bool,
                         whole: Callable[[Request], Awaitable[dict[str, Any]]],
                         events: Callable[[AsyncIterator[Chunk]], AsyncIterator[str]], media: str) -> Response:
        if not stream:
            return JSONResponse(await whole(parsed))
        chunks = engine.stream(parsed)
        first = await anext(chunks)  # errors before the first chunk (a full queue, a long prompt) are HTTP errors

        async def all_chunks() -> AsyncIterator[Chunk]:
            yield first
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(events(all_chunks()), media_type=media)

    async def openai_models(request: HttpRequest) -> Response:
        return JSONResponse(openai_api.models(engine))

    async def openai_chat(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = openai_api.parse(body, options)
        include_usage = openai_api.include_usage(body)
        return await generation(request, parsed, bool(body.get("stream")),
                                lambda r: openai_api.complete(engine, r),
                                lambda c: openai_api.stream(engine, c, include_usage), "text/event-stream")

    async def openai_completions(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed, echo = openai_api.parse_completion(body, options)
        include_usage = openai_api.include_usage(body)
        return await generation(request, parsed[0], bool(body.get("stream")),
                                lambda _: openai_api.complete_text(engine, parsed, echo),
                                lambda c: openai_api.stream_text(engine, c, parsed, echo, include_usage),
                                "text/event-stream")

    async def openai_embeddings(request: HttpRequest) -> Response:
        body = await body_of(request)
        return JSONResponse(await openai_api.embeddings(engine, *openai_api.parse_embeddings(body)))

    def ollama_embed(legacy: bool):
        async def handle(request: HttpRequest) -> Response:
            return JSONResponse(await ollama_api.embed(engine, await body_of(request), legacy))
        return handle

    async def anthropic_messages(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = anthropic_api.parse(body, options)
        return await generation(request, parsed, bool(body.get("stream")),
                                lambda r: anthropic_api.complete(engine, r),
                                lambda c: anthropic_api.stream(engine, c), "text/event-stream")

    def ollama_generation(chat: bool):
        async def handle(request: HttpRequest) -> Response:
            body = await body_of(request)
            parsed = ollama_api.parse(body, options, chat=chat)
            return await generation(request, parsed, body.get("stream", True) is not False,
                                    lambda r: ollama_api.complete(engine, r, chat),
                                    lambda c: ollama_api.stream(engine, c, chat), "application/x-ndjson")
        return handle

    async def ollama_version(request: HttpRequest) -> Response:
        return JSONResponse(ollama_api.version())

    async def ollama_tags(request: HttpRequest) -> Response:
        return JSONResponse(ollama_api.tags(engine))

    async def ollama_show(request: HttpRequest) -> Response:
        return JSONResponse(ollama_api.show(engine))

    async def root(request: HttpRequest) -> Response:
        return JSONResponse({"model": engine.name, "formats": {"openai": "/v1", "anthropic": "/v1/messages",
                                                               "ollama": "/api"}})

    routes = [
        Route("/", endpoint(root)),
        Route("/v1/models", endpoint(openai_models)),
        Route("/v1/chat/completions", endpoint(openai_chat), methods=["POST"]),
        Route("/v1/completions", endpoint(openai_completions), methods=["POST"]),
        Route("/v1/embeddings", endpoint(openai_embeddings), methods=["POST"]),
        Route("/v1/messages", endpoint(anthropic_messages), methods=["POST"]),
        Route("/api/version", endpoint(ollama_version)),
        Route("/api/tags", endpoint(ollama_tags)),
        Route("/api/show", endpoint(ollama_show), methods=["POST"]),
        Route("/api/chat", endpoint(ollama_generation(True)), methods=["POST"]),
        Route("/api/generate", endpoint(ollama_generation(False)), methods=["POST"]),
        Route("/api/embed", endpoint(ollama_embed(False)), methods=["POST"]),
        Route("/api/embeddings", endpoint(ollama_embed(True)), methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=guard(
        access, lambda path, reason: error_response(path, ApiError(403, reason, "permission_error")), logger))
