"""Conversations in SQLite (WAL), in the data directory, with named, append-only migrations.

WAL and a busy timeout let two app instances write the same database safely; every write is one transaction.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from localllm.core.errors import LocalLLMError
from localllm.core.finish import NOTES
from localllm.core.messages import Role
from localllm.store.migrations import apply_migrations

T = TypeVar("T")

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
    # How an answer ended: stop, length (its token limit), window (the context was full), stopped (by the user, or
    # the app ended first); NULL for messages stored before this column and for the user's.
    ("004_messages_finish", "ALTER TABLE messages ADD COLUMN finish TEXT"),
    # What produced an answer, as JSON: model, backend, options, token counts and timings.
    ("005_messages_meta", "ALTER TABLE messages ADD COLUMN meta TEXT"),
    # Full-text search over the messages (`localllm logs -q`), kept in step by triggers.
    ("006_messages_fts", "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
                         "content_rowid='id')"),
    ("007_messages_fts_fill", "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')"),
    ("008_messages_fts_insert", """
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END"""),
    ("009_messages_fts_delete", """
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        END"""),
    ("010_messages_fts_update", """
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END"""),
    # The tools a conversation may call, chosen in the app (JSON: {"chosen": [SERVER.TOOL, ...], "required": bool}).
    ("011_conversations_tools", "ALTER TABLE conversations ADD COLUMN tools TEXT"),
    # Which front end started it (ORIGINS); NULL for conversations stored before this column.
    ("012_conversations_origin", "ALTER TABLE conversations ADD COLUMN origin TEXT"),
)
ORIGINS = ("app", "chat", "run", "code", "serve")
"""Where a conversation came from: the app, `localllm chat`, `localllm run`, a code action (`localllm code` or the
app's code pane), the server."""
ONE_SHOTS = ("run", "code")
"""Origins of one-shots, which the app's list hides until asked."""
_ONE_SHOT_LIST = ", ".join(f"'{origin}'" for origin in ONE_SHOTS)
LOCK_WAIT_S = 10.0
"""How long a database that another process holds locked is waited for before it counts as a fault."""
LOCK_SAID_AFTER_S = 1.0
"""A wait longer than this is said (``on_wait``), so that a pause is never silent."""
FINISH_NOTES = NOTES
"""What a message's end says, where it is not a normal one (localllm.core.finish decides it)."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system: str | None
    model: str | None
    created: str
    updated: str
    tools: str | None = None
    """The tools chosen for it in the app, as JSON (see set_tools); None: none chosen."""
    origin: str | None = None
    """Which front end started it (ORIGINS); None: stored before origins were recorded."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: Role
    content: str
    stopped: bool
    """The answer was stopped before it ended."""
    created: str
    finish: str | None = None
    """How the answer ended (see FINISH_NOTES); None: normally, or not recorded."""


# SQLite's primary result codes for a file that cannot be written or read: PERM, READONLY, IOERR, CORRUPT, FULL,
# CANTOPEN, NOTADB.
FILE_FAILURES = frozenset({3, 8, 10, 11, 13, 14, 26})


class StorageProblem(LocalLLMError):
    """The conversation database cannot be opened or written. ``message`` says it as the app does (the session
    goes on in memory); ``cause`` is what is wrong with the file alone, for front ends that say the consequence in
    their own words."""

    def __init__(self, message: str, hint: str | None = None, *, cause: str | None = None) -> None:
        super().__init__(message, hint)
        self.cause = cause or message


def _busy(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED)."""
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", 0) & 0xFF in (5, 6)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ConversationStore:
    """Conversations in ``path``; when that file cannot be opened or written (a read-only folder, a full disk, a
    damaged file), they are kept in memory for the session instead: the file is never touched again, ``problem``
    says why, and ``on_problem`` hears it once. Nothing the user typed is refused for want of a place to save it."""

    def __init__(self, path: Path, *, on_wait: Callable[[Path], None] | None = None) -> None:
        """``on_wait`` hears, once a wait for another process's lock has lasted LOCK_SAID_AFTER_S, that it goes on
        (up to LOCK_WAIT_S, after which the lock is a fault like any other)."""
        self.path = path
        self.problem: StorageProblem | None = None
        self.on_problem: Callable[[StorageProblem], None] | None = None
        self.on_wait = on_wait
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._patiently(lambda: _connect(str(path)))
        except (sqlite3.Error, OSError) as exc:
            self._db = _connect(":memory:")
            self.problem = self._describe(exc)

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, on_wait: Callable[[Path], None] | None = None) -> ConversationStore:
        return cls(data_dir / "conversations.db", on_wait=on_wait)

    def _patiently(self, attempt: Callable[[], T]) -> T:
        """``attempt``, again while another process holds the database locked, for up to LOCK_WAIT_S; the wait is
        said after LOCK_SAID_AFTER_S. SQLite's own busy timeout is kept short so that this loop, not SQLite, decides
        how long and whether it is said."""
        import time

        start, said = time.monotonic(), False
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - start
                if not _busy(exc) or waited >= LOCK_WAIT_S:
                    raise
                if not said and waited >= LOCK_SAID_AFTER_S and self.on_wait is not None:
                    said = True
                    self.on_wait(self.path)
                time.sleep(0.05)

    def _describe(self, exc: Exception) -> StorageProblem:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        kept = "this session's conversations are kept in memory only"
        if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in reason or "not a database" in reason):
            cause = f"{self.path} is damaged ({reason})"
            return StorageProblem(f"{cause}: it is left as it is, and {kept}", cause=cause,
                                  hint=f"move it aside (mv {self.path} {self.path}.damaged) to start a new one, or "
                                  f"recover it with `sqlite3 {self.path} .recover`")
        if _busy(exc):
            cause = f"{self.path} is locked by another process (waited {LOCK_WAIT_S:g} s)"
            return StorageProblem(f"{cause}: {kept}", cause=cause,
                                  hint="let the other localllm (or the sqlite3 shell holding it) finish, or close it, "
                                  "then try again")
        blocking = next((folder for folder in reversed(self.path.parents) if folder.exists() and not folder.is_dir()),
                        None)
        if blocking is not None:  # LOCALLLM_HOME, or a folder under it, is a file
            cause = f"conversations cannot be saved in {self.path}: {blocking} is a file, not a folder"
            return StorageProblem(f"{cause}; {kept}", cause=cause,
                                  hint=f"point LOCALLLM_HOME at a folder, or move {blocking} aside")
        cause = f"conversations cannot be saved in {self.path} ({reason})"
        full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == 13 or getattr(exc, "errno", None) == 28  # FULL, ENOSPC
        return StorageProblem(f"{cause}: {kept}", cause=cause,
                              hint="free some disk space" if full else
                              f"check the permissions of {self.path.parent} (or free some disk space)")

    def _fall_back(self, exc: sqlite3.Error) -> None:
        """Carry on in memory with what the file still gives (all of it, unless it is damaged)."""
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)

        def give_up_if_locked(status: int, remaining: int, total: int) -> None:
            # Python's backup retries a locked source for ever: a file another process holds gives what it can.
            if status in (5, 6):
                raise sqlite3.OperationalError("database is locked")

        try:
            self._db.backup(memory, progress=give_up_if_locked)
        except sqlite3.Error:
            memory.close()
            memory = _connect(":memory:")
        else:
            memory.row_factory = sqlite3.Row
            memory.execute("PRAGMA foreign_keys=ON")
        failed, self._db = self._db, memory
        failed.close()
        self.problem = self._describe(exc)
        if self.on_problem is not None:
            self.on_problem(self.problem)

    def _run(self, statements: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """``statements`` in one transaction (BEGIN IMMEDIATE takes the write lock up front, so two writers queue
        instead of failing half-way), waited for while another process holds the lock; after a failure of the
        file, once more in memory."""

        def transaction() -> T:
            if not write:
                return statements(self._db)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = statements(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a COMMIT that found the lock taken leaves it open
                    self._db.execute("ROLLBACK")
                raise
            return result

        for attempt in (1, 2):
            try:
                return self._patiently(transaction)
            except sqlite3.Error as exc:
                # Only a failing file, or one locked past LOCK_WAIT_S, moves the session to memory: a bug in a
                # statement would move it there for nothing.
                failing_file = getattr(exc, "sqlite_errorcode", 0) & 0xFF in FILE_FAILURES or _busy(exc)
                if attempt == 2 or self.problem is not None or not failing_file:
                    raise StorageProblem(f"the conversation could not be saved: {exc}",
                                         hint="try again; if it keeps failing, restart the app") from None
                self._fall_back(exc)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        self._db.close()

    # -- conversations ---------------------------------------------------------------------------------------------
    def create(self, title: str = "New conversation", *, system: str | None = None, model: str | None = None,
               origin: str | None = None) -> Conversation:
        """``origin``: the front end starting it (ORIGINS)."""
        now = _now()
        cursor = self._run(lambda db: db.execute(
            "INSERT INTO conversations (title, system, model, created, updated, origin) VALUES (?, ?, ?, ?, ?, ?)",
            (title, system, model, now, now, origin)))
        return self.get(_row_id(cursor))

    def continued_in(self, conversation_id: int, origin: str) -> None:
        """A one-shot that the app or `chat` goes on with is a chat from then on: the app's list shows it."""
        if origin not in ONE_SHOTS:
            self._run(lambda db: db.execute("UPDATE conversations SET origin = ? WHERE id = ? AND origin IN "
                                            f"({_ONE_SHOT_LIST})", (origin, conversation_id)))

    def get(self, conversation_id: int) -> Conversation:
        row = self._run(lambda db: db.execute("SELECT * FROM conversations WHERE id = ?",
                                              (conversation_id,)).fetchone(), write=False)
        if row is None:
            raise KeyError(conversation_id)
        return Conversation(**dict(row))

    def list(self, search: str | None = None, *, one_shots: bool = True) -> list[Conversation]:
        """Most recently updated first; ``search`` matches titles and message text; ``one_shots``: with those
        `localllm run` and the code actions started."""
        where = "" if one_shots else f"(origin IS NULL OR origin NOT IN ({_ONE_SHOT_LIST}))"
        if search:
            pattern = f"%{search}%"
            rows = self._run(lambda db: db.execute(
                "SELECT * FROM conversations WHERE (title LIKE ? OR id IN "
                "(SELECT conversation_id FROM messages WHERE content LIKE ?))" + (f" AND {where}" if where else "")
                + " ORDER BY updated DESC, id DESC", (pattern, pattern)).fetchall(), write=False)
        else:
            rows = self._run(lambda db: db.execute(
                "SELECT * FROM conversations" + (f" WHERE {where}" if where else "")
                + " ORDER BY updated DESC, id DESC").fetchall(), write=False)
        return [Conversation(**dict(row)) for row in rows]

    def count_one_shots(self) -> int:
        return self._run(lambda db: db.execute("SELECT COUNT(*) FROM conversations WHERE origin IN "
                                               f"({_ONE_SHOT_LIST})").fetchone()[0], write=False)

    def rename(self, conversation_id: int, title: str) -> None:
        self._update(conversation_id, "title", title)

    def set_system(self, conversation_id: int, system: str | None) -> None:
        self._update(conversation_id, "system", system)

    def set_model(self, conversation_id: int, model: str | None) -> None:
        self._update(conversation_id, "model", model)

    def set_tools(self, conversation_id: int, chosen: builtins.list[str], required: bool) -> None:
        """Not a change of the conversation itself: it keeps its place in the list."""
        value = json.dumps({"chosen": chosen, "required": required}) if chosen or required else None
        self._run(lambda db: db.execute("UPDATE conversations SET tools = ? WHERE id = ?", (value, conversation_id)))

    def _update(self, conversation_id: int, column: str, value: object) -> None:
        self._run(lambda db: db.execute(f"UPDATE conversations SET {column} = ?, updated = ? WHERE id = ?",
                                        (value, _now(), conversation_id)))  # the column is one of ours

    def delete(self, conversation_id: int) -> None:
        self._run(lambda db: db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)))

    # -- messages --------------------------------------------------------------------------------------------------
    def add_message(self, conversation_id: int, role: Role, content: str, *, stopped: bool = False) -> StoredMessage:
        now = _now()

        def insert(db: sqlite3.Connection) -> sqlite3.Cursor:
            cursor = db.execute("INSERT INTO messages (conversation_id, role, content, stopped, created) "
                                "VALUES (?, ?, ?, ?, ?)", (conversation_id, role, content, int(stopped), now))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            return cursor

        return StoredMessage(_row_id(self._run(insert)), role, content, stopped, now)

    def update_message(self, message_id: int, content: str, *, stopped: bool, finish: str | None = None,
                       meta: dict | None = None) -> None:
        """An answer's text so far (``stopped`` until it ends), so a crash or a kill keeps what was written;
        ``meta``: what produced it (model, backend, options, tokens, timings), once it has ended."""
        encoded = json.dumps(meta) if meta is not None else None
        self._run(lambda db: db.execute("UPDATE messages SET content = ?, stopped = ?, finish = ?, "
                                        "meta = COALESCE(?, meta) WHERE id = ?",
                                        (content, int(stopped), finish, encoded, message_id)))

    def delete_message(self, message_id: int) -> None:
        self._run(lambda db: db.execute("DELETE FROM messages WHERE id = ?", (message_id,)))

    def messages(self, conversation_id: int) -> builtins.list[StoredMessage]:
        rows = self._run(lambda db: db.execute("SELECT id, role, content, stopped, created, finish FROM messages "
                                               "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall(),
                         write=False)
        return [StoredMessage(row["id"], row["role"], row["content"], bool(row["stopped"]), row["created"],
                              row["finish"] or ("stopped" if row["stopped"] else None)) for row in rows]

    def meta(self, message_id: int) -> dict | None:

        row = self._run(lambda db: db.execute("SELECT meta FROM messages WHERE id = ?", (message_id,)).fetchone(),
                        write=False)
        return json.loads(row["meta"]) if row is not None and row["meta"] else None

    def search(self, text: str, limit: int = 20) -> builtins.list[tuple[Conversation, StoredMessage, str]]:
        """Messages whose words match every word of ``text`` (full-text, any order; a word may be the start of
        one: ``prime*``), newest first, each with its conversation and a snippet around the match."""
        words = [word for word in text.split() if word.strip('"*')]
        if not words:
            return []
        # Each word quoted: the user's text is words, never FTS5 syntax (a stray `"`, `-` or `NEAR`).
        query = " ".join('"' + word.rstrip("*").replace('"', '""') + '"' + ("*" if word.endswith("*") else "")
                         for word in words)
        rows = self._run(lambda db: db.execute(
            "SELECT m.id, m.role, m.content, m.stopped, m.created, m.finish, m.conversation_id, "
            "snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet FROM messages_fts "
            "JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ? "
            "ORDER BY m.id DESC LIMIT ?", (query, limit)).fetchall(), write=False)
        found = []
        for row in rows:
            message = StoredMessage(row["id"], row["role"], row["content"], bool(row["stopped"]), row["created"],
                                    row["finish"])
            found.append((self.get(row["conversation_id"]), message, row["snippet"]))
        return found

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.get(conversation_id)
        lines = [f"# {conversation.title}", ""]
        if conversation.system:
            lines += [f"*System:* {conversation.system}", ""]
        for message in self.messages(conversation_id):
            speaker = {"user": "You", "assistant": "Assistant", "system": "System"}[message.role]
            note = FINISH_NOTES.get(message.finish or "")
            lines += [f"**{speaker}:**", "", message.content + (f" *({note})*" if note else ""), ""]
        return "\n".join(lines).rstrip() + "\n"


def _migrated(db: sqlite3.Connection) -> bool:
    try:
        done = {row["name"] for row in db.execute("SELECT name FROM migrations")}
    except sqlite3.OperationalError as exc:
        if _busy(exc):
            raise
        return False  # no migrations table yet
    return all(name in done for name, _ in MIGRATIONS)


def _connect(where: str) -> sqlite3.Connection:
    """A connection to ``where``, migrated. Switching a new file to WAL, or a first read while another connection
    recovers the WAL, answers "database is locked" at once, without the busy timeout: the caller waits
    (ConversationStore._patiently)."""
    db = sqlite3.connect(where, timeout=0.1, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=100")
        # A database migrated already is opened without the write lock: reading it (`localllm logs`) need not wait
        # while another process writes.
        if _migrated(db):
            _check(db, where)
            return db
        apply_migrations(db, MIGRATIONS, _now)
        _check(db, where)
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, where: str) -> None:
    """A file that opens may still be damaged further in: better to know now than at the first save."""
    if where != ":memory:" and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise sqlite3.DatabaseError("database disk image is malformed")


def _row_id(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None, "an INSERT always sets lastrowid"
    return cursor.lastrowid
