"""translate and reply on the real bundled model."""

from pathlib import Path

import pytest
from conftest import run_cli, settings_for

from localllm.core.options import preset
from localllm.tasks.documents import read_document
from localllm.tasks.loading import load_model
from localllm.tasks.rewrite import CallLog, translate

DATA = Path(__file__).parent / "data"


@pytest.mark.usefixtures("bundled_model")
def test_a_document_longer_than_the_window_is_translated_part_by_part(tmp_path):
    document = read_document(str(DATA / "meeting-notes.md"))
    written = []
    log = CallLog()
    with load_model(settings_for(tmp_path, ctx=512), "smollm2-135m") as loaded:
        translate(settings_for(tmp_path), loaded.backend, [document], "French",
                  preset("precise").with_overrides(repeat_penalty=1.15), written.append, log)
        window = loaded.backend.context_window
    assert len(log.prompt_tokens) >= 4  # the notes do not fit one 512-token call
    for prompt, completion in zip(log.prompt_tokens, log.completion_tokens, strict=True):
        assert prompt + completion <= window
    assert "".join(written).strip()


def test_translate_cli_reports_calls(shared_home):
    done = run_cli("translate", "--to", "de", "-o", "ctx=1024", home=shared_home,
                   stdin=(DATA / "docs" / "billing.md").read_text())
    assert done.returncode == 0, done.stderr_text
    assert done.stdout_text.strip() and "part 1 of" in done.stderr_text and "call(s)" in done.stderr_text


def test_reply_drafts_an_answer_and_refuses_what_does_not_fit(shared_home, tmp_path):
    message = tmp_path / "complaint.txt"
    message.write_text("My order 4411 arrived broken and nobody answers my e-mails. What will you do about it?")
    done = run_cli("reply", str(message), "--tone", "apologetic", "-o", "max_tokens=40", home=shared_home)
    assert done.returncode == 0 and done.stdout_text.strip()
    long = tmp_path / "long.txt"
    long.write_text("I am unhappy with the service. " * 400)
    refused = run_cli("reply", str(long), "-o", "ctx=512", home=shared_home)
    assert refused.returncode == 1 and "512-token context window" in refused.stderr_text
