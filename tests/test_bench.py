"""`localllm bench` and `bench --tune` on the real bundled model (tiny runs), through llama_cpp.server's API and the
Ollama stand-in; the tuned table in the config, the planner and `hw`; and the sweep's rule on its own."""

from __future__ import annotations

import csv
import io
import json
import stat
from datetime import datetime

import pytest
from conftest import run_cli
from helpers.backend_servers import free_port

from localllm.cli.main import main
from localllm.core.errors import ConfigError
from localllm.core.settings import Settings, Tuned, save_tuned
from localllm.tasks.bench.run import BenchResult, Bound
from localllm.tasks.bench.tune import _distinct_batches, _rotated, decide, thread_candidates

TINY = ("-p", "32", "-n", "8", "-r", "2")


def _check_spread(spread: dict, count: int) -> None:
    assert spread["median"] > 0 and spread["stdev"] >= 0 and len(spread["values"]) == count
    assert spread["min"] <= spread["median"] <= spread["max"]


@pytest.mark.usefixtures("bundled_model")
def test_bench_json_has_every_field_with_sane_values(home):
    done = run_cli("bench", *TINY, "-d", "64", "--json", home=home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert data["machine"]["physical_cores"] >= 1 and data["machine"]["llama_cpp"]
    assert data["memory_bandwidth"]["gb_per_s"] > 0.1
    assert (data["prompt_tokens"], data["gen_tokens"], data["depth"], data["repetitions"]) == (32, 8, 64, 2)
    (result,) = data["results"]
    assert (result["model"], result["backend"], result["measured"]) == ("smollm2-135m", "llama.cpp", "in-process")
    assert result["threads"] >= 1 and result["batch"] == 512 and result["n_ctx"] >= 64 + 8
    for key in ("pp_tokens_per_s", "tg_tokens_per_s", "tg_at_depth_tokens_per_s", "ttft_s"):
        _check_spread(result[key], 2)
    assert result["ttft_s"]["median"] < 30 and 0 < result["load_s"] < 60
    # The weights are mapped from the file and every page of them is read: they are part of the peak.
    assert result["peak_memory_bytes"] > result["weights_bytes"] > 50 * 2**20
    assert result["peak_memory_bytes"] >= result["baseline_memory_bytes"]
    bound, deep = result["bandwidth_bound"], result["bandwidth_bound_at_depth"]
    assert 0 < bound["percent"] <= 100 and 0 < deep["percent"] <= 100
    # Each token reads the weights and the KV cache so far: more of it after 64 tokens than from an empty context.
    assert deep["bytes_per_token"] > bound["bytes_per_token"] >= result["weights_bytes"]
    expected = 100 * bound["bytes_per_token"] * result["tg_tokens_per_s"]["median"] / bound["bandwidth_bytes_per_s"]
    assert bound["percent"] == pytest.approx(expected, abs=0.2)


@pytest.mark.usefixtures("bundled_model")
def test_bench_csv_and_markdown_parse(home, capsys):
    assert main(["bench", "-p", "16", "-n", "4", "-r", "1", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["backend"], row["measured"]) == ("smollm2-135m", "llama.cpp", "in-process")
    for column in ("pp_tokens_per_s", "tg_tokens_per_s", "ttft_s", "load_s", "peak_memory_bytes"):
        assert float(row[column]) > 0, column
    assert 0 < float(row["bandwidth_percent"]) <= 100 and row["error"] == ""

    assert main(["bench", "-p", "16", "-n", "4", "-r", "1", "--md"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header, rule, *body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert header[:6] == ["model", "backend", "measured", "threads", "pp16 t/s", "tg4 t/s"]
    assert set("".join(rule)) == {"-"} and len(rule) == len(header)
    assert len(body) == 1 and len(body[0]) == len(header)
    pp, spread = body[0][4].split(" ± ")
    assert float(pp) > 0 and float(spread) >= 0


def test_bench_through_llama_cpp_server_is_measured_through_the_api(llama_server, home):
    done = run_cli("bench", "-b", "openai", "--base-url", f"{llama_server.url}/v1", "-m", "smollm2-135m", *TINY,
                   "--json", home=home)
    assert done.returncode == 0, done.stderr_text
    (result,) = json.loads(done.stdout_text)["results"]
    assert result["backend"] == "openai" and result["measured"] == "through the API"
    assert llama_server.url.removeprefix("http://") in result["where"]
    assert any("through the server's API" in note and "time to the first token" in note for note in result["notes"])
    _check_spread(result["pp_tokens_per_s"], 2)
    _check_spread(result["tg_tokens_per_s"], 2)
    assert 8 <= result["prompt_tokens"] <= 64  # as the server reported it, about the 32 asked for
    # Nothing of the server's own is known from here: no load time, memory or bandwidth bound is made up.
    assert result["load_s"] is None and result["peak_memory_bytes"] is None and result["bandwidth_bound"] is None


def test_bench_through_the_ollama_protocol(ollama_standin, home):
    done = run_cli("bench", "-b", "ollama", "--host", ollama_standin.url, "-p", "32", "-n", "8", "-r", "1", home=home)
    assert done.returncode == 0, done.stderr_text
    assert "through the API" in done.stdout_text and "note: smollm2:135m on ollama: measured through the server's " \
                                                      "API" in done.stdout_text


@pytest.mark.usefixtures("bundled_model")
def test_tune_writes_the_config_with_its_comment_and_keeps_it_private(home):
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('# my own settings\napi_key = "sk-test-key-1234"\nctx = 4096\n')
    config.chmod(0o600)
    done = run_cli("bench", "--tune", "--threads", "1,2", "--batch", "16,512", "-r", "2", "-p", "32", "-n", "8",
                   "--json", home=home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert set(data["threads"]["candidates"]) == {"1", "2"} and set(data["batch"]["candidates"]) == {"16", "512"}
    for sweep in ("threads", "batch"):
        for spread in data[sweep]["candidates"].values():
            _check_spread(spread, 2)
    assert data["tuned_tg_over_default_tg"] >= 1.0  # the default stays unless a candidate beat it
    assert data["config_file"] == str(config)

    text = config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert text.startswith('# my own settings\napi_key = "sk-test-key-1234"\nctx = 4096\n')
    assert "[tuned]\n# Written by `localllm bench --tune` on " in text
    assert "# tg8 tokens/s: 1 thread" in text and "# pp32 tokens/s: batch 16" in text
    settings = Settings.load()
    tuned = settings.tuned
    assert tuned is not None and tuned.model == "smollm2-135m" and settings.ctx == 4096
    assert datetime.fromisoformat(tuned.measured_at).tzinfo is not None
    assert (tuned.threads, tuned.batch) == (data["saved"]["threads"], data["saved"]["batch"])
    for sweep, saved in (("threads", tuned.threads), ("batch", tuned.batch)):
        chosen = data[sweep]
        assert saved == (chosen["chosen"] if chosen["changed"] else None)


@pytest.mark.usefixtures("bundled_model")
def test_the_planner_the_load_and_hw_use_the_tuned_values(home, monkeypatch):
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.loading import describe_model, load_model, plan_for

    save_tuned(home / "config" / "config.toml", Tuned(threads=1, batch=64, measured_at="2025-06-01T12:03:00+00:00",
                                                      model="smollm2-135m"), ["measured in a test"])
    settings = Settings.load()
    _, info = describe_model(settings, "smollm2-135m")
    plan = plan_for(settings, info, detect_hardware())
    assert (plan.n_threads, plan.n_batch) == (1, 64)
    assert any("bench --tune" in reason and "2025-06-01 12:03 UTC" in reason for reason in plan.reasons)
    with load_model(settings, "smollm2-135m", ctx=512) as loaded:
        llm = loaded.backend._llm  # what llama.cpp itself was given
        assert (llm.n_batch, llm.context_params.n_threads) == (64, 1)

    done = run_cli("hw", home=home)
    assert done.returncode == 0, done.stderr_text
    assert "threads 1, batch 64 (bench --tune, 2025-06-01 12:03 UTC, smollm2-135m)" in done.stdout_text
    done = run_cli("hw", "--json", home=home, env={"LOCALLLM_THREADS": "2"})
    assert json.loads(done.stdout_text)["tuned"] == {
        "threads": 1, "batch": 64, "measured_at": "2025-06-01T12:03:00+00:00", "model": "smollm2-135m",
        "threads_overridden_by": 2}
    # An explicit setting wins over the tuned one.
    monkeypatch.setenv("LOCALLLM_THREADS", "2")
    assert plan_for(Settings.load(), info, detect_hardware()).n_threads == 2


@pytest.mark.parametrize("args", [
    ["-m", "no-such-model"],
    ["-p", "0"],
    ["-r", "0"],
    ["-n", "0"],
    ["-d", "-1"],
    ["-b", "nosuch"],
    ["-b", "ollama", "--host", "http://127.0.0.1:{port}"],
    ["--threads", "1,2"],
    ["--tune", "--threads", "one"],
    ["--tune", "-b", "ollama"],
    ["--tune", "-m", "a", "-m", "b"],
])
def test_bad_input_is_a_one_line_error(home, capsys, args):
    argv = ["bench", "-p", "8", "-n", "2", "-r", "1", *[arg.format(port=free_port()) for arg in args]]
    assert main(argv) != 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and " — hint: " in err, err
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_tuned_table_is_checked_like_the_other_settings(home):
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    for text, fragment in (("[tuned]\nthreads = 0\n", "from 1 to"), ("[tuned]\nbatch = true\n", "whole number"),
                           ("[tuned]\nspeed = 3\n", "unknown key 'speed'"), ("tuned = 3\n", "must be a table")):
        config.write_text(text)
        with pytest.raises(ConfigError, match=fragment):
            Settings.load()


def test_the_sweep_keeps_the_default_unless_a_candidate_is_clearly_faster():
    # Noise around the same speed: the default stays.
    assert decide(2, {1: [50, 49, 52, 48, 51], 2: [49, 51, 50, 50, 50]})[0] == 2
    # 20 % faster in every round: taken.
    chosen, why = decide(2, {1: [60, 61, 58, 62, 59], 2: [50, 50, 49, 51, 50]})
    assert chosen == 1 and "5 of 5 rounds" in why
    # A higher median from two lucky rounds only (the others measured beside the default were slower): kept.
    assert decide(2, {1: [70, 75, 49, 48, 60], 2: [50, 50, 50, 50, 50]})[0] == 2
    # Faster in every round, but by less than the margin: kept.
    assert decide(2, {1: [51.5, 51.5, 51.5], 2: [50, 50, 50]})[0] == 2
    # Of two that qualify, the faster.
    assert decide(4, {1: [60] * 3, 2: [70] * 3, 4: [50] * 3})[0] == 2


def test_the_thread_counts_tried():
    from dataclasses import replace

    from localllm.hardware.report import CPUInfo, HardwareReport

    def machine(physical: int, logical: int) -> HardwareReport:
        return HardwareReport("Linux", CPUInfo("cpu", "x86_64", physical, logical, ()), 2**34, 2**33)

    assert thread_candidates(machine(2, 2)) == [1, 2]
    assert thread_candidates(machine(4, 8)) == [1, 2, 3, 4, 8]
    assert thread_candidates(machine(24, 48)) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 48]
    assert thread_candidates(replace(machine(1, 1), cpu=CPUInfo("cpu", "arm64", 0, 0, ()))) == [1]


def test_the_sweep_order_and_the_batch_sizes_worth_trying():
    orders = [_rotated([1, 2, 3], index) for index in range(3)]
    assert {order[0] for order in orders} == {1, 2, 3}  # no candidate always first
    # A 64-token prompt is read in one batch by 64, 128 and 512 alike: only the default of those is tried.
    assert _distinct_batches((32, 64, 128), 512, 64) == ([32, 512], [64, 128])
    assert _distinct_batches((64, 128, 256, 512), 512, 512) == ([64, 128, 256, 512], [])


def test_the_bandwidth_bound_counts_the_weights_and_the_kv_cache_read():
    result = BenchResult("m", "llama.cpp", gen_tokens=9, weights_bytes=1000, kv_bytes_per_position=10)
    assert result.bytes_per_token(0) == 1000 + 10 * 5  # positions 1..9 read: 5 on average
    assert result.bytes_per_token(100) == 1000 + 10 * 105
    assert Bound(1050, 20.0, 42_000.0, "RAM").percent == pytest.approx(50.0)
    assert BenchResult("m", "openai").bytes_per_token(0) is None


def test_bench_help_lists_the_options(home):
    done = run_cli("bench", "--help", home=home)
    assert done.returncode == 0
    for flag in ("-p", "-n", "-d", "-r", "--tune", "--json", "--csv", "--md", "--threads", "--batch"):
        assert flag in done.stdout_text
