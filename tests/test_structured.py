"""Structured tasks on the real bundled model: every answer is valid JSON for its schema, or reported with its row."""

import json
from pathlib import Path

import pytest
from conftest import run_cli

from localllm.core.errors import ConfigError, UsageError
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.tasks.rows import read_rows
from localllm.tasks.structured import (
    NER_SCHEMA,
    SENTIMENT_SCHEMA,
    InvalidAnswer,
    ask_json,
    label_schema,
    load_schema,
    parse_labels,
)

DATA = Path(__file__).parent / "data"
LABELS = ["bug", "feature", "question"]


def test_classify_20_rows_gives_20_valid_lines(shared_home):
    done = run_cli("classify", "--labels", ",".join(LABELS), str(DATA / "tickets.jsonl"), "--field", "text",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    lines = [json.loads(line) for line in done.stdout_text.splitlines()]
    assert len(lines) == 20
    assert [line["row"] for line in lines] == list(range(1, 21))
    assert all(line["label"] in LABELS for line in lines)
    assert all(line["id"] == line["row"] and line["text"] for line in lines)  # the input record is kept
    assert "20 row(s): 20 done, 0 failed" in done.stderr_text


def test_extract_gives_json_that_validates(shared_home):
    import jsonschema

    done = run_cli("extract", "--schema", str(DATA / "invoice.schema.json"), str(DATA / "invoice.txt"),
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    value = json.loads(done.stdout_text)
    jsonschema.validate(value, json.loads((DATA / "invoice.schema.json").read_text()))


def test_sentiment_and_ner_validate(shared_home):
    import jsonschema

    rows = run_cli("sentiment", str(DATA / "tickets.csv"), "--field", "text", home=shared_home)
    assert rows.returncode == 0, rows.stderr_text
    for line in rows.stdout_text.splitlines():
        record = json.loads(line)
        jsonschema.validate({"sentiment": record["sentiment"], "score": record["score"]}, SENTIMENT_SCHEMA)
    entities = run_cli("ner", str(DATA / "article.txt"), home=shared_home)
    assert entities.returncode == 0, entities.stderr_text
    jsonschema.validate(json.loads(entities.stdout_text), NER_SCHEMA)


def test_bad_rows_are_reported_and_the_batch_goes_on(shared_home, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text('{"text": "The export button is broken."}\nnot json at all\n{"body": "wrong key"}\n'
                      '{"text": "Please add an undo button."}\n')
    done = run_cli("classify", "--labels", "bug,feature", str(source), "--field", "text", home=shared_home)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout_text.splitlines()]
    assert [line["row"] for line in lines] == [1, 2, 3, 4]
    assert lines[1]["error"] == "line 2 is not JSON (Expecting value)"
    assert "has no text in 'text' (its keys: body)" in lines[2]["error"]
    assert lines[0]["label"] in ("bug", "feature") and lines[3]["label"] in ("bug", "feature")
    assert "4 row(s): 2 done, 2 failed" in done.stderr_text


@pytest.mark.parametrize("args, fragment", [
    (["classify", "--labels", " , ", str(DATA / "tickets.jsonl"), "--field", "text"], "--labels is empty"),
    (["classify", "--labels", "a,b", str(DATA / "tickets.csv"), "--field", "body"], "its columns: id, title, text"),
    (["classify", "--labels", "a,b", str(DATA / "tickets.csv")], "name the text column with --field"),
    (["extract", "--schema", str(DATA / "tickets.csv"), str(DATA / "invoice.txt")], "is not JSON"),
])
def test_bad_task_input_is_one_error_line(shared_home, args, fragment):
    done = run_cli(*args, home=shared_home)
    assert done.returncode != 0
    assert done.stderr_text.strip().startswith("error: ") and fragment in done.stderr_text
    assert len(done.stderr_text.strip().splitlines()) == 1


def test_invalid_schema_is_refused(tmp_path):
    bad = tmp_path / "bad.schema.json"
    bad.write_text('{"type": "object", "properties": {"a": {"type": "strnig"}}}')
    with pytest.raises(ConfigError, match="not a valid JSON schema"):
        load_schema(str(bad))


def test_labels_are_checked():
    assert parse_labels("bug, feature ,question") == LABELS
    with pytest.raises(UsageError):
        parse_labels("a,a")


def test_an_answer_that_cannot_match_is_retried_once_then_reported(loaded):
    # A schema no answer can satisfy: the grammar allows an integer, the validator demands a multiple of 7919
    # above a billion. The model answers, the retry tells it why, and the error names the problem.
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1_000_000_000,
                                                     "multipleOf": 7919}}, "required": ["n"]}
    with pytest.raises(InvalidAnswer) as err:
        ask_json(loaded.backend, [Message("user", "Give me a small number as JSON.")], schema,
                 preset("precise").with_overrides(max_tokens=24))
    assert "does not match the schema" in err.value.message or "not JSON" in err.value.message


def test_schema_grammar_keeps_answers_in_the_label_set(loaded):
    answer = ask_json(loaded.backend, [Message("user", "Classify: 'the app crashes'. Labels: bug, feature.")],
                      label_schema(["bug", "feature"]), preset("precise"))
    assert answer.value["label"] in ("bug", "feature") and answer.attempts in (1, 2)


def test_rows_from_a_text_file_are_one_row():
    (row,) = list(read_rows(str(DATA / "invoice.txt"), None))
    assert row.record == {"file": "invoice.txt"} and "86.87" in row.text
