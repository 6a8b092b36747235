"""GPT4All's bindings: prebuilt wheels (no compiler), Vulkan GPUs for AMD and Intel, any GGUF from any folder.

Three things the bindings do not do, done here:
- ``GPT4All()`` does not raise when a load fails; ``llmodel_isModelLoaded`` is checked, and the library's own
  message (written to the process's stderr) becomes the error. Its llama.cpp is from mid-2024, so newer models
  (SmolLM2's ``smollm`` pre-tokenizer) are refused with the advice to use the llama.cpp backend.
- gpt4all 2.8 ignores the GGUF's chat template: the prompt is rendered here from that template in jinja2's sandbox
  in a bounded child process (a model file is untrusted input) and passed whole with special tokens parsed.
- Its generator shifts the context when it is full, dropping text without a word; the C call is made directly with
  context shifting off, and stop strings end the answer through the response callback returning False, which is
  also how closing the stream stops decoding.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from localllm.backends.base import Backend, BackendOption, Capabilities
from localllm.backends.streaming import PromptEstimate, StopScanner, estimate_tokens
from localllm.core.chunks import Chunk, FinalChunk, FinishReason, Stopwatch, TextChunk, Usage
from localllm.core.errors import BackendUnavailable, ContextOverflow, GenerationError, InvalidModelFile
from localllm.core.messages import Message, fold_system_prompt, render_folding_system, tool_results_as_user
from localllm.core.model import ModelRef
from localllm.core.options import GenerationOptions
from localllm.core.plan import LoadPlan
from localllm.core.thinking import no_switch_note

# A GGUF without a chat template is a base model: its messages' text is continued, never wrapped in chat tags.
PLAIN_TEXT = "{% for message in messages if message['content'] %}{{ '' if loop.first else '\\n\\n' }}" \
             "{{ message['content'] }}{% endfor %}"
_LOAD_LOCK = threading.Lock()  # the load redirects the process's stderr; one at a time
_DONE = object()


def _import_gpt4all():
    try:
        import gpt4all
        from gpt4all import _pyllmodel
    except ImportError:
        raise BackendUnavailable("the gpt4all bindings are not installed",
                                 hint='pip install "localllm[gpt4all]" (prebuilt wheels, no compiler)') from None
    return gpt4all, _pyllmodel


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """The C library writes to file descriptor 2 directly; keep those lines for the error message."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def render_template(template: str, messages: Sequence[Message], bos: str, eos: str, model: str = "the model") -> str:
    """The prompt from the GGUF's chat template, rendered in the sandboxed child process (chat_templates)."""
    from localllm.backends.chat_templates import shared_renderer

    plain = [m.as_dict() for m in tool_results_as_user(list(messages))]
    return shared_renderer().render(template, model, messages=plain, add_generation_prompt=True, bos_token=bos,
                                    eos_token=eos)


