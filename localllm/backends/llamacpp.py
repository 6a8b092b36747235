"""llama.cpp in-process, through llama-cpp-python.

The chat prompt is rendered from the GGUF's own chat template in jinja2's ImmutableSandboxedEnvironment, in a child
process bounded in time and memory (chat_templates): a model file is untrusted input and its template never runs
outside that sandbox, nor for long. Rendering here, rather than inside create_chat_completion, gives the exact prompt
token count before any decoding starts, so an over-long prompt is refused instead of being cut.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.backends.base import Backend, BackendOption, Capabilities, Token
from localllm.backends.chat_templates import error_reason, shared_renderer
from localllm.backends.template_tools import (
    ToolFormat,
    calls_from_reply,
    template_message,
    tool_format,
)
from localllm.core.chunks import (
    Chunk,
    EngineTimings,
    FinalChunk,
    FinishReason,
    PromptChunk,
    Stopwatch,
    TextChunk,
    TokenLogprob,
    Usage,
)
from localllm.core.errors import (
    TEMPLATE_HINT,
    BackendUnavailable,
    ContextOverflow,
    GenerationError,
    InvalidModelFile,
    TemplateFailure,
    UsageError,
)
from localllm.core.messages import Message, fold_system_prompt, render_folding_system, tool_results_as_user
from localllm.core.model import ModelRef
from localllm.core.options import GenerationOptions
from localllm.core.plan import LoadPlan
from localllm.core.thinking import no_switch_note
from localllm.core.tools import ToolSpec, function_specs

if TYPE_CHECKING:
    from localllm.backends.llamacpp_check import BuildVerdict
    from localllm.core.settings import Settings

logger = logging.getLogger("localllm")
BASE_MODEL_NOTE = ("no chat template: this looks like a base model, so the prompt is sent as plain text for it to "
                   "continue (-o template=NAME picks a chat format; `localllm show` lists them)")
PLAIN = "plain"
"""The template name that sends plain text even to a model that has a chat template."""
EMBED_GROUP_TOKENS = 256
"""Texts are embedded in groups of at most this many tokens (a longer text alone). llama.cpp attends across a whole
batch, masked per text, so many texts in one batch cost more than the same texts in small groups (24 texts of 222
tokens with the bundled model: 95-97 CPU-s in one call, 57-70 one at a time; `python benchmarks/run.py embed`); and
a stop (serve's client gone) is seen between two groups, a few seconds apart at most on a CPU."""
# Architectures whose models share one conventional chat format among llama-cpp-python's registered ones; offered
# by `show` for a GGUF without a template. (llama has two, llama-2 and llama-3, so none is suggested for it.)
CONVENTIONAL_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "qwen": "qwen", "qwen2": "qwen",
                        "chatglm": "chatglm3", "baichuan": "baichuan-2", "mistral": "mistral-instruct"}


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailable(
            "llama-cpp-python is not installed",
            hint='pip install "localllm[llama]" (it builds llama.cpp from source the first time)',
        ) from None
    return llama_cpp


