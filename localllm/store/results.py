"""Measurements kept for `localllm compare`: every `eval` and `bench` result, in SQLite (WAL) in the data folder,
with named, append-only migrations as the conversations have.

A row says which model file was measured (its recorded sha256 where it has one, else its path, size and
modification time stand for it), its quant, what was measured (perplexity, kld, choice, task, bench), the figures
as JSON, the settings they were measured with, when and on what machine.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localllm.store.migrations import apply_migrations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("001_results", """
        CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            path TEXT NOT NULL,
            file_id TEXT NOT NULL,
            quant TEXT,
            kind TEXT NOT NULL,
            figures TEXT NOT NULL,
            settings TEXT NOT NULL,
            measured TEXT NOT NULL,
            machine TEXT NOT NULL
        )"""),
    ("002_results_by_file", "CREATE INDEX results_by_file ON results (file_id, kind, id)"),
)


@dataclass(frozen=True)
class Result:
    model: str
    path: str
    file_id: str
    quant: str | None
    kind: str
    figures: dict[str, Any]
    settings: dict[str, Any]
    measured: str
    machine: str


def file_identity(path: Path) -> str:
    """The file's recorded sha256 (a pulled or quantized model's manifest), else its resolved path, size and
    modification time: hashing a many-gigabyte file for every run would cost more than the run."""
    from localllm.store.manifest import read_manifest

    manifest = read_manifest(path)
    if manifest is not None and manifest.sha256:
        return f"sha256:{manifest.sha256}"
    try:
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    except OSError:
        return f"name:{path}"


class ResultStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "results.db"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        try:
            apply_migrations(db, MIGRATIONS, now)
        except BaseException:
            db.close()
            raise
        return db

    def add(self, result: Result) -> None:
        db = self._connect()
        try:
            db.execute("INSERT INTO results (model, path, file_id, quant, kind, figures, settings, measured, machine) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (result.model, result.path, result.file_id, result.quant, result.kind,
                        json.dumps(result.figures), json.dumps(result.settings), result.measured, result.machine))
        finally:
            db.close()

    def for_file(self, file_id: str) -> list[Result]:
        """Every result of one file, newest first."""
        if not self.path.exists():
            return []
        db = self._connect()
        try:
            rows = db.execute("SELECT * FROM results WHERE file_id = ? ORDER BY id DESC", (file_id,)).fetchall()
        finally:
            db.close()
        return [Result(row["model"], row["path"], row["file_id"], row["quant"], row["kind"],
                       json.loads(row["figures"]), json.loads(row["settings"]), row["measured"], row["machine"])
                for row in rows]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
