"""The one gate between what constrains an answer and llama.cpp's grammar sampler.

llama.cpp hands a grammar it cannot parse to the sampler chain as a null pointer, and the first sampled token then
crashes the process. Every grammar localllm gives llama.cpp (from a JSON schema: a response format, a label set, a
tool's parameters; or a grammar written here around them) therefore comes out of ``GrammarGate``, which returns
only text llama.cpp has parsed. A schema is made safe in this order:

1. what can be translated is: regular-expression classes (``\\d``, ``\\w``, ``\\s``, ``\\S``, ``[\\s\\S]``, escaped
   punctuation) become the character classes GBNF has, and quotes and backslashes in property names, enum values
   and consts are escaped (llama-cpp-python's converter escapes neither);
2. what cannot is dropped, keyword by keyword, and said once: a pattern with look-arounds or back-references, a
   repetition count over ``MAX_REPEAT`` (one 90-byte ``maxLength`` would otherwise expand into megabytes of rules),
   a remote ``$ref``;
3. else the generic JSON grammar.

The answer is validated against the whole schema, patterns included, by whoever asked for it; the grammar only
keeps a small model on the path. Built grammars are kept within a byte budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger("localllm")

MAX_REPEAT = 512
"""The largest repetition count (minLength, maxItems, a pattern's {n,m}, ...) put into a grammar: the converter
writes one nested rule per repetition, so a larger count grows the grammar, and llama.cpp's parse of it, without
bound (llama.cpp 0.3.36 refuses a maxLength of 1,024 already, and parses 512). A larger count is left to the
validation of the answer."""
MAX_DEPTH = 48
"""Nesting of a schema beyond which it is constrained to generic JSON only."""
MAX_NODES = 20_000
"""Schema objects and lists beyond which it is constrained to generic JSON only."""
MAX_GRAMMAR_BYTES = 512 * 1024
"""Grammar text beyond which the generic JSON grammar is used instead."""
MAX_NESTING = 600
"""Parentheses nested in one rule beyond which the grammar is not handed over (llama.cpp parses them recursively
on the thread's stack)."""
CACHE_BYTES = 8 * 1024 * 1024
"""Grammar text kept for reuse, least recently used first out."""

_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class GrammarRefused(ValueError):
    """A schema or grammar that cannot be made into one llama.cpp parses."""


# -- regular expressions -------------------------------------------------------------------------------------------
_CLASS_OF = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r\\x0B\\x0C"}
_NEGATED = {"D": "d", "W": "w", "S": "s"}
_ANY = "[\\x00-\\U0010FFFF]"
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")
_PASSED_ESCAPES = {"t": "\\t", "n": "\\n", "r": "\\r", "f": "\\x0C", "v": "\\x0B"}


def _hex(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def translate_pattern(pattern: str) -> str:
    """A JSON-schema pattern (ECMA-262 syntax, unanchored unless it says otherwise) as one the converter turns into
    GBNF llama.cpp parses: anchored, shorthand classes spelled out, punctuation escapes as classes of one
    character. Raises GrammarRefused for what GBNF cannot say."""
    if "\x00" in pattern:
        raise GrammarRefused("a NUL character")
    body = pattern
    anchored_start = body.startswith("^")
    if anchored_start:
        body = body[1:]
    anchored_end = body.endswith("$") and not _escaped_at(body, len(body) - 1)
    if anchored_end:
        body = body[:-1]
    out: list[str] = []
    i, depth = 0, 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body):
                raise GrammarRefused("a trailing backslash")
            piece, i = _escape_outside(body, i + 1)
            out.append(piece)
            continue
        if char == "[":
            piece, i = _char_class(body, i + 1)
            out.append(piece)
            continue
        if char == "(":
            if body.startswith("(?:", i):
                out.append("(")
                i += 3
            elif body.startswith("(?P<", i) or (body.startswith("(?<", i) and body[i + 3:i + 4] not in ("=", "!")):
                end = body.find(">", i)
                if end < 0:
                    raise GrammarRefused("an unclosed group name")
                out.append("(")
                i = end + 1
            elif body.startswith("(?", i):
                raise GrammarRefused("a look-around or flag group")
            else:
                out.append("(")
                i += 1
            depth += 1
            continue
        if char == ")":
            depth -= 1
            if depth < 0:
                raise GrammarRefused("unbalanced parentheses")
        elif char in "^$":
            raise GrammarRefused(f"an anchor ({char}) inside the pattern")
        elif char == "{":
            match = _QUANTIFIER.match(body, i)
            if match is None or not (match.group(1) or match.group(3)):
                raise GrammarRefused("a { that is not a repetition count")
            counts = [int(n) for n in (match.group(1), match.group(3)) if n]
            if max(counts) > MAX_REPEAT:
                raise GrammarRefused(f"a repetition count over {MAX_REPEAT}")
            if match.group(3) and int(match.group(1) or 0) > int(match.group(3)):
                raise GrammarRefused("a repetition count whose lower bound is above its upper one")
            out.append(match.group(0))
            i = match.end()
            i = _skip_lazy(body, i)
            continue
        elif char in "*+?":
            if not out or out[-1] in ("(", "|"):
                raise GrammarRefused(f"a {char} with nothing to repeat")
            out.append(char)
            i = _skip_lazy(body, i + 1)
            continue
        elif char in '"]}':
            # A quote: the converter escapes it in its own way, a class of one needs none. A lone ] or }: the
            # converter stops advancing on them (it loops for ever), though they only mean themselves here.
            out.append(f"[{_hex(char)}]")  # the converter escapes quotes in its own way; a class of one needs none
            i += 1
            continue
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"[{_hex(char)}]")
            i += 1
            continue
        out.append(char)
        i += 1
    if depth:
        raise GrammarRefused("unbalanced parentheses")
    inner = "".join(out)
    if not anchored_start or not anchored_end:
        inner = ("" if anchored_start else ".*") + f"({inner})" + ("" if anchored_end else ".*")
    return f"^{inner}$"


def _escaped_at(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _skip_lazy(body: str, i: int) -> int:
    """Past a lazy (?) or possessive (+) modifier: the language is the same, and GBNF has neither."""
    return i + 1 if i < len(body) and body[i] in "?+" else i


def _escape_outside(body: str, i: int) -> tuple[str, int]:
    """An escape outside a class (``i`` is just past the backslash): (its GBNF-safe regex, the next index)."""
    char = body[i]
    if char in _CLASS_OF:
        return f"[{_CLASS_OF[char]}]", i + 1
    if char in _NEGATED:
        return f"[^{_CLASS_OF[_NEGATED[char]]}]", i + 1
    if char in _PASSED_ESCAPES:
        return f"[{_PASSED_ESCAPES[char]}]", i + 1
    if char in "xu":
        code, end = _code_point(body, i)
        return f"[{_hex(chr(code))}]", end
    if char.isalnum():
        raise GrammarRefused(f"the escape \\{char}")
    return f"[{_hex(char)}]", i + 1


def _code_point(body: str, i: int) -> tuple[int, int]:
    """A \\xNN, \\uNNNN or \\u{N...} escape (``i`` at the x or u): (the code point, the next index)."""
    if body[i] == "x":
        digits, end = body[i + 1:i + 3], i + 3
        wanted = len(digits) == 2
    elif body.startswith("u{", i):
        close = body.find("}", i)
        digits, end = (body[i + 2:close], close + 1) if close > 0 else ("", i)
        wanted = 1 <= len(digits) <= 6
    else:
        digits, end = body[i + 1:i + 5], i + 5
        wanted = len(digits) == 4
    if not wanted or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise GrammarRefused("a malformed \\x or \\u escape")
    code = int(digits, 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise GrammarRefused("an escape that is not a character")
    return code, end


def _char_class(body: str, i: int) -> tuple[str, int]:
    """A bracket class (``i`` just past the ``[``) as GBNF's: (the class, the next index). Every character but
    letters and digits is written as a hex escape, so nothing in it means more than itself to llama.cpp."""
    negated = body.startswith("^", i)
    if negated:
        i += 1
    items: list[tuple[int, int] | str] = []  # ranges of code points, or a shorthand class's letter
    first = True
    while True:
        if i >= len(body):
            raise GrammarRefused("an unclosed [")
        char = body[i]
        if char == "]" and not first:
            i += 1
            break
        first = False
        if char == "\\":
            if i + 1 >= len(body):
                raise GrammarRefused("a trailing backslash")
            esc = body[i + 1]
            if esc in _CLASS_OF or esc in _NEGATED:
                items.append(esc)
                i += 2
                continue
            if esc in "xu":
                low, i = _code_point(body, i + 1)
            elif esc in _PASSED_ESCAPES:
                low, i = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11}[esc], i + 2
            elif esc == "b":
                low, i = 8, i + 2
            elif esc.isalnum():
                raise GrammarRefused(f"the escape \\{esc} in a class")
            else:
                low, i = ord(esc), i + 2
        else:
            low, i = ord(char), i + 1
        if body.startswith("-", i) and i + 1 < len(body) and body[i + 1] != "]":
            high_char = body[i + 1]
            if high_char == "\\":
                esc = body[i + 2:i + 3]
                if esc in "xu" and esc:
                    high, i = _code_point(body, i + 2)
                elif esc and not esc.isalnum():
                    high, i = ord(esc), i + 3
                else:
                    raise GrammarRefused("a range that ends in a class")
            else:
                high, i = ord(high_char), i + 2
            if high < low:
                raise GrammarRefused("a range whose end is before its start")
            items.append((low, high))
        else:
            items.append((low, low))
    letters = {item for item in items if isinstance(item, str)}
    if any(letter.upper() in letters and letter.lower() in letters for letter in letters):
        return ("[^\\x00-\\U0010FFFF]" if negated else _ANY), i  # [\s\S] and its kind: any character
    if letters & set(_NEGATED):
        if negated or len(items) > 1:
            raise GrammarRefused("a negated shorthand class beside other characters in a class")
        return f"[^{_CLASS_OF[_NEGATED[items[0]]]}]", i  # type: ignore[index]
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(_CLASS_OF[item])
        else:
            low, high = item
            parts.append(_class_char(low) + ("" if low == high else "-" + _class_char(high)))
    if not parts:
        raise GrammarRefused("an empty class")
    if negated and _covers_everything(items):
        raise GrammarRefused("a class that matches no character")
    return f"[{'^' if negated else ''}{''.join(parts)}]", i


def _class_char(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else _hex(char)


def _covers_everything(items: Iterable[tuple[int, int] | str]) -> bool:
    ranges = sorted(item for item in items if isinstance(item, tuple))
    reached = 0
    for low, high in ranges:
        if low > reached:
            return False
        reached = max(reached, high + 1)
    return reached > 0x10FFFF


# -- schemas -------------------------------------------------------------------------------------------------------
class _Sanitizer:
    """A copy of a schema that llama-cpp-python's converter can turn into a grammar, and what was left out."""

    def __init__(self) -> None:
        self.dropped: list[str] = []
        self.nodes = 0

    def drop(self, what: str) -> None:
        if what not in self.dropped:
            self.dropped.append(what)

    def copy(self, value: Any, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise GrammarRefused(f"the schema has more than {MAX_NODES:,} parts")
        if depth > MAX_DEPTH:
            raise GrammarRefused(f"the schema is nested more than {MAX_DEPTH} deep")
        if isinstance(value, list):
            return [self.copy(item, depth + 1) for item in value]
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if key in _COUNTS:
                if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                    self.drop(f"{key} {json.dumps(item)[:40]} (not a count)")
                    continue
                if item > MAX_REPEAT:
                    self.drop(f"{key} {item} (over {MAX_REPEAT}: checked on the answer only)")
                    continue
            elif key == "pattern":
                if not isinstance(item, str):
                    self.drop("a pattern that is not a string")
                    continue
                try:
                    item = translate_pattern(item)
                except GrammarRefused as why:
                    self.drop(f"pattern {item[:60]!r} ({why})")
                    continue
            elif key == "$ref":
                if not isinstance(item, str) or not item.startswith("#/"):
                    self.drop(f"$ref {str(item)[:60]!r} (only references to a part of the schema, #/..., are followed)")
                    continue
            elif key in ("format",) and not isinstance(item, str):
                continue
            out[key] = self.copy(item, depth + 1)
        minimum, maximum = out.get("minLength", out.get("minItems")), out.get("maxLength", out.get("maxItems"))
        if isinstance(minimum, int) and isinstance(maximum, int) and minimum > maximum:
            for key in _COUNTS:
                out.pop(key, None)
            self.drop("a minimum count above its maximum")
        return out


def _convert(schema: Any, prop_order: list[str]) -> str:
    """llama-cpp-python's schema converter with its literals escaped for GBNF: it writes a property name, an enum
    value or a const with its quotes escaped but not its backslashes, so ``"a\\"b"`` ends the literal early and
    llama.cpp cannot parse the grammar."""
    from llama_cpp import llama_grammar

    class Escaping(llama_grammar.SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            return '"' + "".join(_LITERAL_ESCAPES.get(c) or (_hex(c) if ord(c) < 0x20 or c == "\x7f" else c)
                                 for c in literal) + '"'

    converter = Escaping(prop_order={name: index for index, name in enumerate(prop_order)},
                         allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(schema, "stdin")
    converter.visit(resolved, "")
    return str(converter.format_grammar())


def schema_rules(schema: Any, prop_order: Iterable[str] = (), dropped: list[str] | None = None) -> str:
    """GBNF rules (``root`` first among them) for a JSON schema, made safe as the module says; what was left out
    is added to ``dropped``. Raises GrammarRefused when no grammar narrower than generic JSON can be made."""
    if not isinstance(schema, Mapping):
        raise GrammarRefused("the schema is not an object")
    sanitizer = _Sanitizer()
    safe = sanitizer.copy(schema)
    try:
        text = _convert(safe, list(prop_order))
    except RecursionError:
        raise GrammarRefused("the schema refers to itself too deeply") from None
    except Exception as error:  # the converter asserts or raises plain exceptions on what it does not support
        raise GrammarRefused(f"the converter does not support it ({_short(error)})") from None
    if dropped is not None:
        dropped.extend(item for item in sanitizer.dropped if item not in dropped)
    return text


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def check_text(text: str) -> None:
    """What llama.cpp must never be given, checked before it parses anything: size, NULs, and parentheses nested
    deeper than its recursive parser should go."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_GRAMMAR_BYTES:
        raise GrammarRefused(f"the grammar is over {MAX_GRAMMAR_BYTES // 1024} KiB")
    if "\x00" in text:
        raise GrammarRefused("the grammar has a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise GrammarRefused("the grammar has a lone surrogate") from None
    depth = deepest = 0
    in_literal = in_class = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_literal:
            in_literal = char != '"'
        elif in_class:
            in_class = char != "]"
        elif char == '"':
            in_literal = True
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
        elif char == "\n":
            depth = 0
    if deepest > MAX_NESTING:
        raise GrammarRefused(f"the grammar nests parentheses more than {MAX_NESTING} deep")


class GrammarGate:
    """Grammars for one loaded model: each parsed by llama.cpp (with the model's vocabulary) before it is handed
    over, kept within ``CACHE_BYTES``, and every fallback said once on the "localllm" logger (stderr for a
    command, the log for serve)."""

    def __init__(self, vocab: Callable[[], Any], cache_bytes: int = CACHE_BYTES) -> None:
        self._vocab = vocab
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cached_bytes = 0
        self._cache_bytes = cache_bytes
        self._said: set[str] = set()
        self._lock = threading.RLock()
        """serve's requests build grammars from threads of their own, at once: one at a time through the cache."""

    def for_schema(self, schema: Any) -> Any:
        """A grammar (llama-cpp-python's LlamaGrammar) for answers to ``schema``: translated, else narrowed, else
        generic JSON, as the module says."""
        with self._lock:
            return self._for_schema(schema)

    def _for_schema(self, schema: Any) -> Any:
        try:
            key = "schema:" + json.dumps(schema, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            key = None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        dropped: list[str] = []
        grammar = None
        try:
            grammar = self._parsed(schema_rules(schema, dropped=dropped))
            if dropped:
                self.say("the JSON schema's " + "; ".join(dropped) + " cannot be enforced while the answer is "
                         "written: the rest of the schema is, and the answer is checked against all of it")
        except GrammarRefused as why:
            self.say(f"the JSON schema could not be made into a grammar ({why}); answers are constrained to JSON "
                     "and checked against the schema")
        if grammar is None:
            from llama_cpp.llama_grammar import JSON_GBNF

            grammar = self._parsed(JSON_GBNF)
        if key is not None:
            self._keep(key, grammar)
        return grammar

    def for_text(self, text: str) -> Any:
        """A grammar written here (e.g. a tool call's around schema rules), once llama.cpp has parsed it. Raises
        GrammarRefused when it does not parse."""
        with self._lock:
            return self._for_text(text)

    def _for_text(self, text: str) -> Any:
        key = "text:" + text
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        grammar = self._parsed(text)
        self._keep(key, grammar)
        return grammar

    def say(self, note: str) -> None:
        if note not in self._said:
            self._said.add(note)
            logger.warning("note: %s", note)

    def _parsed(self, text: str) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        check_text(text)
        if not parses(text, self._vocab()):
            raise GrammarRefused("llama.cpp could not parse the grammar")
        return LlamaGrammar.from_string(text, verbose=False)

    def _keep(self, key: str, grammar: Any) -> None:
        size = len(key) + len(grammar._grammar)
        if size > self._cache_bytes:
            return
        self._cache[key] = grammar
        self._cached_bytes += size
        while self._cached_bytes > self._cache_bytes:
            old_key, old = self._cache.popitem(last=False)
            self._cached_bytes -= len(old_key) + len(old._grammar)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes


def parses(text: str, vocab: Any) -> bool:
    """Whether llama.cpp's own parser takes ``text`` (with a ``root`` rule): the sampler it builds is freed at
    once. Callers check the text with check_text first."""
    import llama_cpp

    with _stderr_muted():
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


_MUTE = threading.Lock()


@contextlib.contextmanager
def _stderr_muted():
    """llama.cpp prints a grammar it refuses whole on the process's stderr (C's own, past Python's logging): up to
    half a megabyte of a client's text in serve's log, or over the app's screen. The refusal is said here in one
    line instead, so file descriptor 2 points at the null device for the parse (about a millisecond)."""
    with _MUTE:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
