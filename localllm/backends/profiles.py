"""Known OpenAI-compatible servers: where they listen by default and which extra request fields they accept.

Every one of them speaks ``/v1/chat/completions`` with SSE streaming; they differ in the sampling fields beyond
OpenAI's own (top_k, min_p, the repeat penalty's name), in how a JSON schema is passed, and in their default port.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from localllm.core.errors import UsageError

LLAMA_CPP_SAMPLING = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"}
VLLM_SAMPLING = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"}


@dataclass(frozen=True)
class ServerProfile:
    name: str
    title: str
    base_url: str
    start: str
    """How the server is usually started, for hints."""
    sampling: dict[str, str]
    """localllm option → the server's request field, for options beyond OpenAI's temperature, top_p and seed."""
    json_format: str = "json_schema"
    """How a schema travels: "json_schema" (OpenAI's), "json_object" (llama.cpp's {"schema": ...}) or "tgi"."""
    default_ctx: int = 2048
    """The window assumed when the server does not say and none was asked for."""
    stream_usage: bool = True
    """Ask for token usage in the stream (stream_options.include_usage)."""


PROFILES: dict[str, ServerProfile] = {profile.name: profile for profile in (
    ServerProfile("generic", "an OpenAI-compatible server", "http://127.0.0.1:8000/v1",
                  "any server with a /v1/chat/completions route", {}),
    ServerProfile("vllm", "vLLM", "http://127.0.0.1:8000/v1", "vllm serve MODEL", VLLM_SAMPLING),
    ServerProfile("trtllm-serve", "TensorRT-LLM", "http://127.0.0.1:8000/v1", "trtllm-serve MODEL", VLLM_SAMPLING),
    ServerProfile("llama-cpp-python", "llama-cpp-python's server", "http://127.0.0.1:8000/v1",
                  "python -m llama_cpp.server --model FILE.gguf", LLAMA_CPP_SAMPLING, "json_object"),
    ServerProfile("llama-server", "llama.cpp's llama-server", "http://127.0.0.1:8080/v1",
                  "llama-server -m FILE.gguf", LLAMA_CPP_SAMPLING, "json_object", default_ctx=4096),
    ServerProfile("llamafile", "llamafile", "http://127.0.0.1:8080/v1", "./MODEL.llamafile --server",
                  LLAMA_CPP_SAMPLING, "json_object", default_ctx=4096),
    ServerProfile("lmstudio", "LM Studio", "http://127.0.0.1:1234/v1", "lms server start", LLAMA_CPP_SAMPLING,
                  default_ctx=4096),
    ServerProfile("openllm", "OpenLLM", "http://127.0.0.1:3000/v1", "openllm serve MODEL", {}),
    ServerProfile("tgi", "Hugging Face TGI", "http://127.0.0.1:8080/v1",
                  "docker run -p 8080:80 ghcr.io/huggingface/text-generation-inference --model-id MODEL", {},
                  "tgi", default_ctx=4096, stream_usage=False),
)}
ALIASES = {"": "generic", "openai": "generic", "llama.cpp": "llama-server", "llama-cpp": "llama-server",
           "lm-studio": "lmstudio", "trtllm": "trtllm-serve", "tensorrt-llm": "trtllm-serve",
           "text-generation-inference": "tgi", "llama_cpp": "llama-cpp-python"}


def server_profile(name: str) -> ServerProfile:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PROFILES:
        close = difflib.get_close_matches(key, PROFILES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown server profile {name!r}", hint=hint + f"profiles: {', '.join(PROFILES)}")
    return PROFILES[key]


def response_format(profile: ServerProfile, schema) -> dict:
    if profile.json_format == "json_object":
        return {"type": "json_object", "schema": schema}
    if profile.json_format == "tgi":
        return {"type": "json_object", "value": schema}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
