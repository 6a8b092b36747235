"""Code assist on the real bundled model, with a real Python file and the real traceback it raises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from localllm.tasks.code import CodeSource, first_code_block, relevant_part, traceback_lines

DATA = Path(__file__).parent / "data"
BUGGY = DATA / "invoice_total.py"
SHORT = ("-o", "max_tokens=48")


@pytest.fixture(scope="module")
def traceback_file(tmp_path_factory):
    done = subprocess.run([sys.executable, str(BUGGY)], capture_output=True, text=True)
    assert done.returncode == 1 and "TypeError" in done.stderr
    path = tmp_path_factory.mktemp("tb") / "traceback.txt"
    path.write_text(done.stderr)
    return path


def test_fix_answers_with_a_python_code_block_and_writes_it_only_to_a_new_file(shared_home, tmp_path,
                                                                                traceback_file):
    target = tmp_path / "fixed.py"
    done = run_cli("code", "fix", str(BUGGY), "--error", str(traceback_file), *SHORT, "--write", str(target),
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert done.stdout_text.startswith("```python\n")
    assert "sent all of invoice_total.py, 22 lines" in done.stderr_text
    assert target.read_text() == first_code_block(done.stdout_text).rstrip("\n") + "\n"
    target.write_text("# mine\n")
    again = run_cli("code", "fix", str(BUGGY), "--error", str(traceback_file), *SHORT, "--write", str(target),
                    home=shared_home)
    assert again.returncode == 2 and "exists; it was left as it was" in again.stderr_text
    assert target.read_text() == "# mine\n"


def test_traceback_on_stdin(shared_home, traceback_file):
    done = run_cli("code", "fix", str(BUGGY), *SHORT, home=shared_home, stdin=traceback_file.read_text())
    assert done.returncode == 0 and done.stdout_text.startswith("```python\n")


@pytest.mark.usefixtures("bundled_model")
def test_explain_a_line_range_is_recorded_as_a_one_shot(home):
    done = run_cli("code", "explain", f"{BUGGY}:6-8", *SHORT, home=home)
    assert done.returncode == 0, done.stderr_text
    assert "sent invoice_total.py lines 6-8 of 22" in done.stderr_text and done.stdout_text.strip()
    # Recorded as the app's code pane records an action: a one-shot of its own, titled by what was asked.
    (recorded,) = json.loads(run_cli("logs", "--json", home=home).stdout_text)
    assert recorded["origin"] == "code" and recorded["title"].startswith("code explain: invoice_total.py lines 6-8")
    prompt, answer = recorded["messages"]
    assert prompt["role"] == "user" and "def " in prompt["content"]  # the code went in with the question
    assert answer["content"].strip() == done.stdout_text.strip() and answer["finish"] == "length"


def test_convert_and_generate_use_the_target_language_fence(shared_home):
    converted = run_cli("code", "convert", str(BUGGY), "--to", "rust", *SHORT, home=shared_home)
    assert converted.returncode == 0 and converted.stdout_text.startswith("```rust\n")
    generated = run_cli("code", "gen", "a function that reverses a string", "--lang", "go", *SHORT,
                        home=shared_home)
    assert generated.returncode == 0 and generated.stdout_text.startswith("```go\n")


def test_a_file_larger_than_the_window_sends_the_definitions_around_the_error(shared_home, tmp_path):
    filler = "".join(f"def helper_{i}(value):\n    return value + {i}\n\n\n" for i in range(300))
    big = tmp_path / "big.py"
    big.write_text(filler + BUGGY.read_text())
    done = subprocess.run([sys.executable, str(big)], capture_output=True, text=True)
    assert "TypeError" in done.stderr
    answer = run_cli("code", "fix", str(big), "-o", "ctx=1024", *SHORT, home=shared_home, stdin=done.stderr)
    assert answer.returncode == 0, answer.stderr_text
    assert "(the definitions around the error)" in answer.stderr_text
    lines = traceback_lines(done.stderr, big)
    source = CodeSource(big, big.read_text(), 1, big.read_text().count("\n"), big.read_text().count("\n"))
    part = relevant_part(source, lines)
    assert "def invoice_total" in part.text and "def main" in part.text and "helper_5(" not in part.text
    without_error = run_cli("code", "explain", str(big), "-o", "ctx=1024", *SHORT, home=shared_home)
    assert without_error.returncode == 1 and "name a line range" in without_error.stderr_text


@pytest.mark.parametrize("args, fragment", [
    (("code", "explain", "missing.py"), "no such file"),
    (("code", "explain", f"{BUGGY}:9-3"), "bad line range"),
    (("code", "convert", str(BUGGY), "--to", "klingon"), "unknown language"),
    (("code", "fix", str(BUGGY)), "needs the error"),
    (("code", "explain", str(BUGGY), "--write", "x.py"), "explain writes no code"),
])
def test_bad_code_input_is_one_error_line(shared_home, args, fragment):
    done = run_cli(*args, home=shared_home)
    assert done.returncode != 0
    assert done.stderr_text.strip().splitlines()[-1].startswith("error: ") and fragment in done.stderr_text


def test_a_language_named_on_the_command_line_gets_its_plain_fence():
    from localllm.tasks.code import language_for

    assert language_for(name="javascript").fence == "javascript"
    assert language_for(name="typescript").fence == "typescript"
    assert language_for(path="page.tsx").fence == "tsx"
