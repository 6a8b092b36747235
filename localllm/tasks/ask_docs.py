"""Answers from documents only: the documents whole when they fit the window, otherwise the passages that BM25
(bm25s) ranks highest for the question, each with an id (file and line range) the answer cites."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from localllm.backends.base import Backend
from localllm.core.errors import UsageError
from localllm.core.messages import Message
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.chunking import chunk_document
from localllm.tasks.documents import Document

PASSAGE_TOKENS = 256
ANSWER_TOKENS = 384


@dataclass(frozen=True)
class Passage:
    id: str
    """``file:first-last`` (line numbers), as the answer cites it."""
    document: str
    first_line: int
    last_line: int
    text: str
    score: float = 0.0


def passages_of(documents: Sequence[Document], count, size: int = PASSAGE_TOKENS) -> list[Passage]:
    found = []
    for index, document in enumerate(documents):
        for chunk in chunk_document(document, index, size, count):
            first = document.text.count("\n", 0, chunk.start) + 1
            last = first + document.text.count("\n", chunk.start, chunk.end)
            found.append(Passage(f"{document.name}:{first}-{last}", document.name, first, last,
                                 document.text[chunk.start:chunk.end].strip()))
    return found


def rank(passages: Sequence[Passage], question: str) -> list[Passage]:
    """Passages by BM25 score for the question, best first (passages sharing no word with it score 0)."""
    import bm25s

    if not passages:
        return []
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([p.text for p in passages], show_progress=False), show_progress=False)
    query = bm25s.tokenize([question], show_progress=False)
    if not len(query.vocab):
        return list(passages)
    ids, scores = retriever.retrieve(query, k=len(passages), show_progress=False)
    return [Passage(**{**passages[i].__dict__, "score": float(s)}) for i, s in zip(ids[0], scores[0], strict=True)]


def passages_text(passages: Sequence[Passage]) -> str:
    return "\n\n".join(f"[{p.id}]\n{p.text}" for p in passages)


@dataclass(frozen=True)
class AskPlan:
    passages: list[Passage]
    """What the prompt holds, in document order."""
    retrieved: bool
    """False when the documents were sent whole."""
    candidates: int


def ask_messages(settings: Settings, passages: Sequence[Passage], question: str) -> list[Message]:
    return [Message("user", prompts.render("ask", settings, passages=passages_text(passages), question=question))]


def plan_ask(settings: Settings, backend: Backend, documents: Sequence[Document], question: str,
             window: int | None = None, answer_tokens: int | None = None) -> AskPlan:
    question = question.strip()
    if not question:
        raise UsageError("the question is empty", hint='localllm ask docs/*.md "How do I ...?"')
    window = window or backend.context_window
    room = window - (answer_tokens or ANSWER_TOKENS)
    passages = passages_of(documents, backend.count_tokens)
    if backend.count_prompt_tokens(ask_messages(settings, passages, question)) <= room:
        return AskPlan(passages, False, len(passages))
    chosen: list[Passage] = []
    for passage in rank(passages, question):
        if passage.score <= 0 and chosen:
            break
        trial = chosen + [passage]
        if backend.count_prompt_tokens(ask_messages(settings, trial, question)) > room:
            continue
        chosen = trial
    order = {p.id: i for i, p in enumerate(passages)}
    return AskPlan(sorted(chosen, key=lambda p: order[p.id]), True, len(passages))
