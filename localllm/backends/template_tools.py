"""Tool calls in a GGUF chat template's own format, for llama.cpp in-process.

A chat template that reads ``tools`` offers them to the model the way it was trained on, and the model then calls
a tool in its family's syntax. Three families are recognised by what their templates write:

- ``<tool_call>`` blocks holding ``{"name": ..., "arguments": {...}}`` (Hermes, Qwen 2.5 and 3, SmolLM3);
- ``[TOOL_CALLS]`` followed by a JSON list of ``{"name": ..., "arguments": {...}}`` (Mistral);
- a bare ``{"name": ..., "parameters": {...}}`` object (Llama 3.1 to 3.3).

The reply is constrained by a grammar (as llama-server does with its own per-family grammars) to either a plain
answer or calls whose arguments match the tools' schemas, so even a small model's call parses; the text is parsed
back into calls here. A template that reads ``tools`` in any other way gets the documented instruction and JSON
reply of tasks.tools.calling instead (``tool_format`` answers None).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.core.chunks import Chunk, FinalChunk, TextChunk, TokenLogprob, ToolCallChunk
from localllm.core.messages import Message
from localllm.core.tools import ToolSpec, native_call

logger = logging.getLogger("localllm")


@dataclass(frozen=True)
class ToolFormat:
    name: str
    opening: str
    """What a reply that calls tools starts with."""
    arguments_key: str = "arguments"
    style: str = "tagged"
    """"tagged": one ``opening … closing`` block per call; "list": ``opening`` then a JSON list; "bare": one
    JSON object."""
    closing: str = ""

    def grammar(self, tools: Sequence[ToolSpec], choice: str, *, thinking: str | None,
                dropped: list[str] | None = None, loose: bool = False) -> str:
        """GBNF for a reply: calls of ``tools`` (of ``choice`` when it names one), and a plain answer too when
        ``choice`` is "auto". ``thinking``: the model may think first ("open": the prompt opened the block; "tag":
        it may write ``<think>…</think>``; None: it does not think). The tools' schemas go through the grammar
        gate (what it leaves out is added to ``dropped``); ``loose``: any JSON object as arguments."""
        from localllm.backends.grammars import schema_rules

        chosen = [tool for tool in tools if choice in ("auto", "required") or tool.name == choice]
        schema = {"anyOf": [{"type": "object",
                             "properties": {"name": {"const": tool.name},
                                            self.arguments_key: {"type": "object"} if loose else tool.parameters},
                             "required": ["name", self.arguments_key]} for tool in chosen]}
        call_rules = schema_rules(schema, ["name", self.arguments_key], dropped)
        # The converter's start rule becomes one call; the rules below are named so the converter cannot make them.
        call_rules = re.sub(r"^root ::=", "tool-call ::=", call_rules, flags=re.MULTILINE)
        if self.style == "tagged":
            calls = (f'tool-calls ::= tool-block (tool-gap tool-block)*\n'
                     f'tool-block ::= {_literal(self.opening)} tool-gap tool-call tool-gap {_literal(self.closing)}\n')
        elif self.style == "list":
            calls = f'tool-calls ::= {_literal(self.opening)} "[" tool-call ("," " "? tool-call)* "]"\n'
        else:
            calls = "tool-calls ::= tool-call\n"
        # A plain answer starts with anything but the call's first character (after any blank space).
        first = self.opening[0]
        answer = f'plain-answer ::= [^{_class_char(first)} \\t\\n] .*\n'
        reply = "tool-gap? tool-calls" + (" | tool-gap? plain-answer" if choice == "auto" else "")
        if thinking == "open":
            start = "root ::= thought-body \"</think>\" tool-gap? reply\n"
        elif thinking == "tag":
            start = "root ::= (\"<think>\" thought-body \"</think>\")? reply\n"
        else:
            start = "root ::= reply\n"
        return (start + f"reply ::= {reply}\n" + calls + answer
                + 'thought-body ::= ([^<] | "<" [^/])*\n'
                + 'tool-gap ::= [ \\t\\n]+\n' + call_rules)

    def calling(self, text: str) -> bool | None:
        """Whether a reply that starts with ``text`` calls tools: None while it cannot be told yet."""
        start = text.lstrip()
        if not start:
            return None
        if start.startswith(self.opening):
            return True
        return None if self.opening.startswith(start) else False

    def parse(self, text: str) -> list[tuple[str, dict[str, Any]]] | None:
        """The calls in a reply, as (name, arguments); None when the reply is not whole calls (cut short)."""
        text = text.strip()
        try:
            if self.style == "tagged":
                pattern = re.escape(self.opening) + r"\s*(.*?)\s*" + re.escape(self.closing)
                objects = [json.loads(found) for found in re.findall(pattern, text, flags=re.DOTALL)]
                if not objects:
                    return None
            elif self.style == "list":
                objects = json.loads(text[len(self.opening):])
            else:
                objects = [json.loads(text)]
        except ValueError:
            return None
        calls = []
        for value in objects if isinstance(objects, list) else []:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                return None
            arguments = value.get(self.arguments_key, {})
            calls.append((value["name"], arguments if isinstance(arguments, dict) else {"_unparsed": arguments}))
        return calls or None


HERMES = ToolFormat("tool_call tags", "<tool_call>", closing="</tool_call>")
MISTRAL = ToolFormat("[TOOL_CALLS]", "[TOOL_CALLS]", style="list")
LLAMA3 = ToolFormat("JSON with parameters", "{", arguments_key="parameters", style="bare")


def tool_format(template: str) -> ToolFormat | None:
    """The tool-call format a chat template teaches, when it reads ``tools`` and is one of the known families."""
    if not re.search(r"\btools\b", template):
        return None
    if "<tool_call>" in template:
        return HERMES
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if '"parameters"' in template or "'parameters'" in template:
        return LLAMA3
    return None


def _literal(text: str) -> str:
    return json.dumps(text)


def _class_char(char: str) -> str:
    return "\\" + char if char in "[]^\\-" else char


def template_message(message: Message) -> dict[str, Any]:
    """A message as templates that take tools read it: calls in OpenAI's shape (with their ids), a result with
    the id of its call and the tool's name."""
    if message.role == "tool":
        entry: dict[str, Any] = {"role": "tool", "content": message.content}
        if message.name:
            entry["name"] = entry["tool_name"] = message.name
        if message.call_id:
            entry["tool_call_id"] = message.call_id
        return entry
    if message.tool_calls:
        return {"role": message.role, "content": message.content,
                "tool_calls": [{"type": "function", "id": call.id,
                                "function": {"name": call.name, "arguments": call.arguments}}
                               for call in message.tool_calls]}
    return message.as_dict()


def calls_from_reply(chunks: Iterator[Chunk], form: ToolFormat) -> Iterator[Chunk]:
    """A reply's stream with its calls as ToolCallChunk: a plain answer streams as it comes; a reply that calls is
    held back whole and parsed at its end (one cut short by the token limit comes out as the text it is)."""
    held = ""
    tokens: tuple[TokenLogprob, ...] = ()
    """The log-probabilities of the tokens ``held`` came from (a plain answer keeps them)."""
    calling: bool | None = None
    for chunk in chunks:
        if isinstance(chunk, TextChunk) and calling is not False:
            held += chunk.text
            tokens += chunk.logprobs
            calling = form.calling(held)
            if calling is False:
                yield TextChunk(held, tokens)
            continue
        if isinstance(chunk, FinalChunk) and held and calling is not False:
            calls = form.parse(held) if calling else None
            if calls is None:
                if calling:
                    logger.warning("note: the model's tool call was cut before it was whole, so nothing ran; "
                                   "raise -o max_tokens")
                yield TextChunk(held, tokens)
            else:
                for name, arguments in calls:
                    yield ToolCallChunk(native_call(name, arguments, f"call_{uuid.uuid4().hex[:24]}"))
        yield chunk
