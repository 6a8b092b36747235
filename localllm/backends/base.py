"""The one protocol every backend implements, and the capabilities and options it declares.

A front end reads ``capabilities`` to decide what to offer (a stop button, a pull command, JSON output) and renders
``options`` once as CLI flags and once as TUI widgets; it never imports a backend's library itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from localllm.core.chunks import Chunk, TokenLogprob
from localllm.core.errors import BackendUnavailable, UsageError
from localllm.core.messages import Message
from localllm.core.model import ModelRef
from localllm.core.options import GenerationOptions
from localllm.core.plan import LoadPlan

if TYPE_CHECKING:
    import threading

    from localllm.core.settings import Settings


@dataclass(frozen=True)
class Capabilities:
    stream: bool = True
    cancel: bool = True
    """Closing the chunk iterator stops decoding promptly."""
    tokenize: bool = False
    """Exact token counts from the model's own tokenizer (otherwise counts are estimates)."""
    json_schema: bool = False
    embeddings: bool = False
    """``load_for_embeddings`` and ``embed`` compute vectors (`localllm embed`, serve's /v1/embeddings)."""
    text_completion: bool = False
    """``complete_text`` continues a raw prompt with no chat template (serve's /v1/completions)."""
    pull: bool = False
    list_models: bool = False
    seed: bool = True
    """A seed makes sampling repeatable."""
    native_tools: bool = False
    """``chat`` takes ``tools`` and ``tool_choice`` and yields the server's own tool calls (ToolCallChunk);
    elsewhere tools are offered in the prompt and the reply constrained to a call (tasks.tools.calling)."""
    tool_choice: bool = True
    """With native tools: a call can be required (tool_choice); where not, a required call is constrained."""
    logprobs: bool = False
    """Log-probabilities: ``score`` scores a sequence of tokens, ``options.logprobs`` puts each answer token's in
    its TextChunk, and ``complete_text`` takes token ids and ``options.prompt_logprobs``."""
    penalties: bool = False
    """``options.presence_penalty`` and ``options.frequency_penalty`` are applied."""
    logit_bias: bool = False
    """``options.logit_bias`` is applied (its token ids are the model's own)."""


def unsupported(capabilities: Capabilities, options: GenerationOptions) -> list[str]:
    """The options' fields that ask for what a backend with these capabilities cannot do (they would otherwise be
    dropped without a word): their names, which are also OpenAI's request fields."""
    asked = {"presence_penalty": options.presence_penalty != 0 and not capabilities.penalties,
             "frequency_penalty": options.frequency_penalty != 0 and not capabilities.penalties,
             "logit_bias": bool(options.logit_bias) and not capabilities.logit_bias,
             "logprobs": options.logprobs is not None and not capabilities.logprobs,
             "prompt_logprobs": options.prompt_logprobs is not None and not capabilities.logprobs}
    return [name for name, refused in asked.items() if refused]


