"""llama.cpp's quantizer (``llama_model_quantize``) run as a child process: ``python -m
localllm.backends.llamacpp_quantize SOURCE TARGET TYPE THREADS``.

A child because the call cannot be stopped from Python (Ctrl-C waits for the native call to return; killing the
child stops it at once), and because llama.cpp offers no progress callback: its log lines, which name each tensor
as it is written (``[  12/ 272]  blk.0.attn_q.weight ...``), are printed here one per line for the parent to read.
"""

from __future__ import annotations

import sys

TYPES: dict[str, float] = {
    "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.89,
    "Q4_K_S": 4.58, "Q4_1": 5.0, "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91,
    "Q3_K_S": 3.5, "Q2_K": 3.35, "F16": 16.0, "BF16": 16.0,
}
"""The types offered, with their bits per weight (llama.cpp's figures for a 7B model), for the disk plan."""


def file_type(name: str) -> int:
    import llama_cpp

    return int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}"))


def main(argv: list[str]) -> int:
    import ctypes

    import llama_cpp

    source, target, kind, threads = argv
    out = sys.stdout

    @llama_cpp.llama_log_callback
    def log_line(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        out.write(text.decode("utf-8", errors="replace"))
        out.flush()

    llama_cpp.llama_log_set(log_line, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type(kind)
    params.nthread = int(threads)
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    out.flush()
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
