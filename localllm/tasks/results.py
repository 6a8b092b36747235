"""Keeping `eval` and `bench` results (store/results.py) and reading them back side by side (`localllm compare`)."""

from __future__ import annotations

import logging
import platform
import sqlite3
from pathlib import Path
from typing import Any

from localllm.core.settings import Settings
from localllm.store.results import Result, ResultStore, file_identity, now

logger = logging.getLogger("localllm")


def machine_description(report: Any = None) -> str:
    """The machine in one line, with its host name (what a figure measured elsewhere differs by)."""
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.bench.machine import machine_line

    return f"{platform.node()}: {machine_line(report or detect_hardware())}"


def keep_result(settings: Settings, model: str, path: Path | None, quant: str | None, kind: str,
                figures: dict[str, Any], measured_with: dict[str, Any], machine: str | None = None) -> None:
    """Records one result; a model a server runs (no local file) is recorded by its name. A results database that
    cannot be written costs a warning, never the measurement."""
    file_id = file_identity(path) if path is not None and str(path) else f"server:{model}"
    try:
        ResultStore(settings.paths.data_dir).add(Result(
            model, str(path or ""), file_id, quant, kind, figures, measured_with, now(),
            machine or machine_description()))
    except (sqlite3.Error, OSError) as exc:
        logger.warning(f"note: the result was not kept ({exc})")


KINDS = ("bench", "perplexity", "kld", "choice", "task")


def latest_results(settings: Settings, model: str) -> tuple[str, Path | None, dict[str, Result]]:
    """The newest result of each kind for a model (by its file): (its name, its path, {kind: result})."""
    from localllm.store.locate import resolve_model

    ref = resolve_model(model, settings)
    results = ResultStore(settings.paths.data_dir).for_file(file_identity(ref.path))
    newest: dict[str, Result] = {}
    for result in results:
        newest.setdefault(result.kind, result)
    return ref.name, ref.path, newest
