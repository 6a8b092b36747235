"""`localllm bench`: prompt and generation speed, time to first token, load time and peak memory per model and
backend, against this machine's memory bandwidth; and `bench --tune`, which sweeps threads and batch size and saves
what is really faster.

- ``stats``: a median and its spread over repetitions.
- ``machine``: the memory-bandwidth copy test, a process's peak memory, the machine summary.
- ``runners``: one measurement in-process on llama.cpp (as llama-bench measures), or through a chat stream (a
  server's API, GPT4All).
- ``run``: the benchmark itself, ``tune``: the sweep and the config it writes.
"""

from localllm.tasks.bench.run import BenchReport, BenchRequest, BenchResult, run_bench
from localllm.tasks.bench.tune import TuneRequest, TuneResult, tune

__all__ = ["BenchReport", "BenchRequest", "BenchResult", "TuneRequest", "TuneResult", "run_bench", "tune"]
