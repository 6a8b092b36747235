"""The llama.cpp self-check: a short real generation in a child process before the first in-process load.

Why: a native llama.cpp build can die by a signal at its first generation. llama-cpp-python 0.3.36 built from source
on a CPU with AMX (Sapphire Rapids and later) dies with SIGILL in the AMX matmul, on an OpenMP worker thread that
never asked the kernel for AMX tile permission. A death by signal leaves no message and, in the app, takes the whole
session with it. The child takes that death instead: when it dies, a second child tries the known safe setting (no
"extra buffer types": the AMX and repacked-weight matmuls); if that answers, every load in this process uses it; if
nothing answers, localllm refuses with the rebuild command for this CPU.

The verdict is kept in the cache folder, keyed by the build (version, shared libraries) and the CPU's flags, so only
the first load with a new build or on another CPU pays for the check. The check runs on the model about to be
loaded: the child's read of the file warms the page cache that the real load then maps, so the check costs the
few tokens it generates rather than a second load.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from localllm.core.errors import BackendUnavailable
from localllm.hardware.llama_build import BuildIdentity, build_identity, read_cpu_flags, rebuild_command

VERDICT_FILE = "llama-build-check.json"
BASE_TIMEOUT_S = 30.0
READ_RATE = 100 * 1024 * 1024
"""Bytes per second a slow disk reads: the child's time limit grows with the model file."""
FAULT_VARIABLE = "LOCALLLM_SELFCHECK_FAULT"
"""For the tests only: "sigill" makes every check child kill itself with SIGILL, "sigill-default" only the child
that runs the default setting (as an AMX build does), "sigabrt" every child with SIGABRT (as llama.cpp's assertions
do on some damaged files), "hang" makes it sleep past its time limit."""
CHECK_PROMPT = "The capital of France is"
SLOW_CHECK_S = 2.0
"""A check still running after this long is announced, so a first run on a large model is not silent."""
MAX_STORE_BYTES = 1024 * 1024
logger = logging.getLogger("localllm")
CHECK_TOKENS = 2

Status = Literal["ok", "safe", "broken", "unchecked"]


@dataclass(frozen=True)
class BuildVerdict:
    status: Status
    """ok: the default setting answered. safe: the default died, the safe setting answered and is used.
    broken: every setting died. unchecked: the check could not tell (time limit, the model failed to load)."""
    detail: str
    version: str
    digest: str
    seconds: float
    """How long the check took."""
    checked_at: str
    signal: str | None = None
    rebuild: str | None = None
    """The pip command that rebuilds llama-cpp-python for this CPU (when the default setting died)."""
    fresh: bool = False
    """Decided in this process just now (the user has not been told yet), rather than read from the cache."""
    model: str = ""
    """The model file the check generated from."""
    timed_out: bool = False
    saved: bool = True
    """Kept in the cache folder (False: it could not be written, so the next process checks again)."""

    @property
    def about_the_build(self) -> bool:
        """Whether the verdict holds for every model: an illegal instruction is the build's, whatever the model;
        another signal that every setting dies of may be this model file's own fault (a damaged or hostile GGUF)."""
        return self.status in ("ok", "safe") or (self.status == "broken" and self.signal == "SIGILL")

    @property
    def setting(self) -> str:
        return {"ok": "default", "safe": "no extra buffer types", "broken": "none: every setting dies",
                "unchecked": "default (the check was undecided)"}[self.status]

    @property
    def outcome(self) -> str:
        return {"ok": "passed", "safe": "passed with the safe setting", "broken": "failed",
                "unchecked": "undecided"}[self.status]

    def summary(self) -> str:
        return f"{self.outcome}: {self.detail}"

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in NOT_STORED}
        data["setting"] = self.setting
        return data


NOT_STORED = ("fresh", "saved")
# What a stored verdict must hold; a file edited by hand or by another version is ignored, never trusted.
STORED_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "detail": (str,), "version": (str,), "digest": (str,), "seconds": (int, float),
    "checked_at": (str,), "signal": (str, type(None)), "rebuild": (str, type(None)), "model": (str,),
    "timed_out": (bool,)}


class BrokenBuild(BackendUnavailable):
    """The installed llama.cpp build dies by a signal on this CPU whatever the setting."""


def timeout_for(model: Path) -> float:
    try:
        size = model.stat().st_size
    except OSError:
        size = 0
    return BASE_TIMEOUT_S + size / READ_RATE


_memo: dict[str, BuildVerdict] = {}
_memo_lock = threading.Lock()


def cached_verdict(cache_dir: Path, identity: BuildIdentity | None = None) -> BuildVerdict | None:
    """The verdict for this build on this CPU, if one was reached before; never runs a check."""
    identity = identity or build_identity()
    if identity is None:
        return None
    if identity.digest in _memo:
        return _memo[identity.digest]
    return _from_stored(_read_store(cache_dir).get(identity.digest))


