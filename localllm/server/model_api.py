"""Ollama's model management on localllm's store: /api/create, /api/copy, /api/delete, /api/pull, /api/push and
/api/blobs/sha256:<hex>, in Ollama's JSON shapes and status codes, and a named model's defaults on every request
that names it (its parameters under the request's own fields, its system prompt where the request has none).

What a client sends is data: names, digests and Modelfile text are checked before use, a client never names a file
on this machine (it uploads one, by digest), an upload's size is counted as it arrives against the disk the store
may use, and only what localllm owns is ever deleted (a named model's name; a model localllm downloaded)."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from localllm.core.errors import InvalidModelFile, LocalLLMError, ModelNotFound, UsageError, WontFit
from localllm.core.messages import Message
from localllm.core.model import NamedDefaults
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.server.engine import ApiError, Request
from localllm.server.wire import flag, model_of, obj, string

PROGRESS_EVERY = 0.25
"""Seconds between a pull's progress lines at most (a line per block received would be thousands a second)."""
UPLOAD_BLOCK = 4 * 1024 * 1024
"""Bytes of an upload gathered before they are hashed and written in a worker thread."""


def status_of(error: LocalLLMError) -> ApiError:
    """An error of the store or the tasks as the client's HTTP error."""
    from localllm.store.blobs import NoRoom
    from localllm.store.hub import HubError, HubNotFound
    from localllm.tasks.models import NotRemovable

    message = f"{error.message} ({error.hint})" if error.hint else error.message
    if isinstance(error, (ModelNotFound, HubNotFound)):
        return ApiError(404, message, "not_found_error")
    if isinstance(error, NotRemovable):
        return ApiError(403, message, "permission_error")
    if isinstance(error, NoRoom):
        return ApiError(507, message, "api_error")
    if isinstance(error, (UsageError, InvalidModelFile, WontFit)):
        return ApiError(400, message)
    if isinstance(error, HubError):  # the Hub refused (gated, unauthorised) or could not be reached
        return ApiError(502, message, "api_error")
    return ApiError(500, message, "api_error")


async def in_thread(work: Callable[[], Any]) -> Any:
    """``work`` (which reads or writes the store) off the event loop, its errors as HTTP errors."""
    try:
        return await asyncio.to_thread(work)
    except LocalLLMError as error:
        raise status_of(error) from None


def store_of(scheduler: Any) -> Settings:
    """The settings of the store the server's models come from; 501 where they are a server backend's."""
    from localllm.tasks.serving import LocalModels

    if not isinstance(scheduler.source, LocalModels):
        raise ApiError(501, "the models served here are another server's (serve -b ollama or -b openai): manage "
                            "them there", "not_implemented")
    return scheduler.source.settings


# -- a named model's defaults on each request -----------------------------------------------------------------------
def defaults_for(scheduler: Any, body: dict[str, Any]) -> NamedDefaults | None:
    """The named model's defaults when the request names one (or names none and serve's -m is one)."""
    name = model_of(body) or scheduler.default_name
    defaults = getattr(scheduler.source, "defaults", None)
    return defaults(name) if defaults is not None and name else None


def base_options(scheduler: Any, options: GenerationOptions, body: dict[str, Any]) -> GenerationOptions:
    """serve's options, with a named model's parameters over them: what the request's own fields override."""
    defaults = defaults_for(scheduler, body)
    return defaults.over(options) if defaults is not None else options


def parsed(scheduler: Any, options: GenerationOptions, body: dict[str, Any],
           parse: Callable[[dict[str, Any], GenerationOptions], Request]) -> Request:
    """``parse(body, base)`` over the named model's parameters, and its system prompt first unless the request
    brings its own."""
    defaults = defaults_for(scheduler, body)
    return with_system(scheduler, body, parse(body, defaults.over(options) if defaults is not None else options))


