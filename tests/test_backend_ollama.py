"""The Ollama backend through the official client, against the Ollama protocol stand-in
(tests/helpers/ollama_standin.py, a real server process replaying Ollama's wire format with real generation): options,
the server's model store, pull with progress, and the faults. The same routes are checked against a real Ollama when
OLLAMA_HOST is set."""

from __future__ import annotations

import os
import re

import pytest
from conftest import run_cli, settings_for
from helpers.backend_servers import start_ollama_standin

from localllm.backends.ollama import OllamaBackend
from localllm.core.chunks import Response
from localllm.core.errors import BackendUnavailable, ContextOverflow, GenerationError, ModelNotFound
from localllm.core.messages import Message
from localllm.core.options import preset
from localllm.tasks.loading import load_model

QUESTION = [Message("user", "Name three colours.")]


def connected(url: str, name: str = "smollm2:135m", timeout: float = 60, **values) -> OllamaBackend:
    backend = OllamaBackend(url, timeout, **values)
    backend.connect(name, ctx=2048)
    return backend


@pytest.fixture
def own_standin(bundled_model):
    """A stand-in of this test's own, for faults that stop or kill the server."""
    server = start_ollama_standin(bundled_model)
    yield server
    server.stop()


@pytest.fixture
def standin(ollama_standin):
    yield ollama_standin
    ollama_standin.post("/_control", {})


def test_options_travel_under_ollama_names(standin):
    with connected(standin.url, keep_alive="7m", threads=2) as backend:
        options = preset("precise").with_overrides(max_tokens=5, seed=42, stop=("zzz",), top_k=7, min_p=0.1)
        Response(backend.chat(QUESTION, options)).text()
    sent = standin.get("/_requests")[-1]
    assert sent["path"] == "/api/chat" and sent["body"]["keep_alive"] == "7m"
    assert sent["body"]["options"] == {"num_ctx": 2048, "temperature": 0.0, "top_k": 7, "top_p": 1.0, "min_p": 0.1,
                                       "repeat_penalty": 1.0, "num_predict": 5, "seed": 42, "stop": ["zzz"],
                                       "num_thread": 2}


def test_think_travels_as_ollamas_own_switch(standin):
    with connected(standin.url) as backend:
        for think in ("off", "on", "high", None):
            Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=3, think=think))).text()
    sent = [request["body"].get("think", "absent") for request in standin.get("/_requests")[-4:]]
    assert sent == [False, True, "high", "absent"]  # None leaves it to the model


def test_connect_reads_the_window_and_details_from_show(standin):
    with OllamaBackend(standin.url) as backend:
        served = backend.connect("smollm2:135m", ctx=None)
        assert served.context_length == 8192 and served.n_ctx == 8192  # default ctx 8192, trained 8192
        assert dict(served.details)["quantization_level"] == "Q4_1"
        assert backend.connect("smollm2:135m", ctx=1024).n_ctx == 1024
        assert backend.connect("ollama/smollm2:135m", ctx=99_999).n_ctx == 8192


def test_json_schema_goes_as_format(standin):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    with connected(standin.url) as backend:
        text = Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=20,
                                                                                  json_schema=schema))).text()
    assert standin.get("/_requests")[-1]["body"]["format"] == schema
    assert text.replace(" ", "") in ('{"ok":true}', '{"ok":false}')


def test_list_show_ps_and_delete(standin):
    with OllamaBackend(standin.url) as backend:
        assert "smollm2:135m" in [m["model"] for m in backend.list_models()]
        assert backend.show("smollm2:135m")["details"]["family"] == "llama"
        backend.connect("smollm2:135m", ctx=2048)
        Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=2))).text()
        assert "smollm2:135m" in [m["model"] for m in backend.running()]
        backend.pull("llama3.2:1b")
        backend.delete("llama3.2:1b")
        assert "llama3.2:1b" not in [m["model"] for m in backend.list_models()]
        with pytest.raises(ModelNotFound):
            backend.delete("llama3.2:1b")


