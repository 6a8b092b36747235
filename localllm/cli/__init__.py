"""The plain-terminal front end: `localllm COMMAND ...`."""

import sys


def main() -> int:
    """The `localllm` command. Ctrl-C while its modules are still being imported ends quietly with status 130, as
    it does later, instead of with a traceback."""
    try:
        from localllm.cli.main import main as run
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return run()
