"""Errors that reach the user as one line: ``error: <message>`` followed by a hint."""

from __future__ import annotations


class LocalLLMError(Exception):
    """An error the user can act on. ``hint`` says what to do next; ``exit_code`` is the process status."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LocalLLMError):
    """Bad command-line input: an unknown option key, a wrong value type, an empty prompt."""

    exit_code = 2


class ModelNotFound(LocalLLMError):
    """A model name that neither the store nor the catalog knows, or a path that does not exist."""


class InvalidModelFile(LocalLLMError):
    """A file that is not a readable GGUF model (wrong magic, truncated, unreadable)."""


class WontFit(LocalLLMError):
    """The load plan says the model cannot run in this machine's free memory."""

    def __init__(self, message: str, hint: str | None = None, plan: object | None = None) -> None:
        super().__init__(message, hint)
        self.plan = plan


class ContextOverflow(LocalLLMError):
    """A prompt longer than the model's context window; localllm never truncates it silently."""

    def __init__(self, message: str, hint: str | None = None, *, prompt_tokens: int = 0, window: int = 0) -> None:
        super().__init__(message, hint)
        self.prompt_tokens = prompt_tokens
        self.window = window


class ConfigError(LocalLLMError):
    """A config file or models.toml that cannot be parsed or holds a wrong value."""


class BackendUnavailable(LocalLLMError):
    """The chosen backend's library is not installed or its server does not answer."""


class GenerationError(LocalLLMError):
    """The backend failed while generating; the partial answer, if any, has already been shown."""


class TemplateFailure(GenerationError):
    """A model's own chat template (untrusted Jinja from its file) failed to compile or to render the messages."""


TEMPLATE_HINT = ("-o template=NAME uses one of llama-cpp-python's chat formats instead "
                 "(`localllm show MODEL` lists them)")
