"""The eval commands' files and figures without a model: the 16-bit log-probability file (llama.cpp's layout) and
its refusals, the multiple-choice data shapes, the kept results, and bad input as one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from localllm.core.errors import UsageError
from localllm.tasks.evaluate.choice_data import read_items, to_item
from localllm.tasks.evaluate.logits_file import (
    HEADER,
    MAGIC,
    LogitsWriter,
    packed_rows,
    read_logits_file,
    row_width,
    unpacked_rows,
)
from localllm.tasks.evaluate.perplexity import Scores


def test_stored_rows_keep_log_probabilities_to_16_bits():
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(5, 1001)) * 4).astype(np.float32)
    stored = packed_rows(logits)
    assert stored.shape == (5, row_width(1001)) and stored.dtype == np.uint16
    back = unpacked_rows(stored, 1001)
    exact = logits - (logits.max(axis=1, keepdims=True)
                      + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)))
    kept = exact > exact.max(axis=1, keepdims=True) - 16  # below that, the lowest value stands for all
    step = 16 / 65535
    assert np.abs(back - exact)[kept].max() <= step
    assert np.all(back[~kept] <= exact.max(axis=1, keepdims=True).repeat(1001, 1)[~kept] - 16 + step)


def test_the_file_round_trips_and_a_damaged_one_is_refused(tmp_path: Path):
    n_ctx, n_vocab = 8, 11
    tokens = list(range(3 * n_ctx))
    writer = LogitsWriter(tmp_path / "ref.logits", n_ctx, n_vocab, tokens, 2)
    for _ in range(2):
        writer.add(np.zeros((n_ctx - 1 - n_ctx // 2, n_vocab), dtype=np.float32))
    writer.finish()
    read = read_logits_file(tmp_path / "ref.logits")
    assert (read.n_ctx, read.n_vocab, read.n_chunk, read.tokens) == (n_ctx, n_vocab, 2, tokens[:2 * n_ctx])
    uniform = unpacked_rows(np.asarray(read.window_rows(1)), n_vocab)
    assert np.allclose(uniform, -math.log(n_vocab), atol=1e-5)
    (tmp_path / "short.logits").write_bytes((tmp_path / "ref.logits").read_bytes()[:-2])
    with pytest.raises(UsageError, match="cut short"):
        read_logits_file(tmp_path / "short.logits")
    (tmp_path / "text.logits").write_text("hello")
    with pytest.raises(UsageError, match="does not start with _logits_"):
        read_logits_file(tmp_path / "text.logits")
    (tmp_path / "huge.logits").write_bytes(HEADER.pack(MAGIC, 8, -1, 1))
    with pytest.raises(UsageError, match="header says"):
        read_logits_file(tmp_path / "huge.logits")


def test_perplexity_and_its_error_follow_llama_perplexity_formula():
    values = [0.5, 1.5, 2.0, 3.0]
    summary = Scores(values).summary()
    mean = sum(values) / 4
    assert summary["perplexity"] == pytest.approx(math.exp(mean))
    spread = sum(v * v for v in values) / 4 - mean * mean
    assert summary["error"] == pytest.approx(math.exp(mean) * math.sqrt(spread / 3))


def test_the_common_data_set_shapes():
    mmlu = to_item(1, {"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1})
    assert mmlu.choices == ("3", "4", "5", "6") and mmlu.answer == 1
    assert mmlu.context == "Question: 2+2?\nAnswer:"
    arc = to_item(2, {"question": "Q?", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]},
                      "answerKey": "3"})
    assert arc.answer == 2
    hellaswag = to_item(3, {"activity_label": "Baking", "ctx_a": "She mixes flour.", "ctx_b": "then she",
                            "endings": ["bakes it.", "sings [title] loudly."], "label": "0"})
    assert hellaswag.context == "Baking: She mixes flour. Then she" and hellaswag.answer == 0
    assert hellaswag.choices[1] == "sings. loudly."
    by_text = to_item(4, {"question": "Q?", "choices": ["yes", "no"], "answer": "no"})
    assert by_text.answer == 1
    with pytest.raises(UsageError, match="names none of its 2 choices"):
        to_item(5, {"question": "Q?", "choices": ["yes", "no"], "answer": 5})


def test_mmlu_csv_without_a_header(tmp_path: Path):
    data = tmp_path / "mmlu.csv"
    data.write_text("What is 1+1?,1,2,3,4,B\nWhat is 2+2?,1,2,3,4,D\n", encoding="utf-8")
    items = read_items(data)
    assert [(item.choices, item.answer) for item in items] == [(("1", "2", "3", "4"), 1), (("1", "2", "3", "4"), 3)]


def test_bad_input_is_one_line(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    unknown = run_cli("quantize", "smollm2-135m", "Q9_9", home=home)
    assert unknown.returncode == 2 and "unknown quantization type" in unknown.stderr_text
    assert "Traceback" not in unknown.stderr_text
    missing = run_cli("eval", "kld", "-m", "smollm2-135m", "--base", str(tmp_path / "none.logits"), home=home)
    assert missing.returncode == 2 and "no such file" in missing.stderr_text
    nothing = run_cli("compare", "smollm2-135m", "--json", home=home)
    assert nothing.returncode == 0, nothing.stderr_text
    assert json.loads(nothing.stdout_text)[0]["results"] == {}
