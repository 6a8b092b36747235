"""GGUF files the tests write: the bundled model's tensors and metadata with another chat template (or none), or
with other values in some of its fields; or a small llama-architecture file of one tensor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_DROPPED = object()


def copy_with_template(source: Path, target: Path, template: str | None) -> Path:
    """``source`` rewritten with gguf's own writer, its ``tokenizer.chat_template`` replaced (None: removed)."""
    return copy_with_fields(source, target, {"tokenizer.chat_template": _DROPPED if template is None else template})


def copy_with_fields(source: Path, target: Path, changes: Mapping[str, Any]) -> Path:
    """``source`` rewritten with gguf's own writer, each field named in ``changes`` given that value (a str is
    written as a string, an int as a uint64) or, for ``copy_with_template``'s marker, removed."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target), architecture, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in changes:
            continue
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    for name, value in changes.items():
        if value is _DROPPED:
            continue
        kind = (gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.UINT32 if value < 1 << 32
                else gguf.GGUFValueType.UINT64)
        writer.add_key_value(name, value, kind)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data)
    writer.close()
    return target


def write_gguf(path: Path, tweak: Callable[[Any], None] | None = None, *, name: str = "hostile test model") -> Path:
    """A small llama-architecture GGUF (metadata and one tensor); ``tweak(writer)`` adds the field under test."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    if tweak is not None:
        tweak(writer)
    fields = {key for key in writer.kv_data[0]}
    for key, add in (("llama.context_length", lambda: writer.add_context_length(2048)),
                     ("llama.block_count", lambda: writer.add_block_count(2)),
                     ("llama.embedding_length", lambda: writer.add_embedding_length(64)),
                     ("llama.attention.head_count", lambda: writer.add_head_count(4))):
        if key not in fields:
            add()
    writer.add_tensor("token_embd.weight", np.zeros((16, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
