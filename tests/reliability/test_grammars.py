"""JSON schemas, label sets and tool schemas that llama.cpp's grammar parser cannot take (`\\d` in a pattern, a quote
in a property name or an enum value, a back-reference, a count of a million): each reaches the model through the
one grammar gate, which translates what it can, drops and names what it cannot, and else falls back to generic
JSON. The commands answer (or say what is wrong in one line) and never die by a signal; the answer is still
validated against the whole schema. A hypothesis fuzz runs schemas and labels through the real llama.cpp parser
and sampler, and a scan of the source finds no other way for grammar text to reach llama.cpp."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import test_serve
from conftest import run_cli

from localllm.backends.grammars import MAX_REPEAT, GrammarGate, GrammarRefused, schema_rules, translate_pattern

MODEL = "smollm2-135m"
"""The bundled model, as serve names it: a request must name a served model."""

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]
server = test_serve.server  # a real `localllm serve` process on loopback with the bundled model
HELPERS = ROOT / "tests" / "helpers"
HOSTILE_MCP = HELPERS / "hostile_mcp_server.py"

# Schemas each of which crashed localllm by a signal before the gate (exit 139 in llama.cpp's sampler).
CRASHERS = {
    "a digit class": {"type": "string", "pattern": r"^\d{5}$"},
    "non-space and word classes": {"type": "string", "pattern": r"^\S+@\w+\.com$"},
    "any character as [\\s\\S]": {"type": "string", "pattern": r"^[\s\S]{1,20}$"},
    "a back-reference": {"type": "string", "pattern": r"^(a)\1$"},
    "a look-ahead": {"type": "string", "pattern": r"^(?=x)x+$"},
    "a quote in a property name": {"type": "object", "properties": {'say "hi"': {"type": "string"}},
                                   "required": ['say "hi"']},
    "a backslash and a quote in enum values": {"enum": ['a"b', "c\\d", 'e\\"f']},
    "a quote in a const": {"const": 'x"y'},
    "a count of a million": {"type": "string", "minLength": 1_000_000},
    "a lone bracket": {"type": "string", "pattern": "^a]b}$"},
    "a reference to itself": {"$ref": "#"},
    "a remote reference": {"$ref": "https://example.invalid/schema.json"},
}


@pytest.fixture(scope="module")
def gate(loaded) -> GrammarGate:
    return GrammarGate(lambda: loaded.backend._llm._model.vocab)


@pytest.mark.parametrize("name", list(CRASHERS))
def test_each_schema_that_crashed_gives_a_grammar_llama_cpp_parses_and_samples(name, gate, loaded):
    """Each schema that crashed becomes a grammar llama.cpp parses, and a few tokens are sampled with it."""
    grammar = gate.for_schema(CRASHERS[name])
    llm = loaded.backend._llm
    prompt = llm.tokenize(b"Answer:", add_bos=True)
    tokens = [token for _, token in zip(range(4), llm.generate(prompt, temp=0.7, grammar=grammar, reset=True),
                                        strict=False)]
    assert tokens


def test_common_patterns_stay_enforced(gate):
    """Shorthand classes and escaped punctuation are translated, not dropped: the grammar still enforces them."""
    rules = schema_rules({"type": "string", "pattern": r"^\d{5}$"})
    assert "[0-9]" in rules and "\\d" not in rules
    assert translate_pattern(r"^\w+\.\S$") == "^[a-zA-Z0-9_]+[\\x2E][^ \\t\\n\\r\\x0B\\x0C]$"
    assert translate_pattern(r"[\s\S]*") == "^.*([\\x00-\\U0010FFFF]*).*$"  # unanchored: found anywhere
    dropped: list[str] = []
    schema_rules({"type": "object", "properties": {"zip": {"type": "string", "pattern": r"^\d{5}$"},
                                                   "ref": {"type": "string", "pattern": r"^(a)\1$"}}}, [], dropped)
    assert len(dropped) == 1 and "\\1" in dropped[0]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)", r"\p{L}", "[z-a]", "[]", "a{1000000}", "(ab", "*a",
                                     "\x00", r"\b"])
def test_what_gbnf_cannot_say_is_refused_by_name(pattern):
    """A pattern GBNF cannot express is refused with the reason, before anything reaches llama.cpp."""
    with pytest.raises(GrammarRefused):
        translate_pattern(pattern)


def test_counts_are_capped_so_a_small_request_cannot_expand_into_megabytes(gate):
    """A 90-byte schema with huge counts gives a grammar of a few KiB, and the cache stays within its budget."""
    huge = {"type": "object", "properties": {"a": {"type": "string", "minLength": 100_000, "maxLength": 200_000},
                                             "b": {"type": "array", "items": {"type": "string"},
                                                   "maxItems": 10**9}}}
    dropped: list[str] = []
    assert len(schema_rules(huge, [], dropped)) < 4096
    assert any("minLength" in item for item in dropped)
    small_cache = GrammarGate(gate._vocab, cache_bytes=64 * 1024)
    for index in range(40):
        small_cache.for_schema({"type": "string", "maxLength": MAX_REPEAT, "description": str(index)})
    assert 0 < small_cache.cached_bytes <= 64 * 1024


def test_the_zip_code_schema_from_the_report_answers_instead_of_crashing(home, tmp_path):
    """`extract --schema` with a `\\d{5}` pattern answers, exit 0 or one line of error, never a signal."""
    schema = tmp_path / "zip.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"zip": {"type": "string",
                                                                          "pattern": "^\\d{5}$"}},
                                  "required": ["zip"]}))
    done = run_cli("extract", "--schema", str(schema), "-", home=home, stdin="Ship to 90210",
                   env={"PYTHONFAULTHANDLER": "1"})
    assert done.returncode in (0, 1), done.stderr_text
    assert "Traceback" not in done.stderr_text and "Fatal Python error" not in done.stderr_text
    if done.returncode == 0:
        import jsonschema

        jsonschema.validate(json.loads(done.stdout_text), json.loads(schema.read_text()))


def test_a_label_with_quotes_and_backslashes_is_classified(home, tmp_path):
    """`classify --labels` with a quote and a backslash in a label gives one of the labels, not a crash."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "the app crashes on start"}) + "\n")
    done = run_cli("classify", "--labels", 'bug "crash",feature\\request', str(rows), "--field", "text",
                   home=home)
    assert done.returncode == 0, done.stderr_text
    assert json.loads(done.stdout_text)["label"] in ('bug "crash"', "feature\\request")


