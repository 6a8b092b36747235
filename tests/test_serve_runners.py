"""`localllm serve` runs each model in a runner process of its own (localllm/server/runner.py): a runner killed
mid-answer fails its own client's request with the signal's name and is started again at the next request; two
models are two runners; unloading a model ends its runner; a damaged model file is a clean error, not a dead runner;
a client that leaves stops its generation in the runner. Through the real `serve` process and real clients."""

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from conftest import seed_verdict
from helpers.serve_process import serving
from test_serve_models import FIRST, SECOND, second_model_home, until

BROKEN = "broken-smol"
http = httpx.Client(timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundled_model, build_verdict):
    home = seed_verdict(second_model_home(tmp_path_factory.mktemp("serve-runners"), bundled_model),
                        build_verdict)
    with bundled_model.open("rb") as whole:  # a download cut short: a real GGUF header, its tensors missing
        (home.parent / "models" / f"{BROKEN}.gguf").write_bytes(whole.read(4 << 20))
    with serving(home, "--keep-alive", "-1") as url:
        yield url, home / "serve.log"


def runners_of(url: str) -> list[int]:
    """The pids of the runner processes of the serve listening at ``url`` (its children running the runner)."""
    port = url.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent_command = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"localllm.server.runner" in command and b"serve" in parent_command and port.encode() in parent_command:
            found.append(int(entry.name))
    return sorted(found)


def ask(url: str, model: str, **fields) -> httpx.Response:
    return http.post(f"{url}/v1/chat/completions", json={"model": model, "max_tokens": 3, "messages": [
        {"role": "user", "content": "Name a colour."}], **fields})


def test_a_runner_killed_mid_answer_fails_its_client_naming_the_signal_and_is_started_again(server):
    import openai

    url, log = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    assert ask(url, FIRST).status_code == 200
    [runner] = runners_of(url)
    stream = client.chat.completions.create(model=FIRST, stream=True, max_tokens=2000, messages=[
        {"role": "user", "content": "Write a long story about a lighthouse keeper."}])
    received = []
    with pytest.raises(openai.APIError) as failure:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 1:
                os.kill(runner, signal.SIGKILL)
    assert received and "SIGKILL" in str(failure.value) and "started again" in str(failure.value)
    assert until(lambda: runner not in runners_of(url))
    assert http.get(f"{url}/api/version").status_code == 200  # the server itself is up
    again = ask(url, FIRST)
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"]
    [new_runner] = runners_of(url)
    assert new_runner != runner
    assert "ended (SIGKILL)" in log.read_text()


def test_a_runner_killed_between_answers_is_started_again_at_the_next_request(server):
    import ollama

    url, _ = server
    assert ask(url, FIRST).status_code == 200
    [runner] = runners_of(url)
    os.kill(runner, signal.SIGKILL)
    assert until(lambda: FIRST not in [m["name"] for m in http.get(f"{url}/api/ps").json()["models"]])
    answer = ollama.Client(host=url).chat(model=FIRST, messages=[{"role": "user", "content": "Hi"}],
                                          options={"num_predict": 3})
    assert answer.message.content and runners_of(url) and runner not in runners_of(url)


def test_two_models_are_two_runners_and_unloading_one_ends_its_process(server, bundled_model):
    url, _ = server
    assert ask(url, FIRST).status_code == 200
    before = runners_of(url)
    assert ask(url, SECOND).status_code == 200
    after = runners_of(url)
    assert len(before) == 1 and len(after) == 2 and before[0] in after
    ps = {m["name"]: m for m in http.get(f"{url}/api/ps").json()["models"]}
    assert set(ps) == {FIRST, SECOND}
    # Each runner's size is its plan's (weights, cache, compute), or what its process holds where that is more
    assert all(m["size"] > bundled_model.stat().st_size for m in ps.values())
    [second_runner] = set(after) - set(before)
    unloaded = http.post(f"{url}/api/generate", json={"model": SECOND, "keep_alive": 0})
    assert unloaded.status_code == 200 and unloaded.json()["done_reason"] == "unload"
    assert until(lambda: not Path(f"/proc/{second_runner}").exists())
    assert runners_of(url) == before


def test_a_damaged_model_file_is_a_clean_error_and_leaves_no_runner(server):
    url, log = server
    before = runners_of(url)
    refused = ask(url, BROKEN)
    assert 400 <= refused.status_code < 600 and refused.status_code != 502
    message = refused.json()["error"]["message"]
    assert BROKEN in message or "gguf" in message.lower() or "model" in message.lower()
    assert "runner died" not in message and "Traceback" not in log.read_text()
    assert until(lambda: runners_of(url) == before)
    assert ask(url, FIRST).status_code == 200


