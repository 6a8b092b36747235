"""Real server processes for the backend tests, each on a free loopback port: llama-cpp-python's OpenAI-compatible
server, the Ollama protocol stand-in (tests/helpers/ollama_standin.py), and a tiny llama-architecture GGUF for
GPT4All."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

OLLAMA_STANDIN = Path(__file__).parent / "ollama_standin.py"
SERVED_NAME = "smollm2-135m"
SERVER_CTX = 2048


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen

    def pause(self) -> None:
        """The process stops answering (SIGSTOP) without closing its connections."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def post(self, path: str, data: dict) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(data).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=10).read() or b"{}")

    def get(self, path: str):
        return json.loads(urllib.request.urlopen(f"{self.url}{path}", timeout=10).read())


def end_with_children(process: subprocess.Popen) -> list:
    """Terminate ``process`` and wait for the processes it started (web's apps, serve's children); any still alive
    15 s later are killed and returned, so the test can say they outlived it."""
    import psutil

    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    process.terminate()
    process.wait(timeout=20)
    _, alive = psutil.wait_procs(started, timeout=15)
    for left in alive:
        left.kill()
    return list(alive)


def _wait_until_answers(url: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers, even if with an error status
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer at {url} within {seconds} s")


LAUNCHER = Path(__file__).parent / "llama_launcher.py"


def llama_python(model: Path) -> list[str]:
    """The interpreter for a process that loads models through llama_cpp itself, with the setting the self-check
    chose for this build on this CPU (the verdict cache in VERDICT_CACHE, set by conftest)."""
    from localllm.backends.llamacpp_check import apply_verdict, check_build

    verdict = check_build(Path(os.environ["LOCALLLM_TEST_VERDICT_CACHE"]), model)
    apply_verdict(verdict)
    return [sys.executable, str(LAUNCHER)] if verdict.status == "safe" else [sys.executable]


def start_llama_server(model: Path, *, api_key: str | None = None, ctx: int = SERVER_CTX,
                       chat_format: str | None = None) -> ServerProcess:
    """`python -m llama_cpp.server` serving ``model`` as ``smollm2-135m``; ``chat_format``: one of its own
    (chatml-function-calling answers OpenAI's tools field)."""
    port = free_port()
    command = [*llama_python(model), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(ctx), "--model_alias", SERVED_NAME, "--n_threads", "2"]
    if api_key:
        command += ["--api_key", api_key]
    if chat_format:
        command += ["--chat_format", chat_format]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    _wait_until_answers(f"{url}/v1/models", process)
    return ServerProcess(url, process)


def start_ollama_standin(model: Path) -> ServerProcess:
    process = subprocess.Popen([*llama_python(model), str(OLLAMA_STANDIN), str(model)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the Ollama stand-in did not start: {line!r}")
    return ServerProcess(f"http://127.0.0.1:{int(line.split()[1])}", process)


# -- a tiny llama-architecture GGUF that GPT4All's mid-2024 llama.cpp can load --------------------------------------
TINY_WORDS = ("the a cat dog sun sky blue red green tree house river stone light dark small big happy quick "
              "slow bird fish moon star cloud rain wind fire water earth sand leaf book door road hill song").split()
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_llama_gguf(path: Path, *, seed: int = 7, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                          n_ff: int = 128, n_ctx: int = 1024) -> Path:
    """A llama model with random weights and a SentencePiece vocabulary of whole words, bytes and ChatML markers.

    Its answers are nonsense words, but it loads, tokenizes, streams and stops like any model. The output rows of
    the byte and control tokens are zero, so greedy decoding picks words and never ends early by itself.
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             gguf.TokenType.CONTROL]
    tokens += [f"<0x{i:02X}>".encode() for i in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    first_word = len(tokens)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["\u2581"] + [f"\u2581{w}" for w in TINY_WORDS] + list(TINY_WORDS) + list(letters)
    pieces += ["\u2581" + c for c in letters + ".,!?"] + [".", ",", "!", "?", "\n"]
    tokens += [p.encode() for p in dict.fromkeys(pieces)]
    types += [gguf.TokenType.NORMAL] * (len(tokens) - first_word)
    scores = [0.0] * first_word + [-float(i) for i in range(len(tokens) - first_word)]
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    def weights(*shape: int, scale: float = 0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd, scale=1.0))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = weights(n_vocab, n_embd, scale=1.0)
    output[:first_word] = 0.0
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
