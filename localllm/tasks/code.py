"""Code assist: explain, fix, convert, document, test and generate code. Generated code is never executed.

A file that does not fit the window is not cut: the relevant definitions are sent instead (the requested line
range, or the top-level definitions around the lines a traceback names), and the caller is told what was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from localllm.core.errors import ContextOverflow, LocalLLMError, UsageError
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks import prompts
from localllm.tasks.chunking import code_pieces

LANGUAGES = {
    ".py": ("Python", "python", "pytest"), ".js": ("JavaScript", "javascript", "node:test or Jest"),
    ".mjs": ("JavaScript", "javascript", "node:test or Jest"), ".ts": ("TypeScript", "typescript", "Jest or Vitest"),
    ".tsx": ("TypeScript", "tsx", "Jest or Vitest"), ".jsx": ("JavaScript", "jsx", "Jest"),
    ".go": ("Go", "go", "the testing package"), ".rs": ("Rust", "rust", "#[test] functions"),
    ".java": ("Java", "java", "JUnit 5"), ".kt": ("Kotlin", "kotlin", "JUnit 5"), ".c": ("C", "c", "a test main"),
    ".h": ("C", "c", "a test main"), ".cpp": ("C++", "cpp", "GoogleTest"), ".cc": ("C++", "cpp", "GoogleTest"),
    ".cs": ("C#", "csharp", "xUnit"), ".rb": ("Ruby", "ruby", "RSpec or minitest"), ".php": ("PHP", "php", "PHPUnit"),
    ".swift": ("Swift", "swift", "XCTest"), ".sh": ("shell", "bash", "bats"), ".sql": ("SQL", "sql", "pgTAP"),
    ".lua": ("Lua", "lua", "busted"), ".r": ("R", "r", "testthat"), ".jl": ("Julia", "julia", "Test"),
}
# By name, the plain fence of each language wins over a dialect's (.jsx and .tsx must not make "javascript" jsx).
NAMED_LANGUAGES = {name.lower(): (name, fence, framework)
                   for name, fence, framework in reversed(LANGUAGES.values())}
NAMED_LANGUAGES.update({"js": NAMED_LANGUAGES["javascript"], "ts": NAMED_LANGUAGES["typescript"],
                        "py": NAMED_LANGUAGES["python"], "c++": NAMED_LANGUAGES["c++"],
                        "golang": NAMED_LANGUAGES["go"], "bash": NAMED_LANGUAGES["shell"]})
_RANGE = re.compile(r"^(?P<path>.+?):(?P<start>\d+)(?:-(?P<end>\d+))?$")
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n```|\Z)", re.DOTALL)
ANSWER_TOKENS = 768


@dataclass(frozen=True)
class Language:
    name: str
    fence: str
    framework: str


def language_for(path: str | None = None, name: str | None = None) -> Language:
    if name is not None:
        found = NAMED_LANGUAGES.get(name.lower())
        if found is None:
            raise UsageError(f"unknown language {name!r}",
                             hint=f"for example: {', '.join(sorted({v[0].lower() for v in LANGUAGES.values()}))}")
        return Language(*found)
    suffix = Path(path or "").suffix.lower()
    return Language(*LANGUAGES.get(suffix, ("code", "", "the usual test framework")))


@dataclass(frozen=True)
class CodeSource:
    path: Path
    text: str
    start_line: int
    end_line: int
    total_lines: int

    @property
    def what(self) -> str:
        if self.start_line == 1 and self.end_line == self.total_lines:
            return f"all of {self.path.name}, {self.total_lines} lines"
        return f"{self.path.name} lines {self.start_line}-{self.end_line} of {self.total_lines}"


def parse_target(spec: str) -> tuple[Path, int | None, int | None]:
    """``app.py``, ``app.py:40`` or ``app.py:40-80``."""
    match = _RANGE.match(spec)
    if match and not Path(spec).exists():
        start = int(match.group("start"))
        end = int(match.group("end") or start)
        if start < 1 or end < start:
            raise UsageError(f"bad line range in {spec!r}", hint="use FILE:START-END with START <= END, from 1")
        return Path(match.group("path")), start, end
    return Path(spec), None, None


def read_code(spec: str) -> CodeSource:
    path, start, end = parse_target(spec)
    if not path.is_file():
        raise UsageError(f"no such file: {path}", hint="check the path")
    from localllm.tasks.documents import read_limited

    with path.open("rb") as handle:
        data = read_limited(handle, path.name, text_only=False)
    if b"\x00" in data[:8192]:
        raise UsageError(f"{path} looks like a binary file", hint="pass a source file")
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if not lines:
        raise UsageError(f"{path} is empty", hint="there is no code to work on")
    if start is None:
        return CodeSource(path, text, 1, len(lines), len(lines))
    if start > len(lines):
        raise UsageError(f"{path} has {len(lines)} lines; the range starts at {start}", hint="check the range")
    end = min(end if end is not None else start, len(lines))
    return CodeSource(path, "".join(lines[start - 1:end]), start, end, len(lines))


def traceback_lines(error: str, path: Path) -> list[int]:
    """Line numbers of ``path`` that a traceback or compiler message names (``File "x.py", line 12``, ``x.py:12``)."""
    name = re.escape(path.name)
    found = [int(m.group(1)) for m in re.finditer(rf'{name}"?,? line (\d+)', error)]
    found += [int(m.group(1)) for m in re.finditer(rf"{name}:(\d+)", error)]
    return sorted(set(found))


def relevant_part(source: CodeSource, lines: list[int]) -> CodeSource:
    """The top-level definitions that hold ``lines`` (or the last lines named, when many are)."""
    text = source.text
    line_starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            line_starts.append(index + 1)

    def line_of(offset: int) -> int:
        low, high = 0, len(line_starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if line_starts[middle] <= offset:
                low = middle
            else:
                high = middle - 1
        return low + 1

    chosen = []
    for piece in code_pieces(text):
        first, last = line_of(piece.start), line_of(max(piece.end - 1, piece.start))
        if any(first <= line <= last for line in lines):
            chosen.append((first, last, piece))
    if not chosen:
        return source
    first, last = chosen[0][0], chosen[-1][1]
    body = text[chosen[0][2].start:chosen[-1][2].end]
    return CodeSource(source.path, body, first, last, source.total_lines)


def fit_source(source: CodeSource, count_prompt, build, window: int, lines: list[int] | None = None,
               answer_tokens: int | None = None) -> CodeSource:
    """The source itself when its prompt fits; else the definitions around ``lines``; else an error that says how
    to narrow it. ``answer_tokens``: the room the answer needs (default ANSWER_TOKENS)."""
    answer_tokens = answer_tokens or ANSWER_TOKENS
    if count_prompt(build(source)) + answer_tokens <= window:
        return source
    if lines:
        narrowed = relevant_part(source, lines)
        if count_prompt(build(narrowed)) + answer_tokens <= window:
            return narrowed
    tokens = count_prompt(build(source))
    raise ContextOverflow(
        f"{source.what} takes {tokens:,} tokens with the instructions; with {answer_tokens:,} kept for the answer, "
        f"that is over the {window:,}-token window",
        hint=f"name a line range, e.g. {source.path.name}:1-200, or raise -o ctx=N", prompt_tokens=tokens,
        window=window)


def code_messages(settings: Settings, action: str, source: CodeSource | None, *, language: Language,
                  target: Language | None = None, error: str = "", request: str = "") -> list[Message]:
    values: dict[str, object] = {"language": language.name, "fence": (target or language).fence}
    if source is not None:
        values.update(code=source.text.rstrip("\n"), what=source.what)
    if action == "fix":
        values["error"] = error.strip()
    elif action == "convert":
        values["target"] = target.name if target else ""
    elif action == "test":
        values["framework"] = language.framework
    elif action == "gen":
        values["request"] = request.strip()
    return [Message("user", prompts.render(f"code-{action}", settings, **values))]


def first_code_block(markdown: str) -> str | None:
    match = _FENCE.search(markdown)
    return match.group(1) if match else None


def write_code(markdown: str, path: str, *, force: bool) -> Path:
    """Write the answer's first code block to a new file; never overwrite without ``force``; never run it."""
    code = first_code_block(markdown)
    if code is None:
        raise LocalLLMError("the answer holds no code block, so nothing was written", hint="run the command again")
    target = Path(path).expanduser()
    if target.exists() and not force:
        raise UsageError(f"{target} exists; it was left as it was", hint="choose a new path, or pass --force")
    if target.is_dir():
        raise UsageError(f"{target} is a folder", hint="name a file")
    from localllm.core.files import write_text_atomically

    write_text_atomically(target, code.rstrip("\n") + "\n")
    return target