def with_system(scheduler: Any, body: dict[str, Any], request: Request) -> Request:
    """The named model's system prompt first, unless the request brings its own."""
    defaults = defaults_for(scheduler, body)
    if defaults is not None and defaults.system and request.messages \
            and not any(message.role == "system" for message in request.messages):
        request.messages.insert(0, Message("system", defaults.system))
    return request


# -- create, copy, delete -------------------------------------------------------------------------------------------
def _name(body: dict[str, Any], field: str, *fallbacks: str) -> str:
    from localllm.store.named import normal_name

    value = model_of(body, field, *fallbacks)
    if value is None:
        raise ApiError(400, f"{field} is required: the model's name")
    try:
        return normal_name(value, field)
    except UsageError as error:
        raise ApiError(400, f"{error.message} ({error.hint})") from None


def _text(body: dict[str, Any], field: str) -> str | None:
    from localllm.store.named import MAX_TEXT

    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, list) and field == "license" and all(isinstance(item, str) for item in value):
        value = "\n\n".join(value)
    text = string(value, field)
    if len(text) > MAX_TEXT:
        raise ApiError(400, f"{field} has more than {MAX_TEXT:,} characters")
    return text


def _refuse(body: dict[str, Any]) -> None:
    """What Ollama's create takes that localllm cannot do: said, never ignored."""
    quantize = body.get("quantize")
    if quantize not in (None, ""):
        raise ApiError(400, "quantize is not supported yet: create from a GGUF file of the quant you want (`localllm "
                            "pull NAME:QUANT`, or hf.co/OWNER/REPO:QUANT through /api/pull)")
    template = body.get("template")
    if template is not None and not isinstance(template, str):
        raise ApiError(400, "template must be a string")
    if template and template.strip():
        raise ApiError(400, "template (a Go template for Ollama's prompts) is not supported: localllm formats prompts "
                            "with the GGUF's own chat template; leave it out")
    for field, what in (("adapters", "adapters (LoRA) are"), ("messages", "messages (a conversation to start from) "
                                                                          "are")):
        value = body.get(field)
        if value is not None and not isinstance(value, (dict, list)):
            raise ApiError(400, f"{field} must be {'an object' if field == 'adapters' else 'a list'}")
        if value:
            raise ApiError(400, f"{what} not supported: leave {field} out")
    if body.get("path") not in (None, ""):
        raise ApiError(400, "path (a Modelfile on the server) is not accepted: send its text as modelfile")


def _files(body: dict[str, Any]) -> str | None:
    """The digest of the one GGUF that ``files`` names (None: no files given)."""
    from localllm.store.blobs import digest_hex

    files = body.get("files")
    if files is None:
        return None
    files = obj(files, "files")
    if not files:
        return None
    ggufs = [name for name in files if name.lower().endswith(".gguf")]
    others = [name for name in files if name not in ggufs]
    if others or len(ggufs) != 1:
        shown = json.dumps((others or ggufs)[0])[:80]
        raise ApiError(400, f"files[{shown}]: a model is created here from one GGUF file (safetensors and other "
                            "files are not supported)" if others else "files names several GGUF files: name one")
    digest = files[ggufs[0]]
    hex_digest = digest_hex(digest) if isinstance(digest, str) else None
    if hex_digest is None:
        raise ApiError(400, f"files[{json.dumps(ggufs[0])[:80]}] must be a digest, sha256:<64 hex digits>")
    return hex_digest


