"""Web pages that are not the user's are refused by `localllm serve` and `localllm web`: the real servers, on loopback
and without a key, get requests whose `Host` is not a name of this machine (what a page on a DNS name rebound to
127.0.0.1 sends), whose `Origin` is another site or `null`, and CORS preflights; headless Chromium opens a page on
another name (mapped to 127.0.0.1) whose script calls serve and opens the web app's websocket. Those requests get a
403 that says why, in the error shape of the API the path belongs to, and a line in the server's log, on every route,
known or not; curl and the SDKs (no Origin), pages on localhost and apps' own schemes go on working, the web app's
websocket refuses the foreign page as its pages do, and a page whose origin was given with `--allow-origin` works
from the browser. Bound to another address, the key is the gate and the Host is not checked."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import cli_executable, run_cli, seed_verdict
from helpers.backend_servers import end_with_children, free_port

from localllm.core.access import AccessPolicy, access_policy
from localllm.core.errors import UsageError

MODEL = "smollm2-135m"
"""The bundled model, as serve names it: a request must name a served model."""

ALLOWED = "http://allowed.test:*"
FROM_OLLAMA = "https://ollama-origin.example"
KEY = "origins-key-2468"
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>another site</title>
<script>
const given = new URLSearchParams(location.search);
async function call(path, init) {
  try {
    const answer = await fetch(given.get("serve") + path, init);
    return answer.status + " " + (await answer.text()).slice(0, 300);
  } catch (error) {
    return "failed: " + error;
  }
}
function openSocket() {
  return new Promise((resolve) => {
    const socket = new WebSocket(given.get("web").replace("http://", "ws://") + "/ws?width=80&height=24");
    socket.onopen = () => { socket.close(); resolve("open"); };
    socket.onerror = () => resolve("error");
    setTimeout(() => resolve("no answer"), 30000);
  });
}
(async () => {
  const models = await call("/v1/models");
  const show = await call("/api/show", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({model: "smollm2-135m"})});
  window.probed = {models, show, socket: await openSocket()};
})();
</script>
"""


# -- the rule itself ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost", True), ("LOCALHOST:8000", True), ("localhost.:80", True), ("127.0.0.1:8000", True),
    ("127.8.9.10", True), ("[::1]:8000", True), ("[::1]", True), ("host.docker.internal:11434", True),
    ("models.lan:8000", True), ("box.home.lan", True), (None, True),
    ("evil.example", False), ("evil.example:8000", False), ("localhost.evil.example", False), ("0.0.0.0:8000", False),
    ("192.168.1.10:8000", False), ("[::2]:8000", False), ("models.lan.evil.example", False),
])
def test_the_host_rule_answers_loopback_names_and_the_allowed_ones_only(host, allowed) -> None:
    """On loopback, a Host header passes when it names this machine (any port) or an allowed host, and not otherwise;
    a request without one is no browser's and passes."""
    policy = access_policy("127.0.0.1", hosts=["models.lan", "*.home.lan"], environ={})
    assert policy.host_allowed(host) is allowed
    assert (policy.refusal(host, None) is None) is allowed


@pytest.mark.parametrize(("origin", "allowed"), [
    (None, True), ("http://localhost:3000", True), ("https://127.0.0.1", True), ("http://[::1]:8080", True),
    ("http://127.1.2.3:5173", True), ("app://obsidian.md", True), ("tauri://localhost", True),
    ("vscode-webview://0a1b2c", True), ("vscode-file://vscode-app", True), ("file://", True),
    ("https://chat.example.com", True), ("https://a.b.example.com", True), ("http://allowed.test:5173", True),
    (FROM_OLLAMA, True), ("http://models.lan:8000", True), ("https://models.lan:3000", True),
    ("https://evil.example", False), ("https://example.com", False), ("https://evil.com.example.org", False),
    ("http://allowed.test.evil.example:80", False), ("http://host.docker.internal:3000", False),
    ("http://localhost.evil.example", False), ("chrome-extension://abcdef", False), ("null", False),
    ("not an origin", False), ("http://0.0.0.0:8000", False),
])
def test_the_origin_rule_takes_this_machines_pages_apps_and_allowed_patterns(origin, allowed) -> None:
    """An Origin passes when it is a page on this machine, an app's scheme, the server's own address, or matches an
    allowed pattern (flags, config or OLLAMA_ORIGINS, with * wildcards); any other, and null, is refused."""
    policy = access_policy("127.0.0.1", hosts=["models.lan"],
                           origins=["https://*.example.com", ALLOWED], environ={"OLLAMA_ORIGINS": f" {FROM_OLLAMA}/,"})
    assert policy.origin_allowed(origin, host="models.lan:8000") is allowed
    reason = policy.refusal("models.lan:8000", origin)
    assert reason is None if allowed else reason is not None and "Origin" in reason


