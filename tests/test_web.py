"""`localllm web`: the app served to a browser by textual-serve, keyed; the page loads, and its websocket runs the
app (its screen arrives with the model loaded). With Chromium installed, a headless screenshot of the page is kept
as an artefact (under pytest's temporary folder)."""

import asyncio
import json
import os
import re
import shutil
import subprocess
import time

import httpx
from backend_servers import free_port
from conftest import cli_executable, run_cli

KEY = "web-key-5678"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")



def test_the_app_is_served_to_a_browser_behind_its_key(tmp_path):
    import aiohttp

    port = free_port()
    process = subprocess.Popen([cli_executable(), "web", "--port", str(port), "--key", KEY],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "LOCALLLM_HOME": str(tmp_path)})
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
        if shutil.which("chromium"):
            picture = tmp_path / "localllm-web.png"
            subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                            "--virtual-time-budget=10000", f"--screenshot={picture}", f"{url}/?key={KEY}"],
                           capture_output=True, timeout=90)
            assert picture.stat().st_size > 1000
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert refused.status_code == 401 and "?key=" in refused.text
    assert page.status_code == 200 and "localllm" in page.text
    assert "Chat" in shown and "smollm2-135m" in shown


def test_web_on_another_address_needs_a_key(tmp_path):
    done = run_cli("web", "--host", "0.0.0.0", "--port", str(free_port()), home=tmp_path)
    assert done.returncode == 2 and done.stderr_text.startswith("error: serving on 0.0.0.0 without an API key")
