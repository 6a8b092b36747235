"""`localllm eval choice` with the real bundled model on data files the test writes (CSV, JSONL, Parquet): each
choice's log-likelihood against an independent computation with llama-cpp-python's logits_all, the accuracy the
test expects from which choice that computation scores highest, and serve's log-probabilities in the request shape
lm-evaluation-harness's local-completions model sends (echo, logprobs, token-id prompts) equal to eval choice's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import run_cli, seed_verdict
from helpers.serve_process import serving

QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "loud", "seven"]),
    ("Which animal barks?", ["a cat", "a dog", "a fish", "a stone"]),
    ("What is two plus two?", ["four", "purple", "yesterday", "a tree"]),
    ("Where do fish live?", ["in water", "in the sky", "in a book", "on the moon"]),
    ("What do bees make?", ["honey", "cars", "music", "rain"]),
]


def independent_scores(model: Path, context: str, choices: list[str]) -> list[float]:
    """Each choice's summed log-probability after the context, from logits_all rows (lm-evaluation-harness's
    tokenization: the context alone, then context and choice together)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=256, logits_all=True, verbose=False)
    adds_start = llm._model.add_bos_token()
    scores = []
    for choice in choices:
        context_ids = llm.tokenize(context.encode(), add_bos=adds_start, special=False)
        whole = llm.tokenize((context + " " + choice).encode(), add_bos=adds_start, special=False)
        llm.reset()
        llm.eval(whole)
        rows = np.asarray(llm.scores[:len(whole)], dtype=np.float64)
        total = 0.0
        for position in range(len(context_ids), len(whole)):
            row = rows[position - 1]
            top = row.max()
            total += row[whole[position]] - top - np.log(np.exp(row - top).sum())
        scores.append(total)
    llm.close()
    return scores


