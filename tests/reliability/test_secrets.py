"""localllm knows its own secrets: a server that echoes the Authorization header back in an error never gets the
key printed."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_cli
from helpers.fake_http import JsonHandler

from localllm.core.settings import Paths, Settings

SECRET = "sk-echoed-0123456789abcdef"


class EchoingHandler(JsonHandler):
    """A fake OpenAI-compatible server (none echoes keys on purpose): /v1/models answers in the wire format, and
    every completion is a 400 whose OpenAI-style error message repeats the request's Authorization header."""

    def do_GET(self) -> None:
        self.answer(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer(400, {"error": {"message": f"bad request; headers: Authorization: "
                                               f"{self.headers.get('Authorization')}",
                                    "type": "invalid_request_error"}})


@pytest.fixture
def echoing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_echoed_key_is_never_printed(echoing_server: str, home: Path, how: str) -> None:
    args = ["run", "-b", "openai", "--base-url", echoing_server, "Hello"]
    env = {"OPENAI_API_KEY": SECRET} if how == "environment" else {}
    if how == "flag":
        args[1:1] = ["--api-key", SECRET]
    done = run_cli(*args, home=home, env=env)
    assert done.returncode == 1
    assert SECRET not in done.stderr_text and SECRET not in done.stdout_text
    assert "[redacted]" in done.stderr_text and "400" in done.stderr_text


def test_settings_name_the_secrets_they_hold(tmp_path: Path) -> None:
    settings = Settings(paths=Paths(tmp_path, tmp_path, tmp_path), api_key=SECRET)
    assert settings.secrets({"HF_TOKEN": "hf_abcdef123456"}) == (SECRET, "hf_abcdef123456")
    assert SECRET not in repr(settings)


def test_a_config_file_that_holds_a_key_is_written_for_the_user_alone(tmp_path: Path) -> None:
    from localllm.tui.preferences import Preferences

    config = tmp_path / "config.toml"
    config.write_text(f'api_key = "{SECRET}"\n')
    config.chmod(0o644)
    preferences = Preferences.load(config)
    preferences.save(theme="nord")
    assert config.stat().st_mode & 0o777 == 0o600
    assert f'api_key = "{SECRET}"' in config.read_text() and 'theme = "nord"' in config.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary file left


def test_a_config_file_without_a_key_keeps_its_mode_and_a_new_one_gets_the_umask(tmp_path: Path) -> None:
    from localllm.tui.preferences import Preferences

    shared = tmp_path / "shared.toml"
    shared.write_text('model = "smollm2-135m"\n')
    shared.chmod(0o640)
    Preferences.load(shared).save(theme="nord")
    assert shared.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "new" / "config.toml"
    Preferences.load(fresh).save(theme="nord")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_key_in_a_config_file_others_can_read_is_pointed_out(home: Path) -> None:
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'api_key = "{SECRET}"\n')
    config.chmod(0o644)
    done = run_cli("list", home=home)
    assert done.returncode == 0, done.stderr_text
    assert f"note: {config} holds an API key and other users can read it (mode 0644): chmod 600 {config}" \
        in done.stderr_text and SECRET not in done.stderr_text + done.stdout_text
    config.chmod(0o600)
    assert "holds an API key" not in run_cli("list", home=home).stderr_text
