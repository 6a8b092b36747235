"""Backends by name, imported only when chosen, so `localllm --help` loads none of their libraries."""

from __future__ import annotations

import difflib
import importlib

from localllm.core.errors import UsageError

# name → "module:Class"; the module is imported by ``backend_class``, never at start-up.
BUILTIN_BACKENDS: dict[str, str] = {
    "llama.cpp": "localllm.backends.llamacpp:LlamaCppBackend",
    "ollama": "localllm.backends.ollama:OllamaBackend",
    "openai": "localllm.backends.openai_compat:OpenAICompatBackend",
    "gpt4all": "localllm.backends.gpt4all:GPT4AllBackend",
}
ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama_cpp": "llama.cpp", "openai-compatible": "openai",
           "oai": "openai"}
BACKEND_NAMES = ("auto", *BUILTIN_BACKENDS)


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name != "auto" and name not in BUILTIN_BACKENDS:
        close = difflib.get_close_matches(name, BACKEND_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown backend {name!r}", hint=hint + f"backends: {', '.join(BACKEND_NAMES)}")
    return name


def backend_class(name: str):
    module_name, _, class_name = BUILTIN_BACKENDS[canonical_name(name)].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
