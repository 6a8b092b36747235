"""Automatic choice, server settings from flags, config and environment, and the conservative token estimate."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, settings_for
from helpers.backend_servers import free_port

from localllm.backends.choice import choose_backend
from localllm.backends.streaming import StopScanner, estimate_tokens, without_repeated_prefix
from localllm.core.errors import BackendUnavailable
from localllm.core.settings import Settings
from localllm.hardware.report import CPUInfo, HardwareReport, LlamaCppBuild


def machine(llama: bool) -> HardwareReport:
    return HardwareReport(os="Linux", cpu=CPUInfo("cpu", "x86_64", 2, 2, ()), ram_total=8 << 30,
                          ram_available=4 << 30, llama_cpp=LlamaCppBuild(installed=llama, version="0.3.9"))


def test_explicit_then_config_then_rules(tmp_path):
    settings = settings_for(tmp_path, base_url="http://127.0.0.1:9/v1")
    assert choose_backend("ollama", "gpt4all", machine(True), settings=settings).name == "ollama"
    assert choose_backend("auto", "gpt4all", machine(True), settings=settings).name == "gpt4all"
    configured = choose_backend("auto", "auto", machine(True), settings=settings)
    assert configured.name == "openai" and "base URL is configured (http://127.0.0.1:9/v1)" in configured.reasons[0]
    local = choose_backend("auto", "auto", machine(True), settings=settings_for(tmp_path))
    assert local.name == "llama.cpp" and "in-process" in local.reasons[0]


def test_without_llama_cpp_gpt4all_is_next(tmp_path):
    choice = choose_backend("auto", "auto", machine(False), settings=settings_for(tmp_path))
    assert choice.name == "gpt4all" and "llama-cpp-python is not installed" in choice.reasons[0]


def test_no_backend_at_all_says_what_to_install(tmp_path, monkeypatch):
    import localllm.backends.choice as choice

    monkeypatch.setattr(choice, "installed_version", lambda name: None)
    with pytest.raises(BackendUnavailable) as err:
        choose_backend("auto", "auto", machine(False), settings=settings_for(tmp_path))
    assert "localllm[llama]" in err.value.hint and "gpt4all" in err.value.hint


def test_ollama_name_without_a_server_runs_its_file_in_place(tmp_path):
    settings = settings_for(tmp_path, ollama_host=f"http://127.0.0.1:{free_port()}")
    choice = choose_backend("auto", "auto", machine(True), model="ollama/llama3.2:1b", settings=settings)
    assert choice.name == "llama.cpp" and "Ollama does not answer" in choice.reasons[0]


def test_a_server_named_or_configured_is_used_without_probing_this_machine(tmp_path, monkeypatch):
    """The hardware probe imports llama.cpp to ask about GPUs; a model a server runs does not need it. The server
    here is not running, so each load ends with its one error, and the probe counts who asked."""
    import localllm.tasks.loading as loading
    from localllm.tasks.loading import load_model
    from localllm.tasks.reports import model_report

    probed: list[str] = []
    monkeypatch.setattr(loading, "detect_hardware", lambda **_: probed.append("probe") or machine(True))
    server = f"http://127.0.0.1:{free_port()}/v1"
    for settings, backend in ((settings_for(tmp_path, base_url=server), "openai"),
                              (settings_for(tmp_path, base_url=server), "auto"),
                              (settings_for(tmp_path, backend="openai", base_url=server), "auto"),
                              (settings_for(tmp_path, ollama_host=server.removesuffix("/v1")), "ollama")):
        with pytest.raises(BackendUnavailable, match="cannot reach|not running|does not answer"):
            load_model(settings, "some-model", backend=backend)
        with pytest.raises(BackendUnavailable):
            model_report(settings, "some-model", backend=backend)
    assert probed == []
    with pytest.raises(BackendUnavailable):  # an Ollama name may still run its file here: this machine is asked
        load_model(settings_for(tmp_path, base_url=server), "ollama/none:1b")
    assert probed == ["probe"]


def test_standard_variables_come_after_localllms_own(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('base_url = "http://config:8000/v1"\nrequest_timeout = 30\n')
    env = {"LOCALLLM_HOME": str(tmp_path), "OPENAI_BASE_URL": "http://env:1/v1", "OPENAI_API_KEY": "sk-x",
           "OLLAMA_HOST": "box:11434"}
    settings = Settings.load(env)
    assert settings.base_url == "http://config:8000/v1" and settings.request_timeout == 30.0
    assert settings.api_key == "sk-x" and settings.ollama_host == "box:11434" and "sk-x" not in repr(settings)
    assert Settings.load({**env, "LOCALLLM_OLLAMA_HOST": "other:1"}).ollama_host == "other:1"


def test_cli_flags_reach_the_settings(home):
    from localllm.cli.main import build_parser, settings_from

    args = build_parser().parse_args(["run", "-b", "openai", "--base-url", "http://h:1/v1", "--api-key", "k",
                                      "--server", "vllm", "--timeout", "5", "--host", "o:2", "hi"])
    settings = settings_from(args)
    assert (settings.backend, settings.base_url, settings.api_key, settings.server, settings.request_timeout,
            settings.ollama_host) == ("openai", "http://h:1/v1", "k", "vllm", 5.0, "o:2")
    done = run_cli("run", "--server", "vlm", "hi", home=home)
    assert done.returncode == 2 and "unknown server profile 'vlm'" in done.stderr_text
    done = run_cli("run", "--timeout", "0", "hi", home=home)
    assert done.returncode == 2 and "--timeout 0 must be above zero" in done.stderr_text


def test_backends_command_explains_the_choice(home):
    env = {"OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OPENAI_BASE_URL": ""}
    done = run_cli("backends", "--json", home=home, env=env)
    assert done.returncode == 0, done.stderr_text
    report = json.loads(done.stdout_text)
    names = [b["name"] for b in report["backends"]]
    assert names == ["llama.cpp", "ollama", "openai", "gpt4all"]
    llama = report["backends"][0]
    assert llama["installed"] and llama["version"] and llama["capabilities"]["tokenize"] is True
    assert report["backends"][1]["reachable"] is False and "cannot reach Ollama" in report["backends"][1]["problem"]
    assert report["auto"]["name"] == "llama.cpp" and report["auto"]["reasons"]
    assert "ollama: its server does not answer" in report["auto"]["passed_over"]
    assert any(line.startswith("openai: no base URL is configured") for line in report["auto"]["passed_over"])
    table = run_cli("backends", home=home, env=env)
    assert "auto picks llama.cpp" in table.stdout_text and "REACHABLE" in table.stdout_text


TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 5,
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Order 4815162342 shipped on 2024-05-17 for $1,234.56 (ref: AB-99/x).",
    '{"name": "Ada", "tags": ["a", "b"], "score": 0.75, "nested": {"ok": true}}',
    "Die Straße führt über die Brücke nach München; größer, schöner, länger.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji test 🙂🚀🎉 and symbols ∑∫√ ≤≥ → ← ©®",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "   indented\n\n\n\ttabs\tand\r\nwindows lines  ",
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_estimate_never_undercounts_the_real_tokenizer(loaded, text):
    exact = loaded.backend.count_tokens(text)
    estimate = estimate_tokens(text)
    assert exact <= estimate <= 3 * exact + 8


def test_stop_scanner_holds_back_only_possible_stop_starts():
    scanner = StopScanner(["END", "\n\n"])
    assert scanner.feed("Hello E") == ("Hello ", False)
    assert scanner.feed("Nd") == ("ENd", False)
    assert scanner.feed(" more\n") == (" more", False)
    assert scanner.feed("\nafter") == ("", True)
    assert StopScanner([]).feed("text") == ("text", False)


def test_repeated_answer_prefix_is_dropped_once():
    assert "".join(without_repeated_prefix(iter(["``", "`py", "thon\n", "x = 1"]), "```python\n")) == "x = 1"
    assert "".join(without_repeated_prefix(iter(["Sure", ": x"]), "```python\n")) == "Sure: x"
    assert "".join(without_repeated_prefix(iter(["``"]), "```python\n")) == "``"
