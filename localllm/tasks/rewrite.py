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


LEVELS = {
    "beginner": "Assume no background: short sentences, everyday words, and every term explained the first time.",
    "intermediate": "Assume some background: plain sentences, and only unusual terms explained.",
    "expert": "Assume a specialist: remove padding and keep the precise terms.",
}
KINDS = {
    "story": "a short story with a beginning, a turn and an end",
    "script": "a script with speaker names, dialogue and brief stage directions",
    "docs": "product documentation with headings, steps and examples",
    "manual": "a user manual section with numbered steps, warnings and troubleshooting",
    "blog": "a blog post with a title, an engaging opening, sections and a conclusion",
    "social": "a social media post: a hook, two or three short lines and relevant hashtags",
}


def part_messages(settings: Settings, prompt: str, text: str, part: int, parts: int, source: str,
                  **values: object) -> list[Message]:
    return [Message("user", prompts.render(prompt, settings, text=text, part=part, parts=parts, source=source,
                                           **values))]


def rewrite_in_parts(settings: Settings, backend: Backend, documents: Sequence[Document], prompt: str,
                     options: GenerationOptions, write: Callable[[str], None], log: CallLog,
                     progress: Callable[[str], None] = lambda message: None, **values: object) -> None:
    """Rewrite chunk by chunk (translation, plain language), so any length works; each chunk gets room for an
    answer up to twice its length in tokens."""
    window = backend.context_window
    overhead = backend.count_prompt_tokens(part_messages(settings, prompt, "", 99, 99, "x", **values))
    budget = (window - overhead - 16) // 3  # the chunk, and up to twice as many tokens for its rewrite
    if budget < 32:
        raise ContextOverflow(f"the {window}-token window is too small to work in parts",
                              hint="raise -o ctx=N", window=window)
    for document in documents:
        chunks = chunk_document(document, 0, budget, backend.count_tokens)
        for number, chunk in enumerate(chunks, start=1):
            text = document.text[chunk.start:chunk.end]
            messages = part_messages(settings, prompt, text.strip(), number, len(chunks), document.name, **values)
            answer_room = min(window - backend.count_prompt_tokens(messages), chunk.tokens * 2 + 64)
            response = Response(backend.chat(messages, options.with_overrides(max_tokens=answer_room)))
            for piece in response.text_chunks():
                write(piece)
            write("\n\n")
            log.add(response)
            progress(f"{document.name}: part {number} of {len(chunks)} done")


def translate(settings: Settings, backend: Backend, documents: Sequence[Document], language: str,
              options: GenerationOptions, write: Callable[[str], None], log: CallLog,
              progress: Callable[[str], None] = lambda message: None) -> None:
    language = language.strip()
    if not language:
        raise UsageError("--to is empty", hint="e.g. --to German, or --to de")
    rewrite_in_parts(settings, backend, documents, "translate", options, write, log, progress, language=language)


def simplify(settings: Settings, backend: Backend, documents: Sequence[Document], level: str,
             options: GenerationOptions, write: Callable[[str], None], log: CallLog,
             progress: Callable[[str], None] = lambda message: None) -> None:
    if level not in LEVELS:
        raise UsageError(f"unknown level {level!r}", hint=f"levels: {', '.join(LEVELS)}")
    rewrite_in_parts(settings, backend, documents, "simplify", options, write, log, progress, level=level,
                     level_note=LEVELS[level])


def write_messages(settings: Settings, kind: str, topic: str, audience: str | None, words: int) -> list[Message]:
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"kinds: {', '.join(KINDS)}")
    if not topic.strip():
        raise UsageError("--topic is empty", hint='e.g. --topic "a lighthouse keeper who adopts a seal"')
    if words < 10:
        raise UsageError(f"--words {words} is too few", hint="ask for at least 10 words")
    return [Message("user", prompts.render("write", settings, kind=kind, form=KINDS[kind], topic=topic.strip(),
                                           audience=audience or "general readers", words=words))]


def reply_messages(settings: Settings, text: str, tone: str) -> list[Message]:
    if tone not in TONES:
        raise UsageError(f"unknown tone {tone!r}", hint=f"tones: {', '.join(TONES)}")
    return [Message("user", prompts.render("reply", settings, text=text.strip(), tone=tone))]