def create_request(settings: Settings, body: dict[str, Any]) -> tuple[str, Callable[[], Any], list[str]]:
    """Check a create request and say what it will do: (the name, the work that writes it, the status lines to
    stream before "writing manifest"). Nothing is written here."""
    from localllm.store.named import parameters_from
    from localllm.tasks.named import create_from_modelfile, create_named, resolve_base

    name = _name(body, "model", "name")
    _refuse(body)
    base = body.get("from")
    if base is not None and (not isinstance(base, str) or not base.strip()):
        raise ApiError(400, "from must be the name of a served model")
    digest = _files(body)
    if base and digest:
        raise ApiError(400, "give from (a model here) or files (an uploaded GGUF), not both")
    system = _text(body, "system")
    license = _text(body, "license")
    raw = body.get("parameters")
    try:
        parameters = parameters_from(list(obj(raw, "parameters").items()), "parameters") if raw is not None else {}
    except UsageError as error:
        raise ApiError(400, f"{error.message} ({error.hint})" if error.hint else error.message) from None
    modelfile = _text(body, "modelfile")
    given = f"sha256:{digest}" if digest else base
    statuses = ["parsing GGUF" if digest else "reading model metadata"]
    if digest:
        statuses.append(f"using existing layer sha256:{digest}")
    if system:
        statuses.append("creating system layer")
    if parameters:
        statuses.append("creating parameters layer")

    def work() -> Any:
        if modelfile is not None and modelfile.strip():
            return create_from_modelfile(settings, name, modelfile, paths_allowed=False, base_override=given,
                                         system=system, parameters=parameters)
        if not given:
            raise UsageError("from (a served model) or files (an uploaded GGUF) is required")
        model = create_named(settings, name, resolve_base(settings, given, paths_allowed=False), system=system,
                             parameters=parameters, license=license)
        return model

    return name, work, statuses


