"""`localllm serve` serving every model by name: a second model (a copy of the bundled file in a configured model
folder, so a second real GGUF) loaded at its first request, the least recently used unloaded to make room, Ollama's
keep_alive and its load and unload idioms, an unknown name refused in each API's own shape; and the scheduler's
memory planning with real models in-process."""

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import seed_verdict
from helpers.serve_process import serving

FIRST, SECOND, FIM = "smollm2-135m", "second-smol", "fim-smol"
http = httpx.Client(timeout=120)
"""A loaded machine may take longer than httpx's 5 seconds to load a model."""


def second_model_home(root: Path, bundled_model: Path) -> Path:
    """A home whose config names a model folder holding a copy of the bundled model under another name."""
    models, home = root / "models", root / "home"
    models.mkdir()
    (home / "config").mkdir(parents=True)
    try:
        os.link(bundled_model, models / f"{SECOND}.gguf")  # the same bytes without a second copy on disk
    except OSError:
        shutil.copyfile(bundled_model, models / f"{SECOND}.gguf")
    (home / "config" / "config.toml").write_text(f'model_dirs = ["{models}"]\n')
    return home


def with_fim_tokens(bundled_model: Path, target: Path) -> None:
    """A copy of the bundled model whose metadata names three of its tokens as fill-in-the-middle's (gguf's own
    metadata tool): SmolLM2 was not trained for it, so what it writes there means nothing, but the way a suffix
    takes to the model is the real one."""
    import sys

    done = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--special-token-by-id",
                           "fim_pre", "5", "--special-token-by-id", "fim_suf", "6", "--special-token-by-id",
                           "fim_mid", "3", "--force", str(bundled_model), str(target)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundled_model, build_verdict):
    home = seed_verdict(second_model_home(tmp_path_factory.mktemp("serve-models"), bundled_model),
                        build_verdict)
    with_fim_tokens(bundled_model, home.parent / "models" / f"{FIM}.gguf")
    with serving(home, "--max-loaded", "1", "--preset", "precise") as url:
        yield url, home / "serve.log"


def loaded_names(url: str) -> list[str]:
    return [m["name"] for m in http.get(f"{url}/api/ps").json()["models"]]


