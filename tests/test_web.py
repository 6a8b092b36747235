"""`localllm web`: the app served to a browser by textual-serve, keyed; the page loads, and its websocket runs the
app (its screen arrives with the model loaded). In headless Chromium (Debian's `chromium`, driven by Playwright), a
question typed into the chat pane's prompt box gets the bundled model's answer; the screenshot of that page is kept
as an artefact, in pytest's temporary folder and in tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import cli_executable, run_cli
from helpers.backend_servers import end_with_children, free_port

from localllm.store.conversations import ConversationStore, StoredMessage

KEY = "web-key-5678"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
ARTIFACTS = Path(__file__).parent / "artifacts"


@contextmanager
def web_server(home: Path) -> Iterator[tuple[str, httpx.Response]]:
    """A running `localllm web --key KEY` on a free loopback port: its address, and its answer to a request without
    the key. On the way out, the server ends, then every app it started must end with it (killed after 15 s, and the
    test fails: an app left behind spins on its closed pipe and takes a core)."""
    port = free_port()
    process = subprocess.Popen([cli_executable(), "web", "--port", str(port), "--key", KEY],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "LOCALLLM_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                refused = httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "localllm web did not start"
                time.sleep(0.2)
        yield url, refused
    finally:
        alive = end_with_children(process)
    assert not alive, f"{len(alive)} app(s) still running 15 s after localllm web ended: {[a.pid for a in alive]}"


@pytest.mark.usefixtures("bundled_model")
def test_the_app_is_served_to_a_browser_behind_its_key(home):
    import aiohttp

    with web_server(home) as (url, refused):
        page = httpx.get(f"{url}/?key={KEY}", timeout=10)

        async def screen() -> str:
            seen = ""
            async with aiohttp.ClientSession(cookies={"localllm_web_key": KEY}) as session, \
                    session.ws_connect(f"{url}/ws?width=120&height=40") as socket_:
                await socket_.send_str(json.dumps(["focus"]))
                while "context 0/" not in ANSI.sub("", seen):  # the status line, once the model is loaded
                    message = await asyncio.wait_for(socket_.receive(), 120)
                    assert message.type == aiohttp.WSMsgType.BINARY, message
                    seen += message.data.decode("utf-8", "replace")
            return ANSI.sub("", seen)

        shown = asyncio.run(screen())
    assert refused.status_code == 401 and "?key=" in refused.text
    assert page.status_code == 200 and "localllm" in page.text
    assert "Chat" in shown and "smollm2-135m" in shown


def stored(home: Path) -> list[StoredMessage]:
    if not (home / "data" / "conversations.db").exists():
        return []
    store = ConversationStore.in_data_dir(home / "data")
    try:
        return [message for conversation in store.list() for message in store.messages(conversation.id)]
    finally:
        store.close()


@pytest.mark.model
def test_a_question_typed_in_the_browser_gets_the_models_answer(home, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed here (Debian: apt install chromium)")
    from playwright.sync_api import sync_playwright

    question = "What is the capital of France?"
    received: list[str] = []
    sent: list[str] = []

    def screen() -> str:
        return ANSI.sub("", "".join(received))

    def wait_for(condition, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s; the screen ended with " \
                                                f"{screen()[-2000:]!r}"
            browser_page.wait_for_timeout(200)

    picture = tmp_path / "localllm-web-answer.png"
    with web_server(home) as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        browser_page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            browser_page.on("websocket", lambda socket_: (
                socket_.on("framereceived", lambda payload: received.append(
                    payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload)),
                socket_.on("framesent", lambda payload: sent.append(str(payload)))))
            browser_page.goto(f"{url}/?key={KEY}")
            wait_for(lambda: "context 0/" in screen(), 120, "the model was not loaded")  # the chat pane's status line
            # The page gives the app the focus at the first click. Click the status line (above the footer, and
            # it takes no focus itself), left of where notifications show: the prompt box gets the keys anyway.
            rows = next(json.loads(frame)[1]["height"] for frame in sent if frame.startswith('["resize"'))
            box = browser_page.locator(".xterm-screen").bounding_box()
            assert box is not None
            browser_page.mouse.click(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * (rows - 1.5) / rows)
            browser_page.keyboard.type(question)
            wait_for(lambda: question in screen(), 60, "the question typed did not show in the prompt box")
            words_before = set(re.findall(r"[A-Za-z]{4,}", screen()))
            browser_page.keyboard.press("Enter")
            wait_for(lambda: any(m.role == "assistant" and m.content.strip() and not m.stopped for m in stored(home)),
                     180, "no answer was saved")
            messages = stored(home)
            answer = messages[-1].content
            # The answer on the page: its first few words that were not on the screen before (a word is drawn whole,
            # markdown or not, so these survive its rendering).
            new_words = [word for word in re.findall(r"[A-Za-z]{4,}", answer) if word not in words_before][:4]
            assert new_words, f"the answer {answer!r} has no word to look for"
            wait_for(lambda: all(word in screen() for word in new_words), 60, f"the answer {answer!r} was not shown")
        finally:  # the page as it is, answered or not (a failure's screenshot shows where it stopped)
            browser_page.screenshot(path=str(picture))
            browser.close()
            ARTIFACTS.mkdir(exist_ok=True)
            kept = Path(shutil.copyfile(picture, ARTIFACTS / picture.name))
            print(f"screenshot: {picture} (and {kept})")
    assert [(m.role, m.content) for m in messages[:-1]] == [("user", question)]
    assert messages[-1].role == "assistant"
    assert picture.stat().st_size > 10_000


def test_web_on_another_address_needs_a_key(tmp_path):
    done = run_cli("web", "--host", "0.0.0.0", "--port", str(free_port()), home=tmp_path)
    assert done.returncode == 2 and done.stderr_text.startswith("error: serving on 0.0.0.0 without an API key")
