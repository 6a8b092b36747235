"""A chat session: history, a system prompt, options, and the context accounting that keeps it honest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from localllm.core.chunks import FinalChunk, Response
from localllm.core.errors import ContextOverflow, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions, apply_assignments
from localllm.tasks.loading import LoadedModel
from localllm.tasks.prompting import answer_reserve

if TYPE_CHECKING:
    from localllm.tasks.tools.calling import ToolLoop


CONDENSE_INSTRUCTION = (
    "Summarize the conversation below for the assistant who will continue it: in a few sentences, keep the facts, "
    "names, numbers, decisions and open questions; write it as notes, not as a reply.")


@dataclass
class SessionStats:
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last: FinalChunk | None = None


@dataclass
class ChatSession:
    model: LoadedModel
    options: GenerationOptions
    system: str | None = None
    history: list[Message] = field(default_factory=list)
    stats: SessionStats = field(default_factory=SessionStats)
    dropped: int = 0
    """Messages at the start of the history left out of the last prompt because the window was full."""
    prompt_tokens: int = 0
    """Tokens of the last prompt sent (history, system prompt and the new message), before its answer starts."""
    tools: ToolLoop | None = None
    """Tools the model may call on the way to each answer (the calls stay out of the history: the answer says
    what they gave)."""
    condense: bool = True
    """When the window fills, the oldest turns are folded into a summary (one model call) instead of being left
    out; leaving them out stays the fallback when a summary cannot be made or does not fit."""
    summary: str | None = None
    """What the first ``summarized`` messages of the history said, condensed; it goes with the system prompt."""
    summarized: int = 0
    condensed: tuple[int, int] | None = None
    """For the last prompt: (messages just folded into the summary, tokens that freed); None: none were."""
    _summary_key: int = 0
    _tool_tokens: tuple[tuple[tuple[str, ...], str, str | None], int] | None = None
    """The tokens the tools add to each prompt, with the (tools, choice, system prompt) they were counted for."""

    def reset(self) -> None:
        self.history.clear()
        self.dropped = 0
        self.summary, self.summarized, self.condensed = None, 0, None

    def set_option(self, key: str, value: str) -> None:
        if key == "ctx":
            raise UsageError("the context window is fixed while a model is loaded",
                             hint="start the chat again with -o ctx=N")
        self.options = apply_assignments(self.options, [f"{key}={value}"])

    def _messages(self, history: list[Message]) -> list[Message]:
        system = "\n\n".join(part for part in (self.system, self._summary_note()) if part)
        return ([Message("system", system)] if system else []) + history

    def _summary_note(self) -> str | None:
        if self.summary is None:
            return None
        return f"Summary of the earlier part of this conversation (its first {self.summarized} messages):\n" \
               f"{self.summary}"

    def _covered(self, history: list[Message]) -> int:
        """How many of ``history``'s first messages the summary stands for: 0 when it was made for another history
        (a conversation opened in its place, an edited one)."""
        if self.summary is None or self.summarized > len(history) \
                or hash(tuple(history[:self.summarized])) != self._summary_key:
            self.summary, self.summarized = None, 0
        return self.summarized

    def fitted_messages(self, user_text: str) -> list[Message]:
        """The prompt for the next turn: when the window is full, the oldest turns are condensed into a summary
        (``condensed``), or else left out (``dropped``), until it fits."""
        return self._fitted([*self.history, Message("user", user_text)])

    def _fitted(self, history: list[Message]) -> list[Message]:
        self.condensed = None
        covered = self._covered(history)
        fitted, dropped, tokens = self._fit(history[covered:])
        if fitted is not None and dropped and self.condense and self._condense(history, covered + dropped):
            fitted, dropped, tokens = self._fit(history[self.summarized:])
        if fitted is None:
            window, reserve = self.model.backend.context_window, answer_reserve(
                self.model.backend.context_window, self.options.max_tokens)
            raise ContextOverflow(
                f"this message has {tokens:,} tokens; with {reserve:,} kept for the answer it exceeds the "
                f"{window:,}-token window", hint="send a shorter message, or restart with -o ctx=N",
                prompt_tokens=tokens, window=window)
        self.dropped, self.prompt_tokens = dropped, tokens
        return fitted

    def context_used(self) -> tuple[int, int]:
        """(tokens the history takes in the next prompt, messages of it that no longer fit), for a context meter."""
        if not self.history:
            return self.tool_tokens(), 0
        covered = self._covered(self.history)
        fitted, dropped, tokens = self._fit(self.history[covered:])
        if fitted is None:  # even the last exchange is over the window: the next prompt carries none of it
            return (self.model.backend.count_prompt_tokens(self._messages([])) + self.tool_tokens(),
                    len(self.history) - covered)
        return tokens, dropped

    def _condense(self, history: list[Message], upto: int) -> bool:
        """Fold ``history[:upto]`` into the summary (the old summary with the messages after it), with one call
        to the model; False when it cannot be done (the transcript does not fit, the model fails): the caller then
        leaves the messages out instead."""
        from localllm.core.errors import LocalLLMError

        backend = self.model.backend
        window = backend.context_window
        budget = max(32, min(256, window // 8))
        start = self._covered(history)
        transcript = "\n\n".join(f"{m.role}: {m.content}" for m in history[start:upto])
        earlier = f"The summary so far:\n{self.summary}\n\n" if self.summary else ""
        prompt = [Message("system", CONDENSE_INSTRUCTION),
                  Message("user", f"{earlier}The conversation to add to it:\n\n{transcript}")]
        if len(transcript) > 16 * window:  # far over the window whatever the tokenizer: not worth counting
            return False
        try:
            if backend.count_prompt_tokens(prompt) + budget > window:
                return False
            before = backend.count_prompt_tokens(self._messages(history[start:upto]))
            options = self.options.with_overrides(max_tokens=budget, temperature=0.0, json_schema=None,
                                                  answer_prefix=None, stop=())
            response = Response(backend.chat(prompt, options))
            text = response.text().strip()
        except LocalLLMError:
            return False
        if not text or response.final is None or response.final.finish_reason == "cancelled":
            return False  # stopped: the answer it was for is being stopped too
        self.summary, self.summarized = text, upto
        self._summary_key = hash(tuple(history[:upto]))
        after = backend.count_prompt_tokens(self._messages([]))
        self.condensed = (upto - start, max(0, before - after))
        return True

    def tool_tokens(self) -> int:
        """What the chosen tools add to every prompt (counted once per choice of tools and system prompt)."""
        if self.tools is None:
            return 0
        key = (tuple(tool.qualified for tool in self.tools.tools), self.tools.choice, self.system)
        if self._tool_tokens is None or self._tool_tokens[0] != key:
            overhead = self.tools.prompt_overhead(self.model.backend, self._messages([Message("user", "")]))
            self._tool_tokens = key, overhead
        return self._tool_tokens[1]

    def _fit(self, history: list[Message]) -> tuple[list[Message] | None, int, int]:
        """The messages with as few of the oldest left out as fits, how many were left out, and their tokens; None
        when even the last message alone does not fit. A whole exchange is left out at a time, so the history never
        starts with an answer. The cut is searched from the newest end, doubling then bisecting, so the cost
        follows the window, not the history: a conversation of thousands of messages is never counted whole."""
        backend = self.model.backend
        window = backend.context_window
        reserve = answer_reserve(window, self.options.max_tokens)
        cuts = [0, *(cut for cut in range(1, len(history)) if history[cut].role != "assistant")]
        counted: dict[int, int] = {}
        tools = self.tool_tokens()

        def fits(index: int) -> bool:
            if index not in counted:
                counted[index] = backend.count_prompt_tokens(self._messages(history[cuts[index]:])) + tools
            return counted[index] + reserve <= window

        last = len(cuts) - 1
        if not fits(last):
            return None, 0, counted[last]
        good, step = last, 1
        while good > 0:  # widen towards the oldest message while it still fits
            probe = max(0, good - step)
            if not fits(probe):
                bad = probe
                break
            good, step = probe, step * 2
        else:
            return self._messages(history), 0, counted[0]
        while bad + 1 < good:  # cuts[bad] does not fit, cuts[good] does
            middle = (bad + good) // 2
            if fits(middle):
                good = middle
            else:
                bad = middle
        return self._messages(history[cuts[good]:]), cuts[good], counted[good]

    def send(self, user_text: str) -> Response:
        """Stream the answer; the exchange joins the history when the stream ends or is stopped."""
        messages = self.fitted_messages(user_text)
        chunks = (self.tools.chat(self.model.backend, messages, self.options) if self.tools is not None
                  else self.model.backend.chat(messages, self.options))
        return Response(chunks, on_done=lambda response: self._record(user_text, response))

    def interrupt(self) -> None:
        """From any thread: stop the answer being generated, even while the model still reads the prompt."""
        self.model.backend.interrupt()

    def continue_answer(self) -> Response:
        """More of the last answer (cut at its token limit, or stopped): the model goes on from its last word, and
        the longer answer takes the old one's place in the history."""
        if len(self.history) < 2 or self.history[-1].role != "assistant":
            raise UsageError("there is no answer to continue", hint="send a message first")
        messages = self._fitted(self.history[:-1])  # up to the question; the answer so far is the prefix
        options = self.options.with_overrides(answer_prefix=self.history[-1].content)
        return Response(self.model.backend.chat(messages, options), on_done=self._record_continued)

    def _record_continued(self, response: Response) -> None:
        self.history[-1] = Message("assistant", response.partial_text)
        self._count(response)

    def _record(self, user_text: str, response: Response) -> None:
        self.history.append(Message("user", user_text))
        self.history.append(Message("assistant", response.partial_text))
        self.stats.turns += 1
        self._count(response)

    def _count(self, response: Response) -> None:
        if response.final is not None:
            self.stats.last = response.final
            self.stats.prompt_tokens += response.final.usage.prompt_tokens
            self.stats.completion_tokens += response.final.usage.completion_tokens