class LlamaCppBackend(Backend):
    name = "llama.cpp"
    capabilities = Capabilities(stream=True, cancel=True, tokenize=True, json_schema=True, embeddings=True,
                                text_completion=True, logprobs=True, penalties=True, logit_bias=True)
    options = (
        BackendOption("n_batch", int, 512, "tokens evaluated per batch while reading the prompt"),
        BackendOption("flash_attn", bool, False, "use flash attention (less memory for long contexts)"),
        BackendOption("use_mmap", bool, True, "map the model file instead of reading it into memory"),
    )

    def __init__(self, **option_values: Any) -> None:
        super().__init__(**option_values)
        self._llm: Any = None
        """The llama_cpp.Llama (llama-cpp-python is imported only when a model loads)."""
        self._formatter: Any = None
        self._eos_token_id: int | None = None
        self._gate: Any = None
        """The grammar gate (localllm.backends.grammars), made at the first grammar."""
        self._scorer: Any = None
        """Log-probabilities (localllm.backends.llamacpp_logprobs), made at the first request for them."""
        self._interrupted = threading.Event()
        self._prompt_read: Callable[[int, int], None] | None = None
        """Where a long prompt's reading is reported (``prompt_progress``)."""
        self.cache_dir: Path | None = None
        """Where the self-check's verdict is kept; None: the default cache folder."""
        self.chat_format: str | None = None
        """A llama-cpp-python chat format by name, in place of the GGUF's own template (-o template=NAME)."""
        self.build_verdict: BuildVerdict | None = None
        self.completion_only = False
        """The model has no chat template and none was chosen: messages are sent as plain text to continue."""
        self._folds_system = False
        self._model_name = "the model"
        self.tool_format: ToolFormat | None = None
        self._batcher: Any = None
        """The decode thread that answers many requests together (llamacpp_batch), once ``batch`` started it."""
        self._single = threading.Lock()
        """While answers are batched: the Llama's own context (prompt scoring) serves one caller at a time."""
        self._stops = threading.local()
        """The stop event of the request the calling thread makes, given by ``stopped_by``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LlamaCppBackend:
        backend = cls()
        backend.cache_dir = settings.paths.cache_dir
        backend.chat_format = settings.template.strip().lower() or None
        return backend

    # -- loading ---------------------------------------------------------------------------------------------------
    def _check_build(self, model: ModelRef) -> BuildVerdict:
        """This build's verdict on this CPU, from the cache or from a check run now (before llama_cpp is imported
        here: overlapping the two was slower on two cores, see docs/llama-cpp.md)."""
        from localllm.backends.llamacpp_check import announcement, apply_verdict, check_build

        cache_dir = self.cache_dir
        if cache_dir is None:
            from localllm.core.settings import Paths

            cache_dir = Paths.from_environment().cache_dir
        verdict = check_build(cache_dir, model.path)
        apply_verdict(verdict)
        message = announcement(verdict)
        if message:
            logger.warning(message)
        return verdict

    def _open(self, model: ModelRef, **params: Any) -> None:
        self._model_name, self._folds_system = model.name or model.path.name, False
        if not params.get("vocab_only"):
            self.build_verdict = self._check_build(model)
            if not self.chat_format:
                shared_renderer().start()  # the child's imports overlap llama_cpp's and the load
        llama_cpp = _import_llama_cpp()
        self.close()
        if self.chat_format and self.chat_format != PLAIN:
            chat_formatter(llama_cpp, self.chat_format)  # an unknown name fails before the weights are read
        # llama.cpp's log lines reach Python's sys.stderr through llama-cpp-python's callback; keep them for the
        # error message instead of letting them interleave with the answer.
        log = io.StringIO()
        try:
            with contextlib.redirect_stderr(log), templates_left_uncompiled(), interrupts_kept():
                self._llm = llama_cpp.Llama(model_path=str(model.path), verbose=False, **params)
        except ValueError as exc:  # "Failed to load model from file: ..."
            lines = [line for line in log.getvalue().splitlines() if line.strip()]
            detail = f" ({lines[-1].strip()})" if lines else ""
            raise InvalidModelFile(f"llama.cpp could not load {model.path}: {exc}{detail}",
                                   hint="the file may be damaged, or too new for this llama-cpp-python") from None
        self._make_formatter(llama_cpp)

    def load(self, model: ModelRef, plan: LoadPlan) -> None:
        n_gpu_layers = -1 if plan.n_gpu_layers > plan.n_layers else plan.n_gpu_layers
        self._open(
            model,
            n_ctx=plan.n_ctx,
            n_gpu_layers=n_gpu_layers,
            n_threads=plan.n_threads,
            # llama-cpp-python would read the prompt on every logical CPU, whatever the load on the machine.
            n_threads_batch=plan.n_threads,
            n_batch=self.option_values["n_batch"],
            flash_attn=self.option_values["flash_attn"],
            use_mmap=self.option_values["use_mmap"],
        )

    def load_for_embeddings(self, model: ModelRef, plan: LoadPlan) -> None:
        llama_cpp = _import_llama_cpp()
        self._open(model, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=plan.n_ctx,
                   n_batch=plan.n_ctx, n_ubatch=plan.n_ctx, n_threads=plan.n_threads, n_threads_batch=plan.n_threads,
                   n_gpu_layers=-1 if plan.n_gpu_layers > plan.n_layers else plan.n_gpu_layers)

    def embed(self, texts: Sequence[str], stop: threading.Event | None = None) -> list[list[float]]:
        llm = self._require_loaded()
        window = usable_window(llm)
        counts = []
        for index, text in enumerate(texts, start=1):
            tokens = self.count_tokens(text) + 1
            if tokens > window:
                raise ContextOverflow(f"text {index} has {tokens} tokens, over the {window}-token window",
                                      hint="split it, or raise -o ctx=N", prompt_tokens=tokens, window=window)
            counts.append(tokens)
        vectors: list[list[float]] = []
        for group in token_groups(counts, EMBED_GROUP_TOKENS):
            if stop is not None and stop.is_set():
                break
            # truncate=False: llama-cpp-python would otherwise cut long inputs without a word.
            vectors.extend(list(map(float, vector)) for vector in llm.embed([texts[at] for at in group],
                                                                            normalize=True, truncate=False))
        return vectors

    def load_tokenizer(self, model: ModelRef) -> None:
        self._open(model, vocab_only=True)

    def _make_formatter(self, llama_cpp) -> None:
        llm = self._llm
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        template = llm.metadata.get("tokenizer.chat_template")
        self._eos_token_id = eos_id if eos_id != -1 else None
        self.completion_only = False
        self._set_tool_format(None)
        if self.chat_format == PLAIN:
            self.completion_only = True
            self._formatter = plain_text_formatter
        elif self.chat_format:
            self._formatter = chat_formatter(llama_cpp, self.chat_format)
        elif template:
            if not llm.model_params.vocab_only:
                # A template that does not compile fails the load, not the first answer; tokenizing needs none.
                shared_renderer().check(template, self._model_name)
            self._formatter = BoundedTemplate(template, eos, bos, eos_id, self._model_name)
            self._set_tool_format(tool_format(template))
        else:
            # A base model never saw chat tags (for many vocabularies they are not even single tokens): wrapping
            # the prompt in ChatML would make noise of the answer, so the text itself is continued.
            self.completion_only = True
            self._formatter = plain_text_formatter
            if not llm.model_params.vocab_only and not llm.context_params.embeddings:  # embeddings continue nothing
                logger.warning(BASE_MODEL_NOTE)

    def _set_tool_format(self, found: ToolFormat | None) -> None:
        """A template that teaches a known tool-call format gets the tools through it (template_tools); the
        capabilities then say the tools are native, as a server's are."""
        self.tool_format = found
        self.capabilities = replace(type(self).capabilities, native_tools=found is not None)

    def _require_loaded(self):
        if self._llm is None:
            raise GenerationError("no model is loaded", hint="load a model first")
        return self._llm

    # -- many answers at once --------------------------------------------------------------------------------------
    def batch(self, slots: int) -> int:
        """From now on answers are decoded together, up to ``slots`` at once, each with the whole window (a context
        of their own beside the Llama's, which keeps prompt scoring). Returns the slots; below 2, nothing changes
        and answers stay on the single-sequence path."""
        llm = self._require_loaded()
        if slots < 2 or self._batcher is not None:
            return self._batcher.slot_count if self._batcher is not None else 1
        from localllm.backends.llamacpp_batch import BatchDecoder

        self._batcher = BatchDecoder(llm, slots, usable_window(llm), int(llm.n_batch))
        return slots

    @property
    def batched(self) -> bool:
        return self._batcher is not None

    @contextlib.contextmanager
    def stopped_by(self, stop: threading.Event) -> Iterator[None]:
        """The answers this thread asks for while in here end (cancelled) once ``stop`` is set, a prompt still
        being read included: ``interrupt`` would stop every batched answer, this one alone."""
        previous = getattr(self._stops, "event", None)
        self._stops.event = stop
        try:
            yield
        finally:
            self._stops.event = previous

    # -- tokens ----------------------------------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return usable_window(self._require_loaded())

    def _render(self, messages: Sequence[Message], answer_prefix: str | None = None, think: str | None = None,
                tools: Sequence[ToolSpec] = ()):
        formatted = self._format(list(messages), think, tools)
        tokens = self._require_loaded().tokenize(
            (formatted.prompt + (answer_prefix or "")).encode("utf-8"), add_bos=not formatted.added_special,
            special=True)
        return formatted, tokens

    def _format(self, messages: list[Message], think: str | None = None, tools: Sequence[ToolSpec] = ()):
        """The prompt from the chat template. A template that refuses the system prompt gets it folded into the
        first user message (said once); any other error is a clear TemplateFailure, never a traceback."""
        if self._folds_system:
            messages = fold_system_prompt(messages)
        switch = None
        if think is not None:
            find = getattr(self._formatter, "thinking_switch", None)
            switch = find(think) if find is not None else None
            if switch is None:
                no_switch_note(self, f"the chat template of {self._model_name}")

        def render(listed: list[Message]):
            return self._format_once(listed, switch, tools)

        try:
            formatted, refused = render_folding_system(render, messages)
        except TemplateFailure:
            plain = tool_results_as_user(messages)  # a template that knows no "tool" role
            if plain is messages:
                raise
            formatted, refused = render_folding_system(render, plain)
        if refused is not None:
            self._folds_system = True
            logger.warning(f"note: the chat template of {self._model_name} does not take a system prompt "
                           f"({refused.message}); it is put at the start of the first message instead")
        return formatted

    def _format_once(self, messages: list[Message], switch: dict[str, Any] | None = None,
                     tools: Sequence[ToolSpec] = ()):
        try:
            if tools:
                return self._formatter(messages=[template_message(m) for m in messages], switch=switch,
                                       tools=function_specs(tools))
            listed = [m.as_dict() for m in messages]
            return self._formatter(messages=listed, switch=switch) if switch else self._formatter(messages=listed)
        except TemplateFailure:
            raise
        except Exception as exc:  # untrusted Jinja from the file: whatever it raises is its own fault
            raise TemplateFailure(f"the chat template of {self._model_name} failed: {error_reason(exc)}",
                                  hint=TEMPLATE_HINT) from None

    def count_prompt_tokens(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> int:
        """``tools``: as the chat template offers them, where it does (``tool_format``)."""
        return len(self._render(messages, tools=tools if self.tool_format else ())[1])

    def count_tokens(self, text: str) -> int:
        return len(self._require_loaded().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def tokenize(self, text: str) -> list[Token]:
        llm = self._require_loaded()
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        # A piece can be part of a multi-byte character: show its bytes as escapes rather than U+FFFD.
        return [Token(i, llm.detokenize([i]).decode("utf-8", errors="backslashreplace")) for i in ids]

    # -- generation ------------------------------------------------------------------------------------------------
    def chat(self, messages: Sequence[Message], options: GenerationOptions, tools: Sequence[ToolSpec] = (),
             tool_choice: str = "auto") -> Iterator[Chunk]:
        llm = self._require_loaded()
        watch = Stopwatch()  # time to first token counts the prompt's rendering and tokenizing too
        tool_form = self.tool_format if tools else None
        formatted, prompt = self._render(messages, options.answer_prefix, options.think,
                                         tools if tool_form else ())
        window = usable_window(llm)
        if len(prompt) >= window:
            raise ContextOverflow(f"the prompt has {len(prompt)} tokens but the context window is {window}",
                                  hint="shorten it, raise -o ctx=N, or use `localllm summarize` for long documents",
                                  prompt_tokens=len(prompt), window=window)
        from localllm.core.thinking import opened_in, split_thinking

        opened = opened_in(formatted.prompt)
        if tool_form is not None:
            thinking = "open" if opened else "tag" if "<think>" in getattr(self._formatter, "template", "") else None
            grammar = self._tool_grammar(tool_form, tools, tool_choice, thinking)
        else:
            grammar = self._grammar_gate().for_schema(options.json_schema) if options.json_schema is not None \
                else None
        stop = [*([formatted.stop] if isinstance(formatted.stop, str) else formatted.stop or [])]
        chunks = split_thinking(self._decode(prompt, options, watch, stop, formatted.stopping_criteria, grammar,
                                             options.answer_prefix), opened)
        return calls_from_reply(chunks, tool_form) if tool_form is not None else chunks

    def complete_text(self, prompt: str | Sequence[int], options: GenerationOptions) -> Iterator[Chunk]:
        """The prompt continued as it is, no chat template (serve's /v1/completions). Text is read with
        special=True, as llama.cpp's own server reads it, so a raw prompt may spell a template's tags itself; token
        ids are read as given (no start token added), once each is checked to be in the vocabulary."""
        llm = self._require_loaded()
        watch = Stopwatch()
        silent = 0
        if isinstance(prompt, str):
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            if options.prompt_logprobs is not None:  # the start token the tokenizer added is no part of the text
                silent = len(tokens) - len(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        else:
            tokens = checked_ids(prompt, llm.n_vocab())
        if not tokens:  # llama-cpp-python asserts on an empty prompt (a model that adds no start token)
            raise UsageError("the prompt is empty: there is nothing to continue", hint="send some text to continue")
        window = usable_window(llm)
        if len(tokens) >= window:
            raise ContextOverflow(f"the prompt has {len(tokens)} tokens but the context window is {window}",
                                  hint="shorten it, or raise -o ctx=N", prompt_tokens=len(tokens), window=window)
        if options.prompt_logprobs is None and options.max_tokens != 0:
            return self._decode(tokens, options, watch, [])
        return self._scored_prompt(tokens, options, watch, max(silent, 0))

    def _scored_prompt(self, tokens: list[int], options: GenerationOptions, watch: Stopwatch, silent: int
                       ) -> Iterator[Chunk]:
        """complete_text with the prompt's PromptChunk first, or with no answer (max_tokens 0)."""
        if options.prompt_logprobs is not None:
            with self._single_sequence() as stopped:
                scored = self._scoring().score(tokens, top_count(options.prompt_logprobs), silent, stopped)
            if scored is None:
                yield FinalChunk("cancelled", Usage(len(tokens), 0), watch.timings())
                return
            yield PromptChunk(tuple(scored))
        if options.max_tokens == 0:
            yield FinalChunk("length", Usage(len(tokens), 0), watch.timings())
            return
        yield from self._decode(tokens, options, watch, [])

    def score(self, tokens: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Each token's log-probability after those before it (the first's is None) and the ``top`` (at most
        MAX_TOP) likeliest tokens at its place. Evaluated in batches that keep only these numbers, never the
        window's logits (llamacpp_logprobs). A stop (``interrupt``) while it runs is a GenerationError."""
        llm = self._require_loaded()
        ids = checked_ids(tokens, llm.n_vocab(), "the tokens to score")
        window = usable_window(llm)
        if len(ids) > window:
            raise ContextOverflow(f"{len(ids)} tokens do not fit the {window}-token context window",
                                  hint="score them in parts, or raise -o ctx=N", prompt_tokens=len(ids),
                                  window=window)
        with self._single_sequence() as stopped:
            scored = self._scoring().score(ids, top_count(top), 0, stopped)
        if scored is None:
            raise GenerationError("scoring was stopped before it was done")
        return scored

    @contextlib.contextmanager
    def _single_sequence(self) -> Iterator[Callable[[], bool]]:
        """Around a use of the Llama's own context: one at a time while answers are batched (whose threads may
        score prompts at once). Yields whether to stop: ``interrupt`` (which also aborts a batch being evaluated),
        or the thread's ``stopped_by`` event (asked between batches)."""
        with self._single if self._batcher is not None else contextlib.nullcontext():
            self._interrupted.clear()
            stop = getattr(self._stops, "event", None)
            interrupted = self._interrupted

            def stopped() -> bool:
                return interrupted.is_set() or (stop is not None and stop.is_set())

            with self._abortable():
                yield stopped

    def window_logits(self, tokens: Sequence[int], first: int) -> Iterator[Any]:
        from localllm.backends.llamacpp_windows import window_logits

        llm = self._require_loaded()
        ids = checked_ids(tokens, llm.n_vocab(), "the tokens to evaluate")
        if len(ids) > llm.n_ctx():
            raise ContextOverflow(f"a window of {len(ids)} tokens does not fit the {llm.n_ctx()}-token context",
                                  hint="load the model with a context as large as the window",
                                  prompt_tokens=len(ids), window=llm.n_ctx())
        with self._single_sequence() as stopped:
            yield from window_logits(llm, ids, first, stopped)

    def evaluation_tokens(self, text: str) -> tuple[list[int], int | None]:
        llm = self._require_loaded()
        adds_start = bool(llm._model.add_bos_token())  # type: ignore[attr-defined]
        ids = llm.tokenize(text.encode("utf-8"), add_bos=adds_start, special=False)
        return ids, (llm.token_bos() if adds_start else None)

    def _scoring(self) -> Any:
        from localllm.backends.llamacpp_logprobs import Scorer

        if self._scorer is None:
            self._scorer = Scorer(self._require_loaded())
        return self._scorer

    @property
    def vocab_size(self) -> int | None:
        return None if self._llm is None else int(self._llm.n_vocab())

    def fills_in_middle(self) -> bool:
        return self._llm is not None and fim_tokens(self._llm) is not None

    def fill_in_middle(self, prefix: str, suffix: str, options: GenerationOptions) -> Iterator[Chunk]:
        """The model's FIM tokens around the two texts: prefix-token, prefix, suffix-token, suffix, middle-token,
        and the answer is the middle. The texts are read as plain text (special=False): a tag spelled in the
        user's code is text, not a control token."""
        llm = self._require_loaded()
        watch = Stopwatch()
        marks = fim_tokens(llm)
        if marks is None:
            raise UsageError("this model has no fill-in-the-middle tokens, so it cannot complete between a "
                             "prefix and a suffix", hint="use a code model trained for it (e.g. Qwen2.5-Coder, "
                                                         "CodeGemma, StarCoder2), or send no suffix")
        start, middle_mark, end = marks
        tokens = [start, *llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False), middle_mark,
                  *llm.tokenize(suffix.encode("utf-8"), add_bos=False, special=False), end]
        if llm._model.add_bos_token():  # type: ignore[attr-defined]  # as the model reads any prompt
            tokens.insert(0, llm.token_bos())
        window = usable_window(llm)
        if len(tokens) >= window:
            raise ContextOverflow(f"the prefix and suffix have {len(tokens)} tokens but the context window is "
                                  f"{window}", hint="send less around the cursor, or raise -o ctx=N",
                                  prompt_tokens=len(tokens), window=window)
        return self._decode(tokens, options, watch, [])

    def _decode(self, prompt: list[int], options: GenerationOptions, watch: Stopwatch, stop: list[str],
                stopping_criteria: Any = None, grammar: Any = None, prefix: str | None = None) -> Iterator[Chunk]:
        """The answer to a prompt's tokens, streamed (chat's rendered template, or raw text)."""
        import llama_cpp

        llm = self._require_loaded()
        if self._batcher is not None:
            return self._batched(prompt, options, watch, stop, grammar, prefix)
        generated = 0
        self._interrupted.clear()
        # What llama-cpp-python will not read again: the prompt's start still in the context from the last call.
        cached = 0
        for old, new in zip(llm._input_ids[:llm.n_tokens], prompt[:-1], strict=False):  # lengths differ
            if old != new:
                break
            cached += 1

        def count_tokens(_tokens, _logits) -> bool:
            # llama-cpp-python calls each stopping criterion once per sampled token (an end-of-generation token
            # included) and once more after its loop ends; ``_stream`` takes that last call off.
            nonlocal generated
            generated += 1
            return False

        criteria = [count_tokens]
        if stopping_criteria is not None:
            criteria.extend(stopping_criteria)
        biases = dict(zip(checked_ids([token for token, _ in options.logit_bias], llm.n_vocab(), "logit_bias"),
                          (bias for _, bias in options.logit_bias), strict=True))
        recorder = None
        if options.logprobs is not None:
            from localllm.backends.llamacpp_logprobs import Recorder

            recorder = Recorder(llm, self._scoring().pieces, top_count(options.logprobs))
        llama_cpp.llama_perf_context_reset(llm.ctx)  # this answer's counters alone
        stream = llm.create_completion(
            prompt=prompt,
            max_tokens=options.max_tokens or -1,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            min_p=options.min_p,
            repeat_penalty=options.repeat_penalty,
            # llama.cpp applies both over the last 64 tokens (llama-cpp-python's last_n_tokens_size), not over
            # the whole answer as OpenAI describes them.
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            # Only when given: llama-cpp-python drops a logits_processor given with it (list.extend's None).
            logit_bias=biases or None,
            seed=options.seed,
            stop=stop,
            stopping_criteria=llama_cpp.StoppingCriteriaList(criteria),
            grammar=grammar,
            stream=True,
        )
        reader = None
        report = self._prompt_read
        if report is not None and len(prompt) - cached > llm.n_batch:  # more than one piece: worth reporting
            from localllm.backends.llamacpp_prompt import read_prompt

            def reader() -> None:
                read_prompt(llm, prompt, cached, report, self._interrupted.is_set)

        # After its loop ends, llama-cpp-python calls the criteria once more: a stream left early gets no such call.
        return self._stream(stream, watch, len(prompt), lambda early: generated if early else max(generated - 1, 0),
                            prefix, lambda: cached, tuple(options.stop), recorder, reader)

    def _batched(self, prompt: list[int], options: GenerationOptions, watch: Stopwatch, stop: list[str],
                 grammar: Any = None, prefix: str | None = None) -> Iterator[Chunk]:
        """``_decode`` in the batch decoder's turn: the same chunks, its sequence decoded beside the others."""
        from localllm.backends.llamacpp_batch import AnswerParts, Job, Sampling
        from localllm.backends.llamacpp_logprobs import BatchRecorder

        llm = self._require_loaded()
        decoder = self._batcher
        biases = dict(zip(checked_ids([token for token, _ in options.logit_bias], llm.n_vocab(), "logit_bias"),
                          (bias for _, bias in options.logit_bias), strict=True))
        sampling = Sampling(temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                            min_p=options.min_p, repeat_penalty=options.repeat_penalty,
                            presence_penalty=options.presence_penalty,
                            frequency_penalty=options.frequency_penalty, logit_bias=biases, seed=options.seed,
                            constraint=grammar)
        top = top_count(options.logprobs) if options.logprobs is not None else None
        job = Job(prompt, decoder.sampler(sampling), options.max_tokens or 0, top)
        job.outside_stop = getattr(self._stops, "event", None)
        recorder = BatchRecorder(llm, self._scoring().pieces, top) if top is not None else None
        decoder.submit(job)
        parts = AnswerParts(decoder, job, self._scoring().pieces, stop, recorder)

        def timings() -> EngineTimings:
            spent = job.timings
            return EngineTimings(prompt_evaluated=spent.prompt_evaluated, prompt_eval_s=spent.prompt_eval_s,
                                 decoded=spent.decoded, eval_s=spent.eval_s)

        return self._stream(parts, watch, len(prompt), lambda _early: parts.generated, prefix,
                            lambda: job.cached, tuple(options.stop), recorder, interrupted=lambda: job.cancelled,
                            engine=timings)

    def interrupt(self) -> None:
        self._interrupted.set()

    @contextlib.contextmanager
    def prompt_progress(self, report: Callable[[int, int], None]) -> Iterator[None]:
        previous, self._prompt_read = self._prompt_read, report
        try:
            yield
        finally:
            self._prompt_read = previous

    @contextlib.contextmanager
    def _abortable(self):
        """While the prompt is read, llama.cpp asks this callback between the steps of its compute graph whether to
        give up, so a stop takes effect within a step instead of after the whole prompt (30 s for a long one on a
        CPU). The callback takes the GIL at each step, so it is set only until the first token: from then on the
        stream stops between tokens. Not on the main thread: Python runs a pending signal's handler inside the
        callback, where ctypes swallows the KeyboardInterrupt (a CLI's Ctrl-C), so there the prompt is read whole
        and Ctrl-C arrives after it, as before; an interrupt comes from another thread (the app's)."""
        if threading.current_thread() is threading.main_thread():
            yield
            return
        import llama_cpp.llama_cpp as native

        interrupted = self._interrupted
        callback = native.ggml_abort_callback(lambda _data: interrupted.is_set())
        context = self._require_loaded()._ctx.ctx
        native.llama_set_abort_callback(context, callback, None)
        try:
            yield
        finally:
            native.llama_set_abort_callback(context, native.ggml_abort_callback(0), None)

    def _tool_grammar(self, tool_form: ToolFormat, tools: Sequence[ToolSpec], tool_choice: str,
                      thinking: str | None) -> Any:
        """The grammar of a reply in the template's tool-call format, through the grammar gate: the tools'
        schemas as far as llama.cpp can take them, else any JSON object as their arguments."""
        from localllm.backends.grammars import GrammarRefused

        gate = self._grammar_gate()
        dropped: list[str] = []
        try:
            grammar = gate.for_text(tool_form.grammar(tools, tool_choice, thinking=thinking, dropped=dropped))
        except GrammarRefused as why:
            gate.say(f"the tools' schemas could not be made into a grammar ({why}); a call's arguments are "
                     "constrained to a JSON object and checked against its tool's schema")
            try:
                return gate.for_text(tool_form.grammar(tools, tool_choice, thinking=thinking, loose=True))
            except GrammarRefused:
                raise GenerationError("a tool-call grammar did not parse (a bug in localllm)",
                                      hint="use -o template=chatml to offer the tools by instruction instead") from None
        if dropped:
            gate.say("the tools' schemas' " + "; ".join(dropped) + " cannot be enforced while a call is written: "
                     "each call is checked against its tool's whole schema")
        return grammar

    def _grammar_gate(self) -> Any:
        from localllm.backends.grammars import GrammarGate

        if self._gate is None:
            self._gate = GrammarGate(lambda: self._require_loaded()._model.vocab)
        return self._gate

    def _stream(self, stream, watch: Stopwatch, prompt_tokens: int, generated, prefix: str | None = None,
                cached: Callable[[], int] = lambda: 0, user_stops: tuple[str, ...] = (), recorder: Any = None,
                reader: Callable[[], None] | None = None, *, interrupted: Callable[[], bool] | None = None,
                engine: Callable[[], EngineTimings | None] | None = None) -> Iterator[Chunk]:
        """The answer's chunks. The request's stop strings are applied here rather than by llama-cpp-python, which
        leaves a stop string out without saying which one ended the answer (the app, the CLI and serve say it).
        ``recorder``: each text chunk carries its tokens' log-probabilities (llamacpp_logprobs.Recorder).
        ``reader``: reads the prompt ahead of the stream, reporting as it goes (``prompt_progress``).
        ``interrupted`` and ``engine``: a batched answer's own stop and timings, in place of the backend's."""
        from localllm.backends.streaming import StopScanner

        def text(shown: str) -> TextChunk:
            return TextChunk(shown, recorder.take(shown)) if recorder is not None else TextChunk(shown)

        finish: FinishReason = "stop"
        scan = StopScanner(user_stops)
        halted = interrupted or self._interrupted.is_set
        if prefix:
            yield TextChunk(prefix)  # the answer's given start, prefilled into the prompt
        with contextlib.closing(stream), recorder.attached() if recorder is not None else contextlib.nullcontext():
            try:
                with self._abortable() if interrupted is None else contextlib.nullcontext():
                    if reader is not None:
                        reader()
                    first = None if halted() else next(stream, None)
            except RuntimeError:  # llama_decode returned 2: aborted by the callback
                if not halted():
                    raise
                first = None
            if halted():
                yield FinalChunk("cancelled", Usage(prompt_tokens, 0, cached_tokens=cached()), watch.timings())
                return
            early = False
            for part in itertools.chain([first] if first is not None else [], stream):
                if halted():
                    finish, early = "cancelled", True
                    break
                choice = part["choices"][0]
                if choice["text"]:
                    watch.mark_token()
                    shown, stopped = scan.feed(choice["text"])
                    if shown:
                        yield text(shown)
                    if stopped:
                        early = True
                        break  # closing the stream stops decoding
                if choice.get("finish_reason"):
                    finish = "length" if choice["finish_reason"] == "length" else "stop"
        rest = scan.flush()
        if rest:
            yield text(rest)
        yield FinalChunk(finish, Usage(prompt_tokens, generated(early), cached_tokens=cached()),
                         replace(watch.timings(), engine=engine() if engine is not None else engine_timings(self._llm)),
                         scan.matched, recorder.end if recorder is not None else None)

    def close(self) -> None:
        self._scorer = None
        if self._batcher is not None:
            batcher, self._batcher = self._batcher, None
            batcher.close()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            llm.close()


@contextlib.contextmanager
def interrupts_kept():
    """Ctrl-C during a load stops it once the load returns.

    A KeyboardInterrupt raised inside llama-cpp-python's log callback (a ctypes callback, where llama.cpp's load
    spends its time logging) is printed and swallowed, and the answer then ran to the end. So while loading, SIGINT
    only sets a flag, and the interrupt is raised here, in the caller's frame. Only the main thread gets signals.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda number, frame: interrupted.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def templates_left_uncompiled():
    """While a model loads, llama-cpp-python compiles none of the chat templates in its file.

    It compiles every one (for its own chat handlers, which localllm does not use) in this process, with no bound:
    jinja2 folds constant expressions as it compiles, so ``{{ 'A' * 2000000000 }}`` costs gigabytes before anything
    is rendered, and one that does not compile fails the whole load, a vocabulary-only one included. localllm
    compiles and renders the template in the bounded child process (chat_templates) instead.
    """
    from llama_cpp import llama_chat_format

    # One load at a time swaps the module's class: two at once (the app's panes, two apps in one process) would
    # each restore what the other put there.
    with _UNCOMPILED_LOADS:
        original = llama_chat_format.Jinja2ChatFormatter
        llama_chat_format.Jinja2ChatFormatter = _UncompiledTemplate  # type: ignore[misc, assignment]
        try:
            yield
        finally:
            llama_chat_format.Jinja2ChatFormatter = original  # type: ignore[misc]


_UNCOMPILED_LOADS = threading.Lock()


class _UncompiledTemplate:
    """A template llama-cpp-python keeps for its chat handlers, never compiled: localllm renders its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def to_chat_handler(self):
        def handler(*args: Any, **kwargs: Any) -> Any:
            raise TemplateFailure("llama-cpp-python's own chat handlers are not used here", hint=TEMPLATE_HINT)

        return handler


class BoundedTemplate:
    """The GGUF's chat template as llama-cpp-python's formatters answer, rendered by the bounded child process
    (chat_templates) instead of in this one, with the same context as its Jinja2ChatFormatter."""

    def __init__(self, template: str, eos: str, bos: str, eos_id: int, model_name: str) -> None:
        self.template, self.eos, self.bos, self.model_name = template, eos, bos, model_name
        self.stop_ids = {eos_id} if eos_id != -1 else set()

    def thinking_switch(self, think: str) -> dict[str, Any] | None:
        """The template variables that carry ``think`` ("on", "off" or a level), when the template reads them:
        ``enable_thinking`` (Qwen3, SmolLM3 and their kin), ``reasoning_effort`` (gpt-oss); None: it has none."""
        if think in ("on", "off") and "enable_thinking" in self.template:
            return {"enable_thinking": think == "on"}
        if think not in ("on", "off") and "reasoning_effort" in self.template:
            return {"reasoning_effort": think}
        return None

    def __call__(self, *, messages: list[dict[str, Any]], switch: dict[str, Any] | None = None,
                 tools: list[dict[str, Any]] | None = None, **_: Any):
        import llama_cpp
        from llama_cpp.llama_chat_format import ChatFormatterResponse

        prompt = shared_renderer().render(self.template, self.model_name, messages=messages, eos_token=self.eos,
                                          bos_token=self.bos, add_generation_prompt=True, functions=None,
                                          function_call=None, tools=tools, tool_choice=None, **(switch or {}))
        stop_ids = self.stop_ids

        def stop_on_end(tokens, _logits) -> bool:
            return bool(tokens[-1] in stop_ids)

        return ChatFormatterResponse(prompt=prompt, stop=[self.eos], added_special=True,
                                     stopping_criteria=llama_cpp.StoppingCriteriaList([stop_on_end]) if stop_ids
                                     else None)


def plain_text_formatter(*, messages: list[dict[str, Any]], **_: Any):
    """The messages' text, one after another, for a model that continues text rather than chats."""
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    return ChatFormatterResponse(prompt="\n\n".join(m["content"] for m in messages if m.get("content")))


def chat_format_names() -> tuple[str, ...]:
    """The chat formats llama-cpp-python registers that can render a prompt (function-calling handlers cannot)."""
    llama_cpp = _import_llama_cpp()
    return tuple(sorted(_registered_formatters(llama_cpp)))


def _registered_formatters(llama_cpp) -> dict[str, Any]:
    # llama-cpp-python registers each format as a chat-completion handler and keeps no table of the formatters
    # themselves; each handler made by chat_formatter_to_chat_completion_handler holds its formatter in a closure.
    from llama_cpp import llama_chat_format

    found = {}
    for name, handler in llama_chat_format.LlamaChatCompletionHandlerRegistry()._chat_handlers.items():
        for cell in getattr(handler, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:
                continue
            if callable(content) and getattr(content, "__name__", "").startswith("format_"):
                found[name] = content
    return found


def chat_formatter(llama_cpp, name: str):
    formatters = _registered_formatters(llama_cpp)
    if name not in formatters:
        import difflib

        close = difflib.get_close_matches(name, [*formatters, PLAIN], n=1)
        raise UsageError(f"unknown chat template {name!r} (from -o template= or `template` in the config)",
                         hint=(f"did you mean {close[0]!r}? " if close else "")
                         + f"llama-cpp-python knows: {', '.join(sorted(formatters))}; "
                           f"{PLAIN!r} sends plain text to continue")
    return formatters[name]


def engine_timings(llm) -> EngineTimings | None:
    """llama.cpp's own counters for the answer just made (reset when it began)."""
    import llama_cpp

    if llm is None:
        return None
    data = llama_cpp.llama_perf_context(llm.ctx)
    return EngineTimings(prompt_evaluated=int(data.n_p_eval), prompt_eval_s=float(data.t_p_eval_ms) / 1000,
                         decoded=int(data.n_eval), eval_s=float(data.t_eval_ms) / 1000)


def fim_tokens(llm) -> tuple[int, int, int] | None:
    """The model's fill-in-the-middle tokens (prefix, suffix, middle) as llama.cpp found them in the GGUF (by
    their metadata keys, or their usual spellings), or None where it has not all three."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    found = (llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
             llama_cpp.llama_vocab_fim_mid(vocab))
    count = llama_cpp.llama_vocab_n_tokens(vocab)
    return found if all(0 <= token < count for token in found) else None


def top_count(asked: int) -> int:
    """Alternatives per token, at most MAX_TOP (the wire checks the bound; a caller in-process gets it too)."""
    from localllm.backends.llamacpp_logprobs import MAX_TOP

    return max(0, min(int(asked), MAX_TOP))


def checked_ids(tokens: Sequence[int], n_vocab: int, what: str = "the prompt") -> list[int]:
    from localllm.backends.llamacpp_logprobs import checked_ids as check

    return check(tokens, n_vocab, what)


def usable_window(llm) -> int:
    """The window a prompt may fill. llama.cpp pads the context to a multiple of 256 tokens, but llama-cpp-python
    sizes its token buffer to the size asked for, so a prompt between the two would fail inside it."""
    return min(llm.n_ctx(), llm.context_params.n_ctx)


def token_groups(counts: Sequence[int], budget: int) -> list[range]:
    """Consecutive positions whose counts add up to at most ``budget``; a count over it is a group of its own."""
    groups: list[range] = []
    start, total = 0, 0
    for at, count in enumerate(counts):
        if at > start and total + count > budget:
            groups.append(range(start, at))
            start, total = at, 0
        total += count
    if counts:
        groups.append(range(start, len(counts)))
    return groups
