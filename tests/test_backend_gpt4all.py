"""GPT4All through its bindings: a tiny llama GGUF written at test time loads and generates; SmolLM2, which its
mid-2024 llama.cpp cannot read, gets a clear error that points at the llama.cpp backend."""

from __future__ import annotations

import pytest
from conftest import run_cli, settings_for

from localllm.core.chunks import Response
from localllm.core.errors import ContextOverflow, InvalidModelFile
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.tasks.loading import load_model

pytest.importorskip("gpt4all")


@pytest.fixture(scope="module")
def tiny(tiny_gguf, tmp_path_factory):
    with load_model(settings_for(tmp_path_factory.mktemp("g4a"), ctx=512), str(tiny_gguf), backend="gpt4all") as m:
        yield m


def test_smollm2_gets_a_clear_error_suggesting_llama_cpp(tmp_path, home):
    with pytest.raises(InvalidModelFile) as err:
        load_model(settings_for(tmp_path), "smollm2-135m", backend="gpt4all")
    assert "unknown pre-tokenizer type: 'smollm'" in err.value.message
    assert "--backend llama.cpp" in err.value.hint
    done = run_cli("run", "-b", "gpt4all", "hello", home=home)
    assert done.returncode == 1 and done.stderr_text.startswith("error: GPT4All could not load")
    assert done.stderr_text.count("\n") == 1 and "Traceback" not in done.stderr_text


def test_prompt_comes_from_the_ggufs_chat_template(tiny):
    prompt = tiny.backend.render([Message("system", "Be brief."), Message("user", "Hi")])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_tokens_are_counted_by_the_library_and_the_estimate_stays_above(tiny):
    response = Response(tiny.backend.chat([Message("user", "the cat and the dog")],
                                          preset("precise").with_overrides(max_tokens=2)))
    response.text()
    counted = response.final.usage.prompt_tokens
    assert 10 < counted <= tiny.backend.count_prompt_tokens([Message("user", "the cat and the dog")])


def test_answer_prefix_is_part_of_the_prompt_and_the_answer(tiny):
    text = Response(tiny.backend.chat([Message("user", "Write code.")],
                                      preset("precise").with_overrides(max_tokens=3, answer_prefix="```python\n"))
                    ).text()
    assert text.startswith("```python\n") and len(text) > len("```python\n")


def test_context_overflow_is_refused(tiny):
    with pytest.raises(ContextOverflow):
        tiny.backend.chat([Message("user", "sun " * 600)], preset("precise"))


def test_cli_run_through_gpt4all(tiny_gguf, home):
    done = run_cli("run", "-b", "gpt4all", "-m", str(tiny_gguf), "--preset", "precise", "-o", "max_tokens=4",
                   "--json", "hello", home=home)
    assert done.returncode == 0, done.stderr_text
    import json

    answer = json.loads(done.stdout_text)
    assert answer["backend"] == "gpt4all" and answer["usage"]["completion_tokens"] == 4
