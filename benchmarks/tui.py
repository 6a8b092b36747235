"""The Textual app's speed bars, each a ratio of runs interleaved in one process run.

    python benchmarks/tui.py [stream] [keys] [startup] [stop]

- stream: render time of a 4,000-token Markdown answer (paragraphs, lists, fenced code) ÷ that of a 1,000-token
  one, streamed at full speed by a scripted backend through the chat pane. Bar ≤ 4.5 (linear is 4).
- keys: the time from a key press to its echo in the prompt box while the real bundled model writes an answer ÷ the
  same with no generation running. Bar ≤ 2.
- startup: seconds until `localllm` (the app) is ready for input ÷ the same for a minimal Textual app with one text
  box, both started as fresh processes. Bar ≤ 2.
- stop: seconds from Esc to a stopped (and kept) answer while the real model writes. Bar ≤ 0.5 s (not a ratio:
  the issue names the time).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

RESULTS: list[tuple[str, float, str, bool]] = []


def record(name: str, value: float, bar: str, ok: bool, spread: tuple[float, float] | None = None,
           rounds: int = 1) -> None:
    """Run alone (python benchmarks/tui.py); benchmarks/run.py puts its Results.record in this one's place."""
    RESULTS.append((name, value, bar, ok))
    around = f" [{spread[0]:.3f} .. {spread[1]:.3f} over {rounds} rounds]" if spread else " [1 measurement]"
    print(f"  {name}: {value:.3f}{around} (bar {bar}) {'PASS' if ok else 'FAIL'}", flush=True)


def send_key(app, key) -> None:
    """A key goes in where a terminal's would: the driver (Pilot.press waits for the whole process to go idle)."""
    driver = app._driver
    assert driver is not None, "the app runs"
    driver.send_message(key)


def _settings(root: Path):
    from conftest import settings_for

    return settings_for(root)


async def _stream_once(tokens: int, root: Path) -> float:
    from helpers.scripted_backend import markdown_tokens, scripted_model

    from localllm.core.options import preset
    from localllm.tui.answer import ChatMessage
    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane
    from localllm.tui.prompt import PromptArea
    from localllm.tui.shared_model import SharedModel

    settings = _settings(root)
    shared = SharedModel(settings, loaded=scripted_model(markdown_tokens(tokens)))
    app = LocalLLMApp(settings, preset("precise"), shared=shared)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(ChatPane)
        while pane.session is None:
            await pilot.pause(0.01)
        pane.query_one("#prompt", PromptArea).insert("Explain the parser.")
        started = time.perf_counter()
        await pilot.press("enter")
        while not pane.generating and pane.session.stats.turns == 0:
            await pilot.pause(0.005)
        while pane.generating:
            await pilot.pause(0.005)
        elapsed = time.perf_counter() - started
        answer = pane.query("ChatMessage.assistant").last(ChatMessage)
        expected = "".join(markdown_tokens(tokens))
        assert answer.text == expected, (len(answer.text), len(expected), answer.text[:80], expected[:80])
    return elapsed


def bench_stream(rounds: int = 3) -> None:
    print("stream: render time for 4,000 tokens / 1,000 tokens, scripted backend, chat pane", flush=True)
    times: dict[int, list[float]] = {1000: [], 4000: []}
    with tempfile.TemporaryDirectory() as root:
        for round_ in range(rounds):
            for tokens in (1000, 4000):
                times[tokens].append(asyncio.run(_stream_once(tokens, Path(root) / f"{tokens}-{round_}")))
    small, large = statistics.median(times[1000]), statistics.median(times[4000])
    print(f"  medians: 1,000 tokens {small:.2f} s, 4,000 tokens {large:.2f} s")
    record("stream 4,000 / 1,000 tokens", large / small, "<= 4.5", large / small <= 4.5,
           (min(b / a for a, b in zip(times[1000], times[4000], strict=True)),
            max(b / a for a, b in zip(times[1000], times[4000], strict=True))), rounds)


async def _key_latencies(root: Path, presses: int) -> tuple[list[float], list[float]]:
    from textual import events

    from localllm.core.options import preset
    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane
    from localllm.tui.prompt import PromptArea

    settings = _settings(root)
    app = LocalLLMApp(settings, preset("precise").with_overrides(max_tokens=4000, repeat_penalty=1.0))
    idle: list[float] = []
    busy: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(ChatPane)
        box = pane.query_one("#prompt", PromptArea)
        while pane.session is None:
            await pilot.pause(0.05)

        async def one_key(into: list[float]) -> None:
            # The key goes in where a terminal's would (the driver), not through Pilot.press, which waits for the
            # whole process to go idle: never, while a model computes in another thread.
            before = len(box.text)
            key = events.Key("x", "x")
            key.set_sender(app)
            started = time.perf_counter()
            send_key(app, key)
            while len(box.text) == before:
                await asyncio.sleep(0.0005)
            into.append(time.perf_counter() - started)
            await asyncio.sleep(0.03)

        for _ in range(presses):  # the idle and busy samples alternate in blocks, so load swings hit both
            await one_key(idle)
        box.clear()
        box.insert("Write a very long story about a lighthouse keeper and a storm.")
        await pilot.press("enter")
        while not pane.generating:
            await pilot.pause(0.01)
        await pilot.pause(0.5)
        for _ in range(presses):
            if not pane.generating:
                break
            await one_key(busy)
        pane.action_stop()
        while pane.generating:
            await pilot.pause(0.05)
        for _ in range(presses):
            await one_key(idle)
    return idle, busy


