"""The same embeddings as `localllm embed FILE --field text`, done the plain way with llama-cpp-python: the model
loaded for embeddings (mean pooling, the window and batch of 2,048 tokens localllm gives it), every text in one
`embed` call. Prints the first vector's start as JSON (run.py times the whole process, as it times localllm's).

    python benchmarks/raw_embed.py MODEL TEXTS_JSONL THREADS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import llama_cpp


def main(model: str, rows_file: str, threads: int) -> None:
    texts = [json.loads(line)["text"] for line in Path(rows_file).read_text(encoding="utf-8").splitlines()]
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_batch=2048, n_ubatch=2048, n_threads=threads,
                          n_threads_batch=threads, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          verbose=False)
    vectors = llm.embed(texts, normalize=True, truncate=False)
    print(json.dumps({"start": [round(v, 4) for v in vectors[0][:4]]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
