"""The eval use cases: load the model for the measurement, refuse a backend that cannot give what it needs, run
it, and keep the result for `localllm compare`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from localllm.core.errors import UsageError
from localllm.core.settings import Settings
from localllm.tasks.documents import read_document
from localllm.tasks.evaluate.perplexity import Text
from localllm.tasks.loading import LoadedModel, load_model
from localllm.tasks.results import keep_result

Progress = Callable[[int, int], None]


def require_logprobs(loaded: LoadedModel, what: str) -> None:
    if not loaded.backend.capabilities.logprobs:
        raise UsageError(f"backend {loaded.choice.name} gives no log-probabilities, and {what} needs the model's "
                         "probability of every token", hint="use --backend llama.cpp with a local GGUF")


def _keep(settings: Settings, loaded: LoadedModel, kind: str, figures: dict[str, Any],
          measured_with: dict[str, Any]) -> None:
    if figures.get("stopped"):
        return  # a partial result stands for nothing to compare
    path = loaded.ref.path if loaded.served is None else None
    keep_result(settings, loaded.ref.name, path, loaded.info.quant, kind,
                {key: value for key, value in figures.items() if not isinstance(value, list)},
                {"backend": loaded.choice.name, **measured_with})


def run_perplexity(settings: Settings, model: str | None, files: Sequence[str], n_ctx: int, *,
                   backend: str = "auto", chunks: int | None = None, save_logits: Path | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    from localllm.tasks.evaluate.perplexity import evaluate_perplexity

    texts = [Text(document.name, document.text) for document in (read_document(path) for path in files)]
    with load_model(settings, model, backend=backend, ctx=n_ctx) as loaded:
        require_logprobs(loaded, "perplexity")
        report = evaluate_perplexity(loaded.backend, texts, n_ctx, chunks=chunks, save_logits=save_logits,
                                     progress=progress)
        result = {"model": loaded.ref.name, "quant": loaded.info.quant, **report.to_dict()}
        _keep(settings, loaded, "perplexity", result, {"n_ctx": n_ctx, "files": [t.name for t in texts]})
    return result


def run_divergence(settings: Settings, model: str | None, base: Path, *, backend: str = "auto",
                   chunks: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    from localllm.tasks.evaluate.kld import evaluate_divergence
    from localllm.tasks.evaluate.logits_file import read_logits_file

    reference = read_logits_file(base)
    with load_model(settings, model, backend=backend, ctx=reference.n_ctx) as loaded:
        require_logprobs(loaded, "KL divergence")
        report = evaluate_divergence(loaded.backend, reference, loaded.ref.name, chunks=chunks, progress=progress)
        result = {"model": loaded.ref.name, "quant": loaded.info.quant, "base": str(base), **report.to_dict()}
        _keep(settings, loaded, "kld", result, {"n_ctx": reference.n_ctx, "base": str(base)})
    return result


def run_choice(settings: Settings, model: str | None, data: Path, *, backend: str = "auto",
               limit: int | None = None, ctx: int | None = None, progress: Progress | None = None
               ) -> dict[str, Any]:
    from localllm.tasks.evaluate.choice import evaluate_choices
    from localllm.tasks.evaluate.choice_data import read_items

    items = read_items(data, limit)
    with load_model(settings, model, backend=backend, ctx=ctx) as loaded:
        require_logprobs(loaded, "multiple-choice scoring")
        report = evaluate_choices(loaded.backend, items, progress)
        result = {"model": loaded.ref.name, "quant": loaded.info.quant, "data": str(data), **report.to_dict()}
        _keep(settings, loaded, "choice", result, {"data": str(data), "limit": limit})
    return result


def run_labelled(settings: Settings, model: str | None, task: str, data: str, gold: str, *, field: str | None,
                 options: Any, labels: Sequence[str] | None = None, schema: dict | None = None,
                 backend: str = "auto", limit: int | None = None, progress: Progress | None = None
                 ) -> dict[str, Any]:
    from localllm.tasks.evaluate.labelled import evaluate_labelled
    from localllm.tasks.rows import read_rows

    rows = [row for row in read_rows(data, field)]
    if limit is not None:
        rows = rows[:limit]
    if not rows or "file" in rows[0].record and len(rows) == 1 and rows[0].problem is None and gold not in \
            rows[0].record:
        raise UsageError(f"{data} holds no labelled rows", hint="JSONL or CSV rows with --field TEXT and --gold")
    with load_model(settings, model, backend=backend, ctx=options.ctx) as loaded:
        report = evaluate_labelled(settings, loaded.backend, task, rows, gold, options, labels=labels,
                                   schema=schema, progress=progress)
        result = {"model": loaded.ref.name, "quant": loaded.info.quant, "data": data, **report.to_dict()}
        _keep(settings, loaded, "task", result, {"task": task, "data": data, "gold": gold})
    return result
