"""Turn what the user typed and piped into chat messages, and make sure they fit the context window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from localllm.core.errors import ContextOverflow, UsageError
from localllm.core.messages import Message

DOCUMENT_OPEN = "<document>"
DOCUMENT_CLOSE = "</document>"


@dataclass(frozen=True)
class DecodedInput:
    text: str
    replaced: int
    """How many undecodable bytes became U+FFFD."""
    binary: bool


def decode_input(data: bytes) -> DecodedInput:
    """Decode piped bytes as UTF-8, replacing what is not; the caller says so on stderr."""
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode())
    return DecodedInput(text=text, replaced=replaced, binary=b"\x00" in data[:8192])


def build_messages(prompt: str, document: str | None, system: str | None) -> list[Message]:
    """The prompt, with piped text as a delimited document after it; piped text alone is the prompt."""
    prompt = prompt.strip()
    document = document if document and document.strip() else None
    if not prompt and document is None:
        raise UsageError("nothing to ask: the prompt is empty and nothing was piped in",
                         hint='localllm run "your question", or pipe text in: cat notes.txt | localllm run')
    if document is None:
        content = prompt
    elif not prompt:
        content = document.strip()
    else:
        content = f"{prompt}\n\n{DOCUMENT_OPEN}\n{document.strip()}\n{DOCUMENT_CLOSE}"
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", content))
    return messages


def answer_reserve(window: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer: the requested budget, else a quarter of the window up to 512."""
    return max_tokens if max_tokens else min(512, window // 4)


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A deliberately high pre-load estimate (about 3 bytes a token, plus template overhead per message), used to
    choose a larger window before the tokenizer is loaded; the exact count is checked after loading."""
    return sum(len(m.content.encode("utf-8")) // 3 + 16 for m in messages)


LONGEST_TOKEN_CHARS = 256
"""More characters than any token of a real vocabulary holds (the longest are runs of spaces or of one symbol, a
hundred characters or so): a text of N characters is at least N / 256 tokens, whatever the tokenizer."""


def least_tokens(messages: Sequence[Message]) -> int:
    """A floor on the messages' token count, from their length alone: a text far over the window is refused by
    this before the tokenizer spends minutes and gigabytes on it (a 50 MB row took 117 s and 5.5 GB)."""
    return sum(len(m.content) for m in messages) // LONGEST_TOKEN_CHARS


def check_fits(prompt_tokens: int, window: int, max_tokens: int | None, trained: int, piped: bool) -> None:
    reserve = answer_reserve(window, max_tokens)
    if prompt_tokens + reserve <= window:
        return
    what = "the prompt with the piped document" if piped else "the prompt"
    hints = []
    if window < trained:
        hints.append(f"raise the window with -o ctx=N (this model allows up to {trained})")
    if piped:
        hints.append("use `localllm summarize` for documents longer than the window")
    else:
        hints.append("shorten the prompt")
    raise ContextOverflow(
        f"{what} has {prompt_tokens} tokens; with {reserve} kept for the answer that exceeds the "
        f"{window}-token context window, and localllm does not cut input",
        hint="; ".join(hints),
        prompt_tokens=prompt_tokens,
        window=window,
    )
