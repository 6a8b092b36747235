"""An Ollama protocol stand-in: a real HTTP server on loopback that speaks Ollama's documented REST API, answering
with a real model (llama-cpp-python and a GGUF file) so that what it streams is real generation.

    python tests/helpers/ollama_standin.py MODEL.gguf      # prints "PORT <n>" when ready

No Ollama binary can be installed where the tests run; this process stands in for `ollama serve`. Wire format, as
in Ollama's docs/api.md:
  POST /api/chat, /api/generate   NDJSON lines {"model", "created_at", "message"|"response", "done": false}, then a
                                  final line with "done": true, "done_reason", total/load/prompt_eval/eval durations
                                  (nanoseconds) and prompt_eval_count / eval_count; "stream": false gives one object
  GET  /api/tags, /api/ps, /api/version;  POST /api/show;  DELETE /api/delete
  POST /api/pull                  NDJSON progress {"status", "digest", "total", "completed"} ... {"status": "success"}
  errors                          {"error": "..."} with 404 for a model that is not pulled, or as a line mid-stream
Like Ollama, a prompt longer than num_ctx is cut from the front without a word.
Thinking, as a thinking model's /api/chat stream carries it: lines whose message has "thinking" and an empty
"content", before the answer's lines (the served model does not think: the control below gives the text).
Tool calls, as /api/chat carries them when a request offers "tools" and the model calls one: a line whose message
has an empty "content" and "tool_calls": [{"function": {"name", "arguments": {...}}}], then the final line. Here
the served model writes the call itself, constrained to the offered tools' schemas (Ollama parses it out of the
model's text); with the control "call_tools", a request whose last message is not a tool result gets a call.
Test controls (not Ollama's): POST /_control {"error_after": N, "garbage": true, "stall_s": S, "thinking": TEXT,
"call_tools": true};
GET /_requests lists the requests and, for a stream the client closed, how many tokens were generated before it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERSION = "0.6.5"
STANDIN_WINDOW = 4096
# Names `pull` can fetch, as if from ollama.com; each becomes a copy of the served model.
REGISTRY = ("tinyllama:latest", "llama3.2:1b")


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class State:
    def __init__(self, path: Path) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from localllm.backends.grammars import GrammarGate

        self.path = path
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=STANDIN_WINDOW, verbose=False, n_threads=2)
        llm = self.llm
        self.gate = GrammarGate(lambda: llm._model.vocab)
        template = llm.metadata.get("tokenizer.chat_template")
        eos = llm._model.token_get_text(llm.token_eos())
        self.formatter = Jinja2ChatFormatter(template=template or "", eos_token=eos, bos_token="")
        self.size = path.stat().st_size
        self.digest = hashlib.sha256(str(path).encode()).hexdigest()
        self.models: dict[str, str] = {"smollm2:135m": now()}
        self.loaded: set[str] = set()
        self.lock = threading.Lock()
        self.faults: dict = {}
        self.requests: list[dict] = []

    def details(self) -> dict:
        return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "134.52M", "quantization_level": "Q4_1"}

    def entry(self, name: str) -> dict:
        return {"name": name, "model": name, "modified_at": self.models[name], "size": self.size,
                "digest": self.digest, "details": self.details()}


def full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, *args) -> None:
        pass

    def send_json(self, status: int, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_lines(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def line(self, data) -> None:
        payload = (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def end_lines(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def model_or_404(self, body: dict) -> str | None:
        name = full_name(str(body.get("model") or body.get("name") or ""))
        if name not in self.state.models:
            self.send_json(404, {"error": f"model \"{body.get('model')}\" not found, try pulling it first"})
            return None
        return name

    # -- routes ----------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        state = self.state
        if self.path == "/api/version":
            self.send_json(200, {"version": VERSION})
        elif self.path == "/api/tags":
            self.send_json(200, {"models": [state.entry(name) for name in state.models]})
        elif self.path == "/api/ps":
            self.send_json(200, {"models": [{**state.entry(name), "expires_at": now(), "size_vram": 0}
                                            for name in state.loaded if name in state.models]})
        elif self.path == "/_requests":
            self.send_json(200, state.requests)
        elif self.path == "/":
            self.send_response(200)
            self.send_header("Content-Length", "17")
            self.end_headers()
            self.wfile.write(b"Ollama is running")
        else:
            self.send_json(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if self.path != "/api/delete":
            self.send_json(404, {"error": "not found"})
            return
        name = self.model_or_404(self.body())
        if name is not None:
            del self.state.models[name]
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_POST(self) -> None:
        state = self.state
        body = self.body()
        state.requests.append({"path": self.path, "body": body})
        if self.path == "/_control":
            state.faults = body
            self.send_json(200, {})
            return
        stall = state.faults.get("stall_s")
        if stall and self.path.startswith("/api/"):
            time.sleep(stall)
        if self.path == "/api/pull":
            self.pull(body)
        elif self.path == "/api/show":
            name = self.model_or_404(body)
            if name is not None:
                self.send_json(200, self.show())
        elif self.path in ("/api/chat", "/api/generate"):
            name = self.model_or_404(body)
            if name is not None:
                self.generate(name, body, chat=self.path == "/api/chat")
        else:
            self.send_json(404, {"error": "not found"})

    def show(self) -> dict:
        return {"license": "Apache-2.0", "modelfile": "FROM smollm2\nPARAMETER stop <|im_end|>\n",
                "parameters": "stop                           \"<|im_end|>\"", "template": "{{ .Prompt }}",
                "details": self.state.details(), "modified_at": now(), "capabilities": ["completion"],
                "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008,
                               "llama.context_length": 8192, "llama.embedding_length": 576,
                               "llama.block_count": 30}}

    def pull(self, body: dict) -> None:
        name = full_name(str(body.get("model") or body.get("name") or ""))
        self.start_lines()
        self.line({"status": "pulling manifest"})
        if name not in REGISTRY and name not in self.state.models:
            self.line({"error": "pull model manifest: file does not exist"})
            self.end_lines()
            return
        layers = [("sha256:" + hashlib.sha256(f"{name}{i}".encode()).hexdigest(), size)
                  for i, size in enumerate((self.state.size, 1024))]
        for digest, total in layers:
            for completed in range(0, total + 1, max(1, total // 8)):
                self.line({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                           "completed": completed})
                time.sleep(0.01)
            self.line({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total, "completed": total})
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            self.line({"status": status})
        self.state.models[name] = now()
        self.end_lines()

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(self, name: str, body: dict, *, chat: bool) -> None:
        state, options = self.state, body.get("options") or {}
        started = time.perf_counter_ns()
        if chat:  # as Ollama, a message without content (a tool call's, from the client) has an empty one
            messages: Any = [{"content": "", **m} for m in body.get("messages") or []]
            prompt = state.formatter(messages=messages).prompt
        else:
            prompt = str(body.get("prompt") or "")
        tokens = state.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        window = min(int(options.get("num_ctx") or 2048), STANDIN_WINDOW)
        tokens = tokens[-(window - 1):]  # Ollama keeps the end of a prompt that is too long
        fmt = body.get("format")
        grammar = None
        messages = body.get("messages") or []
        calling = bool(chat and body.get("tools") and state.faults.get("call_tools")
                       and (not messages or messages[-1].get("role") != "tool"))
        if calling:
            fmt = {"anyOf": [{"type": "object", "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"].get("parameters") or {"type": "object"}},
                "required": ["name", "arguments"]} for tool in body["tools"]]}
        if isinstance(fmt, dict):
            grammar = state.gate.for_schema(fmt)  # the stand-in's llama.cpp is localllm's: the same gate
        elif fmt == "json":
            grammar = state.gate.for_schema({"type": "object"})
        predict = int(options.get("num_predict", -1))
        stream = body.get("stream", True)
        faults = dict(state.faults)
        state.loaded.add(name)
        field = "message" if chat else "response"

        def part(text: str) -> dict:
            data = {"model": name, "created_at": now(), "done": False}
            data[field] = {"role": "assistant", "content": text} if chat else text
            return data

        with state.lock:
            prompt_done = time.perf_counter_ns()
            completion: Any = state.llm.create_completion(
                prompt=tokens, max_tokens=predict if predict > 0 else window - len(tokens),
                temperature=float(options.get("temperature", 0.8)), top_k=int(options.get("top_k", 40)),
                top_p=float(options.get("top_p", 0.9)), min_p=float(options.get("min_p", 0.0)),
                repeat_penalty=float(options.get("repeat_penalty", 1.1)), seed=options.get("seed"),
                stop=["<|im_end|>", *(options.get("stop") or [])], grammar=grammar, stream=True)
            pieces, finish = [], "stop"
            if stream:
                self.start_lines()
                if chat and faults.get("thinking"):
                    for word in faults["thinking"].split(" "):
                        thought = part("")
                        thought["message"]["thinking"] = word + " "
                        self.line(thought)
            try:
                for chunk in completion:
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        pieces.append(choice["text"])
                        if stream and not calling:  # a call's text is sent as tool_calls once it is whole
                            if faults.get("garbage"):
                                self.line(b"<html>this is not JSON</html>")
                                break
                            self.line(part(choice["text"]))
                            if faults.get("error_after") and len(pieces) >= faults["error_after"]:
                                self.line({"error": "an error was encountered while running the model: "
                                                    "unexpected EOF"})
                                self.end_lines()
                                return
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            except (BrokenPipeError, ConnectionResetError):
                # The client closed the stream: stop generating, as Ollama does, and note how far it got.
                state.requests.append({"path": self.path, "stopped_after": len(pieces)})
                return
            finally:
                completion.close()
            ended = time.perf_counter_ns()
        if calling and stream:
            call = json.loads("".join(pieces))
            line = part("")
            line["message"]["tool_calls"] = [{"function": {"name": call["name"], "arguments": call["arguments"]}}]
            self.line(line)
        final = part("")
        if not stream:
            final = part("".join(pieces))
        final.update({"done": True, "done_reason": finish, "total_duration": ended - started,
                      "load_duration": 0, "prompt_eval_count": len(tokens),
                      "prompt_eval_duration": prompt_done - started, "eval_count": len(pieces),
                      "eval_duration": ended - prompt_done})
        if stream:
            if not faults.get("no_done"):  # as a crashed server or a cutting proxy would end it
                self.line(final)
            self.end_lines()
        else:
            self.send_json(200, final)


def main() -> None:
    Handler.state = State(Path(sys.argv[1]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
