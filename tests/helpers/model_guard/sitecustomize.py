"""The fast loop's guard (`python -m pytest -m "not model"`): every Python process a test starts imports this first
(tests/conftest.py puts this folder on PYTHONPATH), and a model load in it is written down with the test that made
it; conftest.py then fails that test. A test that loads a model must be marked `model`, which it is when it uses one
of the model fixtures (MODEL_FIXTURES in conftest.py): else the fast loop would be slow again and nobody would know."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

LOADS_VARIABLE = "LOCALLLM_TEST_MODEL_LOADS"
"""The file each load is written to, one line per load: the test's node id."""
LOADER_MODULE = "llama_cpp.llama_cpp"
"""llama-cpp-python's bindings: every load, high-level or low-level, calls its llama_model_load_from_file."""


def record_loads(bindings) -> None:
    load = bindings.llama_model_load_from_file

    def recorded(*args, **kwargs):
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        with open(os.environ[LOADS_VARIABLE], "a", encoding="utf-8") as loads:
            loads.write(f"{test}\n")
        return load(*args, **kwargs)

    bindings.llama_model_load_from_file = recorded


class _RecordLoadsOnImport(importlib.abc.MetaPathFinder):
    """Wraps the bindings as they are imported: importing them here, in every process, would cost each a second."""

    def find_spec(self, name, path=None, target=None):
        if name != LOADER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            record_loads(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get(LOADS_VARIABLE):
    if LOADER_MODULE in sys.modules:
        record_loads(sys.modules[LOADER_MODULE])
    else:
        sys.meta_path.insert(0, _RecordLoadsOnImport())