def test_a_client_that_leaves_stops_its_generation_in_the_runner(server):
    url, log = server
    long_story = {"model": FIRST, "stream": True, "max_tokens": 2000,
                  "messages": [{"role": "user", "content": "Tell a very long story."}]}
    with http.stream("POST", f"{url}/v1/chat/completions", json=long_story) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                break
    assert until(lambda: "the client went away" in log.read_text())
    started = time.monotonic()
    assert ask(url, FIRST).status_code == 200  # the runner is free for the next request
    assert time.monotonic() - started < 60


def test_the_memory_left_counts_what_each_runner_holds_beyond_its_plan():
    """The room a model gets beside runners: each one's planned memory and its process's overhead taken off."""
    from localllm.core.plan import MemoryEstimate
    from localllm.hardware.report import CPUInfo, HardwareReport
    from localllm.tasks.serving import Footprint, memory_left

    machine = HardwareReport(os="Linux", cpu=CPUInfo("cpu", "x86_64", 2, 2, ()), ram_total=8 << 30,
                             ram_available=4 << 30)
    model = MemoryEstimate(weights=300 << 20, kv_cache=100 << 20, compute=50 << 20, gpu=0)
    left = memory_left(machine, [Footprint(model, overhead=80 << 20), Footprint(model)])
    assert left.ram_available == (4 << 30) - 2 * (450 << 20) - (80 << 20)
    assert memory_left(machine, [Footprint(model, overhead=8 << 30)]).ram_available == 0


def test_errors_cross_the_runner_s_socket_as_the_client_would_have_been_told():
    """An ApiError (its constructor takes more than its message) crosses as its fields; a LocalLLMError as itself,
    hint and counts kept; an exception that does not pickle as the 500 the engine would have made of it."""
    import pickle

    from localllm.core.errors import ContextOverflow
    from localllm.server.engine import ApiError
    from localllm.server.runner import error_from, error_payload

    def across(error: BaseException) -> BaseException:
        return error_from(pickle.loads(pickle.dumps(error_payload(error))))

    busy = across(ApiError(503, "the server is busy", "overloaded_error", {"Retry-After": "5"}))
    assert isinstance(busy, ApiError) and (busy.status, busy.message, busy.kind, busy.headers) == (
        503, "the server is busy", "overloaded_error", {"Retry-After": "5"})
    long = across(ContextOverflow("the prompt is 9,000 tokens", hint="shorten it", prompt_tokens=9000, window=8192))
    assert isinstance(long, ContextOverflow) and (long.hint, long.prompt_tokens, long.window) == (
        "shorten it", 9000, 8192)

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    odd = across(Unpicklable("native failure"))
    assert isinstance(odd, ApiError) and odd.status == 500 and "native failure" in odd.message


def test_a_model_with_more_slots_is_planned_with_each_slot_s_cache(tmp_path, bundled_model, build_verdict):
    """The plan of a model decoding several answers at once holds a KV cache of the whole window per slot: what
    the next model is planned beside and what /api/ps shows."""
    from conftest import settings_for

    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.serving import LocalModels

    home = seed_verdict(tmp_path, build_verdict)
    settings = settings_for(home)
    machine = detect_hardware()
    plans = {}
    for slots in (1, 3):
        with LocalModels(settings, machine, backend="llama.cpp", ctx=512, slots=slots).load(
                str(bundled_model), []) as loaded:
            plans[slots] = loaded.plan
    assert plans[3].n_ctx == plans[1].n_ctx == 512
    assert plans[3].memory.kv_cache == 3 * plans[1].memory.kv_cache > 0


@pytest.mark.model  # serve loads the bundled model
def test_the_runners_end_with_serve_however_serve_ends(tmp_path, build_verdict):
    """SIGTERM (what a service manager sends) ends serve as Ctrl-C does: each model is closed and the log says so.
    SIGKILL leaves serve no clean-up to run: its runner goes too (the kernel's parent-death signal, and the EOF on
    its socket)."""
    home = seed_verdict(tmp_path, build_verdict)

    def gone(pid: int) -> bool:
        return not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    for ending in (signal.SIGTERM, signal.SIGKILL):
        log = home / f"serve-{ending.name}.log"
        with serving(home, log_path=log) as url:
            assert ask(url, FIRST).status_code == 200
            [runner] = runners_of(url)
            serve_pid = int(Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[1])
            os.kill(serve_pid, ending)
            assert until(lambda pids=(runner, serve_pid): all(gone(pid) for pid in pids))
        said = "unloading smollm2-135m: the server stops" in log.read_text()
        assert said == (ending == signal.SIGTERM), log.read_text()
