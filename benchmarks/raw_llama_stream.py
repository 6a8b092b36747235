"""The baseline for the decode benchmark: plain llama-cpp-python streaming a chat answer to stdout.

Same model, context, threads, prompt and greedy settings as `localllm run --preset precise`; it reports the time
from the request to the first token on stderr, as `localllm run -v` does.
"""

import sys
import time
from typing import Any

import llama_cpp

model_path, n_ctx, n_threads, max_tokens, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(
    sys.argv[4]), sys.argv[5]
llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
started = time.perf_counter()
first = None
stream = llm.create_chat_completion(
    messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
    temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
)
part: Any
for part in stream:
    text = part["choices"][0]["delta"].get("content")
    if text:
        if first is None:
            first = time.perf_counter() - started
        sys.stdout.write(text)
        sys.stdout.flush()
print(f"first token after {first:.4f} s", file=sys.stderr)