def test_pull_reports_progress_over_all_layers(standin):
    seen: list[tuple[int, int]] = []
    statuses: list[str] = []
    with OllamaBackend(standin.url) as backend:
        backend.pull("tinyllama", lambda done, total: seen.append((done, total)), statuses.append)
        assert "tinyllama:latest" in [m["model"] for m in backend.list_models()]
        with pytest.raises(GenerationError, match="file does not exist"):
            backend.pull("no-such-model")
    assert seen[-1][0] == seen[-1][1] > 0 and seen == sorted(seen)
    assert statuses[0] == "pulling manifest" and "verifying sha256 digest" in statuses


def test_cli_pull_with_the_same_progress_bar(standin, home):
    done = run_cli("pull", "--backend", "ollama", "--host", standin.url, "tinyllama:latest", home=home)
    assert done.returncode == 0, done.stderr_text
    assert done.stdout_text.strip() == "tinyllama:latest"
    # In a pipe no bar is drawn: the closing line says how much came and how fast.
    assert re.search(r"Ollama has tinyllama:latest \([\d.]+ MiB, [\d.]+ [KMG]iB/s\)", done.stderr_text), \
        done.stderr_text


def test_model_not_pulled_offers_the_pull(standin, home):
    with OllamaBackend(standin.url) as backend, pytest.raises(ModelNotFound) as err:
        backend.connect("qwen9:7b")
    assert "localllm pull --backend ollama qwen9:7b" in err.value.hint
    done = run_cli("run", "-b", "ollama", "--host", standin.url, "-m", "qwen9:7b", "hi", home=home)
    assert done.returncode == 1 and done.stderr_text.count("\n") == 1
    assert "not pulled" in done.stderr_text and "localllm pull --backend ollama qwen9:7b" in done.stderr_text


def test_server_not_running_says_ollama_serve(home):
    from helpers.backend_servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with OllamaBackend(url) as backend, pytest.raises(BackendUnavailable) as err:
        backend.connect("smollm2:135m")
    assert "ollama serve" in err.value.hint
    done = run_cli("run", "-b", "ollama", "hi", home=home, env={"OLLAMA_HOST": url})
    assert done.returncode == 1 and "cannot reach Ollama" in done.stderr_text and "Traceback" not in done.stderr_text


def test_error_line_mid_stream_keeps_the_partial_answer(standin):
    standin.post("/_control", {"error_after": 3})
    with connected(standin.url) as backend:
        response = Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=20)))
        with pytest.raises(GenerationError, match="unexpected EOF"):
            response.text()
    assert response.partial_text and response.final is None


def test_a_thinking_models_thinking_field_is_thinking_and_not_the_answer(standin):
    standin.post("/_control", {"thinking": "Three colours: red, green, blue."})
    with connected(standin.url) as backend:
        response = Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=12)))
        answer = response.text()
    assert response.thinking == "Three colours: red, green, blue. "
    assert answer and "Three colours:" not in answer and response.final.finish_reason == "length"


def test_garbage_instead_of_json_is_a_clear_error(standin):
    standin.post("/_control", {"garbage": True})
    with connected(standin.url) as backend:
        with pytest.raises(GenerationError, match="not Ollama's JSON"):
            Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=5))).text()


def test_server_that_stops_answering_times_out(own_standin):
    # 5 s: the connection's own requests answered by a loaded machine's server stay well inside it; the paused
    # server's silence still ends in this timeout.
    with connected(own_standin.url, timeout=5) as backend:
        own_standin.pause()
        try:
            with pytest.raises(GenerationError, match="no answer within 5 s"):
                Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=5))).text()
        finally:
            own_standin.resume()


def test_server_killed_mid_stream_keeps_the_partial_answer(own_standin):
    with connected(own_standin.url) as backend:
        response = Response(backend.chat([Message("user", "Write a long story about a dragon.")],
                                          preset("precise").with_overrides(max_tokens=300)))
        chunks = iter(response)
        for _ in range(3):
            next(chunks)
        own_standin.kill()
        with pytest.raises(GenerationError, match="connection broke|stream ended"):
            for _ in chunks:
                pass
    assert response.partial_text and response.final is None