async def create(scheduler: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The named model written, and its status lines; errors before anything is written are HTTP errors."""
    from localllm.tasks.serving import NAMED_KEY

    settings = store_of(scheduler)
    name, work, statuses = create_request(settings, body)
    await in_thread(work)
    await scheduler.forget(name, f"{NAMED_KEY}{name}")  # a model loaded under this name was another
    return [{"status": status} for status in (*statuses, "writing manifest", "success")]


async def copy(scheduler: Any, body: dict[str, Any]) -> None:
    from localllm.tasks.named import copy_named
    from localllm.tasks.serving import NAMED_KEY

    settings = store_of(scheduler)
    source = model_of(body, "source")
    if source is None:
        raise ApiError(400, "source is required: the name of a served model")
    destination = _name(body, "destination")
    await in_thread(lambda: copy_named(settings, source, destination))
    await scheduler.forget(destination, f"{NAMED_KEY}{destination}")


async def delete(scheduler: Any, body: dict[str, Any]) -> None:
    """Only what localllm owns: a named model's name, or the files of a model it downloaded; a model loaded here
    is unloaded first."""
    from localllm.tasks.models import removable_by_name, remove
    from localllm.tasks.serving import served_key

    settings = store_of(scheduler)
    name = model_of(body, "model", "name")
    if name is None:
        raise ApiError(400, "model is required: the name of the model to delete")
    refs = await in_thread(lambda: removable_by_name(settings, name, downloaded_only=True))
    for ref in refs:
        await scheduler.forget(name, served_key(ref))
    await in_thread(lambda: [remove(settings, ref) for ref in refs])


def push() -> None:
    raise ApiError(501, "push is not supported: localllm pulls from the Hugging Face Hub and uploads nowhere",
                   "not_implemented")


# -- blobs ----------------------------------------------------------------------------------------------------------
def _digest(text: str) -> str:
    from localllm.store.blobs import digest_hex

    hex_digest = digest_hex(text)
    if hex_digest is None:
        raise ApiError(400, "the digest must be sha256:<64 hex digits>")
    return hex_digest


async def blob_exists(scheduler: Any, digest: str) -> None:
    """Nothing when the store has the blob; 404 when it does not."""
    from localllm.store.blobs import find_blob

    settings = store_of(scheduler)
    hex_digest = _digest(digest)
    if await in_thread(lambda: find_blob(settings, hex_digest)) is None:
        raise ApiError(404, f"no blob sha256:{hex_digest} here", "not_found_error")


async def receive_blob(scheduler: Any, digest: str, body: AsyncIterator[bytes], declared: str | None) -> None:
    """The request's body, streamed to a temporary file in the store while it is hashed, kept only when its sha256
    is ``digest``; on any failure (a mismatch, a full disk, the client leaving) nothing is left behind."""
    from localllm.store.blobs import BlobUpload

    settings = store_of(scheduler)
    hex_digest = _digest(digest)
    upload = await in_thread(lambda: BlobUpload(settings, hex_digest))
    try:
        if declared is not None and declared.strip().isdigit():
            upload.check_declared(int(declared))
        pending = bytearray()
        async for piece in body:
            pending += piece
            if len(pending) >= UPLOAD_BLOCK:
                block, pending = bytes(pending), bytearray()
                await in_thread(functools.partial(upload.write, block))
        if pending:
            await in_thread(functools.partial(upload.write, bytes(pending)))
        await in_thread(upload.finish)
    except LocalLLMError as error:
        raise status_of(error) from None
    finally:
        upload.discard()  # after finish, only the temporary name, which the rename took, is gone already


# -- pull -----------------------------------------------------------------------------------------------------------
def pull_name(body: dict[str, Any]) -> str:
    name = model_of(body, "model", "name")
    if name is None:
        raise ApiError(400, "model is required: NAME[:QUANT] from localllm's catalog, hf.co/OWNER/REPO[:QUANT] or "
                            "hf://OWNER/REPO/FILE.gguf")
    if flag(body.get("insecure"), "insecure", False):
        raise ApiError(400, "insecure pulls are not offered: the Hub is reached over HTTPS")
    return name.strip()


def pull(scheduler: Any, name: str) -> AsyncGenerator[dict[str, Any], None]:
    """Ollama's pull progress for localllm's own pull (resumable, verified): the manifest, the file's bytes, the
    digest check and success. Closing the iterator (a client that left) stops the download; its partial file
    stays for the next pull to resume. A server whose models are another server's is a 501 here, before any line.
    A model this server already serves (a package's, a folder's, a named one, one pulled before) is there: success
    at once, with nothing fetched (clients pull before they use a model; `localllm pull` fetches a newer copy)."""
    settings = store_of(scheduler)
    from localllm.tasks.serving import LocalModels

    if isinstance(scheduler.source, LocalModels) and scheduler.source.key_of(name) is not None:
        return _already_here()
    return _pull(settings, name)


async def _already_here() -> AsyncGenerator[dict[str, Any], None]:
    yield {"status": "pulling manifest"}
    yield {"status": "success"}


async def pulled(statuses: AsyncGenerator[dict[str, Any], None]) -> dict[str, Any]:
    """A pull's last status, for a client that asked for no stream (its failure: the HTTP error)."""
    last: dict[str, Any] = {}
    try:
        async for status in statuses:
            last = status
    finally:
        await statuses.aclose()  # also when the client left: the download stops
    return {"status": last.get("status", "success")}


async def _pull(settings: Settings, name: str) -> AsyncGenerator[dict[str, Any], None]:
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.models import pull as pull_model
    from localllm.tasks.models import resolve_pull

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    done = object()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        import time

        try:
            report = detect_hardware()
            target = resolve_pull(settings, name, report)
            digest = f"sha256:{target.remote.sha256}" if target.remote.sha256 else target.remote.path
            last = [0.0]

            def progress(completed: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] >= PROGRESS_EVERY or completed >= total:
                    last[0] = now
                    put({"status": f"pulling {digest}", "digest": digest, "total": total, "completed": completed})

            put({"status": f"pulling {digest}", "digest": digest, "total": target.remote.size})
            result = pull_model(settings, target, report, progress=progress, cancel=cancel)
            if result.already_installed:
                size = target.remote.size
                put({"status": f"pulling {digest}", "digest": digest, "total": size, "completed": size})
            put({"status": "verifying sha256 digest"})
            put({"status": "writing manifest"})
            put({"status": "success"})
        except BaseException as error:  # noqa: BLE001 - handed to the event loop, said to the client there
            put(error)
        finally:
            put(done)

    yield {"status": "pulling manifest"}
    thread = threading.Thread(target=work, name="serve-pull", daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, LocalLLMError):
                raise status_of(item)
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        await asyncio.to_thread(thread.join, 30)
