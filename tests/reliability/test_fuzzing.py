"""Hypothesis throws damaged and hostile bytes at the GGUF reader and the input decoders: each input is read or
refused with localllm's own error (never another exception), in bounded time and memory (at most twice the input
plus a constant, as traced by tracemalloc)."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from localllm.core.errors import LocalLLMError
from localllm.store.gguf_info import read_model_info
from localllm.tasks.documents import read_document
from localllm.tasks.rows import parse_rows

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
SLACK = 16 << 20
"""The constant in the memory bound: Python's own allocations while parsing (caches, the gguf module's tables)."""


def small_gguf() -> bytes:
    """A real GGUF, written with gguf's writer: every value type, arrays, two tiny tensors."""
    import tempfile

    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "small.gguf"
        writer = GGUFWriter(str(path), "llama")
        writer.add_block_count(2)
        writer.add_context_length(2048)
        writer.add_embedding_length(8)
        writer.add_feed_forward_length(16)
        writer.add_head_count(2)
        writer.add_head_count_kv(2)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_file_type(0)
        writer.add_string("general.name", "fuzz")
        writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
        writer.add_token_list(["<s>", "</s>", "a", "b"])
        writer.add_token_scores([0.0, 0.0, -1.0, -2.0])
        writer.add_bool("fuzz.flag", True)
        writer.add_array("fuzz.ints", [1, 2, 3])
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
        writer.add_tensor("output.weight", np.ones((4, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


SEED = small_gguf()


def bounded(call, size: int) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    except LocalLLMError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # A hang, not a speed: under tracemalloc, on a machine busy with the rest of the suite, a first import of a
    # document library alone has taken over 5 seconds
    assert time.perf_counter() - started < 30
    assert peak <= 2 * size + SLACK, f"{peak:,} bytes traced for {size:,} bytes of input"


@st.composite
def damaged_gguf(draw) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["byte", "count", "float", "truncate"]))
        if kind == "byte":
            data[position] = draw(st.integers(0, 255))
        elif kind == "count":  # absurd counts and lengths, where lengths and counts are 8-byte integers
            value = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
            data[position:position + 8] = struct.pack("<Q", value)[:len(data) - position]
        elif kind == "float":
            value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 3.4e38]))
            data[position:position + 4] = struct.pack("<f", value)[:len(data) - position]
        else:
            del data[position:]
            if not data:
                data = bytearray(b"G")
    return bytes(data)


@FUZZ
@given(data=damaged_gguf())
def test_a_damaged_gguf_is_read_or_refused_cleanly(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(data)
    bounded(lambda: read_model_info(path), len(data))


@FUZZ
@given(data=st.binary(max_size=4096))
def test_any_bytes_as_a_gguf_are_refused_cleanly(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "random.gguf"
    path.write_bytes(b"GGUF" + data)
    bounded(lambda: read_model_info(path), len(data) + 4)


JSON_PIECES = st.sampled_from(['{"text": "a"}', '{"text": 1}', '{"text": null}', '[1, 2]', '"s"', "{", "}",
                               '{"text": "' + "x" * 1000 + '"}', "[" * 200, "\x00", "\ufeff", "\n", ",", '"',
                               'text,label', 'a,"b\nc"', "\udcff"])


@FUZZ
@given(pieces=st.lists(JSON_PIECES | st.text(max_size=40), max_size=60),
       name=st.sampled_from(["rows.jsonl", "rows.csv", "rows.tsv", "notes.txt"]),
       field=st.sampled_from([None, "text", "label"]))
@example(pieces=["\r0"], name="rows.csv", field=None)  # a lone carriage return once ended the batch with csv.Error
@example(pieces=['text,label', '"a\r', 'b",x', '"open'], name="rows.csv", field="text")
def test_rows_are_read_or_refused_cleanly(pieces: list[str], name: str, field: str | None) -> None:
    text = "\n".join(pieces)
    bounded(lambda: list(parse_rows(text, name, field)), len(text.encode("utf-8", "surrogatepass")))


@FUZZ
@given(data=st.binary(max_size=8192) | st.builds(lambda head, rest: head + rest,
                                                   st.sampled_from([b"%PDF-1.7\n", b"<!doctype html>", b"\xef\xbb\xbf",
                                                                    b"\xff\xfe", b"PK\x03\x04"]),
                                                   st.binary(max_size=4096)))
def test_any_document_is_read_or_refused_cleanly(data: bytes) -> None:
    bounded(lambda: read_document("-", stdin=io.BytesIO(data)), len(data))


@pytest.mark.model
def test_the_real_model_header_cut_anywhere_is_refused_cleanly(bundled_model: Path, tmp_path: Path) -> None:
    data = bundled_model.read_bytes()[:2 << 20]
    for cut in (5, 24, 1000, 100_000, 700_000, len(data)):
        path = tmp_path / f"cut-{cut}.gguf"
        path.write_bytes(data[:cut])
        bounded(lambda: read_model_info(path), cut)  # noqa: B023  (called at once)
