"""The ASGI app: the three formats' routes over the models the scheduler serves by name, the API key, the body
size limit, errors in each format's own shape (a failure of the server's own is a 500 in that shape and one log
line, never a traceback), a client that leaves stopping its answer whether streamed or not, and one log line per
request with its time to the last byte (never the key)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from localllm.core.chunks import Chunk
from localllm.core.errors import UsageError
from localllm.core.options import GenerationOptions
from localllm.core.settings import KEY_HINT, UNSENDABLE_KEY, sendable_key
from localllm.server import anthropic_api, model_api, ollama_api, openai_api, responses_api
from localllm.server.engine import ApiError, Engine, Request
from localllm.server.origins import AccessPolicy, guard
from localllm.server.scheduler import Lease, Scheduler
from localllm.server.wire import body_json, keep_alive_of, model_of

logger = logging.getLogger("localllm.serve")
T = TypeVar("T")
MAX_BODY = 8 * 1024 * 1024
"""Bytes a request body may have (a long document fits; a runaway client does not)."""
GONE = 499
"""The status logged for a request whose client closed the connection first (nginx's; nothing is sent)."""
BODY_WINDOW_S = 10.0
MIN_BODY_BYTES = 10 * 1024
"""A request body arrives at 1 KiB/s or better, measured over each window of BODY_WINDOW_S: a client that trickles
its body (a byte a second) would otherwise hold a connection and its buffer for as long as it likes. Uvicorn
bounds the wait for the headers and between requests, not for the body."""
ANTHROPIC_CLIENT = "anthropic-version"
"""The header Anthropic's clients send with every request: /v1/models answers them in Anthropic's shape."""


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


async def paced(pieces: AsyncIterator[bytes], window_s: float = BODY_WINDOW_S,
                least: int = MIN_BODY_BYTES) -> AsyncIterator[bytes]:
    """A request body's pieces as they arrive; a 408 ApiError when the client has been waited for ``window_s``
    with fewer than ``least`` bytes received and the body not yet whole. Only the waits count: the time the
    consumer takes with a piece (a blob written to a slow disk) is not the client's."""
    waited, received = 0.0, 0
    # The read waiting for the next piece outlives a window's end: cancelling it would end the body's generator.
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(pieces))
            started = time.monotonic()
            await asyncio.wait({pending}, timeout=max(0.0, window_s - waited))
            waited += time.monotonic() - started
            piece = b""
            if pending.done():
                try:
                    piece = pending.result()
                except StopAsyncIteration:
                    return
                finally:
                    pending = None
                received += len(piece)
            if waited >= window_s:
                if received < least:
                    raise ApiError(408, f"the request body arrived too slowly (under {least // 1024} KiB in "
                                        f"{window_s:g} s)")
                waited, received = 0.0, 0
            if piece:
                yield piece
    finally:
        if pending is not None:
            pending.cancel()


async def until_gone(receive: Callable[[], Awaitable[Any]]) -> None:
    """Returns when the client disconnects. Only after the body is read: a message of it would be lost here."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_gone(receive: Callable[[], Awaitable[Any]], work: Awaitable[T]) -> T:
    """``work``, cancelled if the client disconnects first (then ClientGone). A generation nobody waits for must
    not hold the model for the rest of its answer: cancelling it closes the engine's stream, which stops its thread
    and the backend's decoding, and the next request waits only for that."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_gone(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled itself (the server stopping)
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # the generation has stopped when this returns
    if task.cancelled():
        raise ClientGone
    return task.result()


def check_bind(host: str, api_key: str | None, flag: str = "--api-key") -> None:
    """Loopback needs no key; any other address does (a model behind it is anyone's on the network). A key is
    printable ASCII: HTTP clients send headers in ASCII, so no client could ever send another."""
    if api_key and not sendable_key(api_key):
        raise UsageError(f"the key given with {flag} (or its environment variable) {UNSENDABLE_KEY}", hint=KEY_HINT)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise UsageError(f"serving on {host} without an API key would let anyone on the network use the model",
                         hint=f"pass {flag} KEY, or keep the default --host 127.0.0.1")