# -- one request, for the CLI and the app ------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeRequest:
    messages: list[Message]
    options: GenerationOptions
    sent: str
    """What part of the source went into the prompt, for the status line."""
    title: str = ""
    """The recorded exchange's title: the action and what it was asked about."""

    @property
    def prompt(self) -> str:
        """The message the model got, recorded as the user's turn (a chat opened from it goes on with the code)."""
        return self.messages[-1].content


def check_inputs(action: str, source: CodeSource | None, detail: str) -> None:
    """What an action lacks, found before a model is touched."""
    if action == "gen":
        if not detail.strip():
            raise UsageError("describe the code to write", hint="say what it should do, e.g. a CLI that renames photos")
        return
    if source is None:
        raise UsageError(f"{action} needs code", hint="open a file, or type code in the editor")
    if action == "fix" and not detail.strip():
        raise UsageError("fix needs the error", hint="paste the error message or traceback in the box by the action")
    if action == "convert":
        if not detail.strip():
            raise UsageError("convert needs a target language", hint="type it by the action, e.g. JavaScript")
        language_for(name=detail.strip())


def build_request(settings: Settings, backend, options: GenerationOptions, action: str, source: CodeSource | None,
                  detail: str, *, language_name: str | None = None) -> CodeRequest:
    """The messages and options of one code action, for `localllm code ACTION` and the app's code pane alike.
    ``detail``: what to write (gen), the error (fix) or the target language (convert); ``language_name``: the
    language to write in for gen (else the source's, else Python)."""
    check_inputs(action, source, detail)
    options = options.with_overrides(max_tokens=options.max_tokens or ANSWER_TOKENS)
    detail = detail.strip()
    language = language_for(str(source.path) if source is not None else None)
    if action == "gen":
        if language_name or source is None:
            language = language_for(name=language_name or "python")
        messages = code_messages(settings, "gen", None, language=language, request=detail)
        sent, fence, about = "the description", language.fence, detail
    else:
        assert source is not None, "check_inputs: every action but gen needs code"
        target = language_for(name=detail) if action == "convert" else None
        error = detail if action == "fix" else ""
        lines = traceback_lines(error, source.path) if error else None

        def build(part: CodeSource) -> list[Message]:
            return code_messages(settings, action, part, language=language, target=target, error=error)

        chosen = fit_source(source, backend.count_prompt_tokens, build, backend.context_window, lines,
                                 answer_tokens=options.max_tokens)
        messages = build(chosen)
        sent = chosen.what + ("" if chosen is source else " (the definitions around the error)")
        fence, about = (target or language).fence, chosen.what
    if action != "explain":
        options = options.with_overrides(answer_prefix=f"```{fence}\n")
    return CodeRequest(messages, options, sent, title=f"code {action}: {about}")
