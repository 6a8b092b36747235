"""Odd inputs that used to end in "unexpected ...": impossible model paths, an empty stop string, a chat line that
is not UTF-8, a CSV field over the csv module's 128 KiB limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from helpers.backend_servers import free_port


def test_impossible_model_paths_are_one_clear_error(tmp_path: Path, home: Path) -> None:
    loop = tmp_path / "loop.gguf"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.gguf"
    dangling.symlink_to(tmp_path / "never-there.gguf")
    for name, fragment in ((("x" * 10_000) + ".gguf", "cannot use xxx"), ("~no-such-user-here/m.gguf", "home folder"),
                           (str(loop), "symbolic links"), (str(dangling), "a link to a file that does not exist")):
        done = run_cli("run", "-m", name, "Hello", home=home)
        assert done.returncode == 1, done.stderr_text
        lines = done.stderr_text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
        assert len(lines[0]) < 400  # a 10,000-character name is cut short


def test_a_missing_model_file_is_said_without_asking_ollama(tmp_path: Path, home: Path) -> None:
    """A name no local store knows may be one Ollama has pulled, so the server is asked; a file path never is an
    Ollama name, so its error comes without that round trip (and the client's import), and before the hardware is
    probed."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def answer() -> None:  # what an Ollama that is not one answers: the request read, the connection closed
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                asked.append(connection.recv(4096))

    threading.Thread(target=answer, daemon=True).start()
    env = {"OLLAMA_HOST": f"127.0.0.1:{listener.getsockname()[1]}"}
    try:
        for command in (("run", "-m", str(tmp_path / "missing.gguf"), "Hello"), ("show", "./models/missing")):
            done = run_cli(*command, home=home, env=env)
            assert done.returncode == 1 and done.stderr_text.startswith("error: no such model file"), done.stderr_text
        assert asked == []
        # On an OpenAI-compatible server a model's name can be a path on the server's machine: it is the server's.
        done = run_cli("show", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "/models/missing.gguf", home=home)
        assert done.returncode == 1 and "cannot reach an OpenAI-compatible server" in done.stderr_text, \
            done.stderr_text
        done = run_cli("run", "-m", "missing-model", "Hello", home=home, env=env)
        assert done.returncode == 1 and done.stderr_text.startswith("error: "), done.stderr_text
        assert asked and asked[0].startswith(b"GET /api/version")
    finally:
        listener.close()


def test_an_empty_stop_string_is_refused(home: Path) -> None:
    done = run_cli("run", "-o", "stop=", "Hello", home=home)
    assert done.returncode == 2 and "empty stop string" in done.stderr_text


@pytest.mark.model
def test_a_chat_line_that_is_not_utf8_does_not_end_the_chat(shared_home: Path) -> None:
    done = run_cli("chat", "--preset", "precise", "-o", "max_tokens=4", home=shared_home,
                   stdin=b"Hello \xff\xfe there\nName a colour.\n/exit\n")
    assert done.returncode == 0, done.stderr_text
    assert "not valid UTF-8" in done.stderr_text
    assert len([line for line in done.stdout_text.splitlines() if line.strip()]) >= 2


@pytest.mark.model
def test_a_csv_field_over_128_kib_is_one_failed_row(shared_home: Path, tmp_path: Path) -> None:
    rows = tmp_path / "tickets.csv"
    rows.write_text('id,text\n1,"The app crashes on start."\n2,"' + "word " * 40_000 + '"\n')
    done = run_cli("classify", str(rows), "--labels", "bug,feature", "--field", "text", "--preset", "precise",
                   home=shared_home)
    assert "unexpected" not in done.stderr_text and "Traceback" not in done.stderr_text
    out = [json.loads(line) for line in done.stdout_text.splitlines() if line.strip()]
    assert [row["id"] for row in out] == ["1", "2"]
    assert out[0].get("label") in ("bug", "feature") and "error" in out[1]
    assert done.returncode == 1


BAD_ADDRESSES = {
    "http://127.0.0.1:99999/v1": "Port out of range",
    "http://[::1/v1": "Invalid IPv6 URL",
    "localhost:abc": "Port could not be cast",
    "ftp://127.0.0.1/v1": "only http and https",
    "http://:8000/v1": "no host name",
}


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_bad_server_address_is_one_clear_error_wherever_it_is_given(address: str, home: Path) -> None:
    fragment = BAD_ADDRESSES[address]
    flag = run_cli("run", "-b", "openai", "--base-url", address, "Hello", home=home)
    assert flag.returncode == 2 and flag.stderr_text.startswith(f"error: --base-url {address!r}"), flag.stderr_text
    host = run_cli("run", "-b", "ollama", "--host", address, "Hello", home=home)
    assert host.returncode == 2 and host.stderr_text.startswith(f"error: --host {address!r}"), host.stderr_text
    variable = run_cli("run", "-b", "openai", "Hello", home=home, env={"OPENAI_BASE_URL": address})
    assert variable.returncode == 1 and "environment variable OPENAI_BASE_URL" in variable.stderr_text
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(f"ollama_host = {json.dumps(address)}\n")
    config = run_cli("list", home=home)
    assert config.returncode == 1 and "config.toml: ollama_host" in config.stderr_text
    for done in (flag, host, variable, config):
        lines = done.stderr_text.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0] and "hint:" in lines[0], lines


def test_an_ipv6_server_address_is_taken(home: Path) -> None:
    done = run_cli("run", "-b", "ollama", "--host", "http://[::1]:9", "--timeout", "5", "Hello", home=home)
    assert done.returncode == 1 and "cannot reach Ollama at http://[::1]:9" in done.stderr_text, done.stderr_text


@pytest.mark.usefixtures("bundled_model")
def test_a_prompt_override_that_is_not_utf8_is_named(home: Path) -> None:
    prompts = home / "config" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "summarize.md").write_bytes(b"Summarize \xff\xfe this: $document\n")
    done = run_cli("summarize", home=home, stdin="Some text to summarize.")
    assert done.returncode == 1
    assert done.stderr_text.strip() == (f"error: the prompt {prompts / 'summarize.md'} is not UTF-8 text (byte 10 is "
                                        "0xff) — hint: save it as UTF-8, or remove it to use the built-in prompt")
