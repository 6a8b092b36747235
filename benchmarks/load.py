"""Load: does memory stay bounded as the input grows? Peak memory (the child's max RSS) of a small and a large
run of the same command, side by side, on the real bundled model.

    python benchmarks/load.py [--rows 1000] [--mb 1]

- classify: 100 rows against --rows rows of JSONL (one call per row). Bounded means the large run's peak is the
  small run's plus what the larger input itself takes, not a growth per row.
- summarize --plan: a 10 KB against an --mb MB document (the plan tokenizes the whole input, no generation).
- the app with a conversation of 10,000 messages: seconds until it is ready for input and to open that
  conversation, against an empty database (in one process each, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPEN_APP = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from conftest import settings_for
from localllm.core.options import preset
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane

async def main():
    started = time.perf_counter()
    app = LocalLLMApp(settings_for(Path(sys.argv[1])), preset("precise"))
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(ChatPane)
        while pane.session is None:
            await pilot.pause(0.02)
        ready = time.perf_counter() - started
        conversations = pane.store.list()
        opened = 0.0
        if conversations:
            started = time.perf_counter()
            pane.sidebar.post_message(pane.sidebar.Opened(conversations[-1].id))
            while pane.conversation_id != conversations[-1].id or not pane.query_one("#log").children:
                await pilot.pause(0.02)
            await pilot.pause()
            opened = time.perf_counter() - started
        print(ready, opened)
asyncio.run(main())
"""


def peak_kib(command: list[str], env: dict[str, str], stdin: Path | None = None) -> tuple[float, float]:
    """(max RSS in MiB, seconds) of one run."""
    started = time.perf_counter()
    with open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen(command, env=env, stdin=source, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, command
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def write_rows(path: Path, count: int) -> None:
    with path.open("w") as out:
        for index in range(count):
            out.write(json.dumps({"text": f"ticket {index}: the app crashes when I click save on file {index}"}))
            out.write("\n")


def write_document(path: Path, size: int) -> None:
    words = "the of and to in is that for it as was with be by on not this are or from at which but have".split()
    chosen = random.Random(1)
    parts: list[str] = []
    total = 0
    while total < size:
        sentence = " ".join(chosen.choice(words) for _ in range(12)).capitalize() + ". "
        parts.append(sentence + ("\n\n" if len(parts) % 8 == 7 else ""))
        total += len(parts[-1])
    path.write_text("".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=1.0)
    args = parser.parse_args()
    localllm = shutil.which("localllm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert localllm, "pip install -e ."
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {**os.environ, "LOCALLLM_HOME": str(root / "home")}
        small_rows, large_rows = root / "small.jsonl", root / "large.jsonl"
        write_rows(small_rows, 100)
        write_rows(large_rows, args.rows)
        classify = [localllm, "classify", "--labels", "bug,feature,question", "--field", "text"]
        small = peak_kib([*classify, str(small_rows)], env)
        large = peak_kib([*classify, str(large_rows)], env)
        print(f"classify: 100 rows {small[0]:.0f} MiB in {small[1]:.0f} s; {args.rows} rows {large[0]:.0f} MiB "
              f"in {large[1]:.0f} s; ratio {large[0] / small[0]:.2f}; input {large_rows.stat().st_size / 1e6:.2f} MB")
        small_doc, large_doc = root / "small.txt", root / "large.txt"
        write_document(small_doc, 10_000)
        write_document(large_doc, int(args.mb * 1_000_000))
        plan_small = peak_kib([localllm, "summarize", "--plan", str(small_doc)], env)
        plan_large = peak_kib([localllm, "summarize", "--plan", str(large_doc)], env)
        print(f"summarize --plan: 10 KB {plan_small[0]:.0f} MiB in {plan_small[1]:.1f} s; {args.mb:g} MB "
              f"{plan_large[0]:.0f} MiB in {plan_large[1]:.1f} s; ratio {plan_large[0] / plan_small[0]:.2f}")
        sys.path.insert(0, str(HERE.parent))
        from localllm.store.conversations import ConversationStore

        big_home = root / "big"
        store = ConversationStore(big_home / "data" / "conversations.db")
        conversation = store.create("ten thousand messages")
        for index in range(5000):
            store.add_message(conversation.id, "user", f"question {index}: what is {index} plus {index}?")
            store.add_message(conversation.id, "assistant", f"The answer is **{2 * index}**.\n\n- a point\n- another")
        store.close()
        empty_home = root / "empty"
        for home in (big_home, empty_home):
            shutil.copytree(root / "home" / "cache", home / "cache", dirs_exist_ok=True)
        timings: dict[str, list[tuple[float, float]]] = {"empty": [], "big": []}
        for _ in range(3):
            for label, home in (("empty", empty_home), ("big", big_home)):
                done = subprocess.run([sys.executable, "-c", OPEN_APP, str(home), str(HERE.parent / "tests")],
                                      check=True, capture_output=True, text=True)
                ready, opened = map(float, done.stdout.split())
                timings[label].append((ready, opened))
        empty_ready = sorted(t[0] for t in timings["empty"])[1]
        big_ready = sorted(t[0] for t in timings["big"])[1]
        big_open = sorted(t[1] for t in timings["big"])[1]
        print(f"app ready: empty database {empty_ready:.2f} s, 10,000 messages {big_ready:.2f} s (ratio "
              f"{big_ready / empty_ready:.2f}); opening the 10,000-message conversation {big_open:.2f} s "
              "(medians of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
