"""Conversations in SQLite (WAL), in the data directory, with named, append-only migrations.

WAL and a busy timeout let two app instances write the same database safely; every write is one transaction.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from localllm.core.messages import Role

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("001_conversations", """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            system TEXT,
            model TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )"""),
    ("002_messages", """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            stopped INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL
        )"""),
    ("003_messages_by_conversation", "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)"),
)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system: str | None
    model: str | None
    created: str
    updated: str


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: Role
    content: str
    stopped: bool
    """The answer was stopped before it ended."""
    created: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ConversationStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ConversationStore:
        return cls(data_dir / "conversations.db")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of failing half-way.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
            done = {row["name"] for row in db.execute("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name not in done:
                    db.execute(sql)
                    db.execute("INSERT INTO migrations (name, applied) VALUES (?, ?)", (name, _now()))

    def close(self) -> None:
        self._db.close()

    # -- conversations ---------------------------------------------------------------------------------------------
    def create(self, title: str = "New conversation", *, system: str | None = None,
               model: str | None = None) -> Conversation:
        now = _now()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO conversations (title, system, model, created, updated) "
                                "VALUES (?, ?, ?, ?, ?)", (title, system, model, now, now))
        return self.get(_row_id(cursor))

    def get(self, conversation_id: int) -> Conversation:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        return Conversation(**dict(row))

    def list(self, search: str | None = None) -> list[Conversation]:
        """Most recently updated first; ``search`` matches titles and message text."""
        if search:
            pattern = f"%{search}%"
            rows = self._db.execute(
                "SELECT * FROM conversations WHERE title LIKE ? OR id IN "
                "(SELECT conversation_id FROM messages WHERE content LIKE ?) ORDER BY updated DESC, id DESC",
                (pattern, pattern))
        else:
            rows = self._db.execute("SELECT * FROM conversations ORDER BY updated DESC, id DESC")
        return [Conversation(**dict(row)) for row in rows]

    def rename(self, conversation_id: int, title: str) -> None:
        self._update(conversation_id, "title", title)

    def set_system(self, conversation_id: int, system: str | None) -> None:
        self._update(conversation_id, "system", system)

    def set_model(self, conversation_id: int, model: str | None) -> None:
        self._update(conversation_id, "model", model)

    def _update(self, conversation_id: int, column: str, value: object) -> None:
        with self._transaction() as db:
            db.execute(f"UPDATE conversations SET {column} = ?, updated = ? WHERE id = ?",  # column is ours
                       (value, _now(), conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages --------------------------------------------------------------------------------------------------
    def add_message(self, conversation_id: int, role: Role, content: str, *, stopped: bool = False) -> StoredMessage:
        now = _now()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO messages (conversation_id, role, content, stopped, created) "
                                "VALUES (?, ?, ?, ?, ?)", (conversation_id, role, content, int(stopped), now))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return StoredMessage(_row_id(cursor), role, content, stopped, now)

    def delete_message(self, message_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def messages(self, conversation_id: int) -> builtins.list[StoredMessage]:
        rows = self._db.execute("SELECT id, role, content, stopped, created FROM messages "
                                "WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [StoredMessage(row["id"], row["role"], row["content"], bool(row["stopped"]), row["created"])
                for row in rows]

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.get(conversation_id)
        lines = [f"# {conversation.title}", ""]
        if conversation.system:
            lines += [f"*System:* {conversation.system}", ""]
        for message in self.messages(conversation_id):
            speaker = {"user": "You", "assistant": "Assistant", "system": "System"}[message.role]
            lines += [f"**{speaker}:**", "", message.content + (" *(stopped)*" if message.stopped else ""), ""]
        return "\n".join(lines).rstrip() + "\n"


def _row_id(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None, "an INSERT always sets lastrowid"
    return cursor.lastrowid