def _from_stored(stored: object) -> BuildVerdict | None:
    if not isinstance(stored, dict) or stored.get("status") not in ("ok", "safe", "broken"):
        return None
    values = {key: stored[key] for key in STORED_TYPES if key in stored}

    def well_typed(key: str, value: object) -> bool:  # True is an int to isinstance, but not a number of seconds
        kinds = STORED_TYPES[key]
        return isinstance(value, kinds) and isinstance(value, bool) == (kinds == (bool,))

    if not all(well_typed(key, value) for key, value in values.items()):
        return None
    if values["status"] != "ok" and not all(isinstance(values.get(key), str) for key in ("signal", "rebuild")):
        return None
    try:
        return BuildVerdict(**values)
    except TypeError:  # a field missing: written by another version of localllm
        return None


def check_build(cache_dir: Path, model: Path, *, timeout: float | None = None,
                identity: BuildIdentity | None = None, recheck: bool = False) -> BuildVerdict:
    """The verdict for this build on this CPU: from this process, the cache, or a check run now on ``model``."""
    identity = identity or build_identity()
    if identity is None:
        raise BackendUnavailable("llama-cpp-python is not installed",
                                 hint='pip install "localllm[llama]" (it builds llama.cpp from source the first time)')
    with _memo_lock:
        if not recheck:
            verdict = cached_verdict(cache_dir, identity)
            if verdict is not None:
                _memo[identity.digest] = verdict
                return verdict
        else:  # whatever this check decides, the old verdict no longer stands
            _memo.pop(identity.digest, None)
            _write_store(cache_dir, identity.digest, None)
        # Most checks take a fraction of a second; a large model or a busy machine can take much longer.
        slow = threading.Timer(SLOW_CHECK_S, logger.warning, args=(
            f"note: checking llama.cpp {identity.version} on this CPU with a short test generation (once per build)…",))
        slow.daemon = True
        slow.start()
        try:
            verdict = _run_checks(model, timeout or timeout_for(model), identity)
        finally:
            slow.cancel()
        if verdict.about_the_build:
            if not _write_store(cache_dir, identity.digest, verdict):
                verdict = replace(verdict, saved=False)
            _memo[identity.digest] = verdict
        elif verdict.timed_out:  # not again in this process (the user already waited); the next one tries again
            _memo[identity.digest] = verdict
        return verdict


def refusal(verdict: BuildVerdict) -> BrokenBuild:
    if verdict.about_the_build:
        return BrokenBuild(f"llama.cpp ({verdict.version}) dies with {verdict.signal} on this CPU in a test "
                           "generation, with and without its extra buffer types, so localllm will not load a model "
                           "with it", hint=f"rebuild it for this CPU: {verdict.rebuild}")
    return BrokenBuild(f"llama.cpp ({verdict.version}) dies with {verdict.signal} generating from {verdict.model} "
                       "in a test child process, with and without its extra buffer types, so localllm will not load "
                       "it", hint=f"the file may be damaged or too new for this build: try another model; if every "
                                  f"model dies, rebuild llama-cpp-python: {verdict.rebuild}")


def apply_verdict(verdict: BuildVerdict) -> None:
    """Make every later load in this process use the verdict's setting; raise BrokenBuild if there is none."""
    if verdict.status == "broken":
        raise refusal(verdict)
    if verdict.status == "safe":
        disable_extra_buffers()


def announcement(verdict: BuildVerdict) -> str | None:
    """What to tell the user about a verdict reached in this process, once; None when there is nothing to say."""
    if not verdict.fresh or verdict.status == "ok" or (verdict.status == "unchecked" and not verdict.timed_out):
        return None  # a child that failed to load the model: the real load says why
    with _memo_lock:
        _memo[verdict.digest] = replace(verdict, fresh=False)
    if verdict.status == "safe":
        later = ("from now on" if verdict.saved else
                 "in this run (the verdict could not be saved in the cache folder: the next run checks again)")
        return (f"note: llama.cpp {verdict.version} died with {verdict.signal} in a test generation on this CPU; it "
                "answers without its extra buffer types (its repacked-weight and AMX matmuls), so localllm loads "
                f"models that way with this build {later}. `localllm hw` shows the rebuild that lifts this.")
    return f"note: the llama.cpp self-check could not decide ({verdict.detail}); loading with the default setting"


def disable_extra_buffers() -> None:
    """Load every model of this process without llama.cpp's extra buffer types.

    llama-cpp-python's Llama takes no argument for ``use_extra_bufts`` (0.3.36): it builds its model parameters
    from ``llama_model_default_params()``, looked up on the module at each load, so that function is wrapped.
    """
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params
    if getattr(original, "localllm_safe", False):
        return

    def default_params_without_extra_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    default_params_without_extra_buffers.localllm_safe = True  # type: ignore[attr-defined]
    native.llama_model_default_params = default_params_without_extra_buffers


