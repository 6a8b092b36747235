"""The migrations of localllm's SQLite files, applied the same way by each store that keeps one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence


def apply_migrations(db: sqlite3.Connection, migrations: Sequence[tuple[str, str]], now: Callable[[], str]) -> None:
    """Each migration not yet applied, in order and under the write lock, noted with the time; all or none (a
    failure rolls back and is raised). ``db`` is in autocommit mode (isolation_level None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
        done = {row[0] for row in db.execute("SELECT name FROM migrations")}
        for name, sql in migrations:
            if name not in done:
                db.execute(sql)
                db.execute("INSERT INTO migrations (name, applied) VALUES (?, ?)", (name, now()))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
