"""A fast reader for the GGUF header: metadata keys and tensor descriptions, never the weights.

gguf's GGUFReader builds a numpy view for every element of every array, so a 49,152-token vocabulary alone takes
about two seconds; planning, `list` and `show` need none of those elements. This reader walks the same layout
(magic, version, counts, key/value pairs, tensor infos) with struct over an mmap, skips array contents, and takes the
type tables (value types, quantisation block sizes) from the gguf package so that it follows new types.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class GGUFFormatError(ValueError):
    pass


@dataclass(frozen=True)
class TensorInfo:
    name: str
    n_elements: int
    n_bytes: int
    offset: int
    """Absolute offset of the tensor's data in the file."""


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    fields: dict[str, Any]
    """Scalar and string values; an array is kept as its length (``ArrayLength``), strings arrays included."""
    tensors: list[TensorInfo]
    data_offset: int


@dataclass(frozen=True)
class ArrayLength:
    count: int


# Bounds no real model comes near, so that a crafted header is refused in a moment and little memory, instead of
# being walked for half a minute: metadata entries, tensors, items of a string array (a vocabulary: ~260k at most
# today), array nesting, and the size of one string value (a chat template: ~100 KB at most today).
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 8
MAX_STRING_ITEMS = 1 << 22
MAX_NESTING = 4
MAX_STRING_BYTES = 16 << 20

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, buffer) -> None:
        self.buffer = buffer
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise GGUFFormatError(f"header ends early at byte {self.pos}") from None
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > MAX_STRING_BYTES:
            raise GGUFFormatError(f"a string of {length:,} bytes at byte {self.pos} (more than any model has)")
        end = self.pos + length
        if end > len(self.buffer):
            raise GGUFFormatError(f"a string runs past the end of the file at byte {self.pos}")
        raw = self.buffer[self.pos:end]
        self.pos = end
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q")
        self.pos += length

    def value(self, kind: int, depth: int = 0) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= MAX_NESTING:
                raise GGUFFormatError(f"arrays nested more than {MAX_NESTING} deep at byte {self.pos}")
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            if item_kind in (_STRING, _ARRAY) and count > MAX_STRING_ITEMS:
                raise GGUFFormatError(f"an array of {count:,} items at byte {self.pos} (more than any model has)")
            if item_kind == _STRING:
                for _ in range(count):
                    self.skip_string()
                    if self.pos > len(self.buffer):
                        break
            elif item_kind == _ARRAY:
                for _ in range(count):
                    self.value(_ARRAY, depth + 1)
            elif item_kind in _SCALARS:
                self.pos += struct.calcsize(_SCALARS[item_kind]) * count
            else:
                raise GGUFFormatError(f"unknown array item type {item_kind}")
            if self.pos > len(self.buffer):
                raise GGUFFormatError("an array runs past the end of the file")
            return ArrayLength(count)
        if kind not in _SCALARS:
            raise GGUFFormatError(f"unknown value type {kind} at byte {self.pos}")
        return self.unpack(_SCALARS[kind])


def read_header(path: Path) -> GGUFHeader:
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        return parse_header(buffer)


def parse_header(buffer) -> GGUFHeader:
    """Parse a GGUF header from bytes or an mmap; the buffer may end anywhere after the tensor descriptions."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    cursor = _Cursor(buffer)
    if bytes(buffer[:4]) != b"GGUF":
        raise GGUFFormatError("not a GGUF file")
    cursor.pos = 4
    version = cursor.unpack("<I")
    if version < 2:
        raise GGUFFormatError(f"GGUF version {version} is too old (version 2 or newer is needed)")
    tensor_count, kv_count = cursor.unpack("<Q"), cursor.unpack("<Q")
    if kv_count > MAX_KV or tensor_count > MAX_TENSORS:
        raise GGUFFormatError(f"the header claims {kv_count:,} metadata entries and {tensor_count:,} tensors "
                              "(more than any model has)")
    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        fields[key] = cursor.value(cursor.unpack("<I"))
    raw_tensors = []
    for _ in range(tensor_count):
        name = cursor.string()
        n_dims = cursor.unpack("<I")
        if n_dims > MAX_DIMS:
            raise GGUFFormatError(f"tensor {name[:60]!r} claims {n_dims:,} dimensions")
        dims = [cursor.unpack("<Q") for _ in range(n_dims)]
        kind, offset = cursor.unpack("<I"), cursor.unpack("<Q")
        raw_tensors.append((name, dims, kind, offset))
    alignment = fields.get("general.alignment", 32)
    # llama.cpp takes only a power of two; anything else (a float, NaN, text, 0) is a damaged file.
    if isinstance(alignment, bool) or not isinstance(alignment, int) or not 1 <= alignment <= 1 << 20 \
            or alignment & (alignment - 1):
        raise GGUFFormatError(f"general.alignment should be a power of two, got {str(alignment)[:40]!r}")
    data_offset = -(-cursor.pos // alignment) * alignment
    tensors = []
    for name, dims, kind, offset in raw_tensors:
        n_elements = 1
        for dim in dims:
            n_elements *= dim
        try:
            block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFFormatError(f"tensor {name} has an unknown type {kind}") from None
        tensors.append(TensorInfo(name, n_elements, n_elements // block_size * type_size, data_offset + offset))
    return GGUFHeader(version, fields, tensors, data_offset)