def safe_setting_available() -> bool:
    import llama_cpp.llama_cpp as native

    return any(name == "use_extra_bufts" for name, *_ in native.llama_model_params._fields_)


# -- running the children ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildOutcome:
    answered: bool
    signal: str | None = None
    timed_out: bool = False
    error: str = ""


def run_child(model: Path, *, safe: bool, timeout: float) -> ChildOutcome:
    command = [sys.executable, "-m", "localllm.backends.llamacpp_check", str(model), *(["--safe"] if safe else [])]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return ChildOutcome(False, timed_out=True)
    if done.returncode == 0:
        return ChildOutcome(True)
    if done.returncode < 0:
        return ChildOutcome(False, signal=_signal_name(-done.returncode))
    lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return ChildOutcome(False, error=lines[-1].strip()[:300] if lines else f"exit status {done.returncode}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _run_checks(model: Path, timeout: float, identity: BuildIdentity) -> BuildVerdict:
    started = time.monotonic()

    def verdict(status: Status, detail: str, died: str | None = None, timed_out: bool = False) -> BuildVerdict:
        return BuildVerdict(status, detail, identity.version, identity.digest, round(time.monotonic() - started, 3),
                            time.strftime("%Y-%m-%d %H:%M:%S"), died,
                            rebuild_command(read_cpu_flags(), identity.version) if died else None, fresh=True,
                            model=str(model),
                            timed_out=timed_out)

    default = run_child(model, safe=False, timeout=timeout)
    if default.answered:
        return verdict("ok", "a test generation answered with the default setting")
    if default.timed_out:
        return verdict("unchecked", f"the test generation did not finish within {timeout:.0f} s", timed_out=True)
    if default.signal is None:
        return verdict("unchecked", f"the test generation failed: {default.error}")
    safe = run_child(model, safe=True, timeout=timeout)
    if safe.answered:
        return verdict("safe", f"the default setting died with {default.signal}; without extra buffer types "
                               "(the AMX and repacked-weight matmuls) it answered", default.signal)
    if safe.signal is not None:
        return verdict("broken", f"died with {default.signal}, and with {safe.signal} without extra buffer types",
                       default.signal)
    why = "did not finish in time" if safe.timed_out else f"failed ({safe.error})"
    return verdict("broken", f"the default setting died with {default.signal}; the safe setting {why}",
                   default.signal)


# -- the verdict file ----------------------------------------------------------------------------------------------
def _read_store(cache_dir: Path) -> dict:
    """The verdicts kept so far; anything unreadable (damaged, deeply nested, oversized) counts as none."""
    path = cache_dir / VERDICT_FILE
    try:
        if path.stat().st_size > MAX_STORE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_store(cache_dir: Path, digest: str, verdict: BuildVerdict | None) -> bool:
    """Atomically, and quietly (False when it could not be written: the check then runs again next time).
    ``None`` forgets the digest's verdict."""
    data = _read_store(cache_dir)
    if verdict is None:
        if digest not in data:
            return True
        del data[digest]
    else:
        data[digest] = {k: v for k, v in asdict(verdict).items() if k not in NOT_STORED}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache_dir, prefix=".check-", suffix=".json", delete=False,
                                         encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        os.replace(handle.name, cache_dir / VERDICT_FILE)
    except OSError:
        return False
    return True


# -- the child -----------------------------------------------------------------------------------------------------
def _child(argv: list[str]) -> int:
    try:
        import resource

        # A crash here is expected on some builds: leave no core file in the user's folder.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # no resource module on Windows
        pass
    model, safe = argv[0], "--safe" in argv[1:]
    fault = os.environ.get(FAULT_VARIABLE, "")
    if fault == "hang":
        time.sleep(3600)
    import llama_cpp

    if safe:
        if not safe_setting_available():
            print("this llama-cpp-python has no use_extra_bufts parameter", file=sys.stderr)
            return 3
        disable_extra_buffers()
    # Several threads: the AMX crash happens on a worker thread, never on the main one.
    threads = max(2, min(os.cpu_count() or 2, 8))
    llm = llama_cpp.Llama(model_path=model, n_ctx=128, n_batch=64, n_threads=threads, n_threads_batch=threads,
                          n_gpu_layers=0, verbose=False)
    if fault == "sigill" or (fault == "sigill-default" and not safe):
        os.kill(os.getpid(), signal.SIGILL)
    if fault == "sigabrt":
        os.kill(os.getpid(), signal.SIGABRT)
    out: Any = llm.create_completion(CHECK_PROMPT, max_tokens=CHECK_TOKENS, temperature=0.0)
    print(json.dumps({"text": out["choices"][0]["text"]}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
