"""The plain-terminal front end: `localllm COMMAND ...`."""

import sys

_CRASH_REPORT: list = []
"""The copy of stderr the crash report goes to: kept open for as long as the process runs."""


def report_native_crashes() -> None:
    """llama-cpp-python points fd 2 at /dev/null while a model loads (its suppress_stdout_stderr), so an abort or
    a segfault inside llama.cpp there would end the process without a word. faulthandler writes Python's fatal-error
    report (the signal, and where in localllm it came) to a copy of stderr taken now, which that silencing leaves
    alone. Everything llama.cpp would assert on that localllm knows of is refused before it gets there; this is for
    the rest."""
    import faulthandler
    import os

    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded, or closed): nothing to write to
        return
    faulthandler.enable(file=stream, all_threads=False)
    _CRASH_REPORT.append(stream)


def main() -> int:
    """The `localllm` command. Ctrl-C while its modules are still being imported ends quietly with status 130, as
    it does later, instead of with a traceback."""
    try:
        report_native_crashes()
        from localllm.cli.main import main as run
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return run()