def test_prompt_over_the_window_is_refused_before_ollama_cuts_it(standin):
    with connected(standin.url) as backend:
        with pytest.raises(ContextOverflow) as err:
            backend.chat([Message("user", "colour " * 1500)], preset("precise"))
    assert err.value.window == 2048 and "cut" in err.value.message


def test_closing_stops_the_server_generating(standin):
    with connected(standin.url) as backend:
        response = Response(backend.chat([Message("user", "Write a long story.")],
                                         preset("precise").with_overrides(max_tokens=400)))
        next(iter(response))
        response.close()
        # The next request waits for the stand-in's model lock, so it answers only once the first has stopped.
        assert Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=2))).text()
    stopped = [r["stopped_after"] for r in standin.get("/_requests") if "stopped_after" in r]
    assert stopped and stopped[-1] < 50


def test_auto_uses_ollama_for_ollama_names_and_names_only_it_has(standin, tmp_path):
    settings = settings_for(tmp_path, ollama_host=standin.url, ctx=2048)
    with load_model(settings, "ollama/smollm2:135m") as loaded:
        assert loaded.choice.name == "ollama" and "Ollama model" in loaded.choice.reasons[0]
        assert loaded.plan.verdict == "runs on the server" and loaded.ref.name == "smollm2:135m"
    with load_model(settings, "smollm2:135m") as loaded:  # no local model by that name; the server has it
        assert loaded.choice.name == "ollama" and "not a local model" in loaded.choice.reasons[0]
    with pytest.raises(ModelNotFound):
        load_model(settings, "qwen9:7b")


def test_cli_run_and_backends_through_ollama(standin, home):
    env = {"OLLAMA_HOST": standin.url}
    done = run_cli("run", "-b", "ollama", "-m", "smollm2:135m", "--preset", "precise", "-o", "max_tokens=6",
                   "--json", "Name three colours.", home=home, env=env)
    assert done.returncode == 0, done.stderr_text
    import json

    answer = json.loads(done.stdout_text)
    assert answer["backend"] == "ollama" and answer["usage"]["completion_tokens"] == 6 and answer["text"]
    report = json.loads(run_cli("backends", "--json", home=home, env=env).stdout_text)
    ollama = next(b for b in report["backends"] if b["name"] == "ollama")
    assert ollama["reachable"] is True and "smollm2:135m" in ollama["models"]
    assert "server 0.6.5" in ollama["version"]


def test_show_describes_a_model_on_the_server(standin, home):
    import json

    shown = run_cli("show", "-b", "ollama", "--host", standin.url, "smollm2:135m", "--json", home=home)
    assert shown.returncode == 0, shown.stderr_text
    report = json.loads(shown.stdout_text)
    assert report["name"] == "smollm2:135m" and report["backend"]["name"] == "ollama"
    assert report["context_length"] == 8192 and report["context"] <= 8192 and report["where"].startswith("Ollama")
    assert report["details"], "the server's family, size and quantization"
    table = run_cli("show", "-b", "ollama", "--host", standin.url, "smollm2:135m", home=home)
    assert table.returncode == 0 and "Model on a server" in table.stdout_text
    missing = run_cli("show", "-b", "ollama", "--host", standin.url, "qwen9:7b", home=home)
    assert missing.returncode != 0 and missing.stderr_text.startswith("error:")
    assert "localllm pull --backend ollama" in missing.stderr_text


@pytest.mark.skipif(not os.environ.get("OLLAMA_HOST"), reason="set OLLAMA_HOST to check a real Ollama")
def test_real_ollama_answers_the_same_routes():
    with OllamaBackend(os.environ["OLLAMA_HOST"]) as backend:
        assert backend.version()
        models = backend.list_models()
        assert isinstance(backend.running(), list)
        if models:
            served = backend.connect(os.environ.get("LOCALLLM_TEST_OLLAMA_MODEL") or models[0]["model"], ctx=2048)
            assert served.n_ctx == 2048
            assert Response(backend.chat(QUESTION, preset("precise").with_overrides(max_tokens=4))).text()
