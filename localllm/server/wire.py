"""What the three wire formats share: the request body read as JSON (its nesting and its text checked once, for
the whole body), each field checked for type and range before it is used (a client's values are data: a wrong one
is a 400 that names the field by its path, e.g. ``messages[2].tool_calls[0].function.arguments``), message content
given as text or as a list of parts, tools and tool calls, the bounds on what one request may ask, and options
built from the server's defaults."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from localllm.core.messages import Message
from localllm.core.options import LOGIT_BIAS_RANGE, MAX_LOGIT_BIAS, GenerationOptions
from localllm.core.tools import ToolCall, ToolSpec
from localllm.server.engine import ApiError, Request

T = TypeVar("T")
MAX_DEPTH = 100
"""Levels of nesting a body (or a call's arguments given as a JSON string) may have. Deeper JSON would make the
parser, and every later walk over it (a schema turned into a grammar, a chat template, the answer's own JSON),
recurse towards Python's limit; real schemas and arguments stay within a dozen or two."""
MAX_MESSAGES = 1024
"""Messages one chat request may carry (each of Anthropic's tool results counts as one): more than any window
holds in practice, few enough that templating them stays quick."""
MAX_TOOLS = 128
"""Tools one request may offer (OpenAI's own limit)."""
MAX_STOPS = 64
"""Stop sequences one request may give: each is looked for after every token."""
MAX_PROMPTS = 64
"""Prompts one /v1/completions request may carry; each is answered in turn, holding the model meanwhile."""
MAX_TOTAL_TOKENS = 65_536
"""Tokens one /v1/completions request may ask for over all its prompts: the sum of max_tokens, each prompt's
counted at most as the model's window (no answer is longer). At 50 tokens a second that is about 20 minutes of the
model: more would shut every other client out for longer."""
MAX_INPUTS = 2048
"""Texts one embeddings request may carry (OpenAI's limit)."""
MAX_CHOICES = 8
"""Answers one request may ask for (``n``): each is generated in turn, holding the model meanwhile."""
MAX_TOP_LOGPROBS = 20
"""Alternatives per token a request may ask for (OpenAI's chat bound; its legacy completions stop at 5)."""


def where(parent: str, key: str | int) -> str:
    """The path of ``key`` in ``parent``, as a 400 names it: ``messages[2].content``. A key that is not a plain
    name (a client's own, in its arguments or schema) is quoted, so that the message stays one line of ASCII."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not key.isidentifier() or not key.isascii():
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


def shown(value: Any) -> str:
    """A client's value in a 400: as JSON (one line, quoted), and short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python's json reads them, JSON has no such numbers


def parse_json(data: bytes | str, name: str, refusal: str) -> Any:
    """JSON text, read and checked (``checked``); ``refusal`` is the 400's message for text that is not JSON."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, f"{name or 'the request body'} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # UnicodeDecodeError included: bytes that are not UTF-8
        raise ApiError(400, refusal) from None
    checked(value, name)
    return value


def body_json(data: bytes) -> dict[str, Any]:
    body = parse_json(data or b"{}", "", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def checked(value: Any, name: str) -> None:
    """Refuses nesting deeper than MAX_DEPTH, and text with a lone surrogate (JSON's "\\ud800" reads as one: it
    has no UTF-8 form, so the tokenizer could not take it), naming where. A loop, not recursion: the check must
    not itself be what a deep body breaks."""
    # Each entry: (value, depth, its parent's entry, its key there); the path is built only for a refusal.
    stack: list[tuple[Any, int, Any, str | int | None]] = [(value, 0, None, None)]
    while stack:
        entry = stack.pop()
        item, depth = entry[0], entry[1]
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                raise ApiError(400, f"{_path(entry, name)} is not valid Unicode text: it holds a lone surrogate")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ApiError(400, f"{name or 'the request body'} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                for key, inner in item.items():
                    if not key.isascii() and not _encodable(key):
                        raise ApiError(400, f"a key of {_path(entry, name) or 'the request body'} is not valid "
                                            "Unicode text: it holds a lone surrogate")
                    stack.append((inner, depth + 1, entry, key))
            else:
                stack.extend((inner, depth + 1, entry, index) for index, inner in enumerate(item))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path(entry: Any, name: str) -> str:
    keys = []
    while entry is not None and entry[2] is not None:
        keys.append(entry[3])
        entry = entry[2]
    path = name
    for key in reversed(keys):
        path = where(path, key)
    return path


# -- fields ---------------------------------------------------------------------------------------------------------
def number(value: Any, name: str, low: float, high: float) -> float:
    # Compared before any conversion: an integer too large for a float is refused here, not an OverflowError.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def bounded_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


def obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be an object")
    return value


def string(value: Any, name: str, default: str | None = None) -> str:
    """A string; absent (null) is ``default`` where there is one."""
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    return value


def name_of(value: Any, name: str) -> str:
    """A tool's name: a string that is not empty."""
    if not string(value, name):
        raise ApiError(400, f"{name} must not be empty")
    return str(value)


def flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def one_of(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(400, f"{name} must be one of {', '.join(json.dumps(a) for a in allowed)}")
    return value


def listed(value: Any, name: str, most: int, what: str, least: int = 0) -> list[Any]:
    """A list of at least ``least`` and at most ``most`` items (``what`` names them in the 400)."""
    if not isinstance(value, list) or len(value) < least:
        raise ApiError(400, f"{name} must be a {'non-empty ' if least else ''}list")
    if len(value) > most:
        raise ApiError(400, f"{name} has {len(value)} {what}; at most {most} may be sent in one request")
    return value


def each(value: Any, name: str, most: int, what: str, read: Callable[[Any, str], T], least: int = 0) -> list[T]:
    """``read`` applied to each item of a list (absent: none), with the item's path."""
    if value is None and not least:
        return []
    return [read(item, where(name, index)) for index, item in enumerate(listed(value, name, most, what, least))]


def stops(value: Any, name: str) -> tuple[str, ...]:
    """Stop sequences: a string is one stop (never its characters), or a list of strings; empty ones are dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"{name} must be a string or a list of strings")
    listed(value, name, MAX_STOPS, "stop sequences")
    return tuple(item for item in value if item)


def schema(value: Any, name: str) -> dict[str, Any]:
    """A JSON schema: an object, kept as given (the backend makes any schema safe for its grammar)."""
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be a JSON schema object")
    return value


def arguments(value: Any, name: str) -> dict[str, Any]:
    """A call's arguments: a JSON object, or a string that holds one (OpenAI's shape); none is {}."""
    refusal = f"{name} must be a JSON object (or a string holding one)"
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = parse_json(value, name, refusal)
    if not isinstance(value, dict):
        raise ApiError(400, refusal)
    return value


def text_of(content: Any, name: str, kinds: tuple[str, ...] = ("text", "input_text")) -> str:
    """A message's text: a string, or the text parts (of the types ``kinds``) of a list of parts (images and other
    parts are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{name} must be a string or a list of text parts")
    texts = []
    for index, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = obj(part, where(name, index)).get("type")
        if kind not in kinds:
            raise ApiError(400, f"{where(name, index)}: parts of type {shown(kind)} are not supported: "
                                "send text")
        texts.append(string(part.get("text"), where(where(name, index), "text"), default=""))
    return "".join(texts)


def tool_spec(item: Any, name: str, schema_key: str) -> ToolSpec:
    """A tool as both shapes carry it: a name, a description and a schema (``parameters``, or Anthropic's
    ``input_schema``) that may be left out."""
    tool = obj(item, name)
    raw = tool.get(schema_key)
    return ToolSpec(name_of(tool.get("name"), where(name, "name")),
                    string(tool.get("description"), where(name, "description"), default=""),
                    {"type": "object", "properties": {}} if raw is None else schema(raw, where(name, schema_key)))


def function_tool(item: Any, name: str) -> ToolSpec:
    """OpenAI's and Ollama's tool: {"type": "function", "function": {"name", "description", "parameters"}}."""
    tool = obj(item, name)
    if tool.get("type", "function") != "function":
        raise ApiError(400, f"{where(name, 'type')} must be \"function\"")
    return tool_spec(tool.get("function"), where(name, "function"), "parameters")


def function_call(item: Any, name: str) -> ToolCall:
    """A call in an assistant message, OpenAI's and Ollama's shape: {"id", "function": {"name", "arguments"}}."""
    call = obj(item, name)
    function = obj(call.get("function"), where(name, "function"))
    return ToolCall(name_of(function.get("name"), where(where(name, "function"), "name")),
                    arguments(function.get("arguments"), where(where(name, "function"), "arguments")),
                    id=string(call.get("id"), where(name, "id"), default=""))


def named_choice(choice: str, tools: list[ToolSpec], name: str) -> str:
    """A tool_choice that names a tool must name one of the tools offered."""
    if choice not in ("auto", "required") and tools and choice not in {tool.name for tool in tools}:
        raise ApiError(400, f"{name} names the tool {shown(choice)}, which is not among the tools")
    return choice


def messages_count(count: int) -> None:
    if count > MAX_MESSAGES:
        raise ApiError(400, f"messages has {count} messages; at most {MAX_MESSAGES} may be sent in one request")


def token_id(value: Any, name: str, vocab: int) -> int:
    """A token id of the model's vocabulary (``vocab`` ids): one outside it would be read out of bounds by
    native code, so it is refused here, by its place in the request."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        raise ApiError(400, f"{name} must be a token id of the model's vocabulary, from 0 to {vocab - 1} "
                            f"(got {shown(value)})")
    return value


def token_ids(value: list[Any], name: str, vocab: int) -> list[int]:
    """A non-empty list of token ids, each checked (a plain loop: a body may hold a million of them)."""
    if not value:
        raise ApiError(400, f"{name} must not be empty")
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < vocab:
            token_id(item, where(name, index), vocab)
    return value


def logit_bias(value: Any, name: str) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias: {"token id": bias from -100 to 100}, the ids the model's own (JSON keys are text; the
    vocabulary is checked once the model is known, ``openai_api.checked_for``)."""
    if value is None:
        return ()
    biases = obj(value, name)
    if len(biases) > MAX_LOGIT_BIAS:
        raise ApiError(400, f"{name} biases {len(biases)} tokens; at most {MAX_LOGIT_BIAS} may be biased")
    low, high = LOGIT_BIAS_RANGE
    pairs = []
    for key, bias in biases.items():
        place = where(name, key)
        # Past 18 digits a key is out of any vocabulary (and int() refuses text of over 4300 digits).
        if not (key.isascii() and key.isdigit() and len(key) <= 18):
            raise ApiError(400, f"{place}: the keys of {name} must be token ids of the model's vocabulary")
        pairs.append((int(key), number(bias, place, low, high)))
    return tuple(pairs)


def options_from(base: GenerationOptions, changes: dict[str, Any]) -> GenerationOptions:
    return replace(base, **changes)


def offering(messages: list[Message], options: GenerationOptions, tools: list[ToolSpec], choice: str) -> Request:
    """A request with its tools, as OpenAI's and Anthropic's tool_choice say: "none" offers none at all."""
    if choice == "none":
        return Request(messages, options, [], "auto")
    return Request(messages, options, tools, choice)


MAX_MODEL_NAME = 400
"""Characters a model name may have (Ollama's longest real names are under 100)."""


def model_of(body: dict[str, Any], *keys: str) -> str | None:
    """The model a request names (the first of ``keys`` given; ``model`` by default), or None for the default one.
    """
    for key in keys or ("model",):
        value = body.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ApiError(400, f"{key} must be a string: the name of a served model (GET /v1/models lists them)")
        if len(value) > MAX_MODEL_NAME or not value.isprintable():
            raise ApiError(400, f"{key} is not a model name (printable, at most {MAX_MODEL_NAME} characters)")
        return value
    return None


def keep_alive_of(body: dict[str, Any]) -> float | None:
    """Ollama's keep_alive in seconds (FOREVER for a negative one), or None for the server's default."""
    from localllm.core.units import parse_duration

    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ApiError(400, f"keep_alive must be a duration: {error}") from None