def build_app(models: Scheduler | Engine, options: GenerationOptions, api_key: str | None = None,
              max_body: int = MAX_BODY, access: AccessPolicy | None = None):
    """``models``: the scheduler of the models served by name (an engine alone: that one model, for tests that
    build the app in-process). ``access``: the Host and Origin rule in front of every route (serve always passes
    one; None, for tests that call the app in-process, checks neither)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    scheduler = models if isinstance(models, Scheduler) else Scheduler.serving(models)

    async def engine_for(request: HttpRequest, body: dict[str, Any], keep_alive: float | None = None) -> Engine:
        """The engine of the model the request names (loading it if need be), held until the request's last
        byte is sent."""
        lease = await scheduler.lease(model_of(body), keep_alive)
        request.state.leases.append(lease)
        return lease.engine

    def release(leases: list[Lease]) -> None:
        for lease in leases:
            lease.release()
        leases.clear()

    def format_of(path: str, headers: Any = None) -> Any:
        if path.startswith("/v1/models") and headers is not None and ANTHROPIC_CLIENT in headers:
            return anthropic_api  # its SDK lists models at OpenAI's path, and says who it is by its header
        return anthropic_api if path.startswith("/v1/messages") else ollama_api if path.startswith("/api/") \
            else openai_api

    def error_response(path: str, error: ApiError, headers: Any = None) -> Response:
        return JSONResponse(format_of(path, headers).error_body(error), status_code=error.status,
                            headers=error.headers)

    async def body_of(request: HttpRequest) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise ApiError(413, f"the request body is over {max_body // (1024 * 1024)} MiB")
        data = bytearray()
        async for piece in paced(request.stream()):  # ClientDisconnect if the client leaves before it is whole
            data += piece
            if len(data) > max_body:
                raise ApiError(413, f"the request body is over {max_body // (1024 * 1024)} MiB")
        return body_json(bytes(data))

    def authorized(request: HttpRequest) -> bool:
        if not api_key:
            return True
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        import hmac

        return hmac.compare_digest(given.encode(), api_key.encode())

    def log(request: HttpRequest, status: int, started: float, note: str = "") -> None:
        note = " ".join(note.split())  # one line, whatever an exception's text holds
        logger.info("%s %s %s %.2f s%s", request.method, request.url.path, status, time.monotonic() - started,
                    f" ({note})" if note else "")

    class Stream(StreamingResponse):
        """A streamed answer, logged when its last byte is sent (or its client leaves), and closed then: its
        generation stops at once rather than when the garbage collector gets to the abandoned stream. A failure
        after the first event (the status line is sent) ends the stream with an error event in the format's
        shape."""

        def __init__(self, request: HttpRequest, fmt: Any, source: AsyncIterator[Chunk],
                     events: Callable[[AsyncIterator[Chunk]], AsyncIterator[str]], media: str) -> None:
            formatted = events(source)
            super().__init__(self._guarded(fmt, formatted), media_type=media)
            self.request = request
            # Outermost first: closing one does not close the iterator it reads from.
            self.closing = [self.body_iterator, formatted, source]
            self.started = time.monotonic()
            self.note = "streamed; the client went away"
            self.leases: list[Lease] = []
            """The request's hold on its model, released when the stream ends."""

        async def _guarded(self, fmt: Any, events: AsyncIterator[str]) -> AsyncIterator[str]:
            try:
                async for event in events:
                    yield event
                self.note = "streamed"
            except Exception as error:  # noqa: BLE001 - told to the client in the stream and logged in one line
                failure = error if isinstance(error, ApiError) else \
                    ApiError(500, f"the server failed: {type(error).__name__}: {error}", "api_error")
                self.note = f"streamed; failed: {failure.message}"
                yield fmt.stream_error(failure)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            except (ClientDisconnect, OSError):
                pass  # the client left; noted as such below
            finally:
                for iterator in self.closing:
                    await iterator.aclose()  # type: ignore[attr-defined]
                release(self.leases)
                log(self.request, self.status_code, self.started, self.note)

    def endpoint(handler: Callable[[HttpRequest], Awaitable[Response]]):
        async def run(request: HttpRequest) -> Response:
            started = time.monotonic()
            note = ""
            leases: list[Lease] = []
            request.state.leases = leases
            request.state.started = started
            try:
                return await answer(request, started, note, leases)
            finally:
                release(leases)  # a stream took its own (and left this list empty)

        async def answer(request: HttpRequest, started: float, note: str, leases: list[Lease]) -> Response:
            try:
                if not authorized(request):
                    raise ApiError(401, "a valid API key is needed (Authorization: Bearer KEY, or x-api-key)",
                                   "authentication_error")
                response = await handler(request)
            except ApiError as error:
                response = error_response(request.url.path, error, request.headers)
                note = error.message  # why it was refused, for whoever reads the log
            except (ClientDisconnect, ClientGone):
                log(request, GONE, started, "the client went away")
                return Response(status_code=GONE)  # nobody reads it: the connection is closed
            except Exception as error:  # noqa: BLE001 - a bug of ours is the client's 500 and one log line
                note = f"{type(error).__name__}: {error}"
                response = error_response(request.url.path, ApiError(500, f"the server failed: {note}",
                                                                     "api_error"), request.headers)
            if isinstance(response, Stream):
                response.started = started  # logged when the stream ends
                response.leases = leases[:]  # released then
                leases.clear()
            else:
                log(request, response.status_code, started, note)
            return response
        return run

    async def generation(request: HttpRequest, engine: Engine, fmt: Any, parsed: Request, stream: bool,
                         whole: Callable[[Request], Awaitable[dict[str, Any]]],
                         events: Callable[[AsyncIterator[Chunk]], AsyncIterator[str]], media: str) -> Response:
        if not stream:
            return JSONResponse(await unless_gone(request.receive, whole(parsed)))
        chunks = engine.stream(parsed)

        async def first_chunk() -> Chunk | None:
            return await anext(chunks, None)

        # Errors before the first chunk (a full queue, a long prompt) are HTTP errors; a client that leaves while
        # its prompt is read stops it there.
        first = await unless_gone(request.receive, first_chunk())

        async def all_chunks() -> AsyncIterator[Chunk]:
            try:
                if first is not None:
                    yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]

        return Stream(request, fmt, all_chunks(), events, media)

    def listed() -> list[Any]:
        """Each served model once, by its first name (NAME:QUANT aliases left out)."""
        seen: dict[str, Any] = {}
        for served in scheduler.names():
            seen.setdefault(served.key, served)
        return list(seen.values())

    async def described(served: list[Any]) -> list[Any]:
        """What is known of the served models (read in a thread: a file's header may be read), with the window each
        runs with where it is loaded."""
        running = {key: slot.engine.window for key, slot in scheduler.slots.items()}
        known = await asyncio.to_thread(lambda: [scheduler.source.describe(s) for s in served])
        return [replace(model, window=running[model.key]) if model.key in running else model for model in known]

    async def openai_models(request: HttpRequest) -> Response:
        if ANTHROPIC_CLIENT in request.headers:
            return JSONResponse(anthropic_api.models(await described(listed()), request.query_params))
        return JSONResponse(openai_api.models(await described(listed())))

    async def openai_model(request: HttpRequest) -> Response:
        wanted = request.path_params["name"]
        key = scheduler.resolve(wanted)
        served = next((served for served in listed() if served.key == key), None)
        if served is None:
            return JSONResponse(openai_api.model(wanted))
        (known,) = await described([served])
        if ANTHROPIC_CLIENT in request.headers:
            return JSONResponse(anthropic_api.model_info(known))
        return JSONResponse(openai_api.model(known.name, known.modified))

    async def openai_chat(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = model_api.parsed(scheduler, options, body, openai_api.parse)
        include_usage = openai_api.include_usage(body)
        engine = await engine_for(request, body)
        openai_api.checked_for(engine, parsed)
        return await generation(request, engine, openai_api, parsed, openai_api.streamed(body),
                                lambda r: openai_api.complete(engine, r),
                                lambda c: openai_api.stream(engine, c, include_usage), "text/event-stream")

    async def openai_completions(request: HttpRequest) -> Response:
        body = await body_of(request)
        engine = await engine_for(request, body)
        engine.check_text_completion()  # before the window is asked for: a backend without raw text has none
        parsed, echo = openai_api.parse_completion(body, model_api.base_options(scheduler, options, body),
                                                   engine)
        include_usage = openai_api.include_usage(body)
        return await generation(request, engine, openai_api, parsed[0], openai_api.streamed(body),
                                lambda _: openai_api.complete_text(engine, parsed, echo),
                                lambda c: openai_api.stream_text(engine, c, parsed, echo, include_usage),
                                "text/event-stream")

    async def openai_responses(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = responses_api.parse(body, model_api.base_options(scheduler, options, body))
        model_api.with_system(scheduler, body, parsed.request)
        engine = await engine_for(request, body)
        events = responses_api.Events(engine, parsed)  # numbers the events, a failure's among them
        return await generation(request, engine, events, parsed.request, parsed.stream,
                                lambda _: responses_api.complete(engine, parsed), events.stream, "text/event-stream")

    async def openai_embeddings(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = openai_api.parse_embeddings(body)
        engine = await engine_for(request, body)
        return JSONResponse(await unless_gone(request.receive, openai_api.embeddings(engine, *parsed)))

    def ollama_embed(legacy: bool):
        async def handle(request: HttpRequest) -> Response:
            body = await body_of(request)
            engine = await engine_for(request, body, keep_alive_of(body))
            clock = ollama_api.Clock(request.state.started, request.state.leases[-1].load_s)
            return JSONResponse(await unless_gone(request.receive, ollama_api.embed(engine, body, legacy, clock)))
        return handle

    async def anthropic_messages(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = model_api.parsed(scheduler, options, body, anthropic_api.parse)
        engine = await engine_for(request, body)
        return await generation(request, engine, anthropic_api, parsed, anthropic_api.streamed(body),
                                lambda r: anthropic_api.complete(engine, r),
                                lambda c: anthropic_api.stream(engine, c), "text/event-stream")

    async def anthropic_count_tokens(request: HttpRequest) -> Response:
        body = await body_of(request)
        parsed = model_api.with_system(scheduler, body, anthropic_api.parse(body, options, counting=True))
        engine = await engine_for(request, body)
        return JSONResponse(await anthropic_api.count_tokens(engine, parsed))

    def ollama_generation(chat: bool):
        async def handle(request: HttpRequest) -> Response:
            body = await body_of(request)
            keep_alive = keep_alive_of(body)
            if ollama_api.loads_only(body, chat):  # Ollama's idiom: nothing to answer, only load or unload
                if keep_alive == 0:
                    await scheduler.unload(model_of(body))  # an unknown name is still a 404
                    return JSONResponse(ollama_api.loaded_reply(model_of(body) or "", chat, "unload"))
                engine = await engine_for(request, body, keep_alive)
                return JSONResponse(ollama_api.loaded_reply(engine.name, chat, "load"))
            parsed = model_api.parsed(scheduler, options, body, lambda b, o: ollama_api.parse(b, o, chat=chat))
            engine = await engine_for(request, body, keep_alive)
            # Ollama's durations count from the request's arrival, the model's load included
            clock = ollama_api.Clock(request.state.started, request.state.leases[-1].load_s)
            return await generation(request, engine, ollama_api, parsed, ollama_api.streamed(body),
                                    lambda r: ollama_api.complete(engine, r, chat, clock),
                                    lambda c: ollama_api.stream(engine, c, chat, clock), "application/x-ndjson")
        return handle

    async def ollama_version(request: HttpRequest) -> Response:
        return JSONResponse(ollama_api.version())

    async def ollama_tags(request: HttpRequest) -> Response:
        described = await asyncio.to_thread(lambda: [scheduler.source.describe(s) for s in listed()])
        return JSONResponse(ollama_api.tags(described))

    async def ollama_ps(request: HttpRequest) -> Response:
        return JSONResponse(ollama_api.ps(scheduler.loaded()))

    async def ollama_show(request: HttpRequest) -> Response:
        body = await body_of(request)
        wanted = model_of(body, "model", "name")
        key = scheduler.resolve(wanted)
        slot = scheduler.slots.get(key or "")
        served = next((s for s in listed() if s.key == key), None)
        described = await asyncio.to_thread(scheduler.source.describe, served) if served else None
        return JSONResponse(ollama_api.show(slot.engine if slot else None, described, options))

    async def ollama_create(request: HttpRequest) -> Response:
        body = await body_of(request)
        statuses = await model_api.create(scheduler, body)
        if not ollama_api.streamed(body):
            return JSONResponse(statuses[-1])
        return Response("".join(json.dumps(status) + "\n" for status in statuses), media_type="application/x-ndjson")

    async def ollama_copy(request: HttpRequest) -> Response:
        await model_api.copy(scheduler, await body_of(request))
        return Response(status_code=200)

    async def ollama_delete(request: HttpRequest) -> Response:
        await model_api.delete(scheduler, await body_of(request))
        return Response(status_code=200)

    async def ollama_pull(request: HttpRequest) -> Response:
        body = await body_of(request)
        statuses = model_api.pull(scheduler, model_api.pull_name(body))
        if not ollama_api.streamed(body):
            return JSONResponse(await unless_gone(request.receive, model_api.pulled(statuses)))
        # The status lines take a chunk stream's way out: logged at their end, closed (the pull stopped) if the
        # client leaves, a failure after the first line an {"error"} line of its own
        lines: Any = statuses
        return Stream(request, ollama_api, lines, lambda items: (json.dumps(item) + "\n" async for item in items),
                      "application/x-ndjson")

    async def ollama_push(request: HttpRequest) -> Response:
        model_api.push()
        return Response(status_code=501)

    async def ollama_blob(request: HttpRequest) -> Response:
        digest = request.path_params["digest"]
        if request.method == "HEAD":
            await model_api.blob_exists(scheduler, digest)
            return Response(status_code=200)
        # Streamed to the store as it arrives: an upload is a model file, far over the body limit of the other routes
        await model_api.receive_blob(scheduler, digest, paced(request.stream()),
                                     request.headers.get("content-length"))
        return Response(status_code=201)

    async def root(request: HttpRequest) -> Response:
        listed_routes = [f"{method} {route.path}" for route in routes for method in sorted(route.methods or ())
                         if method != "HEAD" and route.path != "/"]
        default = scheduler.default
        return JSONResponse({"model": default.name if default else None,
                             "models": [served.name for served in listed()],
                             "formats": {"openai": "/v1", "anthropic": "/v1/messages", "ollama": "/api"},
                             "routes": listed_routes})

    routes = [
        Route("/", endpoint(root)),
        Route("/v1/models", endpoint(openai_models)),
        Route("/v1/models/{name:path}", endpoint(openai_model)),
        Route("/v1/chat/completions", endpoint(openai_chat), methods=["POST"]),
        Route("/v1/completions", endpoint(openai_completions), methods=["POST"]),
        Route("/v1/responses", endpoint(openai_responses), methods=["POST"]),
        Route("/v1/embeddings", endpoint(openai_embeddings), methods=["POST"]),
        Route("/v1/messages", endpoint(anthropic_messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", endpoint(anthropic_count_tokens), methods=["POST"]),
        Route("/api/version", endpoint(ollama_version)),
        Route("/api/tags", endpoint(ollama_tags)),
        Route("/api/ps", endpoint(ollama_ps)),
        Route("/api/show", endpoint(ollama_show), methods=["POST"]),
        Route("/api/chat", endpoint(ollama_generation(True)), methods=["POST"]),
        Route("/api/generate", endpoint(ollama_generation(False)), methods=["POST"]),
        Route("/api/embed", endpoint(ollama_embed(False)), methods=["POST"]),
        Route("/api/embeddings", endpoint(ollama_embed(True)), methods=["POST"]),
        Route("/api/create", endpoint(ollama_create), methods=["POST"]),
        Route("/api/copy", endpoint(ollama_copy), methods=["POST"]),
        Route("/api/delete", endpoint(ollama_delete), methods=["DELETE"]),
        Route("/api/pull", endpoint(ollama_pull), methods=["POST"]),
        Route("/api/push", endpoint(ollama_push), methods=["POST"]),
        Route("/api/blobs/{digest}", endpoint(ollama_blob), methods=["HEAD", "POST"]),
    ]
    async def unrouted(request: HttpRequest, error: Any) -> Response:
        """A path or a method no route takes (Starlette's HTTPException for 404 and 405): said in the API family's
        own error shape and logged like any other request (Starlette's own answer is a line of plain text, and no
        log line)."""
        path, method = request.url.path, request.method
        if error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            refusal = ApiError(405, f"{path} takes {allowed or 'other methods'}, not {method}",
                               "invalid_request_error", {"Allow": allowed} if allowed else None)
        else:
            anthropic = format_of(path, request.headers) is anthropic_api
            refusal = ApiError(404, f"there is no route {method} {path} (GET / lists the routes)",
                               "not_found_error" if anthropic else "invalid_request_error")
        log(request, refusal.status, time.monotonic(), refusal.message)
        return error_response(path, refusal, request.headers)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        reaper = asyncio.ensure_future(scheduler.reap())  # unloads the models whose keep-alive ran out
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)

    refuse = guard(access, lambda path, reason: error_response(path, ApiError(403, reason, "permission_error")),
                   logger)
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: unrouted, 405: unrouted},
                     middleware=refuse)
