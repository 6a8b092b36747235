"""`localllm eval`, `quantize` and `compare` with the real bundled model: perplexity against an independent
computation with llama-cpp-python's logits_all, a higher-precision GGUF quantized to Q8_0 and Q4_0 and their KL
divergence from it, multiple-choice scoring on CSV, JSONL and Parquet, and serve's log-probabilities in the
request shape lm-evaluation-harness's local-completions model sends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, seed_verdict
from helpers.f16_gguf import write_f16_copy

WINDOW = 128
TEXT = Path("/usr/share/common-licenses/GPL-3").read_text(encoding="utf-8")[:2600]
"""A text the OS ships (Debian), about five 128-token windows of the bundled model."""


def independent_perplexity(model: Path, text: str, n_ctx: int) -> float:
    """llama-perplexity's method written out with llama-cpp-python's logits_all: every position's logits, a
    softmax over the whole vocabulary, the second half of each window scored."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, logits_all=True, verbose=False)
    adds_start = llm._model.add_bos_token()
    tokens = llm.tokenize(text.encode(), add_bos=adds_start, special=False)
    nll = []
    for index in range(len(tokens) // n_ctx):
        window = tokens[index * n_ctx:(index + 1) * n_ctx]
        read = [llm.token_bos(), *window[1:]] if adds_start else window
        llm.reset()
        llm.eval(read)
        scores = np.asarray(llm.scores[:n_ctx], dtype=np.float64)
        for position in range(n_ctx // 2, n_ctx - 1):
            row = scores[position]
            top = row.max()
            nll.append(top + np.log(np.exp(row - top).sum()) - row[window[position + 1]])
    llm.close()
    return float(np.exp(np.mean(nll)))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path, build_verdict: Path):
    """One home holding an F16 copy of the bundled model, its Q8_0 and Q4_0 made by `localllm quantize`, and
    the F16's reference log-probabilities over the text: made once for the module's tests."""
    home = seed_verdict(tmp_path_factory.mktemp("eval-home"), build_verdict)
    f16 = write_f16_copy(bundled_model, home / "smollm2-f16.gguf")
    text = home / "gpl3.txt"
    text.write_text(TEXT, encoding="utf-8")
    done = run_cli("quantize", str(f16), "Q8_0", "--json", home=home, timeout=600)
    assert done.returncode == 0, done.stderr_text
    made = {"Q8_0": json.loads(done.stdout_text)}
    # The other through the task itself, to see the progress llama.cpp's log lines give.
    from conftest import settings_for

    from localllm.tasks.quantize import plan_quantize, quantize

    settings = settings_for(home)
    seen: list[tuple[int, int, str]] = []
    plan = plan_quantize(settings, str(f16), "q4_0")
    made["Q4_0"] = quantize(settings, plan, progress=lambda *step: seen.append(step)).to_dict()
    base = home / "f16.logits"
    done = run_cli("eval", "perplexity", "-m", str(f16), str(text), "-c", str(WINDOW), "--save-logits", str(base),
                   "--json", home=home, timeout=600)
    assert done.returncode == 0, done.stderr_text
    return {"home": home, "f16": f16, "text": text, "base": base, "made": made,
            "f16_result": json.loads(done.stdout_text), "progress": seen}


def test_perplexity_equals_an_independent_logits_all_computation(quantized, bundled_model: Path):
    done = run_cli("eval", "perplexity", "-m", str(bundled_model), str(quantized["text"]), "-c", str(WINDOW),
                   "--json", home=quantized["home"], timeout=600)
    assert done.returncode == 0, done.stderr_text
    result = json.loads(done.stdout_text)
    expected = independent_perplexity(bundled_model, TEXT, WINDOW)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-3)
    assert result["windows"] == result["windows_planned"] >= 2
    assert result["tokens_scored"] == result["windows"] * (WINDOW - 1 - WINDOW // 2)
    assert 0 < result["error"] < result["perplexity"]


def test_quantize_writes_into_the_store_with_its_sha256_and_never_overwrites(quantized):
    import hashlib

    home = quantized["home"]
    for kind, made in quantized["made"].items():
        path = Path(made["path"])
        assert path.is_relative_to(home / "data" / "models"), path
        assert made["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
        assert manifest["sha256"] == made["sha256"] and manifest["quant"] == kind
    # Progress came tensor by tensor, up to the last of them.
    steps = quantized["progress"]
    total = steps[-1][1]
    assert total > 10 and [done for done, _, _ in steps] == list(range(1, total + 1))
    assert any(name == "token_embd.weight" for _, _, name in steps)
    listed = run_cli("list", home=home)
    assert quantized["made"]["Q4_0"]["name"] in listed.stdout_text
    again = run_cli("quantize", str(quantized["f16"]), "Q4_0", home=home)
    assert again.returncode == 2 and "never overwrites" in again.stderr_text
    assert "Traceback" not in again.stderr_text


def test_kld_of_q8_0_is_smaller_than_of_q4_0_and_perplexity_orders_the_same(quantized):
    home, base = quantized["home"], quantized["base"]
    results = {}
    for kind, made in quantized["made"].items():
        done = run_cli("eval", "kld", "-m", made["name"], "--base", str(base), "--json", home=home, timeout=600)
        assert done.returncode == 0, done.stderr_text
        results[kind] = json.loads(done.stdout_text)
    q8, q4 = results["Q8_0"], results["Q4_0"]
    assert 0 < q8["kld"] < q4["kld"]
    assert q8["same_top"] > q4["same_top"]
    reference = quantized["f16_result"]["perplexity"]
    assert q8["perplexity_base"] == pytest.approx(reference, rel=1e-3)  # the 16-bit file keeps the reference's
    assert abs(q8["delta_perplexity"]) < abs(q4["delta_perplexity"])
    # The results are kept, with a bench run's, and shown side by side.
    bench = run_cli("bench", "-m", quantized["made"]["Q4_0"]["name"], "-p", "16", "-n", "4", "-r", "1", "--json",
                    home=home, timeout=600)
    assert bench.returncode == 0, bench.stderr_text
    speed = json.loads(bench.stdout_text)["results"][0]
    shown = run_cli("compare", quantized["made"]["Q8_0"]["name"], quantized["made"]["Q4_0"]["name"], "--json",
                    home=home)
    assert shown.returncode == 0, shown.stderr_text
    kept = {row["model"]: row["results"] for row in json.loads(shown.stdout_text)}
    assert kept[quantized["made"]["Q4_0"]["name"]]["kld"]["figures"]["kld"] == pytest.approx(q4["kld"])
    q4_kept = kept[quantized["made"]["Q4_0"]["name"]]
    kept_speed = q4_kept["bench"]["figures"]["tg_tokens_per_s"]
    assert kept_speed == pytest.approx(speed["tg_tokens_per_s"]["median"], abs=0.006)
    assert q4_kept["bench"]["figures"]["peak_memory_bytes"] == speed["peak_memory_bytes"]
    assert "bench" not in kept[quantized["made"]["Q8_0"]["name"]]
    table = run_cli("compare", quantized["made"]["Q8_0"]["name"], quantized["made"]["Q4_0"]["name"], home=home)
    assert quantized["made"]["Q4_0"]["name"] in table.stdout_text and "KLD" in table.stdout_text


def test_kld_refuses_another_vocabulary_and_a_damaged_file(quantized, tiny_gguf: Path):
    home = quantized["home"]
    other = run_cli("eval", "kld", "-m", str(tiny_gguf), "--base", str(quantized["base"]), home=home)
    assert other.returncode == 2 and "vocabulary" in other.stderr_text and "Traceback" not in other.stderr_text
    cut = home / "cut.logits"
    cut.write_bytes(quantized["base"].read_bytes()[:5000])
    damaged = run_cli("eval", "kld", "-m", str(quantized["f16"]), "--base", str(cut), home=home)
    assert damaged.returncode == 2 and "cut short" in damaged.stderr_text


def test_ctrl_c_gives_the_windows_done_and_keeps_no_partial_logits_file(loaded, tmp_path: Path):
    """Ctrl-C arrives as KeyboardInterrupt between windows (here raised from the progress callback after the
    first): the result covers that window, is marked stopped, and no reference file claims windows it lacks."""
    from localllm.tasks.evaluate.perplexity import Text, evaluate_perplexity

    def interrupt(done: int, total: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    saved = tmp_path / "partial.logits"
    report = evaluate_perplexity(loaded.backend, [Text("gpl3", TEXT)], WINDOW, save_logits=saved,
                                 progress=interrupt)
    result = report.to_dict()
    assert result["stopped"] and result["windows"] == 1 < result["windows_planned"]
    assert result["tokens_scored"] == WINDOW - 1 - WINDOW // 2 and result["perplexity"] > 1
    assert list(tmp_path.iterdir()) == []
