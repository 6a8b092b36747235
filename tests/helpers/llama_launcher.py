"""Runs a script, or a module with -m, that loads models through llama_cpp itself (the llama.cpp server, the Ollama
stand-in) with the self-check's safe setting applied first: on a CPU where the default build dies (AMX), the test
servers must load models the way localllm does there.

    python tests/helpers/llama_launcher.py -m llama_cpp.server --model ...
    python tests/helpers/llama_launcher.py tests/helpers/ollama_standin.py MODEL
"""

import runpy
import sys

from localllm.backends.llamacpp_check import disable_extra_buffers

disable_extra_buffers()
if sys.argv[1] == "-m":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
