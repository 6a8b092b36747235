"""The same perplexity work as `localllm eval perplexity`, done the plain way with llama-cpp-python: the model
loaded with logits_all=True, each window evaluated whole, every position's logits softmaxed over the vocabulary
(the scored half's read). Prints the perplexity and the tokens/s of the windows (load excluded) as JSON.

    python benchmarks/raw_logits_all.py MODEL TEXT N_CTX THREADS CHUNKS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np


def main(model: str, text_file: str, n_ctx: int, threads: int, chunks: int) -> None:
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          logits_all=True, verbose=False)
    adds_start = llm._model.add_bos_token()
    tokens = llm.tokenize(Path(text_file).read_text(encoding="utf-8").encode(), add_bos=adds_start, special=False)
    count = min(len(tokens) // n_ctx, chunks)
    nll = []
    started = time.perf_counter()
    for index in range(count):
        window = tokens[index * n_ctx:(index + 1) * n_ctx]
        llm.reset()
        llm.eval([llm.token_bos(), *window[1:]] if adds_start else window)
        rows = np.asarray(llm.scores[:n_ctx])
        top = rows.max(axis=1, keepdims=True)
        log_probs = rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))
        for position in range(n_ctx // 2, n_ctx - 1):
            nll.append(-float(log_probs[position, window[position + 1]]))
    seconds = time.perf_counter() - started
    print(json.dumps({"perplexity": float(np.exp(np.mean(nll))), "tokens_per_s": count * n_ctx / seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
