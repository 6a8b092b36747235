"""`localllm quantize MODEL TYPE`: a model's weights re-quantized by llama.cpp into localllm's own store.

The output goes to MODELS/<name>/<name>-<TYPE>.gguf (never beside another tool's model), is planned against the
free disk before anything is written, is written under a hidden partial name and linked into place only when
complete (a link never replaces an existing file), and gets a manifest with its sha256 as a pulled model does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localllm.core.errors import LocalLLMError, UsageError
from localllm.core.settings import Settings
from localllm.core.units import human_size

TENSOR_LINE = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]\s+(\S+)")
"""llama.cpp's line for each tensor it writes: ``[  12/ 272]  blk.0.attn_q.weight - [...], type = ...``."""

Progress = Callable[[int, int, str], None]
"""(tensors written, tensors in all, the tensor being written)."""


@dataclass(frozen=True)
class QuantizePlan:
    source: Path
    source_name: str
    kind: str
    name: str
    target: Path
    estimate: int
    free: int


@dataclass(frozen=True)
class Quantized:
    name: str
    path: Path
    kind: str
    size: int
    sha256: str
    seconds: float
    source: Path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "type": self.kind, "size": self.size,
                "sha256": self.sha256, "seconds": round(self.seconds, 2), "source": str(self.source)}


def canonical_type(text: str) -> str:
    from localllm.backends.llamacpp_quantize import TYPES

    kind = text.strip().upper()
    if kind not in TYPES:
        raise UsageError(f"unknown quantization type {text!r}", hint=f"one of: {', '.join(TYPES)}")
    return kind


def plan_quantize(settings: Settings, model: str, kind: str) -> QuantizePlan:
    from localllm.backends.llamacpp_quantize import TYPES
    from localllm.store.locate import resolve_model
    from localllm.tasks.loading import describe_model

    kind = canonical_type(kind)
    ref = resolve_model(model, settings)
    _, info = describe_model(settings, model)
    base = re.sub(r"[^a-z0-9._-]+", "-", ref.name.lower()).strip("-.") or "model"
    name = f"{base}-{kind.lower()}"
    target = settings.paths.models_dir / name / f"{name}.gguf"
    if target.exists():
        raise UsageError(f"{target} exists already: quantize never overwrites a model",
                         hint=f"remove it first (localllm rm {name}), or pick another type")
    if ref.path.resolve() == target.resolve():
        raise UsageError("the source and the output are the same file", hint="pick another type")
    # Bits per weight are averages: the output head and embeddings are often kept at a higher type, hence the
    # quarter more; the metadata (the vocabulary) is copied as it is.
    metadata = max(info.file_size - info.weights_bytes, 0)
    estimate = int(info.parameters * TYPES[kind] / 8 * 1.25) + metadata + (16 << 20)
    folder = target.parent
    existing = folder if folder.exists() else settings.paths.models_dir
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    needed = estimate + settings.min_free_disk_mb * 1024 * 1024
    if needed > free:
        raise LocalLLMError(f"quantizing {ref.name} to {kind} needs about {human_size(estimate)} of disk, and "
                            f"{human_size(free)} is free (keeping {settings.min_free_disk_mb} MB free)",
                            hint="free some disk, or pick a smaller type")
    return QuantizePlan(ref.path, ref.name, kind, name, target, estimate, free)


def quantize(settings: Settings, plan: QuantizePlan, *, threads: int | None = None,
             progress: Progress | None = None) -> Quantized:
    """Runs llama.cpp's quantizer in a child process and installs its output. Ctrl-C (KeyboardInterrupt) stops
    the child and removes the partial file before it goes on up."""
    from localllm.store.manifest import Manifest, write_manifest

    plan.target.parent.mkdir(parents=True, exist_ok=True)
    partial = plan.target.with_name(f".{plan.target.name}.partial")
    partial.unlink(missing_ok=True)
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    command = [sys.executable, "-m", "localllm.backends.llamacpp_quantize", str(plan.source), str(partial),
               plan.kind, str(threads)]
    started = time.monotonic()
    lines: list[str] = []
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", stdin=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip())
            del lines[:-40]
            found = TENSOR_LINE.search(line)
            if found and progress:
                progress(int(found.group(1)), int(found.group(2)), found.group(3))
        status = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        partial.unlink(missing_ok=True)
        raise
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        reason = next((line.strip() for line in reversed(lines)
                       if "error" in line.lower() or "failed" in line.lower() or "disabled" in line.lower()),
                      lines[-1].strip() if lines else f"exit status {status}")
        hint = ("quantize from a higher-precision file (F16, BF16 or F32)" if "requantiz" in reason.lower()
                else "check that the source is a complete GGUF this llama.cpp can read")
        raise LocalLLMError(f"llama.cpp could not quantize {plan.source_name} to {plan.kind}: {reason}", hint=hint)
    sha256 = _sha256(partial)
    try:
        os.link(partial, plan.target)  # fails where the name exists: never overwrite
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise UsageError(f"{plan.target} appeared while quantizing; it is left as it is",
                         hint="remove it and run quantize again") from None
    partial.unlink()
    size = plan.target.stat().st_size
    write_manifest(plan.target, Manifest(name=plan.name, quant=plan.kind, source=f"quantize:{plan.source}",
                                         repo=None, revision=None, sha256=sha256, size=size,
                                         downloaded=datetime.now(UTC).isoformat(timespec="seconds")))
    return Quantized(plan.name, plan.target, plan.kind, size, sha256, time.monotonic() - started, plan.source)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