def until(check, seconds: float = 60) -> bool:
    """Whether ``check`` came true within ``seconds``: what only has to happen eventually (an unload, a runner's
    end) is given as long as a loaded machine may take, and still fails a check that never comes true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_each_model_answers_by_its_name_and_the_least_recently_used_makes_room(server, bundled_model):
    import ollama

    url, log = server
    client = ollama.Client(host=url)
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {FIRST, SECOND, FIM}
    assert listed[SECOND].size == bundled_model.stat().st_size and listed[SECOND].details.quantization_level == "Q4_1"
    first = client.chat(model=FIRST, messages=[{"role": "user", "content": "Name a colour."}],
                        options={"num_predict": 4})
    second = client.chat(model=f"{SECOND}:latest", messages=[{"role": "user", "content": "Name a colour."}],
                         options={"num_predict": 4})
    assert first.model == FIRST and second.model == SECOND and second.message.content
    assert loaded_names(url) == [SECOND]  # --max-loaded 1: the first was unloaded for the second
    lines = log.read_text()
    assert f"unloading {FIRST} to make room" in lines and f"loaded {SECOND}" in lines
    # A request naming no model is the default's (serve's -m): loaded again, in the second one's place
    plain = http.post(f"{url}/v1/chat/completions", json={"max_tokens": 2, "messages": [
        {"role": "user", "content": "Hi"}]}).json()
    assert plain["model"] == FIRST and loaded_names(url) == [FIRST]


def test_an_unknown_model_is_a_404_in_each_api_s_shape_listing_what_is_served(server):
    import anthropic
    import ollama
    import openai

    url, log = server
    with pytest.raises(openai.NotFoundError) as by_openai:
        openai.OpenAI(base_url=f"{url}/v1", api_key="none").chat.completions.create(
            model="gpt-4o", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert f"model 'gpt-4o' is not served here; served: {FIM}, {SECOND}, {FIRST}, {FIRST}:q4_1" in str(by_openai.value)
    with pytest.raises(anthropic.NotFoundError) as by_anthropic:
        anthropic.Anthropic(base_url=url, api_key="none").messages.create(
            model="claude-sonnet-4-5", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert by_anthropic.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(ollama.ResponseError) as by_ollama:
        ollama.Client(host=url).chat(model="llama3:8b", messages=[{"role": "user", "content": "Hi"}])
    assert by_ollama.value.status_code == 404 and "llama3:8b" in by_ollama.value.error
    for path, body in (("/api/show", {"model": "llama3:8b"}), ("/api/embed", {"model": "x", "input": "a"}),
                       ("/v1/completions", {"model": "x", "prompt": "a"}), ("/api/generate", {"model": "x"})):
        assert http.post(f"{url}{path}", json=body).status_code == 404, path
    assert http.get(f"{url}/v1/models/gpt-4o").status_code == 404
    # A path is not a name a client may send: the server's files are not the client's to choose
    assert http.post(f"{url}/api/generate", json={"model": "/etc/passwd", "prompt": "a"}).status_code == 404
    assert "POST /v1/chat/completions 404" in log.read_text()


def test_keep_alive_loads_unloads_and_expires_as_ollama_s_does(server):
    import ollama

    url, _ = server
    client = ollama.Client(host=url)
    unloaded = client.generate(model=FIRST, keep_alive=0)  # nothing to answer, keep_alive 0: unload now
    assert unloaded.done_reason == "unload" and until(lambda: loaded_names(url) == [])
    loaded = client.generate(model=SECOND, keep_alive=-1)  # nothing to answer: load and keep it
    assert loaded.done_reason == "load" and loaded_names(url) == [SECOND]
    (kept,) = client.ps().models
    assert kept.expires_at.year > 2200
    # The chat idiom, and a keep-alive that runs out: long enough to still be loaded when a loaded machine gets to
    # asking (at 1 s it could be gone already).
    client.chat(model=SECOND, messages=[], keep_alive="3s")
    (expiring,) = client.ps().models
    assert expiring.expires_at.timestamp() - time.time() <= 3.5
    assert until(lambda: loaded_names(url) == [])
    embedded = client.embed(model=SECOND, input="a lighthouse", keep_alive="1m")  # the named model's vectors
    assert len(embedded.embeddings[0]) == 576 and loaded_names(url) == [SECOND]
    refused = http.post(f"{url}/api/generate", json={"model": SECOND, "prompt": "a", "keep_alive": "soon"})
    assert refused.status_code == 400 and refused.json()["error"].startswith("keep_alive must be a duration")


def test_the_memory_plan_keeps_models_that_fit_and_unloads_the_least_recently_used_for_one_that_does_not(
        tmp_path, bundled_model, build_verdict):
    """In-process: the real scheduler loading real models, planned for a machine with room for one model or for
    two."""
    from localllm.core.settings import Settings
    from localllm.hardware.detect import detect_hardware
    from localllm.server.engine import Engine
    from localllm.server.scheduler import Scheduler
    from localllm.tasks.loading import load_model
    from localllm.tasks.serving import LocalModels

    home = seed_verdict(second_model_home(tmp_path, bundled_model), build_verdict)
    settings = Settings.load({**os.environ, "LOCALLLM_HOME": str(home)})
    report = detect_hardware()
    with load_model(settings, FIRST, backend="llama.cpp", ctx=512, report=report) as probe:
        one_model = probe.plan.memory.total

    async def scenario(room: int) -> list[list[str]]:
        machine = replace(report, ram_available=room, gpus=())
        scheduler = Scheduler(LocalModels(settings, machine, backend="llama.cpp", ctx=512), Engine)
        seen = []
        try:
            for name in (FIRST, SECOND, FIRST):
                lease = await scheduler.lease(name)
                lease.release()
                seen.append([slot.engine.name for slot in scheduler.loaded()])
        finally:
            scheduler.close()
        return seen

    assert asyncio.run(scenario(int(one_model * 1.5))) == [[FIRST], [SECOND], [FIRST]]
    assert asyncio.run(scenario(one_model * 3)) == [[FIRST], [SECOND, FIRST], [FIRST, SECOND]]


def test_ollama_s_durations_add_up_and_count_the_load(server):
    import ollama

    url, _ = server
    client = ollama.Client(host=url)
    client.generate(model=SECOND, keep_alive=0)  # unloaded, so the next request loads it
    until(lambda: SECOND not in loaded_names(url))
    for answer in (client.generate(model=SECOND, prompt="Name a colour.", options={"num_predict": 6}),
                   list(client.generate(model=SECOND, prompt="Name a colour.", options={"num_predict": 6},
                                        stream=True))[-1]):
        parts = answer.load_duration + answer.prompt_eval_duration + answer.eval_duration
        assert answer.done and answer.eval_count == 6 and 0 < parts <= answer.total_duration
        assert answer.eval_duration > 0  # (the second reads the prompt from the cache: its prompt time is ~0)
    first = client.generate(model=FIRST, prompt="Hi", options={"num_predict": 1}, keep_alive="1m")
    again = client.generate(model=FIRST, prompt="Hi", options={"num_predict": 1})
    assert first.load_duration > 0.05e9 and again.load_duration == 0  # loaded for the first, not the second


def test_raw_skips_the_template_and_suffix_fills_in_the_middle(server):
    import ollama

    url, _ = server
    client = ollama.Client(host=url)
    prompt = "The capital of France is"
    templated = client.generate(model=SECOND, prompt=prompt, options={"num_predict": 1})
    raw = client.generate(model=SECOND, prompt=prompt, raw=True, options={"num_predict": 1})
    assert raw.prompt_eval_count == 5 < templated.prompt_eval_count  # the five tokens of the text, nothing around
    with pytest.raises(ollama.ResponseError) as no_fim:
        client.generate(model=SECOND, prompt="def add(a, b):\n    return ", suffix="\n")
    assert no_fim.value.status_code == 400 and "no fill-in-the-middle tokens" in no_fim.value.error
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    filled = client.generate(model=FIM, prompt=prefix, suffix=suffix, options={"num_predict": 4})
    plain = client.generate(model=FIM, prompt=prefix + suffix, raw=True, options={"num_predict": 1})
    # The same text, less the start token raw adds and the tokenizer's merge at the seam, plus the three marks
    assert filled.done and abs(filled.prompt_eval_count - (plain.prompt_eval_count + 3)) <= 1
    shown = client.show(FIM)  # loaded: what it can do is known, fill-in-the-middle ("insert") among it
    assert "insert" in shown.capabilities and "insert" not in client.show(SECOND).capabilities
    assert "<|im_start|>" in shown.template and "temperature" in shown.parameters  # serve's --preset precise


def test_through_a_server_backend_the_names_are_that_server_s(tmp_path, llama_server, build_verdict):
    """serve -b openai in front of a real llama_cpp.server: its model ids are the names, its memory its own."""
    import openai

    home = seed_verdict(tmp_path, build_verdict)
    with serving(home, "-b", "openai", "--base-url", f"{llama_server.url}/v1") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        assert [m.id for m in client.models.list().data] == [FIRST]  # llama_cpp.server's id for its model
        answer = client.chat.completions.create(model=FIRST, max_tokens=3,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert answer.model == FIRST and answer.choices[0].message.content
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