@pytest.fixture(scope="module")
def expected(bundled_model: Path) -> list[tuple[str, list[str], list[float]]]:
    return [(question, choices, independent_scores(bundled_model, f"Question: {question}\nAnswer:", choices))
            for question, choices in QUESTIONS]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory, expected) -> tuple[Path, dict[str, Path], float]:
    """The items in three formats. The answers are set from the independent scores: the highest-scoring choice
    for the first three items, another for the last two, so accuracy must be 3/5."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("choice-data")
    answers = []
    for index, (_, _, scores) in enumerate(expected):
        best = int(np.argmax(scores))
        answers.append(best if index < 3 else (best + 1) % len(scores))
    plain = [{"question": q, "choices": c, "answer": a} for (q, c, _), a in zip(expected, answers, strict=True)]
    jsonl = folder / "items.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in plain), encoding="utf-8")
    csv_file = folder / "items.csv"  # MMLU's columns: question, A..D, the answer as a letter
    with csv_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "A", "B", "C", "D", "answer"])
        for row in plain:
            writer.writerow([row["question"], *row["choices"], "ABCD"[row["answer"]]])
    parquet = folder / "items.parquet"  # ARC's columns: choices as {text, label}, answerKey
    pq.write_table(pa.Table.from_pylist([
        {"question": row["question"], "choices": {"text": row["choices"], "label": ["A", "B", "C", "D"]},
         "answerKey": "ABCD"[row["answer"]]} for row in plain]), parquet)
    return folder, {"jsonl": jsonl, "csv": csv_file, "parquet": parquet}, 3 / 5


@pytest.fixture(scope="module")
def choice_home(tmp_path_factory: pytest.TempPathFactory, build_verdict: Path) -> Path:
    return seed_verdict(tmp_path_factory.mktemp("choice-home"), build_verdict)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_eval_choice_scores_each_choice_as_an_independent_computation(kind, data_files, expected, choice_home,
                                                                      bundled_model):
    _, files, accuracy = data_files
    done = run_cli("eval", "choice", "-m", "smollm2-135m", str(files[kind]), "--json", home=choice_home,
                   timeout=600)
    assert done.returncode == 0, done.stderr_text
    result = json.loads(done.stdout_text)
    assert result["items"] == len(QUESTIONS)
    assert result["acc"] == pytest.approx(accuracy)
    assert result["acc_stderr"] == pytest.approx(np.sqrt(accuracy * (1 - accuracy) / (len(QUESTIONS) - 1)))
    for scored, (_, _, scores) in zip(result["scored"], expected, strict=True):
        assert scored["logprobs"] == pytest.approx(scores, abs=1e-3)


def test_limit_and_a_shape_it_cannot_read(data_files, choice_home):
    folder, files, _ = data_files
    done = run_cli("eval", "choice", "-m", "smollm2-135m", str(files["jsonl"]), "--limit", "2", "--json",
                   home=choice_home, timeout=600)
    assert done.returncode == 0, done.stderr_text
    assert json.loads(done.stdout_text)["items"] == 2
    odd = folder / "odd.jsonl"
    odd.write_text('{"prompt": "no question here"}\n', encoding="utf-8")
    refused = run_cli("eval", "choice", "-m", "smollm2-135m", str(odd), home=choice_home)
    assert refused.returncode == 2 and "item 1 has no question" in refused.stderr_text


def test_serve_gives_lm_eval_local_completions_the_same_log_likelihoods(data_files, choice_home, bundled_model):
    """lm-evaluation-harness (0.4.x, models/openai_completions.py) sends each context + continuation as token ids
    to /v1/completions with echo, logprobs 1, max_tokens 1 and temperature 0, and sums
    ``token_logprobs[ctxlen:-1]``, counting on the last entry being the one generated token. The same request
    here, against serve, read as the harness reads it: a generated end token (the model may end at once after a
    choice) is an entry too, or the harness's -1 would drop the continuation's last token."""
    _, files, _ = data_files
    done = run_cli("eval", "choice", "-m", "smollm2-135m", str(files["jsonl"]), "--json", home=choice_home,
                   timeout=600)
    assert done.returncode == 0, done.stderr_text
    scored = json.loads(done.stdout_text)["scored"]
    for parallel in ("1", "2"):  # one answer at a time (llama-cpp-python's own loop) and the batch decoder
        with serving(choice_home, "--parallel", parallel) as url:
            _check_lm_eval_requests(url, scored)


def _check_lm_eval_requests(url: str, scored: list) -> None:
    for item in scored:
        context = item["context_tokens"]
        for tokens, expected_logprob in zip(item["choice_tokens"], item["logprobs"], strict=True):
            reply = httpx.post(f"{url}/v1/completions", timeout=120, json={
                "model": "smollm2-135m", "prompt": [*context, *tokens], "temperature": 0, "max_tokens": 1,
                "logprobs": 1, "seed": 1234, "echo": True})
            assert reply.status_code == 200, reply.text
            logprobs = reply.json()["choices"][0]["logprobs"]
            assert len(logprobs["token_logprobs"]) == len(context) + len(tokens) + 1  # and the one generated
            continuation = logprobs["token_logprobs"][len(context):-1]
            assert sum(continuation) == pytest.approx(expected_logprob, abs=1e-3)


@pytest.mark.usefixtures("bundled_model")
def test_eval_task_scores_classify_against_the_gold_labels(choice_home, tmp_path: Path):
    rows = [{"text": "My order arrived broken and late.", "gold": "complaint"},
            {"text": "Thank you, the support was wonderful!", "gold": "praise"},
            {"text": "The app crashes every time I open it.", "gold": "complaint"}]
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    done = run_cli("eval", "task", "-m", "smollm2-135m", "--task", "classify", str(data), "--gold", "gold",
                   "--json", home=choice_home, timeout=600)
    assert done.returncode == 0, done.stderr_text
    result = json.loads(done.stdout_text)
    predicted = [row["predicted"] for row in result["predictions"]]
    assert result["accuracy"] == pytest.approx(np.mean([p == r["gold"] for p, r in zip(predicted, rows,
                                                                                       strict=True)]))
    assert sum(sum(row.values()) for row in result["confusion"].values()) == len(rows)
    assert result["labels"]["complaint"]["support"] == 2
    # The predictions are the structured task's own answers, as `localllm classify` gives them.
    classified = run_cli("classify", "-m", "smollm2-135m", "--labels", "complaint,praise", str(data), "--field",
                         "text", home=choice_home, timeout=600)
    assert [json.loads(line)["label"] for line in classified.stdout_text.splitlines()] == predicted