def bench_keys(presses: int = 30) -> None:
    print("keys: key press → echo in the prompt box, while the real model streams / idle", flush=True)
    with tempfile.TemporaryDirectory() as root:
        idle, busy = asyncio.run(_key_latencies(Path(root), presses))
    idle_ms, busy_ms = statistics.median(idle) * 1000, statistics.median(busy) * 1000
    print(f"  medians: idle {idle_ms:.1f} ms ({len(idle)} keys), while streaming {busy_ms:.1f} ms ({len(busy)} keys)")
    # Each key's echo is a round; the spread is the busy keys' against the idle median.
    record("key echo while streaming / idle", busy_ms / idle_ms, "<= 2", busy_ms / idle_ms <= 2,
           (min(busy) * 1000 / idle_ms, max(busy) * 1000 / idle_ms), len(busy))


async def _stop_times(root: Path, rounds: int) -> list[float]:
    from textual import events

    from localllm.core.options import preset
    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane
    from localllm.tui.prompt import PromptArea

    app = LocalLLMApp(_settings(root), preset("precise").with_overrides(max_tokens=3000, repeat_penalty=1.0))
    times = []
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(ChatPane)
        while pane.session is None:
            await pilot.pause(0.05)
        for round_ in range(rounds):
            pane.query_one("#prompt", PromptArea).insert(f"Write a very long story about dragon number {round_}.")
            await pilot.press("enter")
            while pane._answer is None or len(pane._answer.text) < 40:
                await asyncio.sleep(0.01)
            key = events.Key("escape", None)
            key.set_sender(app)
            started = time.perf_counter()
            send_key(app, key)
            while pane.generating:
                await asyncio.sleep(0.001)
            times.append(time.perf_counter() - started)
            await pilot.pause(0.2)
    return times


def bench_stop(rounds: int = 7) -> None:
    print("stop: Esc → the answer stops and is kept (real model)", flush=True)
    with tempfile.TemporaryDirectory() as root:
        times = asyncio.run(_stop_times(Path(root), rounds))
    median = statistics.median(times)
    print(f"  median {median * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms over {rounds} answers")
    record("Esc to stopped (s)", median, "<= 0.5", median <= 0.5, (min(times), max(times)), len(times))


READY_SCRIPT = r"""
import os, sys, time
started = time.perf_counter()
kind, home = sys.argv[1], sys.argv[2]
if kind == "minimal":
    from textual.app import App
    from textual.widgets import Footer, Header, TextArea

    class Minimal(App):
        def compose(self):
            yield Header()
            yield TextArea(id="prompt")
            yield Footer()

    app = Minimal()
else:
    os.environ["LOCALLLM_HOME"] = home
    from localllm.core.options import preset
    from localllm.core.settings import Settings
    from localllm.tui.app import LocalLLMApp

    settings = Settings.load()
    app = LocalLLMApp(settings, preset(settings.preset))


def ready():
    # The app owns sys.stdout while it runs; the figure goes straight to the file descriptor.
    os.write(1, f"{time.perf_counter() - started}\n".encode())
    app.exit()

app.call_after_refresh(ready)
app.run(headless=True)
"""


def _ready_time(kind: str, home: str) -> float:
    out = subprocess.run([sys.executable, "-c", READY_SCRIPT, kind, home], capture_output=True, text=True,
                         check=True, timeout=120)
    # The interpreter's own start-up is the same for both and is left out by timing from the script's first line.
    return float(out.stdout.strip().splitlines()[-1])


def bench_startup(rounds: int = 9) -> None:
    print("startup: ready for input, localllm app / minimal Textual app (fresh processes)", flush=True)
    times: dict[str, list[float]] = {"minimal": [], "localllm": []}
    with tempfile.TemporaryDirectory() as home:
        for _ in range(rounds):
            for kind in times:
                times[kind].append(_ready_time(kind, home))
    minimal, ours = statistics.median(times["minimal"]), statistics.median(times["localllm"])
    print(f"  medians: minimal {minimal:.3f} s, localllm {ours:.3f} s")
    record("app ready / minimal app ready", ours / minimal, "<= 2", ours / minimal <= 2,
           (min(o / m for m, o in zip(times["minimal"], times["localllm"], strict=True)),
            max(o / m for m, o in zip(times["minimal"], times["localllm"], strict=True))), rounds)


BENCHMARKS = {"stream": bench_stream, "keys": bench_keys, "startup": bench_startup, "stop": bench_stop}


def main(names: list[str]) -> int:
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
    return 0 if all(ok for *_, ok in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
