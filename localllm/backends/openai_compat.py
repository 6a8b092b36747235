"""Any OpenAI-compatible server (vLLM, llamafile, llama-server, llama-cpp-python, LM Studio, OpenLLM, TGI,
TensorRT-LLM's trtllm-serve), through the official ``openai`` client with SSE streaming.

The API key goes to the client only; messages name the server by its URL without user info, never the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from localllm.backends.base import Backend, Capabilities, ServedModel
from localllm.backends.profiles import ServerProfile, response_format, server_profile
from localllm.backends.streaming import PromptEstimate, answer_chunks, estimate_tokens
from localllm.core.chunks import Chunk, FinalChunk, Stopwatch, ThinkingChunk, ToolCallChunk, Usage
from localllm.core.errors import (
    BackendUnavailable,
    ContextOverflow,
    GenerationError,
    LocalLLMError,
    ModelNotFound,
)
from localllm.core.messages import Message, tool_results_as_user
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolSpec, function_specs, native_call

_WINDOW_IN_MESSAGE = re.compile(r"context (?:window|length)[^0-9]{0,20}(\d+)|maximum context length is (\d+)")


def display_url(url: str) -> str:
    """The URL without a user name or password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _http_modules(client) -> tuple:
    """httpx, and the HTTP library this openai client is built on (httpx, or httpx2 in newer releases): raw
    streams raise that library's own exceptions."""
    import importlib

    import httpx

    roots = [cls.__module__.split(".")[0] for cls in type(client._client).__mro__]
    name = next((root for root in roots if root.startswith("httpx")), "httpx")
    return (httpx,) if name == "httpx" else (httpx, importlib.import_module(name))


def nothing_listens(url: str) -> bool:
    """Whether a direct connection to the URL's host and port is refused: no server runs there. Checked before
    the first request because the client's import costs over a second of processor time, which a user who has
    not started the server (or `localllm backends` looking at the default address) would wait for in vain. False
    whenever it cannot tell: a proxy in the way, a name that does not resolve, a connection that times out."""
    import socket
    import urllib.request

    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number: the client says so
        return False
    if not host or parts.scheme not in ("http", "https"):
        return False
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return False
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _import_openai():
    try:
        import openai
    except ImportError:
        raise BackendUnavailable("the openai client is not installed",
                                 hint='pip install "localllm[openai]"') from None
    return openai