def test_null_and_everything_are_allowed_only_when_named() -> None:
    """`Origin: null` passes only when `null` itself is allowed; `*` allows every real origin but not null."""
    assert access_policy("127.0.0.1", origins=["null"], environ={}).origin_allowed("null")
    everything = access_policy("127.0.0.1", origins=["*"], environ={})
    assert everything.origin_allowed("https://anything.example:444") and not everything.origin_allowed("null")
    any_host = access_policy("127.0.0.1", hosts=["*"], environ={})
    assert any_host.host_allowed("anything.example") and not any_host.origin_allowed("http://anything.example")


def test_on_another_address_the_host_is_not_checked_but_the_origin_is() -> None:
    """Bound to an address other than loopback (where a key is required), any Host passes; a foreign Origin does
    not."""
    for bind in ("0.0.0.0", "192.168.1.10", "::"):
        policy = access_policy(bind, environ={})
        assert not policy.check_host and policy.host_allowed("evil.example:8000")
        assert policy.origin_allowed("http://192.168.1.10:8001", host="192.168.1.10:8001")  # its own pages
        assert policy.refusal("evil.example:8000", "https://other.example") is not None
    for bind in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert access_policy(bind, environ={}).check_host, bind
    assert AccessPolicy().check_host


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--allow-origin", "https://example.com/app", "without a path"),
    ("--allow-origin", "example.com", "has no scheme"),
    ("--allow-origin", "", "is empty"),
    ("--allow-host", "http://mybox.lan", "give the host name alone"),
    ("--allow-host", "a b", "spaces"),
])
def test_a_bad_allowed_host_or_origin_is_a_clear_error(flag, value, said) -> None:
    """A value that is no host name or no origin is a usage error naming the flag and what is wrong, never a
    traceback."""
    with pytest.raises(UsageError, match=said) as raised:
        access_policy("127.0.0.1", **({"hosts": [value]} if flag == "--allow-host" else {"origins": [value]}),
                      environ={})
    assert raised.value.message.startswith(f"{flag} {value!r}") and raised.value.hint


def test_bad_values_from_the_command_line_the_config_and_ollama_origins_say_where(home: Path) -> None:
    """Each source of a bad value is named in a one-line error before any model loads: the flag, the config key, the
    environment variable."""
    flag = run_cli("serve", "--allow-origin", "https://example.com/app", home=home)
    web = run_cli("web", "--allow-host", "http://mybox.lan", home=home)
    environment = run_cli("serve", home=home, env={"OLLAMA_ORIGINS": "https://fine.example,localhost:3000"})
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('allowed_origins = "https://one.example"\nallowed_hosts = [3]\n')
    from_config = run_cli("serve", home=home)
    assert flag.returncode == 2 and flag.stderr_text.startswith("error: --allow-origin 'https://example.com/app'")
    assert web.returncode == 2 and web.stderr_text.startswith("error: --allow-host 'http://mybox.lan'")
    assert environment.returncode == 2
    assert "environment variable OLLAMA_ORIGINS: 'localhost:3000' has no scheme" in environment.stderr_text
    assert from_config.returncode == 1 and "allowed_hosts must be a list of strings" in from_config.stderr_text
    for done in (flag, web, environment, from_config):
        assert "Traceback" not in done.stderr_text and "hint" in done.stderr_text.lower(), done.stderr_text


def test_the_config_and_its_environment_variables_give_the_lists(home: Path) -> None:
    """`allowed_hosts` and `allowed_origins` come from the config (a list) or LOCALLLM_ALLOWED_* (comma separated),
    normalised as they are matched."""
    from localllm.core.settings import Settings

    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('allowed_hosts = ["MyBox.lan:8000"]\nallowed_origins = ["https://App.Example.com/"]\n')
    settings = Settings.load({"LOCALLLM_HOME": str(home)})
    assert settings.allowed_hosts == ("mybox.lan",) and settings.allowed_origins == ("https://app.example.com",)
    from_environment = Settings.load({"LOCALLLM_HOME": str(home), "LOCALLLM_ALLOWED_ORIGINS": "app://*, null"})
    assert from_environment.allowed_origins == ("app://*", "null")


