"""One question, one streamed answer: ``localllm run``."""

from __future__ import annotations

from localllm.core.chunks import Response
from localllm.core.messages import Message
from localllm.core.options import GenerationOptions
from localllm.core.settings import Settings
from localllm.tasks.loading import LoadedModel, load_model
from localllm.tasks.prompting import answer_reserve, check_fits, estimate_prompt_tokens


def open_for(settings: Settings, messages: list[Message], options: GenerationOptions, *, model: str | None,
             backend: str, piped: bool) -> LoadedModel:
    """Load a model with a window large enough for ``messages``, or raise ContextOverflow before generating."""
    needed = estimate_prompt_tokens(messages) + answer_reserve(settings.ctx, options.max_tokens)
    loaded = load_model(settings, model, backend=backend, ctx=options.ctx, needed_ctx=needed)
    try:
        tokens = loaded.backend.count_prompt_tokens(messages)
        check_fits(tokens, loaded.plan.n_ctx, options.max_tokens, loaded.info.context_length or loaded.plan.n_ctx,
                   piped)
    except BaseException:
        loaded.close()
        raise
    return loaded


def ask(loaded: LoadedModel, messages: list[Message], options: GenerationOptions) -> Response:
    return Response(loaded.backend.chat(messages, options))