class OpenAICompatBackend(Backend):
    name = "openai"
    capabilities = Capabilities(stream=True, cancel=True, tokenize=False, json_schema=True, list_models=True,
                                native_tools=True, penalties=True, logit_bias=True)
    local_files = False
    library = "openai"

    def __init__(self, base_url: str = "", api_key: str = "", profile: str = "", timeout: float = 120.0,
                 **option_values: Any) -> None:
        super().__init__(**option_values)
        self.profile: ServerProfile = server_profile(profile)
        self.base_url = (base_url or self.profile.base_url).rstrip("/")
        self.where = f"{self.profile.title} at {display_url(self.base_url)}"
        self.timeout = timeout
        self._api_key = api_key
        self._client: Any = None
        self._http: Any = None
        self._http_errors: tuple = ()
        self._timeouts: tuple = ()
        self._broken: tuple = ()
        self._model: str | None = None
        self._n_ctx = 0
        self._exact_counts = False
        self._estimate = PromptEstimate(self.count_tokens)

    @classmethod
    def from_settings(cls, settings) -> OpenAICompatBackend:
        return cls(settings.base_url, settings.api_key, settings.server, settings.request_timeout)

    # -- connection ------------------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            openai = _import_openai()
            # No retries: a refused connection or a 401 should be reported at once, not after backoff.
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or "none", max_retries=0,
                                         timeout=self.timeout)
            modules = _http_modules(self._client)
            self._http_errors = tuple(m.HTTPError for m in modules) + tuple(m.StreamError for m in modules)
            self._timeouts = tuple(m.TimeoutException for m in modules)
            self._broken = tuple(m.TransportError for m in modules) + tuple(m.StreamError for m in modules)
        return self._client

    def error(self, exc: BaseException, during: str = "", *, streaming: bool = False) -> LocalLLMError:
        """One clear LocalLLMError for whatever the client raised; the key never in it, even when the server
        echoes the request's Authorization header back in its error."""
        found = self._error(exc, during, streaming=streaming)
        key = self._api_key
        if key and key in f"{found.message} {found.hint}":
            found.message = found.message.replace(key, "[redacted]")
            found.hint = found.hint.replace(key, "[redacted]") if found.hint else found.hint
        return found

    def _error(self, exc: BaseException, during: str = "", *, streaming: bool = False) -> LocalLLMError:
        openai = _import_openai()
        self.client  # noqa: B018  (sets the error types of the client's HTTP library)
        where = self.where + (f" {during}" if during else "")
        if isinstance(exc, LocalLLMError):
            return exc
        if isinstance(exc, openai.AuthenticationError):
            return BackendUnavailable(f"{where}: the server refused the API key (401 Unauthorized)",
                                      hint="check --api-key, OPENAI_API_KEY or api_key in the config")
        if isinstance(exc, openai.PermissionDeniedError):
            return BackendUnavailable(f"{where}: this API key may not use it (403 Forbidden)",
                                      hint="check the key's permissions on the server")
        if isinstance(exc, (openai.APITimeoutError, *self._timeouts)):
            return GenerationError(f"{where}: no answer within {self.timeout:g} s",
                                   hint="the server may be overloaded or stuck; raise --timeout (request_timeout) "
                                        "or check the server")
        if isinstance(exc, openai.APIConnectionError) and not streaming:
            return BackendUnavailable(f"cannot reach {where}",
                                      hint=f"start it ({self.profile.start}) or pass --base-url URL")
        if isinstance(exc, (openai.APIConnectionError, *self._broken)):
            return GenerationError(f"{where}: the connection broke ({exc.__cause__ or exc})",
                                   hint="the server stopped or restarted; the answer so far is kept")
        if isinstance(exc, openai.APIStatusError):
            message = _status_message(exc)
            match = _WINDOW_IN_MESSAGE.search(message)
            if exc.status_code in (400, 413) and match:
                window = int(match.group(1) or match.group(2))
                return ContextOverflow(f"{where}: the prompt does not fit the server's {window}-token window "
                                       f"({message})", hint="shorten it, or start the server with a larger "
                                       "context and pass -o ctx=N", window=window)
            if exc.status_code == 404:
                return ModelNotFound(f"{where}: {message}", hint="`localllm backends` lists the served models")
            return GenerationError(f"{where}: the server answered {exc.status_code}: {message}",
                                   hint="see the server's log for details")
        if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError, TypeError,
                            KeyError, AttributeError)):
            return GenerationError(f"{where}: the server sent something that is not the expected JSON ({exc})",
                                   hint="check that --base-url points at an OpenAI-compatible /v1 URL")
        return GenerationError(f"{where}: {type(exc).__name__}: {exc}", hint="see the server's log")

    def list_models(self) -> list[dict[str, Any]]:
        if self._client is None and nothing_listens(self.base_url):
            raise BackendUnavailable(f"cannot reach {self.where} (listing models)",
                                     hint=f"start it ({self.profile.start}) or pass --base-url URL")
        openai = _import_openai()
        try:
            page = self.client.models.list()
            return [entry.model_dump() for entry in page.data]
        except (openai.OpenAIError, *self._http_errors, ValueError, TypeError, AttributeError) as exc:
            raise self.error(exc, "(listing models)") from None

    def connect(self, name: str | None, *, ctx: int | None = None, default: str | None = None) -> ServedModel:
        models = self.list_models()
        ids = [str(entry.get("id")) for entry in models]
        entry = _pick(models, name) if name else (_pick(models, default) if default else None)
        if entry is None and not name and models:
            entry = models[0]  # a server usually serves one model; without -m, that one
        if entry is None:
            served = ", ".join(ids) or "none"
            raise ModelNotFound(f"{self.where} does not serve {name or default!r}", hint=f"it serves: {served}")
        self._model = str(entry["id"])
        trained = _nested_int(entry, ("meta", "n_ctx_train"))
        reported = _nested_int(entry, ("max_model_len",))
        window = min(ctx, reported) if ctx and reported else ctx or reported or self.profile.default_ctx
        if trained:
            window = min(window, trained)
        self._n_ctx = window
        self._exact_counts = self._probe_tokenizer()
        if self._exact_counts and self.profile.name == "generic":
            # Only llama-cpp-python's server has /extras/tokenize: use what it accepts.
            self.profile = server_profile("llama-cpp-python")
            self.where = f"{self.profile.title} at {display_url(self.base_url)}"
        details = tuple((key, str(entry[key])) for key in ("owned_by",) if entry.get(key))
        return ServedModel(self._model, self.where, window, trained, details)

    def _root(self) -> str:
        return re.sub(r"/v1$", "", self.base_url)

    def _probe_tokenizer(self) -> bool:
        """llama-cpp-python's server counts tokens with the model's tokenizer at /extras/tokenize."""
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        if self._http is not None:
            self._http.close()
        self._http = httpx.Client(base_url=self._root(), headers=headers, timeout=min(10.0, self.timeout))
        try:
            with self._http.stream("POST", "/extras/tokenize", json={"input": "probe", "model": self._model}) as answer:
                if answer.status_code != 200:
                    return False
                body = b""
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > 1 << 16:  # the answer for one word is tiny: endless data is not it
                        return False
            return isinstance(json.loads(body).get("tokens"), list)
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    # -- tokens ----------------------------------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        if not self._n_ctx:
            raise GenerationError("no model is connected", hint="connect to a model first")
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        if self._exact_counts and self._http is not None and text:
            import httpx

            try:
                answer = self._http.post("/extras/tokenize", json={"input": text, "model": self._model})
                answer.raise_for_status()
                return len(answer.json()["tokens"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise self.error(exc, "(counting tokens)") from None
        return estimate_tokens(text)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self._estimate.count(messages)

    # -- generation ------------------------------------------------------------------------------------------------
    def request(self, messages: Sequence[Message], options: GenerationOptions,
                tools: Sequence[ToolSpec] | None = None, tool_choice: str = "auto") -> dict[str, Any]:
        """The chat/completions request body for these messages and options (public for tests and benchmarks);
        ``tools``: offered in the API's own tools field (``tool_choice``: auto, required, or a tool's name)."""
        native = tools is not None or any(m.tool_calls or m.call_id for m in messages)
        body: dict[str, Any] = {
            "model": self._model, "stream": True,
            "messages": [openai_message(m) for m in messages] if native
            else [m.as_dict() for m in tool_results_as_user(list(messages))],
            "temperature": options.temperature, "top_p": options.top_p,
        }
        if tools:
            body["tools"] = function_specs(tools)
            body["tool_choice"] = tool_choice if tool_choice in ("auto", "required") else \
                {"type": "function", "function": {"name": tool_choice}}
        if options.seed is not None:
            body["seed"] = options.seed
        if options.max_tokens:
            body["max_tokens"] = options.max_tokens
        for key in ("presence_penalty", "frequency_penalty"):  # OpenAI's own fields: every server takes them
            if getattr(options, key):
                body[key] = getattr(options, key)
        if options.logit_bias:  # token ids of the server's model, as the caller gave them
            body["logit_bias"] = {str(token): bias for token, bias in options.logit_bias}
        if options.stop:
            body["stop"] = list(options.stop)
        extra = {field: getattr(options, key) for key, field in self.profile.sampling.items()}
        if options.think in ("on", "off"):
            # vLLM, SGLang and llama-server hand these to the chat template: the switch of Qwen3, SmolLM3 and kin.
            extra["chat_template_kwargs"] = {"enable_thinking": options.think == "on"}
        elif options.think is not None:
            body["reasoning_effort"] = options.think  # OpenAI's field, which gpt-oss servers read
        if options.json_schema is not None:
            body["response_format"] = response_format(self.profile, dict(options.json_schema))
        if self.profile.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return {**body, "extra_body": extra} if extra else body

    def chat(self, messages: Sequence[Message], options: GenerationOptions,
             tools: Sequence[ToolSpec] | None = None, tool_choice: str = "auto") -> Iterator[Chunk]:
        if self._model is None:
            raise GenerationError("no model is connected", hint="connect to a model first")
        self.check_options(options)
        watch = Stopwatch()
        floor = sum(self.count_tokens(m.content) for m in messages)
        estimated = self._estimate.with_overhead(floor, len(messages))
        if self._exact_counts and floor >= self._n_ctx:
            # The messages' own tokens, counted exactly, are a lower bound of the prompt: refuse before sending.
            raise self._overflow(floor, "at least ")
        openai = _import_openai()

        # The raw event stream rather than the client's typed chunk objects: building one per token costs client
        # CPU that, on a small machine, a local server's decoding would otherwise have (see benchmarks/).
        request = self.client.chat.completions.with_streaming_response.create(
            **self.request(messages, options, tools, tool_choice))
        try:
            response = request.__enter__()
        except (openai.OpenAIError, *self._http_errors, ValueError) as exc:
            raise self.error(exc) from None
        # A server that ignores max_tokens would otherwise stream without bound: the answer is cut here instead,
        # at the budget (or the window), and marked as cut.
        limit = options.max_tokens or self._n_ctx
        from localllm.core.thinking import split_thinking

        return split_thinking(self._stream(request, response, watch, estimated, options.answer_prefix, limit))

    def _overflow(self, tokens: int, about: str) -> ContextOverflow:
        return ContextOverflow(f"{self.where}: the prompt has {about}{tokens} tokens but the window is {self._n_ctx}",
                               hint="shorten it, or start the server with a larger context and pass -o ctx=N",
                               prompt_tokens=tokens, window=self._n_ctx)

    def _stream(self, request, response, watch: Stopwatch, estimated: int, prefix: str | None,
                limit: int) -> Iterator[Chunk]:
        openai = _import_openai()

        state: dict[str, Any] = {"finish": None, "usage": None, "pieces": 0}
        calls: dict[int, dict[str, str]] = {}
        """Native tool calls as they stream: the id and name first, the arguments' JSON in pieces."""

        def pieces() -> Iterator[str | ThinkingChunk]:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if event.get("error"):
                    detail = event["error"]
                    raise GenerationError(f"{self.where}: the server stopped the answer: "
                                          f"{detail.get('message', detail) if isinstance(detail, dict) else detail}",
                                          hint="see the server's log; the answer so far is kept")
                if event.get("usage"):
                    state["usage"] = event["usage"]
                for choice in event.get("choices") or ():
                    if choice.get("finish_reason"):
                        state["finish"] = "length" if choice["finish_reason"] == "length" else "stop"
                    delta = choice.get("delta") or {}
                    # llama-server, vLLM and DeepSeek's API send the thinking apart as reasoning_content; some
                    # servers name it reasoning.
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if isinstance(thought, str) and thought:
                        yield ThinkingChunk(thought)
                    for part in delta.get("tool_calls") or ():
                        call = calls.setdefault(int(part.get("index", len(calls))), {"id": "", "name": "", "args": ""})
                        function = part.get("function") or {}
                        call["id"] = call["id"] or str(part.get("id") or "")
                        name = str(function.get("name") or "")
                        if name != call["name"]:  # the name comes once; llama-cpp-python repeats it in each piece
                            call["name"] += name
                        call["args"] += str(function.get("arguments") or "")
                    text = delta.get("content")
                    if text:
                        state["pieces"] += 1
                        yield text
                        if state["pieces"] >= limit and not state["finish"]:
                            state["finish"] = "length"  # the server went past the budget: stop reading
                            return

        try:
            yield from answer_chunks(pieces(), prefix, watch)
        except (openai.OpenAIError, *self._http_errors, ValueError, TypeError, AttributeError) as exc:
            raise self.error(exc, f"(after {state['pieces']} tokens)", streaming=True) from None
        finally:
            request.__exit__(None, None, None)  # closes the response: the server stops decoding
        if state["finish"] is None:
            # Some servers fail inside an already started stream and just end it (llama-cpp-python does so for
            # a prompt over its window): no finish reason means no complete answer.
            if state["pieces"] == 0 and estimated >= self._n_ctx:
                raise self._overflow(estimated, "about ")
            raise GenerationError(f"{self.where}: the stream ended after {state['pieces']} tokens without "
                                  "finishing the answer", hint="see the server's log; the answer so far is kept")
        usage = state["usage"] if isinstance(state["usage"], dict) else {}
        prompt = usage.get("prompt_tokens")
        self._estimate.learn(estimated, prompt)
        # Servers stream one token per event; without a usage report that count stands in for the real one.
        completion = usage.get("completion_tokens") or state["pieces"]
        for index in sorted(calls):
            yield ToolCallChunk(native_call(calls[index]["name"], calls[index]["args"], calls[index]["id"]))
        yield FinalChunk(state["finish"], Usage(prompt or estimated, completion), watch.timings())

    def close(self) -> None:
        for name in ("_client", "_http"):
            handle = getattr(self, name)
            if handle is not None:
                setattr(self, name, None)
                handle.close()


def openai_message(message: Message) -> dict[str, Any]:
    """A message in the chat/completions shape, native tool calls and results included."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.call_id, "content": message.content}
    if message.tool_calls:
        return {"role": "assistant", "content": message.content,  # "" rather than null: some servers want a string
                "tool_calls": [{"id": call.id, "type": "function",
                                "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
                               for call in message.tool_calls]}
    return {"role": message.role, "content": message.content}


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("error", body.get("detail", body.get("message")))
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        if detail:
            return str(detail)
    return str(getattr(exc, "message", exc))


def _pick(models: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The served model called ``name``: exactly, ignoring case, or by the last part of a repo id."""
    wanted = name.lower()
    for match in (lambda i: i == name, lambda i: i.lower() == wanted, lambda i: i.lower().rsplit("/", 1)[-1] == wanted):
        for entry in models:
            if match(str(entry.get("id"))):
                return entry
    return None


MAX_REPORTED_WINDOW = 1 << 24
"""16M tokens: beyond any model's window, a server reporting more is reporting nonsense."""


def _nested_int(entry: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    value: Any = entry
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    # A server's numbers are data: NaN, infinity, booleans and absurd sizes are no window at all.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_REPORTED_WINDOW:
        return None
    return int(value)