def test_a_websocket_route_added_later_is_guarded_too(caplog: pytest.LogCaptureFixture) -> None:
    """A websocket route (serve has none yet) inherits the rule: a foreign Origin's handshake is closed before it is
    accepted (an ASGI server answers that with a 403) and logged, while this machine's page connects."""
    import logging

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from localllm.server.origins import guard

    async def echo(socket_: WebSocket) -> None:
        await socket_.accept()
        await socket_.send_text(await socket_.receive_text())
        await socket_.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)], middleware=guard(
        access_policy("127.0.0.1", environ={}), lambda path, reason: PlainTextResponse(reason, 403),
        logging.getLogger("localllm.serve")))
    with caplog.at_level(logging.INFO, "localllm.serve"), TestClient(app, base_url="http://127.0.0.1:8000") as client:
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("ws://127.0.0.1:8000/ws", headers={"Origin": "https://evil.example"}):
                pass
        with client.websocket_connect("ws://127.0.0.1:8000/ws", headers={"Origin": "http://[::1]:3000"}) as socket_:
            socket_.send_text("hello")
            echoed = socket_.receive_text()
        foreign_host = client.get("/ws", headers={"Host": "rebound.example"})
    assert refused.value.code == 1008 and echoed == "hello"
    assert foreign_host.status_code == 403 and "not a name of this machine" in foreign_host.text
    assert any("WEBSOCKET /ws 403" in line and "https://evil.example" in line for line in caplog.messages)


# -- the real servers --------------------------------------------------------------------------------------------------
@contextmanager
def running(args: list[str], home: Path, ready: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """A `localllm` server process on loopback, its output in a log: its address and the log, once ``ready`` (a
    path) answers. On the way out it ends, and every process it started (the web app's tabs) must end with it."""
    port = free_port()
    log_path = home / f"{args[0]}-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([cli_executable(), *args, "--port", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, "LOCALLLM_HOME": str(home),
                                                                  **(env or {})})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}{ready}", timeout=2).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield url, log_path
        finally:
            alive = end_with_children(process)
    assert not alive, f"{len(alive)} process(es) outlived {args[0]}"


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, build_verdict: Path) -> Path:
    return seed_verdict(tmp_path_factory.mktemp("origins"), build_verdict)


@pytest.fixture(scope="module")
def serve(homes: Path) -> Iterator[tuple[str, Path]]:
    """`localllm serve` on loopback without a key, allowing the host models.lan, the origins http://allowed.test:*
    (flag) and FROM_OLLAMA (OLLAMA_ORIGINS)."""
    with running(["serve", "--allow-host", "models.lan", "--allow-origin", ALLOWED, "--queue", "2"], homes,
                 "/api/version", env={"OLLAMA_ORIGINS": FROM_OLLAMA}) as served:
        yield served


@pytest.fixture(scope="module")
def web(homes: Path) -> Iterator[tuple[str, Path]]:
    """`localllm web` on loopback without a key (the case that checked nothing before), allowing http://allowed.test:*."""
    with running(["web", "--allow-origin", ALLOWED], homes, "/") as served:
        yield served