@dataclass(frozen=True)
class BackendOption:
    """A backend setting declared once; the CLI renders it as ``--name`` and the TUI as a widget."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class ServedModel:
    """A model that runs on a server rather than from a local file: its name there and what the server told us."""

    name: str
    where: str
    """The server, for display: "Ollama at http://127.0.0.1:11434"."""
    n_ctx: int
    """The context window requests use."""
    context_length: int | None = None
    """The window the model was trained for, when the server says."""
    details: tuple[tuple[str, str], ...] = ()
    """Family, parameter size, quantization... as the server reports them."""


@dataclass(frozen=True)
class Token:
    id: int
    piece: str


class Backend:
    """Base class of the backends. ``chat`` yields TextChunk pieces, then one FinalChunk; closing it cancels."""

    name: ClassVar[str] = ""
    capabilities: Capabilities = Capabilities()
    """The class's, or the loaded model's where they depend on it (llama.cpp's tools follow the chat template)."""
    options: ClassVar[tuple[BackendOption, ...]] = ()
    local_files: ClassVar[bool] = True
    """True: runs a GGUF file on this machine (planned, then ``load``ed). False: a server runs the model and
    ``connect`` finds it there; there is no local file and no local memory plan."""
    library: ClassVar[str | None] = None
    """The distribution that must be installed for this backend (for reports), if any."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """An instance configured from the settings (servers read their address, key and time-out here)."""
        return cls()

    def __init__(self, **option_values: Any) -> None:
        known = {option.name: option for option in self.options}
        unknown = set(option_values) - set(known)
        if unknown:
            raise BackendUnavailable(f"backend {self.name} has no option {sorted(unknown)[0]!r}",
                                     hint=f"its options: {', '.join(known) or 'none'}")
        self.option_values = {name: option_values.get(name, option.default) for name, option in known.items()}

    def load(self, model: ModelRef, plan: LoadPlan) -> None:
        raise NotImplementedError

    def connect(self, name: str | None, *, ctx: int | None = None, default: str | None = None) -> ServedModel:
        """Find the model on the server, ready for ``chat``; remote backends only. Without a ``name``: ``default``
        when the server has it, else the first model it serves."""
        raise BackendUnavailable(f"backend {self.name} runs local model files", hint="use load()")

    def load_tokenizer(self, model: ModelRef) -> None:
        """Load only what tokenizing needs; backends without a lighter path load the whole model."""
        raise BackendUnavailable(f"backend {self.name} cannot tokenize locally", hint="use --backend llama.cpp")

    def chat(self, messages: Sequence[Message], options: GenerationOptions) -> Iterator[Chunk]:
        raise NotImplementedError

    def check_options(self, options: GenerationOptions) -> None:
        """Refuses options this backend would otherwise drop without a word (``unsupported``), naming them."""
        refused = unsupported(self.capabilities, options)
        if refused:
            raise UsageError(f"backend {self.name} cannot apply {', '.join(refused)}",
                             hint="leave it out, or use --backend llama.cpp")

    def complete_text(self, prompt: str | Sequence[int], options: GenerationOptions) -> Iterator[Chunk]:
        """The continuation of ``prompt`` exactly as given (text, or token ids where ``capabilities.logprobs``), no
        chat template, streamed as ``chat`` streams (closing it cancels); where ``capabilities.text_completion``. A
        prompt over the window is an error, never cut. ``options.max_tokens`` 0: no answer (the prompt's
        PromptChunk, where asked for, and the FinalChunk)."""
        raise BackendUnavailable(f"backend {self.name} cannot continue raw text", hint="use --backend llama.cpp")

    def fills_in_middle(self) -> bool:
        """Whether ``fill_in_middle`` works with the model loaded now."""
        return False

    def fill_in_middle(self, prefix: str, suffix: str, options: GenerationOptions) -> Iterator[Chunk]:
        """What goes between ``prefix`` and ``suffix`` (code completion in an editor), from a model trained for it
        (its GGUF names fill-in-the-middle tokens); streamed as ``complete_text`` streams."""
        raise BackendUnavailable(f"backend {self.name} cannot fill in the middle", hint="use --backend llama.cpp")

    def score(self, tokens: Sequence[int], top: int = 0) -> list[TokenLogprob]:
        """Each token's log-probability after the ones before it (the first's is None), with the ``top``
        likeliest tokens at each place; where ``capabilities.logprobs``. Token ids outside the vocabulary and a
        sequence over the window are errors."""
        raise BackendUnavailable(f"backend {self.name} cannot compute log-probabilities",
                                 hint="use --backend llama.cpp")

    def window_logits(self, tokens: Sequence[int], first: int) -> Iterator[Any]:
        """The raw logits over the whole vocabulary at positions ``first`` onwards of ``tokens`` evaluated from an
        empty context, as numpy arrays of rows a batch at a time, each valid until the next is asked for (perplexity
        and KL divergence read them); where ``capabilities.logprobs``. A stop (``interrupt``) ends it early."""
        raise BackendUnavailable(f"backend {self.name} gives no log-probabilities over the whole vocabulary",
                                 hint="use --backend llama.cpp with a local GGUF")

    def evaluation_tokens(self, text: str) -> tuple[list[int], int | None]:
        """``text`` as the model reads a document (its start token added where it adds one, control tokens'
        spellings read as text), and the start token each evaluation window begins with (None: the model adds
        none); where ``capabilities.logprobs``."""
        raise BackendUnavailable(f"backend {self.name} cannot tokenize locally", hint="use --backend llama.cpp")

    @property
    def vocab_size(self) -> int | None:
        """Token ids run from 0 to this, exclusive; None where the backend does not know its model's vocabulary."""
        return None

    def interrupt(self) -> None:
        """From any thread: stop the generation running now, before its next chunk. Closing the stream does that
        between chunks; a backend that can also stop while it reads a long prompt (before the first chunk) does it
        here. The default waits for the next chunk."""

    @contextlib.contextmanager
    def prompt_progress(self, report: Callable[[int, int], None]) -> Iterator[None]:
        """While the block runs, a call that reads a long prompt calls ``report(read, to_read)`` (tokens) as it
        goes, where the backend can tell (llama.cpp, in ``n_batch`` pieces); a backend that cannot says nothing,
        and the caller sees the answer's first chunk as the sign that the prompt was read."""
        yield

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the rendered chat prompt takes, counted exactly where ``capabilities.tokenize``."""
        raise NotImplementedError

    def load_for_embeddings(self, model: ModelRef, plan: LoadPlan) -> None:
        raise BackendUnavailable(f"backend {self.name} cannot compute embeddings", hint="use --backend llama.cpp")

    def embed(self, texts: Sequence[str], stop: threading.Event | None = None) -> list[list[float]]:
        """One normalised vector per text; a text longer than the window is an error, never cut. Once ``stop`` is
        set (nobody waits for them any more) the texts not yet begun are left: fewer vectors come back."""
        raise BackendUnavailable(f"backend {self.name} cannot compute embeddings", hint="use --backend llama.cpp")

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes on its own (no chat template, no special tokens)."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[Token]:
        raise BackendUnavailable(f"backend {self.name} cannot tokenize locally", hint="use --backend llama.cpp")

    @property
    def context_window(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Free the model. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
