"""--think / --no-think (-o think=on|off|low|medium|high) reach each backend's own switch: a chat template's
enable_thinking or reasoning_effort on llama.cpp, Ollama's think field (tests/test_backend_ollama.py), an
OpenAI-compatible server's chat_template_kwargs or reasoning_effort; where there is no switch, a note says so."""

import logging
from pathlib import Path

import pytest
from conftest import settings_for
from helpers.gguf_files import copy_with_template

from localllm.backends.openai_compat import OpenAICompatBackend
from localllm.cli.generate import options_from
from localllm.cli.main import build_parser
from localllm.core.errors import UsageError
from localllm.core.messages import Message
from localllm.core.options import coerce_option, preset
from localllm.tasks.loading import load_model

QUESTION = [Message("user", "Is 7 prime?")]
# ChatML, as Qwen3's template does it: with thinking off, an empty thinking block is put before the answer.
SWITCHED = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_think_values_and_flags():
    assert coerce_option("think", "OFF") == "off" and coerce_option("think", "true") == "on"
    assert coerce_option("think", "high") == "high"
    with pytest.raises(UsageError, match="not a thinking setting"):
        coerce_option("think", "maybe")
    parser = build_parser()
    settings = settings_for(Path("/nonexistent"))
    assert options_from(parser.parse_args(["run", "--no-think", "hi"]), settings).think == "off"
    assert options_from(parser.parse_args(["run", "--think", "low", "hi"]), settings).think == "low"
    assert options_from(parser.parse_args(["run", "--think", "--", "hi"]), settings).think == "on"
    assert options_from(parser.parse_args(["run", "hi"]), settings).think is None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--think", "--no-think", "hi"])


def test_an_openai_compatible_server_gets_its_template_switch_or_reasoning_effort():
    vllm = OpenAICompatBackend(profile="vllm")
    vllm._model = "m"
    off = vllm.request(QUESTION, preset("precise").with_overrides(think="off"))
    assert off["extra_body"]["chat_template_kwargs"] == {"enable_thinking": False}
    high = vllm.request(QUESTION, preset("precise").with_overrides(think="high"))
    assert high["reasoning_effort"] == "high" and "chat_template_kwargs" not in high["extra_body"]
    plain = vllm.request(QUESTION, preset("precise"))
    assert "reasoning_effort" not in plain and "chat_template_kwargs" not in plain["extra_body"]


def test_a_template_with_a_switch_gets_it_and_one_without_says_so_once(tmp_path, bundled_model, caplog):
    switched = copy_with_template(bundled_model, tmp_path / "switched.gguf", SWITCHED)
    with load_model(settings_for(tmp_path), str(switched)) as loaded:
        off, _ = loaded.backend._render(QUESTION, None, "off")
        on, _ = loaded.backend._render(QUESTION, None, "on")
        default, _ = loaded.backend._render(QUESTION, None, None)
    assert off.prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.prompt.endswith("<|im_start|>assistant\n") and on.prompt == default.prompt
    with caplog.at_level(logging.WARNING, logger="localllm"), \
            load_model(settings_for(tmp_path), "smollm2-135m") as loaded:
        for _ in range(2):
            answer = "".join(chunk.text for chunk in loaded.backend.chat(
                QUESTION, preset("precise").with_overrides(max_tokens=4, think="off")) if hasattr(chunk, "text"))
            assert answer
    notes = [record.getMessage() for record in caplog.records if "no thinking switch" in record.getMessage()]
    assert len(notes) == 1 and "smollm2" in notes[0].lower()
