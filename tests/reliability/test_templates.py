"""Chat templates are untrusted Jinja from model files: escapes from the sandbox run nothing, any error is a clear
message naming the model, a template that refuses the system prompt gets it folded into the first message (said
once), the chat goes on after an error, and tokenizing needs no template at all: a template is compiled only in the
bounded renderer (compiling folds constant expressions, so `{{ 'A' * 2000000000 }}` costs gigabytes there)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import run_cli, settings_for
from helpers.gguf_files import copy_with_template
from helpers.measured import peak_memory_of

from localllm.backends.llamacpp import LlamaCppBackend
from localllm.core.errors import TemplateFailure
from localllm.core.messages import Message

pytestmark = pytest.mark.model
GEMMA_LIKE = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
              "supported') }}{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
              "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
BROKEN = "{% for m in messages %}{{ m['content'] }"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    """The bundled model loaded once; each test swaps in the template under test, as its GGUF would carry it."""
    from localllm.tasks.loading import load_model

    with load_model(settings_for(tmp_path_factory.mktemp("templates"), ctx=512), "smollm2-135m") as loaded:
        assert isinstance(loaded.backend, LlamaCppBackend)
        yield loaded.backend


def use_template(backend: LlamaCppBackend, template: str) -> None:
    import llama_cpp

    backend._llm.metadata["tokenizer.chat_template"] = template
    backend._folds_system = False
    backend._make_formatter(llama_cpp)


ESCAPES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    "joiner-globals": "{{ joiner.__init__.__globals__['os'].system('touch MARK') }}",
    "namespace-globals": "{{ namespace.__init__.__globals__ }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch MARK').read() }}",
    "template-context": "{{ self._TemplateReference__context }}",
    "loop-subclasses": "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "include-file": "{% include '/etc/passwd' %}",
    "import-os": "{% import 'os' as os %}{{ os.system('touch MARK') }}",
}


@pytest.mark.parametrize("name", ESCAPES)
def test_sandbox_escapes_run_nothing(backend: LlamaCppBackend, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "ran"
    use_template(backend, ESCAPES[name].replace("MARK", str(marker)))
    try:
        prompt = backend._render([Message("user", "hello")])[0].prompt
    except TemplateFailure as failure:
        assert "the chat template of smollm2-135m failed" in failure.message
    else:
        assert "<class" not in prompt and "root:" not in prompt and "function" not in prompt
    assert not marker.exists()


def test_a_template_that_refuses_the_system_prompt_gets_it_folded_once(backend: LlamaCppBackend, caplog) -> None:
    use_template(backend, GEMMA_LIKE)
    messages = [Message("system", "Answer in French."), Message("user", "Name a river.")]
    with caplog.at_level(logging.WARNING, logger="localllm"):
        first = backend._render(messages)[0].prompt
        again = backend._render(messages)[0].prompt
    assert "<|im_start|>user\nAnswer in French.\n\nName a river.<|im_end|>" in first and again == first
    notes = [r.getMessage() for r in caplog.records if "does not take a system prompt" in r.getMessage()]
    assert len(notes) == 1 and "System role not supported" in notes[0]


def test_any_other_template_error_is_clear(backend: LlamaCppBackend) -> None:
    use_template(backend, "{{ messages[5]['content'] + 1 }}")
    with pytest.raises(TemplateFailure) as raised:
        backend._render([Message("user", "hi")])
    assert raised.value.message.startswith("the chat template of smollm2-135m failed: ")
    assert "-o template=NAME" in (raised.value.hint or "")


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    return copy_with_template(bundled_model, tmp_path_factory.mktemp("gemma") / "system-refusing.gguf", GEMMA_LIKE)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    return copy_with_template(bundled_model, tmp_path_factory.mktemp("broken") / "broken-template.gguf", BROKEN)


def test_chat_goes_on_with_a_system_prompt_the_template_refuses(gemma_like: Path, home: Path) -> None:
    done = run_cli("chat", "-m", str(gemma_like), "-s", "Be brief.", "--preset", "precise", "-o", "max_tokens=8",
                   home=home, stdin="Name a river.\nName a mountain.\n/exit\n")
    assert done.returncode == 0, done.stderr_text
    assert done.stderr_text.count("does not take a system prompt") == 1
    assert len([line for line in done.stdout_text.splitlines() if line.strip()]) >= 2


def test_a_broken_template_is_one_clear_error_and_tokenize_still_works(broken: Path, home: Path) -> None:
    done = run_cli("run", "-m", str(broken), "Hello", home=home)
    assert done.returncode == 1
    line = done.stderr_text.strip().splitlines()[-1]
    assert line.startswith("error: the chat template in broken-template is not valid Jinja")
    assert "Traceback" not in done.stderr_text
    tokens = run_cli("tokenize", "-m", str(broken), "Hello world", home=home)
    assert tokens.returncode == 0, tokens.stderr_text
    assert "tokens" in tokens.stdout_text
    fixed = run_cli("run", "-m", str(broken), "-o", "template=chatml", "-o", "max_tokens=4", "--preset", "precise",
                    "Hello", home=home)
    assert fixed.returncode == 0, fixed.stderr_text


@pytest.mark.parametrize("name", ESCAPES)
def test_gpt4alls_renderer_runs_nothing_either(tmp_path: Path, name: str) -> None:
    from localllm.backends.gpt4all import render_template

    marker = tmp_path / "ran"
    try:
        prompt = render_template(ESCAPES[name].replace("MARK", str(marker)), [Message("user", "hi")], "<s>", "</s>")
    except TemplateFailure as failure:
        assert failure.message.startswith("the chat template of the model failed: ")
    else:
        assert "<class" not in prompt and "root:" not in prompt and "function" not in prompt
    assert not marker.exists()


def test_gpt4alls_renderer_folds_a_refused_system_prompt(caplog) -> None:
    from localllm.backends.gpt4all import GPT4AllBackend

    backend = GPT4AllBackend()
    backend._template = GEMMA_LIKE
    with caplog.at_level(logging.WARNING, logger="localllm"):
        prompt = backend.render([Message("system", "Be brief."), Message("user", "Hi")])
    assert "<|im_start|>user\nBe brief.\n\nHi<|im_end|>" in prompt
    assert any("does not take a system prompt" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def huge_indent(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    return copy_with_template(bundled_model, tmp_path_factory.mktemp("indent") / "huge-indent.gguf",
                              "{{ messages | tojson(indent=1000000000) }}")


def test_a_template_that_needs_gigabytes_is_refused_without_a_crash(huge_indent: Path, home: Path) -> None:
    done = run_cli("run", "-m", str(huge_indent), "-o", "max_tokens=4", "Hello", home=home, timeout=60)
    assert done.returncode == 1, done.stderr_text
    last = done.stderr_text.strip().splitlines()[-1]
    # Whichever of the renderer's bounds it meets first: memory, or on a busy machine the time.
    assert last.startswith("error: the chat template of huge-indent ") and \
        ("needs more than 1024 MiB of memory" in last or "took more than" in last), last


BOUNDLESS = {
    "nested-loops": "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "growing-string": "{% set s = namespace(t='x') %}{% for i in range(40) %}{% set s.t = s.t ~ s.t %}{% endfor %}"
                      "{{ s.t }}",
    "repeated-string": "{{ 'x' * 10000000000 }}",
}


@pytest.mark.parametrize("name", BOUNDLESS)
def test_rendering_is_bounded_in_time_and_memory(name: str) -> None:
    from localllm.backends.chat_templates import TemplateRenderer

    renderer = TemplateRenderer(seconds=2, memory=256 << 20)
    try:
        with pytest.raises(TemplateFailure) as raised:
            renderer.render(BOUNDLESS[name], "hostile", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.message.startswith("the chat template of hostile ")
        assert ("took more than 2 s" in raised.value.message or "more than 256 MiB" in raised.value.message)
        # The renderer survives what it was made to do.
        assert renderer.render("{{ messages[0]['content'] }}!", "fine",
                               messages=[{"role": "user", "content": "héllo \udcff"}]) == "héllo \udcff!"
    finally:
        renderer.close()


def test_a_renderer_killed_mid_render_is_an_error_and_is_replaced() -> None:
    import os
    import signal
    import threading

    from localllm.backends.chat_templates import TemplateRenderer

    renderer = TemplateRenderer(seconds=20)
    try:
        renderer.start()
        process = renderer._process
        assert process is not None
        threading.Timer(1.0, os.kill, (process.pid, signal.SIGKILL)).start()
        with pytest.raises(TemplateFailure) as raised:
            renderer.render(BOUNDLESS["nested-loops"], "victim", messages=[])
        assert "the renderer was killed by SIGKILL" in raised.value.message
        assert renderer.render("{{ bos_token }}ok", "fine", bos_token="<s>") == "<s>ok"
    finally:
        renderer.close()


@pytest.fixture(scope="module")
def huge_constant(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path) -> Path:
    return copy_with_template(bundled_model, tmp_path_factory.mktemp("constant") / "huge-constant.gguf",
                              "{{ 'A' * 2000000000 }}")


def test_a_template_costly_to_compile_costs_tokenize_nothing_and_run_one_error(huge_constant: Path,
                                                                                home: Path) -> None:
    """`tokenize` and `run` on a GGUF whose template is `{{ 'A' * 2000000000 }}`: tokenizing compiles no template
    (it took 32 s and 7.9 GB), and `run` is refused by the renderer's memory bound."""
    code, errors, peak = peak_memory_of(["tokenize", "-m", str(huge_constant), "Hello world"], home)
    assert code == 0, errors
    assert peak < 400 << 20, f"tokenize peaked at {peak >> 20} MiB"
    code, errors, peak = peak_memory_of(["run", "-m", str(huge_constant), "-o", "max_tokens=4", "Hello"], home)
    assert code == 1 and errors.strip().splitlines()[-1].startswith(
        "error: the chat template of huge-constant failed: it needs more than 1024 MiB of memory"), errors
    assert peak < 1 << 30, f"run peaked at {peak >> 20} MiB"