def test_serve_answers_every_such_schema_and_tool_and_stays_up(server):
    """`serve` answers each schema as a response format and as a tool's parameters; the process stays up."""
    url, log = server
    headers = {"Authorization": f"Bearer {test_serve.KEY}"}
    ask = [{"role": "user", "content": "Answer in JSON."}]
    for name, schema in CRASHERS.items():
        formatted = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120, json={
            "model": MODEL, "max_tokens": 6, "messages": ask,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
        assert formatted.status_code == 200, (name, formatted.text)
        tool = {"type": "function", "function": {"name": 'ship "it"', "parameters": {
            "type": "object", "properties": {"value": schema}, "required": ["value"]}}}
        called = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120, json={
            "model": MODEL, "max_tokens": 6, "messages": ask, "tools": [tool], "tool_choice": "required"})
        assert called.status_code == 200, (name, called.text)
    ollama = httpx.post(f"{url}/api/chat", headers=headers, timeout=120, json={
        "model": MODEL, "stream": False, "options": {"num_predict": 6}, "messages": ask,
        "format": CRASHERS["a digit class"]})
    assert ollama.status_code == 200, ollama.text
    assert "Fatal Python error" not in log.read_text() and "Traceback" not in log.read_text()


def test_eight_small_requests_with_huge_counts_leave_serve_small(server):
    """Eight ~90-byte schemas with counts in the millions add under 100 MB to `serve` (it took 1.5 GB)."""
    url, log = server
    headers = {"Authorization": f"Bearer {test_serve.KEY}"}
    port = int(url.rsplit(":", 1)[1])
    (process,) = [psutil.Process(c.pid) for c in psutil.net_connections("tcp")
                  if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid]
    before = process.memory_info().rss
    for index in range(8):
        schema = {"type": "object", "properties": {f"f{index}": {"type": "string", "minLength": 10**6 + index,
                                                                "maxLength": 10**7}}}
        answered = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120, json={
            "model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
        assert answered.status_code == 200, answered.text
    assert process.memory_info().rss - before < 100 * 1024 * 1024


def test_an_mcp_servers_hostile_tool_schema_is_called_not_crashed_on(tmp_path):
    """A tool whose MCP server declares a `\\d` pattern, quotes in names and a back-reference is called by `chat`."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"hostile": {"command": sys.executable,
                                                             "args": [str(HOSTILE_MCP)]}}}))
    done = run_cli("chat", "-T", "hostile", "--mcp-config", str(config), "--tool-choice", "ship", "--chain-limit",
                   "1", "--preset", "precise", "-o", "max_tokens=40", home=tmp_path / "home",
                   stdin="Ship my parcel to 90210\nn\n", env={"PYTHONFAULTHANDLER": "1"})
    assert done.returncode == 0, done.stderr_text
    assert "⚙ hostile.ship {" in done.stderr_text
    assert "cannot be enforced while" in done.stderr_text and "(the escape \\1)" in done.stderr_text
    assert "Fatal Python error" not in done.stderr_text and "Traceback" not in done.stderr_text


def test_hypothesis_schemas_and_labels_never_crash_llama_cpp(bundled_model):
    """Hypothesis's schemas and label sets, through the real parser and sampler, in a child process."""
    child = subprocess.run([sys.executable, str(HELPERS / "grammar_fuzz.py"), str(bundled_model),
                            "300"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stderr[-4000:]}"
    assert json.loads(child.stdout.strip().splitlines()[-1])["schemas"] >= 300


# Only the gate may name what turns text into a llama.cpp grammar; the backend passes the gate's grammar on.
GRAMMAR_NAMES = {"LlamaGrammar", "json_schema_to_gbnf", "SchemaConverter", "llama_sampler_init_grammar",
                 "from_json_schema", "JSON_GBNF", "llama_sampler_init_grammar_lazy_patterns"}


def test_no_other_code_path_hands_grammar_text_to_llama_cpp():
    """A scan of the source: only the gate names llama.cpp's grammar makers, and `grammar=` is passed in one place."""
    named, passed = [], []
    for path in sorted([*ROOT.joinpath("localllm").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py"),
                        HELPERS / "ollama_standin.py"]):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else \
                node.name if isinstance(node, ast.alias) else None
            if name in GRAMMAR_NAMES or (isinstance(node, ast.alias) and node.name.split(".")[-1] == "llama_grammar"):
                named.append(where)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("llama_grammar"):
                named.append(where)
            if isinstance(node, ast.keyword) and node.arg == "grammar":
                passed.append((where, ast.unparse(node.value)))
    assert set(named) == {"localllm/backends/grammars.py"}, sorted(set(named))
    # The backend's decode, and the Ollama stand-in (whose grammar comes from its own gate).
    assert passed == [("localllm/backends/llamacpp.py", "grammar"),
                      ("tests/helpers/ollama_standin.py", "grammar")], passed
