"""The conversation store: survives a restart, deletes completely, and two processes writing at once stay intact."""

import multiprocessing
import sqlite3

from localllm.store.conversations import ConversationStore


def test_a_conversation_survives_reopening_and_a_deleted_one_is_gone(tmp_path):
    store = ConversationStore(tmp_path / "c.db")
    kept = store.create("Rivers", system="Answer briefly.", model="smollm2-135m")
    store.add_message(kept.id, "user", "Name a river.")
    store.add_message(kept.id, "assistant", "The Danube", stopped=True)
    gone = store.create("Scratch")
    store.add_message(gone.id, "user", "temporary")
    store.delete(gone.id)
    store.rename(kept.id, "European rivers")
    store.close()

    reopened = ConversationStore(tmp_path / "c.db")
    (only,) = reopened.list()
    assert only.title == "European rivers" and only.system == "Answer briefly." and only.model == "smollm2-135m"
    messages = reopened.messages(only.id)
    assert [(m.role, m.content, m.stopped) for m in messages] == [("user", "Name a river.", False),
                                                                   ("assistant", "The Danube", True)]
    count = reopened._db.execute("SELECT COUNT(*) FROM messages WHERE content = 'temporary'").fetchone()[0]
    assert count == 0  # the cascade removed the deleted conversation's messages
    assert reopened.list(search="danube")[0].id == only.id and reopened.list(search="nile") == []
    markdown = reopened.export_markdown(only.id)
    assert markdown.startswith("# European rivers") and "The Danube *(stopped before the end)*" in markdown


def _writer(path, label, count):
    store = ConversationStore(path)
    conversation = store.create(label)
    for index in range(count):
        store.add_message(conversation.id, "user", f"{label} {index}")
    store.close()


def test_two_processes_writing_at_once_do_not_corrupt_the_database(tmp_path):
    path = tmp_path / "shared.db"
    ConversationStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, f"writer-{n}", 150)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 300
    assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 2


def test_migrations_are_recorded_once(tmp_path):
    ConversationStore(tmp_path / "m.db").close()
    store = ConversationStore(tmp_path / "m.db")
    names = [row[0] for row in store._db.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == ["001_conversations", "002_messages", "003_messages_by_conversation", "004_messages_finish",
                     "005_messages_meta", "006_messages_fts", "007_messages_fts_fill", "008_messages_fts_insert",
                     "009_messages_fts_delete", "010_messages_fts_update", "011_conversations_tools",
                     "012_conversations_origin"]


def test_full_text_search_follows_every_change_and_takes_words_not_syntax(tmp_path):
    store = ConversationStore(tmp_path / "s.db")
    rivers = store.create("Rivers")
    store.add_message(rivers.id, "user", "Which river flows through Vienna?")
    answer = store.add_message(rivers.id, "assistant", "", stopped=True)
    store.update_message(answer.id, "The Danube flows through Vienna.", stopped=False, finish="stop",
                         meta={"model": "smollm2-135m", "usage": {"prompt_tokens": 20, "completion_tokens": 7}})
    other = store.create("Primes")
    store.add_message(other.id, "user", "List primes below 20.")
    found = store.search("danube vienna")
    assert [(c.title, m.role) for c, m, _ in found] == [("Rivers", "assistant")]
    assert found[0][2] == "The [Danube] flows through [Vienna]."
    assert [m.content for _, m, _ in store.search("prime*")] == ["List primes below 20."]
    assert store.search('" NEAR( -') == [] and store.search("   ") == []  # words, never query syntax
    assert store.meta(answer.id)["usage"]["completion_tokens"] == 7
    store.delete(rivers.id)
    assert store.search("danube") == []  # gone with its conversation
    store.close()
