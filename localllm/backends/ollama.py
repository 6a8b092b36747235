"""Ollama, through the official ``ollama`` client: streaming chat, and the server's list, pull, show, ps and delete.

Ollama cuts a prompt longer than ``num_ctx`` without a word, so every request sends ``num_ctx`` itself and a prompt
is refused here when its (conservative) estimate does not fit. With ``stream=True`` a refused connection only
surfaces as ``httpx.ConnectError`` at the first ``next()``, and an ``{"error": ...}`` line mid-stream as a
``ResponseError``: both are caught where the stream is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from localllm.backends.base import Backend, BackendOption, Capabilities, ServedModel
from localllm.backends.streaming import PromptEstimate, answer_chunks, estimate_tokens
from localllm.core.chunks import Chunk, FinalChunk, FinishReason, Stopwatch, ThinkingChunk, ToolCallChunk, Usage
from localllm.core.errors import BackendUnavailable, ContextOverflow, GenerationError, LocalLLMError, ModelNotFound
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec, function_specs, native_call

DEFAULT_HOST = "http://127.0.0.1:11434"


def _import_ollama():
    try:
        import ollama
    except ImportError:
        raise BackendUnavailable("the ollama client is not installed", hint='pip install "localllm[ollama]"') from None
    return ollama


def ollama_name(name: str) -> str:
    """``ollama/llama3.2:1b`` (how `localllm list` names Ollama's models) → ``llama3.2:1b``."""
    return name[len("ollama/"):] if name.lower().startswith("ollama/") else name


class OllamaBackend(Backend):
    name = "ollama"
    capabilities = Capabilities(stream=True, cancel=True, tokenize=False, json_schema=True, pull=True,
                                list_models=True, native_tools=True, tool_choice=False, penalties=True)
    options = (
        BackendOption("num_gpu", int, None, "layers Ollama offloads to the GPU (default: Ollama decides)"),
    )
    local_files = False
    library = "ollama"

    def __init__(self, host: str = "", timeout: float = 120.0, keep_alive: str = "", threads: int | None = None,
                 default_ctx: int = 8192, **option_values: Any) -> None:
        super().__init__(**option_values)
        self.host = host or DEFAULT_HOST
        self.timeout = timeout
        self.keep_alive = keep_alive or None
        self.threads = threads
        self.default_ctx = default_ctx
        self._client = None
        self._model: str | None = None
        self._n_ctx = 0
        self._estimate = PromptEstimate(estimate_tokens)

    @classmethod
    def from_settings(cls, settings) -> OllamaBackend:
        return cls(settings.ollama_host, settings.request_timeout, settings.keep_alive, settings.threads,
                   settings.ctx)

    @property
    def client(self):
        if self._client is None:
            ollama = _import_ollama()
            import httpx

            self._client = ollama.Client(host=self.host,
                                         timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)))
        return self._client

    @property
    def where(self) -> str:
        return f"Ollama at {self.client._client.base_url}".rstrip("/")

    def error(self, exc: BaseException, name: str | None = None, during: str = "") -> LocalLLMError:
        ollama = _import_ollama()
        import httpx

        where = self.where + (f" {during}" if during else "")
        if isinstance(exc, LocalLLMError):
            return exc
        if isinstance(exc, (ConnectionError, httpx.ConnectError)):
            return BackendUnavailable(f"cannot reach {where}", hint="start it with `ollama serve`, or point "
                                      "--host / OLLAMA_HOST at the server")
        if isinstance(exc, httpx.TimeoutException):
            return GenerationError(f"{where}: no answer within {self.timeout:g} s",
                                   hint="the server may be loading the model or stuck; raise --timeout "
                                        "(request_timeout) or check `ollama ps`")
        if isinstance(exc, ollama.ResponseError):
            text = str(exc.error)
            if name and (exc.status_code == 404 or re.search(r"\bnot found\b", text, re.IGNORECASE)):
                return ModelNotFound(f"{name} is not pulled on {where} ({text})",
                                     hint=f"`localllm pull --backend ollama {name}` downloads it")
            if exc.status_code in (401, 403):
                return BackendUnavailable(f"{where} refused the request ({exc.status_code}): {text}",
                                          hint="check OLLAMA_API_KEY or the proxy in front of the server")
            status = f" ({exc.status_code})" if exc.status_code > 0 else ""
            return GenerationError(f"{where} reported an error{status}: {text}", hint="see the server's log")
        if isinstance(exc, (httpx.TransportError, httpx.StreamError)):
            return GenerationError(f"{where}: the connection broke ({exc})",
                                   hint="the server stopped or restarted; the answer so far is kept")
        if isinstance(exc, (ValueError, TypeError, KeyError)):  # json.JSONDecodeError, pydantic's errors
            return GenerationError(f"{where} sent something that is not Ollama's JSON ({exc})",
                                   hint="check that --host points at an Ollama server")
        return GenerationError(f"{where}: {type(exc).__name__}: {exc}", hint="see the server's log")

    def _call(self, method: str, *args: Any, name: str | None = None, **kwargs: Any):
        ollama = _import_ollama()
        import httpx

        try:
            return getattr(self.client, method)(*args, **kwargs)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError, TypeError) as exc:
            raise self.error(exc, name, f"({method})") from None

    # -- the server's model store ----------------------------------------------------------------------------------
    def version(self) -> str:
        import httpx

        try:
            answer = self.client._client.get("/api/version", timeout=min(2.0, self.timeout))
            answer.raise_for_status()
            return str(answer.json().get("version", "?"))
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise self.error(exc, during="(version)") from None

    def list_models(self) -> list[dict[str, Any]]:
        return [m.model_dump() for m in self._call("list").models]

    def running(self) -> list[dict[str, Any]]:
        return [m.model_dump() for m in self._call("ps").models]

    def show(self, name: str) -> dict[str, Any]:
        return self._call("show", ollama_name(name), name=ollama_name(name)).model_dump(by_alias=True)

    def delete(self, name: str) -> None:
        self._call("delete", ollama_name(name), name=ollama_name(name))

    def pull(self, name: str, progress: Callable[[int, int], None] | None = None,
             status: Callable[[str], None] | None = None) -> None:
        """Pull through the server, reporting bytes done and total over all layers as they arrive."""
        ollama = _import_ollama()
        import httpx

        name = ollama_name(name)
        totals: dict[str, int] = {}
        done: dict[str, int] = {}
        last_status = ""
        try:
            for part in self.client.pull(name, stream=True):
                if part.digest and part.total:
                    totals[part.digest] = part.total
                    done[part.digest] = part.completed or 0
                    if progress is not None:
                        progress(sum(done.values()), sum(totals.values()))
                elif status is not None and part.status and part.status != last_status:
                    status(part.status)
                last_status = part.status or last_status
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError, TypeError) as exc:
            raise self.error(exc, name, "(pull)") from None
        if last_status != "success":
            raise GenerationError(f"{self.where}: the pull of {name} ended without success ({last_status})",
                                  hint="run the pull again; Ollama resumes it")

    # -- a model on the server -------------------------------------------------------------------------------------
    def connect(self, name: str | None, *, ctx: int | None = None, default: str | None = None) -> ServedModel:
        if name is None:
            listed = [str(m.get("model")) for m in self.list_models()]
            wanted = ollama_name(default) if default else None
            name = wanted if wanted in listed or (wanted and f"{wanted}:latest" in listed) else \
                (listed[0] if listed else None)
            if name is None:
                raise ModelNotFound(f"{self.where} has no models", hint="`localllm pull --backend ollama NAME` "
                                    "downloads one, e.g. llama3.2:1b")
        name = ollama_name(name)
        shown = self.show(name)
        info = shown.get("model_info") or shown.get("modelinfo") or {}
        arch = info.get("general.architecture")
        trained = info.get(f"{arch}.context_length") if arch else None
        trained = int(trained) if isinstance(trained, (int, float)) and trained > 0 else None
        configured = re.search(r"^num_ctx\s+(\d+)", shown.get("parameters") or "", re.MULTILINE)
        window = ctx or (int(configured.group(1)) if configured else None) or self.default_ctx
        if trained:
            window = min(window, trained)
        self._model, self._n_ctx = name, window
        details = shown.get("details") or {}
        facts = tuple((key, str(details[key])) for key in ("family", "parameter_size", "quantization_level")
                      if details.get(key))
        return ServedModel(name, self.where, window, trained, facts)

    @property
    def context_window(self) -> int:
        if not self._n_ctx:
            raise GenerationError("no model is connected", hint="connect to a model first")
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self._estimate.count(messages)

    def request_options(self, options: GenerationOptions) -> dict[str, Any]:
        """localllm's options under Ollama's names."""
        mapped: dict[str, Any] = {
            "num_ctx": self._n_ctx, "temperature": options.temperature, "top_k": options.top_k,
            "top_p": options.top_p, "min_p": options.min_p, "repeat_penalty": options.repeat_penalty,
            "num_predict": options.max_tokens or -1,
        }
        if options.seed is not None:
            mapped["seed"] = options.seed
        if options.stop:
            mapped["stop"] = list(options.stop)
        for key in ("presence_penalty", "frequency_penalty"):  # Ollama's options take OpenAI's names
            if getattr(options, key):
                mapped[key] = getattr(options, key)
        if self.threads:
            mapped["num_thread"] = self.threads
        if self.option_values["num_gpu"] is not None:
            mapped["num_gpu"] = self.option_values["num_gpu"]
        return mapped

    def chat(self, messages: Sequence[Message], options: GenerationOptions,
             tools: Sequence[ToolSpec] | None = None, tool_choice: str = "auto") -> Iterator[Chunk]:
        """``tools``: offered in /api/chat's tools field (Ollama has no way to force a call: ``tool_choice`` is
        "auto" only, see capabilities)."""
        if self._model is None:
            raise GenerationError("no model is connected", hint="connect to a model first")
        self.check_options(options)
        watch = Stopwatch()
        estimated = self.count_prompt_tokens(messages)
        if estimated >= self._n_ctx:
            raise ContextOverflow(f"the prompt has about {estimated} tokens (an upper estimate) but the context "
                                  f"window is {self._n_ctx}; Ollama would cut it without a word",
                                  hint="shorten it, raise -o ctx=N, or use `localllm summarize`",
                                  prompt_tokens=estimated, window=self._n_ctx)
        # Ollama's own switch: true / false, or a level for the models that have levels (gpt-oss).
        think = {"on": True, "off": False}.get(options.think or "", options.think)
        offered = function_specs(tools or ())
        stream = self.client.chat(self._model, [m.as_dict() for m in messages], stream=True, think=think,
                                  tools=offered or None,
                                  format=dict(options.json_schema) if options.json_schema is not None else None,
                                  options=self.request_options(options), keep_alive=self.keep_alive)
        from localllm.core.thinking import split_thinking

        return split_thinking(self._stream(stream, watch, estimated, options.answer_prefix))

    def _stream(self, stream, watch: Stopwatch, estimated: int, prefix: str | None) -> Iterator[Chunk]:
        ollama = _import_ollama()
        import httpx

        state: dict[str, Any] = {"final": None, "pieces": 0}
        calls: list[ToolCall] = []

        def pieces() -> Iterator[str | ThinkingChunk]:
            for part in stream:
                if part.done:
                    state["final"] = part
                for call in (getattr(part.message, "tool_calls", None) or []) if part.message is not None else []:
                    function = getattr(call, "function", None)
                    if function is not None:
                        calls.append(native_call(str(function.name), function.arguments))
                thought = getattr(part.message, "thinking", None) if part.message is not None else None
                if isinstance(thought, str) and thought:  # Ollama's own split of a thinking model's text
                    yield ThinkingChunk(thought)
                text = part.message.content if part.message is not None else None
                if text:
                    state["pieces"] += 1
                    yield text

        try:
            yield from answer_chunks(pieces(), prefix, watch)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, httpx.StreamError, ValueError,
                TypeError) as exc:
            raise self.error(exc, self._model, f"(after {state['pieces']} tokens)") from None
        finally:
            stream.close()  # closes the HTTP response; Ollama stops generating for a closed connection
        final = state["final"]
        if final is None:  # the stream just ended: a crash or a proxy cut it, not a finished answer
            raise GenerationError(f"{self.where}: the answer ended after {state['pieces']} tokens without Ollama "
                                  "saying it was done, so it may be cut",
                                  hint="see the Ollama server's log; the answer so far is kept")
        prompt = getattr(final, "prompt_eval_count", None)
        self._estimate.learn(estimated, prompt)
        finish: FinishReason = "length" if getattr(final, "done_reason", None) == "length" else "stop"
        completion = getattr(final, "eval_count", None) or state["pieces"]
        for call in calls:
            yield ToolCallChunk(call)
        yield FinalChunk(finish, Usage(prompt or estimated, completion), watch.timings())

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
