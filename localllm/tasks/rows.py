"""Rows for batch tasks: JSONL or CSV records with a named text field, or a whole text file as one row."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.tasks.documents import MAX_INPUT_BYTES, InputError, read_document, read_input_file, read_limited


@dataclass(frozen=True)
class Row:
    number: int
    """1-based line (JSONL) or record (CSV) number, for error messages."""
    record: dict[str, Any]
    text: str | None
    problem: str | None = None
    """Why this row cannot be processed; the batch goes on with the others."""


def _load_bytes(path: str) -> tuple[bytes, str]:
    """The input's bytes (binary ones too: the caller decides what they are), never more than MAX_INPUT_BYTES."""
    if path == "-":
        return read_limited(sys.stdin.buffer, "stdin", text_only=False), "stdin"
    return read_input_file(path, text_only=False)


def read_records(path: str) -> list[Row]:
    """Rows whose text is the whole record (``key=value; ...``), for catalogues where every column matters."""
    if Path(path).suffix.lower() not in (".jsonl", ".ndjson", ".csv", ".tsv"):
        raise UsageError(f"{path} is not a CSV or JSONL file", hint="the catalogue needs one row per item")
    return list(read_rows(path, field=None, whole_record=True))


ROW_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")


def read_rows(path: str, field: str | None, *, whole_record: bool = False) -> Iterator[Row]:
    """Rows of JSONL or CSV (``field`` names the text), or one row holding a whole text; ``-`` is stdin.

    A name without a rows suffix (stdin, ``notes.txt``) is judged by its content: JSONL when every line is a JSON
    object, CSV when ``field`` names a column of its header; otherwise it is one text.
    """
    if path == "-" and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError("no input: name a file, or pipe rows or text in",
                         hint="cat tickets.jsonl | localllm classify --labels bug,question --field text")
    suffix = Path(path).suffix.lower()
    data, name = _load_bytes(path)
    binary = b"\x00" in data[:8192]
    # utf-8-sig: Excel writes a byte-order mark before a CSV's first column name, which --field must still find.
    text = data.decode("utf-8-sig", errors="replace")
    if suffix not in ROW_SUFFIXES:
        sniffed = None if binary else sniff_rows(text, field)  # a PDF or other document: read_document says
        if sniffed is None:
            if field:
                raise UsageError(f"--field {field}: {name} holds no rows (JSONL lines, or CSV with a {field!r} "
                                 "column)", hint="drop --field to take it as one text")
            document = read_document(path, stdin=io.BytesIO(data))
            yield Row(1, {"file": document.name}, document.text)
            return
        name = f"{name}{sniffed}"  # parse it as what its content is
    if binary:
        raise InputError(f"{name} looks like a binary file", hint="pass a CSV or JSONL file")
    if not field and not whole_record:
        raise UsageError(f"{name} holds rows: name the text column with --field", hint="e.g. --field text")
    yield from parse_rows(text, name, field, whole_record=whole_record)


def sniff_rows(text: str, field: str | None) -> str | None:
    """".jsonl" when every non-empty line of the start looks like a JSON object and one at least is (a damaged
    line is then a row with a problem, not a reason to take rows for prose); ".csv" or ".tsv" when ``field`` names
    a column of the first line; None: one text."""
    lines = [line.strip() for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        return None
    if all(line.startswith("{") for line in lines) and any(_json_object(line) for line in lines):
        return ".jsonl"
    if field:
        for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
            header = [column.strip() for column in next(csv.reader([lines[0]], delimiter=delimiter))]
            if len(header) > 1 and field in header:
                return suffix
    return None


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


def parse_rows(text: str, name: str, field: str | None, *, whole_record: bool = False) -> Iterator[Row]:
    """Rows of CSV/TSV or JSONL text (by ``name``'s suffix); a row that cannot be used carries its problem."""
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        # The csv module refuses a field over 128 KiB and ends the whole batch; the input is bounded as a whole.
        csv.field_size_limit(MAX_INPUT_BYTES)
        # newline="": the csv module reads line ends itself (a lone \r inside a field is text, not an error).
        reader = csv.DictReader(io.StringIO(text, newline=""), dialect="excel-tab" if suffix == ".tsv" else "excel")
        try:
            if reader.fieldnames is None:
                raise InputError(f"{name} is empty", hint="there is nothing to work on")
            if whole_record:
                for number, record in enumerate(reader, start=1):
                    yield Row(number, dict(record), _record_text(record))
                return
            if field not in reader.fieldnames:
                raise UsageError(f"{name} has no column {field!r}",
                                 hint=f"its columns: {', '.join(c for c in reader.fieldnames if c)}")
            for number, record in enumerate(reader, start=1):
                value = record.get(field)
                yield Row(number, dict(record), value, None if value else f"row {number} has an empty {field!r}")
        except csv.Error as exc:
            raise InputError(f"{name} is not readable as {suffix[1:].upper()} at line {reader.line_num}: {exc}",
                             hint="check its quoting, or save it again from the spreadsheet") from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(number, {}, None, f"line {number} is not JSON ({exc.msg})")
            continue
        except RecursionError:
            yield Row(number, {}, None, f"line {number} is nested too deeply to read")
            continue
        if not isinstance(record, dict):
            yield Row(number, {"value": record}, None, f"line {number} is not a JSON object")
            continue
        if whole_record:
            yield Row(number, record, _record_text(record))
            continue
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            keys = ", ".join(record) or "none"
            yield Row(number, record, None, f"line {number} has no text in {field!r} (its keys: {keys})")
            continue
        yield Row(number, record, value)


def _record_text(record: dict[str, Any]) -> str:
    return "; ".join(f"{key}={value}" for key, value in record.items() if value not in (None, ""))
