"""The reference log-probabilities `eval perplexity --save-logits` keeps and `eval kld --base` reads, in the layout
llama.cpp's `llama-perplexity --kl-divergence-base` writes, so a file made by either tool serves the other.

Layout (little-endian): ``_logits_``; n_ctx, n_vocab, n_chunk (int32 each); the n_chunk × n_ctx token ids read
(int32); then for each window the scored positions (n_ctx - 1 - n_ctx/2 of them), each a row of
``2 * ((n_vocab + 1) // 2) + 4`` uint16: two float32 (scale, the lowest log-probability kept) and one 16-bit step
per vocabulary entry, ``log p = scale * q + lowest``. Log-probabilities more than 16 below the top one are stored
as the lowest (they weigh nothing in a KL divergence: e^-16 ≈ 1e-7).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from localllm.core.errors import UsageError

MAGIC = b"_logits_"
HEADER = struct.Struct("<8siii")
SPAN = 16.0
"""How far below the top log-probability a row keeps detail (llama.cpp's choice)."""


def row_width(n_vocab: int) -> int:
    """uint16 entries a stored row takes: the two float32, the vocabulary, padded to an even count."""
    return 2 * ((n_vocab + 1) // 2) + 4


def scored_per_window(n_ctx: int) -> int:
    return n_ctx - 1 - n_ctx // 2


def packed_rows(logits: Any) -> Any:
    """Rows of raw logits (rows × vocabulary, float32) as stored rows of uint16."""
    import numpy as np

    rows, n_vocab = logits.shape
    high = logits.max(axis=1)
    low = np.maximum(logits.min(axis=1), high - SPAN)
    log_total = np.log(np.exp(logits - high[:, None]).sum(axis=1, dtype=np.float64)).astype(np.float32)
    scale = ((high - low) / 65535.0).astype(np.float32)
    out = np.zeros((rows, row_width(n_vocab)), dtype=np.uint16)
    out[:, :4] = np.stack([scale, (low - high - log_total).astype(np.float32)], axis=1).astype("<f4").view(np.uint16)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    steps = np.rint((logits - low[:, None]) / safe[:, None])
    out[:, 4:4 + n_vocab] = np.where(logits > low[:, None], np.clip(steps, 0, 65535), 0).astype(np.uint16)
    return out


def unpacked_rows(stored: Any, n_vocab: int) -> Any:
    """Stored rows back to log-probabilities (rows × vocabulary, float32)."""
    import numpy as np

    head = np.ascontiguousarray(stored[:, :4]).view("<f4")
    scale, low = head[:, 0], head[:, 1]
    return stored[:, 4:4 + n_vocab].astype(np.float32) * scale[:, None] + low[:, None]


class LogitsWriter:
    """Writes the file beside its final name and renames it into place when complete: a run stopped part way
    leaves no file that claims more windows than it holds."""

    def __init__(self, path: Path, n_ctx: int, n_vocab: int, tokens: list[int], n_chunk: int) -> None:
        import numpy as np

        self.path = path
        self._partial = path.with_name(f".{path.name}.partial")
        try:
            self._file: BinaryIO = self._partial.open("wb")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}", hint="choose another --save-logits path") \
                from None
        self._file.write(HEADER.pack(MAGIC, n_ctx, n_vocab, n_chunk))
        self._file.write(np.asarray(tokens[:n_chunk * n_ctx], dtype="<i4").tobytes())

    def add(self, logits: Any) -> None:
        self._file.write(packed_rows(logits).tobytes())

    def finish(self) -> None:
        self._file.close()
        os.replace(self._partial, self.path)

    def discard(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


@dataclass
class LogitsFile:
    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: list[int]
    _rows_at: int

    def window_rows(self, chunk: int) -> Any:
        """The stored rows of window ``chunk`` (a memory map: read as they are needed)."""
        import numpy as np

        count = scored_per_window(self.n_ctx)
        width = row_width(self.n_vocab)
        return np.memmap(self.path, dtype="<u2", mode="r", shape=(count, width),
                         offset=self._rows_at + chunk * count * width * 2)


def read_logits_file(path: Path) -> LogitsFile:
    """The file's header and tokens, checked against its size before anything is read from it."""
    import numpy as np

    what = f"{path} is not a file of reference log-probabilities"
    hint = "make one with: localllm eval perplexity -m BASE_MODEL TEXT --save-logits FILE"
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEADER.size)
            if len(head) < HEADER.size or head[:8] != MAGIC:
                raise UsageError(f"{what} (it does not start with {MAGIC.decode()})", hint=hint)
            _, n_ctx, n_vocab, n_chunk = HEADER.unpack(head)
            if not (4 <= n_ctx <= 1 << 22 and 0 < n_vocab <= 1 << 24 and 0 < n_chunk <= 1 << 24):
                raise UsageError(f"{what} (its header says a {n_ctx}-token window, {n_vocab} tokens, "
                                 f"{n_chunk} windows)", hint=hint)
            rows_at = HEADER.size + 4 * n_ctx * n_chunk
            expected = rows_at + n_chunk * scored_per_window(n_ctx) * row_width(n_vocab) * 2
            if size != expected:
                raise UsageError(f"{what}: {size:,} bytes where its header means {expected:,} (cut short, or "
                                 "damaged)", hint=hint)
            tokens = np.frombuffer(handle.read(4 * n_ctx * n_chunk), dtype="<i4").tolist()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", hint=hint) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder", hint=hint) from None
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied", hint="check its permissions") from None
    return LogitsFile(path, n_ctx, n_vocab, n_chunk, tokens, rows_at)