def special_tokens(path) -> tuple[str, str]:
    """The BOS and EOS token texts, for templates that write them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def text(key: str) -> str:
        field = reader.fields.get(key)
        if field is None or tokens is None:
            return ""
        index = int(field.parts[field.data[0]][0])
        if index >= len(tokens.data):
            return ""
        return bytes(tokens.parts[tokens.data[index]]).decode("utf-8", "replace")

    return text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id")


class GPT4AllBackend(Backend):
    name = "gpt4all"
    capabilities = Capabilities(stream=True, cancel=True, tokenize=False, json_schema=False, seed=False)
    options = (
        BackendOption("device", str, "", "cpu, gpu, kompute, cuda or a device name (default: from the plan)"),
    )
    library = "gpt4all"

    def __init__(self, **option_values: Any) -> None:
        super().__init__(**option_values)
        self._model = None
        self._n_ctx = 0
        self._template = PLAIN_TEXT
        self._model_name = "the model"
        self._folds_system = False
        self._bos = self._eos = ""
        self._lock = threading.Lock()
        self._estimate = PromptEstimate(estimate_tokens, base=16, per_message=2)

    # -- loading ---------------------------------------------------------------------------------------------------
    def load(self, model: ModelRef, plan: LoadPlan) -> None:
        gpt4all, pyllmodel = _import_gpt4all()
        self.close()
        device = self.option_values["device"] or ("gpu" if plan.n_gpu_layers > 0 else "cpu")
        failure: str | None = None
        with _LOAD_LOCK, captured_stderr() as log:
            try:
                # n_threads is set after the load check: the constructor would raise a bare Exception first.
                loaded = gpt4all.GPT4All(model.path.name, model_path=str(model.path.parent), allow_download=False,
                                         device=device, n_ctx=plan.n_ctx, ngl=max(plan.n_gpu_layers, 0),
                                         verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                loaded, failure = None, str(exc)
        if loaded is None or not pyllmodel.llmodel.llmodel_isModelLoaded(loaded.model.model):
            raise self._load_error(model, failure, log)
        if plan.n_threads:
            loaded.model.set_thread_count(plan.n_threads)
        self._model = loaded.model
        self._n_ctx = plan.n_ctx
        from localllm.store.gguf_info import read_model_info

        template = read_model_info(model.path).chat_template
        if not template:
            from localllm.backends.llamacpp import BASE_MODEL_NOTE

            logging.getLogger("localllm").warning(BASE_MODEL_NOTE)
        self._template = template or PLAIN_TEXT
        self._model_name = model.name or model.path.name
        self._bos, self._eos = special_tokens(model.path)

    @staticmethod
    def _load_error(model: ModelRef, failure: str | None, log: list[str]) -> InvalidModelFile:
        reasons = [line.strip() for line in log if "error" in line.lower() and "cuda" not in line.lower()]
        reason = failure or (reasons[0] if reasons else "the library gave no reason")
        if "pre-tokenizer" in reason or "unknown model architecture" in reason:
            hint = ("GPT4All's bundled llama.cpp (mid-2024) cannot read this model; "
                    "use --backend llama.cpp (pip install \"localllm[llama]\")")
        else:
            hint = "the file may be damaged or too new for GPT4All; try --backend llama.cpp"
        return InvalidModelFile(f"GPT4All could not load {model.path}: {reason}", hint=hint)

    def _require_loaded(self):
        if self._model is None:
            raise GenerationError("no model is loaded", hint="load a model first")
        return self._model

    # -- tokens ----------------------------------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        self._require_loaded()
        return self._n_ctx

    def render(self, messages: Sequence[Message]) -> str:
        """As the llama.cpp backend does: a template that refuses the system prompt gets it folded, said once."""
        messages = fold_system_prompt(list(messages)) if self._folds_system else list(messages)
        prompt, refused = render_folding_system(
            lambda chosen: render_template(self._template, chosen, self._bos, self._eos, self._model_name), messages)
        if refused is not None:
            self._folds_system = True
            logging.getLogger("localllm").warning(
                f"note: the model's chat template does not take a system prompt ({refused.message}); it is put at "
                "the start of the first message instead")
        return prompt

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        # The rendered prompt holds the template's markers as text, which the estimate counts generously.
        return self._estimate.count([Message("user", self.render(messages))])

    # -- generation ------------------------------------------------------------------------------------------------
    def chat(self, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        llm = self._require_loaded()
        self.check_options(options)
        if options.think is not None:
            no_switch_note(self, "GPT4All")
        watch = Stopwatch()
        prompt = self.render(messages) + (options.answer_prefix or "")
        estimated = self._estimate.count([Message("user", prompt)])
        if estimated >= self._n_ctx:
            raise ContextOverflow(f"the prompt has about {estimated} tokens (an upper estimate) but the context "
                                  f"window is {self._n_ctx}", hint="shorten it, raise -o ctx=N, or use "
                                  "`localllm summarize`", prompt_tokens=estimated, window=self._n_ctx)
        return self._generate(llm, prompt, options, watch, estimated)

    def _generate(self, llm, prompt: str, options: GenerationOptions, watch: Stopwatch, estimated: int
                  ) -> Iterator[Chunk]:
        _, pyllmodel = _import_gpt4all()
        out: queue.Queue = queue.Queue()
        stop_now = threading.Event()
        counts: dict[str, Any] = {"prompt": 0, "generated": 0, "error": None}

        def on_prompt_token(_token_id: int) -> bool:
            counts["prompt"] += 1
            return not stop_now.is_set()

        def on_token(token_id: int, text: str) -> bool:
            if token_id == -1:  # the library reports its errors as a token with id -1
                counts["error"] = text
                return False
            counts["generated"] += 1
            out.put(text)
            return not stop_now.is_set()

        greedy = options.temperature <= 0
        max_new = options.max_tokens or self._n_ctx
        with self._lock:
            llm._set_context(n_predict=max_new, top_k=1 if greedy else options.top_k, top_p=options.top_p,
                             min_p=options.min_p, temp=max(options.temperature, 1e-5), n_batch=128,
                             repeat_penalty=options.repeat_penalty, repeat_last_n=64, context_erase=0.0,
                             reset_context=True)
        prompt_callback = pyllmodel.PromptCallback(on_prompt_token)
        response_callback = pyllmodel.ResponseCallback(llm._callback_decoder(on_token))

        def run() -> None:
            try:
                with self._lock:
                    pyllmodel.llmodel.llmodel_prompt(llm.model, prompt.encode("utf-8"), b"%1", prompt_callback,
                                                     response_callback, False, llm.context, True, ctypes.c_char_p())
            finally:
                out.put(_DONE)

        worker = threading.Thread(target=run, name="gpt4all-generate", daemon=True)
        from localllm.core.thinking import split_thinking

        return split_thinking(self._stream(worker, out, stop_now, counts, options, watch, estimated))

    def _stream(self, worker: threading.Thread, out: queue.Queue, stop_now: threading.Event, counts: dict,
                options: GenerationOptions, watch: Stopwatch, estimated: int) -> Iterator[Chunk]:
        scanner = StopScanner(options.stop)
        finish: FinishReason = "length"
        worker.start()
        try:
            if options.answer_prefix:
                yield TextChunk(options.answer_prefix)
            while True:
                piece = out.get()
                if piece is _DONE:
                    break
                shown, stopped = scanner.feed(piece)
                if shown:
                    watch.mark_token()
                    yield TextChunk(shown)
                if stopped:
                    finish = "stop"
                    break
            rest = scanner.flush() if finish != "stop" else ""
            if rest:
                yield TextChunk(rest)
        finally:
            stop_now.set()
            worker.join()
        if counts["error"]:
            message = str(counts["error"])
            if "context window" in message:
                raise ContextOverflow(f"GPT4All: {message}", hint="shorten the prompt or raise -o ctx=N",
                                      prompt_tokens=counts["prompt"], window=self._n_ctx)
            raise GenerationError(f"GPT4All: {message}", hint="see the messages above")
        max_new = options.max_tokens or self._n_ctx
        if finish != "stop" and counts["generated"] < max_new and counts["prompt"] + counts["generated"] < \
                self._n_ctx - 4:
            finish = "stop"  # an end-of-generation token, not the budget
        self._estimate.learn(estimated, counts["prompt"] or None)
        yield FinalChunk(finish, Usage(counts["prompt"] or estimated, counts["generated"]), watch.timings(),
                         scanner.matched)

    def close(self) -> None:
        if self._model is not None:
            model, self._model = self._model, None
            model.close()
