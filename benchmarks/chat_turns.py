"""A chat of 10 turns on the bundled model: the time to the first token of turn 10 ÷ that of turn 1.

    python benchmarks/chat_turns.py [rounds]

Each turn sends the whole conversation so far; llama.cpp keeps the previous turns in its KV cache, so only the new
message is read when the history's start did not change (bar ≤ 1.5). Each round is a fresh conversation in one
loaded model; the ratio is taken per round and the median reported with its spread.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

QUESTIONS = ["Name a river in Europe.", "How long is it?", "Which countries does it cross?", "Name a city on it.",
             "What is that city known for?", "Name another river.", "Which is longer?", "Name a bridge on it.",
             "When was it built?", "Summarize what we said."]


def measure(rounds: int = 3, turns: int = 10, answer_tokens: int = 40) -> dict[str, object]:
    from localllm.core.options import preset
    from localllm.core.settings import Settings
    from localllm.tasks.chat import ChatSession
    from localllm.tasks.loading import load_model

    home = tempfile.mkdtemp(prefix="localllm-bench-")
    settings = Settings.load(environ={**os.environ, "LOCALLLM_HOME": home})
    ratios, firsts, lasts, cached = [], [], [], []
    with load_model(settings, "smollm2-135m", ctx=4096) as loaded:
        # A first generation pays for one-time set-up (buffers, the renderer's child): not part of any turn.
        ChatSession(loaded, preset("precise").with_overrides(max_tokens=4), system="Warm-up.").send("Hi").text()
        for index in range(rounds):
            # Each conversation starts differently, so its first turn finds nothing of the last one in the cache.
            session = ChatSession(loaded, preset("precise").with_overrides(max_tokens=answer_tokens),
                                  system=f"Conversation {index + 1}. Answer in one or two sentences.")
            times = []
            for question in QUESTIONS[:turns]:
                response = session.send(question)
                response.text()
                assert response.final is not None and response.final.timings.first_token_s is not None
                times.append(response.final.timings.first_token_s)
            assert session.dropped == 0 and session.summary is None, "the history must fit whole"
            usage = response.final.usage if response.final is not None else None
            assert usage is not None
            cached.append(usage.cached_tokens / usage.prompt_tokens)
            firsts.append(times[0])
            lasts.append(times[-1])
            ratios.append(times[-1] / times[0])
            print("  first token per turn (ms): " + " ".join(f"{t * 1000:.0f}" for t in times), flush=True)
    return {"ratio": statistics.median(ratios), "spread": (min(ratios), max(ratios)),
            "first": statistics.median(firsts), "last": statistics.median(lasts),
            "reused": statistics.median(cached)}


def bench(record, rounds: int = 3) -> None:
    print(f"chat-turns: time to first token of turn 10 / turn 1, {rounds} fresh conversations", flush=True)
    m = measure(rounds)
    print(f"  medians: turn 1 {m['first']:.3f} s, turn 10 {m['last']:.3f} s; turn 10's prompt reused from the "
          f"cache: {m['reused']:.0%}")
    ratio = float(m["ratio"])  # type: ignore[arg-type]
    record("chat: first token of turn 10 / turn 1", ratio, "<= 1.5", ratio <= 1.5, spread=m["spread"], rounds=rounds)


if __name__ == "__main__":
    def show(name, value, bar, ok, spread=None, **_):
        print(f"  {name}: {value:.3f} (bar {bar}) {'PASS' if ok else 'FAIL'}")

    bench(show, int(sys.argv[1]) if len(sys.argv) > 1 else 3)
