"""A GGUF without a chat template is a base model: said so in `show`, `list` and once per `run`, and its text is
continued as plain text; `-o template=NAME` picks one of llama-cpp-python's registered chat formats instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, settings_for
from helpers.gguf_files import copy_with_template

from localllm.backends.llamacpp import LlamaCppBackend
from localllm.core.messages import Message
from localllm.core.options import PRESETS

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    return copy_with_template(bundled_model, tmp_path_factory.mktemp("base") / "smollm2-base.gguf", None)


def test_the_copy_has_everything_but_the_template(base_model: Path, bundled_model: Path) -> None:
    from localllm.store.gguf_info import read_model_info

    copy, original = read_model_info(base_model), read_model_info(bundled_model)
    assert original.chat_template and copy.chat_template is None
    assert (copy.architecture, copy.block_count, copy.vocab_size, copy.layer_bytes) == \
        (original.architecture, original.block_count, original.vocab_size, original.layer_bytes)


def test_show_and_list_call_it_a_base_model(base_model: Path, home: Path) -> None:
    shown = run_cli("show", str(base_model), home=home)
    assert shown.returncode == 0, shown.stderr_text
    assert "this looks like a base model" in shown.stdout_text
    assert "-o template=NAME" in shown.stdout_text and "chatml" in shown.stdout_text
    as_json = json.loads(run_cli("show", str(base_model), "--json", home=home).stdout_text)
    assert as_json["model"]["chat"] is False and "llama-3" in as_json["chat_formats"]

    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(f'model_dirs = ["{base_model.parent}"]\n')
    listed = {row["name"]: row for row in json.loads(run_cli("list", "--json", home=home).stdout_text)}
    assert listed["smollm2-base"]["chat"] is False
    assert listed["smollm2-135m"]["chat"] is True
    table = run_cli("list", home=home).stdout_text
    base_line = next(line for line in table.splitlines() if line.startswith("smollm2-base"))
    assert "base (no chat template)" in base_line


def test_run_continues_the_text_and_says_so_once(base_model: Path, home: Path) -> None:
    done = run_cli("run", "-m", str(base_model), "--preset", "precise", "-o", "max_tokens=12",
                   "The three primary colors are", home=home)
    assert done.returncode == 0, done.stderr_text
    assert done.stderr_text.count("no chat template: this looks like a base model, so the prompt is sent as plain "
                                  "text for it to continue") == 1
    assert done.stdout_text.strip()


def test_the_prompt_is_the_plain_text_and_a_named_format_wraps_it(base_model: Path, tmp_path: Path) -> None:
    from localllm.tasks.loading import load_model

    messages = [Message("user", "The three primary colors are")]
    with load_model(settings_for(tmp_path, ctx=512), str(base_model)) as plain:
        backend = plain.backend
        assert isinstance(backend, LlamaCppBackend)
        assert backend.completion_only
        formatted, tokens = backend._render(messages)
        assert formatted.prompt == "The three primary colors are"
        assert "<|im_start|>" not in formatted.prompt
        # Exactly the text's own tokens (plus BOS where the vocabulary has one): no chat tags were added.
        assert len(tokens) - backend.count_tokens("The three primary colors are") in (0, 1)
        answer = "".join(c.text for c in backend.chat(messages, PRESETS["precise"].with_overrides(max_tokens=8))
                         if hasattr(c, "text"))
        assert answer
    with load_model(settings_for(tmp_path, ctx=512, template="chatml"), str(base_model)) as chat:
        assert isinstance(chat.backend, LlamaCppBackend)
        assert not chat.backend.completion_only
        formatted, _ = chat.backend._render(messages)
        assert "<|im_start|>user\nThe three primary colors are<|im_end|>" in formatted.prompt
        assert formatted.prompt.endswith("<|im_start|>assistant\n")


def test_an_unknown_template_name_is_a_usage_error(base_model: Path, home: Path) -> None:
    done = run_cli("run", "-m", str(base_model), "-o", "template=chatmel", "hi", home=home)
    assert done.returncode == 2
    assert done.stderr_text.startswith("error: unknown chat template 'chatmel'")
    assert "did you mean 'chatml'?" in done.stderr_text and "Traceback" not in done.stderr_text


def test_template_plain_continues_even_a_chat_model_and_names_are_not_case_sensitive(bundled_model: Path,
                                                                                     tmp_path: Path) -> None:
    from localllm.tasks.loading import load_model

    messages = [Message("user", "Roses are red,")]
    with load_model(settings_for(tmp_path, ctx=512, template="plain"), str(bundled_model)) as plain:
        assert isinstance(plain.backend, LlamaCppBackend) and plain.backend.completion_only
        assert plain.backend._render(messages)[0].prompt == "Roses are red,"
    with load_model(settings_for(tmp_path, ctx=512, template="ChatML"), str(bundled_model)) as chat:
        assert isinstance(chat.backend, LlamaCppBackend) and chat.backend.chat_format == "chatml"


def test_embeddings_from_a_base_model_say_nothing_of_continuing(base_model: Path, home: Path) -> None:
    done = run_cli("embed", "-m", str(base_model), "some text", home=home)
    assert done.returncode == 0, done.stderr_text
    assert "chat template" not in done.stderr_text
