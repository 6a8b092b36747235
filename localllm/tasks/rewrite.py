"""Tasks that rewrite a whole document: translation (chunk by chunk, so any length works) and customer replies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from localllm.backends.base import Backend
from localllm.core.chunks import Response
from localllm.core.errors import ContextOverflow, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.chunking import chunk_document
from localllm.tasks.documents import Document

TONES = ("polite", "friendly", "formal", "apologetic", "firm")


@dataclass
class CallLog:
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)

    def add(self, response: Response) -> None:
        if response.final is not None:
            self.prompt_tokens.append(response.final.usage.prompt_tokens)
            self.completion_tokens.append(response.final.usage.completion_tokens)

    def line(self) -> str:
        return (f"{len(self.prompt_tokens)} call(s), {sum(self.prompt_tokens)} tokens in, "
                f"{sum(self.completion_tokens)} out")


def translate_messages(settings: Settings, text: str, language: str, part: int, parts: int,
                       source: str) -> list[Message]:
    return [Message("user", prompts.render("translate", settings, text=text, language=language, part=part,
                                           parts=parts, source=source))]


def translate(settings: Settings, backend: Backend, documents: Sequence[Document], language: str,
              options: GenerationOptions, write: Callable[[str], None], log: CallLog,
              progress: Callable[[str], None] = lambda message: None) -> None:
    """Translate chunk by chunk; each chunk gets room for a translation up to twice its length in tokens."""
    language = language.strip()
    if not language:
        raise UsageError("--to is empty", hint="e.g. --to German, or --to de")
    window = backend.context_window
    overhead = backend.count_prompt_tokens(translate_messages(settings, "", language, 99, 99, "x"))
    budget = (window - overhead - 16) // 3  # the chunk, and up to twice as many tokens for its translation
    if budget < 32:
        raise ContextOverflow(f"the {window}-token window is too small to translate in parts",
                              hint="raise -o ctx=N", window=window)
    for document in documents:
        chunks = chunk_document(document, 0, budget, backend.count_tokens)
        for number, chunk in enumerate(chunks, start=1):
            text = document.text[chunk.start:chunk.end]
            messages = translate_messages(settings, text.strip(), language, number, len(chunks), document.name)
            answer_room = min(window - backend.count_prompt_tokens(messages), chunk.tokens * 2 + 64)
            response = Response(backend.chat(messages, options.with_overrides(max_tokens=answer_room)))
            for piece in response.text_chunks():
                write(piece)
            write("\n\n")
            log.add(response)
            progress(f"{document.name}: part {number} of {len(chunks)} translated")


def reply_messages(settings: Settings, text: str, tone: str) -> list[Message]:
    if tone not in TONES:
        raise UsageError(f"unknown tone {tone!r}", hint=f"tones: {', '.join(TONES)}")
    return [Message("user", prompts.render("reply", settings, text=text.strip(), tone=tone))]
