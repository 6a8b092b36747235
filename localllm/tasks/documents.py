"""Read what the user hands a task: text, Markdown, code, HTML, PDF, CSV/JSONL rows, several files, or stdin.

A Document keeps its text once and describes its structure as spans (offsets into that text), so splitting a
large input does not copy it.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from localllm.core.errors import LocalLLMError, UsageError

CODE_SUFFIXES = {
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".scala", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".sh", ".bash", ".zsh", ".lua", ".r", ".jl", ".sql",
    ".pl", ".hs", ".ex", ".exs", ".dart", ".m", ".zig",
}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx", ".rst"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
ROW_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson"}


class InputError(LocalLLMError):
    """A file a task cannot read: binary, empty, unreadable, a PDF without text."""


@dataclass
class Document:
    name: str
    kind: str
    """text, markdown, code, html, pdf or rows"""
    text: str
    warnings: list[str] = field(default_factory=list)


def kind_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in CODE_SUFFIXES:
        return "code"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix == ".pdf":
        return "pdf"
    if suffix in ROW_SUFFIXES:
        return "rows"
    return "text"


MAX_INPUT_BYTES = 512 << 20
"""More text than any task here can get through (about 130 million tokens): a larger input, or an endless one such
as /dev/zero, is refused instead of filling the memory."""


def read_limited(stream, name: str, *, limit: int = MAX_INPUT_BYTES, text_only: bool = True) -> bytes:
    """``stream`` to its end but never past ``limit``; with ``text_only``, a start that looks binary (and is not a
    PDF) is refused before the rest is read."""
    head = stream.read(65536) or b""
    if text_only and b"\x00" in head[:8192] and not head.startswith(b"%PDF-"):
        raise InputError(f"{name} looks like a binary file, not text",
                         hint="pass a text, Markdown, code, HTML, PDF, CSV or JSONL file")
    chunks, total = [head], len(head)
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise InputError(f"{name} is larger than {limit >> 20} MiB", hint="split it, and work on it in parts")
        chunks.append(chunk)


def _decode(data: bytes, name: str) -> tuple[str, list[str]]:
    if b"\x00" in data[:8192]:
        raise InputError(f"{name} looks like a binary file, not text",
                         hint="pass a text, Markdown, code, HTML, PDF, CSV or JSONL file")
    # utf-8-sig: a byte-order mark (Excel's CSV, Notepad's text) is not content; a CSV's first column keeps its name.
    text = data.decode("utf-8-sig", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode())
    warnings = [f"{name} is not valid UTF-8: {replaced} byte(s) were replaced with U+FFFD"] if replaced else []
    return text, warnings


def html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    blocks = []
    for line in soup.get_text("\n").splitlines():
        line = " ".join(line.split())
        blocks.append(line)
    text = "\n".join(blocks)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def pdf_to_text(data: bytes, name: str) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise InputError(f"{name} is a PDF, and reading PDFs needs the pypdf package",
                         hint='pip install "localllm[pdf]"') from None
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise InputError(f"{name} is not a readable PDF ({exc})", hint="check the file") from None
    text = "\n\n".join(f"[page {number}]\n{page}" for number, page in enumerate(pages, start=1) if page)
    if not text:
        raise InputError(f"{name} has no text layer (a scanned PDF?)", hint="run OCR on it first, e.g. ocrmypdf")
    return text


def rows_to_text(text: str, name: str) -> tuple[str, list[str]]:
    """One line per row, ``row N: field=value; ...``, so rows stay whole when a document is split."""
    from localllm.tasks.rows import parse_rows  # rows reads whole documents through this module

    lines, warnings = [], []
    for row in parse_rows(text, name, None, whole_record=True):
        if row.problem is not None:
            warnings.append(f"{name} {row.problem}; skipped")
        else:
            lines.append(f"row {row.number}: {row.text}")
    return "\n".join(lines), warnings


def read_input_file(path: str, *, text_only: bool = True) -> tuple[bytes, str]:
    """The bytes of the file at ``path`` (at most MAX_INPUT_BYTES) and its name, or an InputError that says what
    the path is instead: missing, a folder, a socket. Devices and pipes are read as a stream, always ``text_only``:
    /dev/zero is refused by its first block, not read to the limit."""
    import stat

    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"no such file: {path}", hint="check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a folder", hint="pass the files inside it, e.g. folder/*.md")
    if stat.S_ISSOCK(mode):  # opening one fails with "No such device or address"
        raise InputError(f"{path} is a Unix socket, not a file: it cannot be read",
                         hint="name a file, or pipe a program's output in: program | localllm ...")
    try:
        with file.open("rb") as handle:
            return read_limited(handle, file.name, text_only=text_only or not stat.S_ISREG(mode)), file.name
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check its permissions") from None


def read_document(path: str, *, stdin=None) -> Document:
    """Read one input; ``-`` is stdin."""
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        data, name = read_limited(stream, "stdin"), "stdin"
    else:
        data, name = read_input_file(path)
    kind = kind_of(name)
    if not data.strip():
        raise InputError(f"{name} is empty", hint="there is nothing to work on")
    if kind == "pdf" or data[:5] == b"%PDF-":
        return Document(name, "pdf", pdf_to_text(data, name))
    text, warnings = _decode(data, name)
    if kind == "html" or (kind == "text" and text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))):
        return Document(name, "html", html_to_text(text), warnings)
    if kind == "rows":
        rows, row_warnings = rows_to_text(text, name)
        if not rows:
            raise InputError(f"{name} has no readable rows", hint="check its format")
        return Document(name, "rows", rows, warnings + row_warnings)
    return Document(name, kind, text, warnings)


def read_documents(paths: list[str], *, stdin=None) -> list[Document]:
    if not paths:
        if stdin is None and (sys.stdin is None or sys.stdin.isatty()):
            raise UsageError("no input: name files, or pipe text in", hint="cat report.txt | localllm summarize")
        paths = ["-"]
    if paths.count("-") > 1:
        raise UsageError("stdin (-) can be read only once", hint="name it once")
    if "-" in paths and stdin is None and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError("no input on stdin: it is a terminal", hint="name a file, or pipe text in")
    return [read_document(path, stdin=stdin) for path in paths]