def log_lines(log: Path, *words: str, within: float = 30.0) -> list[str]:
    """The log's lines with all these words, waited for up to ``within`` seconds: a request's line is written
    once its answer has gone, which the client may see first (and a loaded machine's server some time later)."""
    deadline = time.monotonic() + within
    while True:
        found = [line for line in log.read_text(errors="replace").splitlines() if all(word in line for word in words)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.model
def test_a_foreign_host_is_refused_on_every_route_in_its_apis_error_shape(serve) -> None:
    """A request whose Host is another name (a page on a DNS name rebound to 127.0.0.1) gets a 403 in the error shape
    of its API, on known routes and unknown ones, and a log line; this machine's names and the allowed one pass."""
    url, log = serve
    foreign = {"Host": "rebound.example:8000"}
    openai_shape = httpx.get(f"{url}/v1/models", headers=foreign)
    ollama_shape = httpx.get(f"{url}/api/tags", headers=foreign)
    anthropic_shape = httpx.post(f"{url}/v1/messages", headers=foreign,
                                 json={"model": MODEL, "max_tokens": 4,
                                       "messages": [{"role": "user", "content": "hi"}]})
    unknown = httpx.get(f"{url}/a/route/added/later", headers=foreign)
    assert [r.status_code for r in (openai_shape, ollama_shape, anthropic_shape, unknown)] == [403] * 4
    assert openai_shape.json()["error"]["type"] == "permission_error"
    assert "'rebound.example:8000' is not a name of this machine" in openai_shape.json()["error"]["message"]
    assert "--allow-host" in ollama_shape.json()["error"]
    assert anthropic_shape.json()["type"] == "error" and anthropic_shape.json()["error"]["type"] == "permission_error"
    assert log_lines(log, "GET /v1/models 403", "rebound.example") and log_lines(log, "POST /v1/messages 403")
    for host in ("localhost:1234", "127.0.0.2", "[::1]:80", "host.docker.internal:8000", "models.lan"):
        answer = httpx.get(f"{url}/api/tags", headers={"Host": host})
        assert answer.status_code == 200 and answer.json()["models"][0]["name"] == "smollm2-135m", host
    assert httpx.get(f"{url}/a/route/added/later").status_code == 404  # with this machine's name: only not found


@pytest.mark.model
def test_a_foreign_origin_is_refused_and_an_allowed_one_gets_its_cors_headers(serve) -> None:
    """A browser's request from another site, or with `Origin: null`, gets a 403 before it reaches the model; no Origin
    (curl, SDKs), this machine's pages, apps and allowed origins pass, the browser ones with their CORS header."""
    url, log = serve
    body = {"model": MODEL, "prompt": "Say a word.", "stream": False, "options": {"num_predict": 2}}
    for origin in ("https://evil.example", "null", "http://allowed.test.evil.example:8000"):
        refused = httpx.post(f"{url}/api/generate", headers={"Origin": origin}, json=body)
        assert refused.status_code == 403, origin
        assert "is not allowed" in refused.json()["error"] and "access-control-allow-origin" not in refused.headers
    assert not log_lines(log, "POST /api/generate 200", within=0)  # none of them generated
    assert log_lines(log, "POST /api/generate 403", "https://evil.example")
    plain = httpx.post(f"{url}/api/generate", json=body)
    assert plain.status_code == 200 and plain.json()["done"] and "access-control-allow-origin" not in plain.headers
    for origin in ("http://localhost:3000", "http://127.0.0.1:5173", "app://obsidian.md", "http://allowed.test:5173",
                   FROM_OLLAMA):
        answer = httpx.get(f"{url}/v1/models", headers={"Origin": origin})
        assert answer.status_code == 200 and answer.json()["data"][0]["id"] == "smollm2-135m", origin
        assert answer.headers["access-control-allow-origin"] == origin and "Origin" in answer.headers["vary"]


@pytest.mark.model
def test_a_preflight_is_answered_for_allowed_origins_and_refused_for_others(serve) -> None:
    """An allowed origin's CORS preflight is a 204 naming the method and headers asked for, key headers included,
    before any key check; another origin's is a 403 in the API's error shape."""
    url, log = serve
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, x-api-key, anthropic-version"}
    allowed = httpx.options(f"{url}/v1/messages", headers={"Origin": "http://allowed.test:5173", **asked,
                                                           "Access-Control-Request-Private-Network": "true"})
    assert allowed.status_code == 204 and allowed.content == b""
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.test:5173"
    assert allowed.headers["access-control-allow-methods"] == "POST"
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert "x-api-key" in allowed.headers["access-control-allow-headers"]
    assert allowed.headers["access-control-allow-private-network"] == "true"
    refused = httpx.options(f"{url}/v1/messages", headers={"Origin": "https://evil.example", **asked})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert refused.json()["type"] == "error" and "access-control-allow-origin" not in refused.headers
    assert log_lines(log, "OPTIONS /v1/messages 204") and log_lines(log, "OPTIONS /v1/messages 403")


@pytest.mark.model
def test_on_another_address_the_key_is_the_gate_and_the_host_is_not_checked(homes: Path) -> None:
    """Bound to 0.0.0.0 with a key, any Host passes with the key and none without it; a foreign Origin is still
    refused."""
    with running(["serve", "--host", "0.0.0.0", "--api-key", KEY], homes, "/api/version") as (url, _):
        keyed = {"Authorization": f"Bearer {KEY}", "Host": "some-name.example:8000"}
        assert httpx.get(f"{url}/v1/models", headers=keyed).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers={"Host": "some-name.example:8000"}).status_code == 401
        foreign = httpx.get(f"{url}/v1/models", headers={**keyed, "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "Origin" in foreign.json()["error"]["message"]


@pytest.mark.model
def test_the_web_apps_page_and_websocket_refuse_foreign_hosts_and_origins_without_a_key(web) -> None:
    """With no key, `localllm web` refuses a foreign Host on its page and its files, and a foreign Origin on its
    websocket (403, noted in its log), while its own page and websocket work."""
    import aiohttp

    url, log = web
    page = httpx.get(f"{url}/")
    rebound = httpx.get(f"{url}/", headers={"Host": "rebound.example:8001"})
    statics = httpx.get(f"{url}/static/js/textual.js", headers={"Host": "rebound.example:8001"})
    assert page.status_code == 200 and "localllm" in page.text
    assert rebound.status_code == 403 and "is not a name of this machine" in rebound.text
    assert statics.status_code == 403

    async def handshake(origin: str) -> str:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(f"{url}/ws?width=80&height=24", origin=origin) as socket_:
                    message = await asyncio.wait_for(socket_.receive(), 120)
                    return f"open: {message.type.name}"
            except aiohttp.WSServerHandshakeError as error:
                return f"refused: {error.status}"

    assert asyncio.run(handshake("https://evil.example")) == "refused: 403"
    assert asyncio.run(handshake("null")) == "refused: 403"
    assert asyncio.run(handshake(url)).startswith("open")  # the page's own origin
    assert log_lines(log, "refused GET /ws", "https://evil.example") and log_lines(log, "refused GET /", "rebound")


def chromium_page(playwright, resolving: str):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed here (Debian: apt install chromium)")
    # Names under .test reach 127.0.0.1 as a public site's DNS record would after a rebinding, without a DNS server.
    browser = playwright.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", f"--host-resolver-rules=MAP {resolving} 127.0.0.1"])
    return browser, browser.new_page()


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Another site's page (PAGE), served by a small HTTP server on another loopback port: its port."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "page.html").write_text(PAGE, encoding="utf-8")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def probe_from(name: str, port: int, serve_url: str, web_url: str) -> dict[str, str]:
    """What PAGE's script got when Chromium opened it at http://NAME:PORT (NAME resolving to 127.0.0.1)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser, page = chromium_page(playwright, "*.test")
        try:
            page.goto(f"http://{name}:{port}/page.html?serve={serve_url}&web={web_url}")
            page.wait_for_function("window.probed !== undefined", timeout=90_000)
            return page.evaluate("window.probed")
        finally:
            browser.close()


@pytest.mark.model
def test_in_chromium_another_sites_page_can_neither_call_serve_nor_open_the_web_app(serve, web, other_site) -> None:
    """A page on another site, in a real browser, cannot read serve's answers, send it a JSON request, or open the
    web app's websocket: each request is refused with a 403 the server logs."""
    (serve_url, serve_log), (web_url, web_log) = serve, web
    probed = probe_from("elsewhere.test", other_site, serve_url, web_url)
    assert probed["models"].startswith("failed: TypeError"), probed
    assert probed["show"].startswith("failed: TypeError"), probed
    assert probed["socket"] == "error", probed
    origin = f"http://elsewhere.test:{other_site}"
    assert log_lines(serve_log, "GET /v1/models 403", origin)
    assert log_lines(serve_log, "OPTIONS /api/show 403", origin)  # the preflight; the POST itself never came
    assert not log_lines(serve_log, "POST /api/show", origin, within=0)
    assert log_lines(web_log, "refused GET /ws", origin)


@pytest.mark.model
def test_in_chromium_a_page_from_an_allowed_origin_calls_serve_and_opens_the_web_app(serve, web, other_site) -> None:
    """A page whose origin was given with --allow-origin reads serve's answers, passes the preflight of a JSON POST,
    and opens the web app's websocket."""
    (serve_url, _), (web_url, _) = serve, web
    probed = probe_from("allowed.test", other_site, serve_url, web_url)
    assert probed["models"].startswith("200 ") and "smollm2-135m" in probed["models"], probed
    assert probed["show"].startswith("200 ") and "context_length" in probed["show"], probed
    assert probed["socket"] == "open", probed


@pytest.mark.model
def test_in_chromium_serve_under_a_rebound_name_is_refused(serve) -> None:
    """The browser opening serve itself under a name that now points at 127.0.0.1 (the page and serve then share an
    origin) gets the Host refusal, not the API."""
    from playwright.sync_api import sync_playwright

    serve_url, _ = serve
    port = serve_url.rsplit(":", 1)[1]
    with sync_playwright() as playwright:
        browser, page = chromium_page(playwright, "*.test")
        try:
            answer = page.goto(f"http://rebound.test:{port}/api/tags")
            assert answer is not None and answer.status == 403
            text = page.inner_text("body")
        finally:
            browser.close()
    assert "'rebound.test:" in text and "is not a name of this machine" in text and "smollm2" not in text
