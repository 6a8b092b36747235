"""Chat templates from model files, rendered in a child process with a time and a memory bound.

A template is untrusted Jinja: jinja2's ImmutableSandboxedEnvironment keeps it from running code, but not from
running long or growing large (nested loops over ``range``, ``'x' * 10**9``, ``tojson(indent=10**9)``), and a
render stuck in C code cannot be interrupted from another thread. llama-cpp-python's Jinja2ChatFormatter and
jinja2 offer no bound, so the render runs here, in one long-lived child per process: its address space is capped
(where the OS enforces RLIMIT_AS), the parent waits a bounded time, and a child that overruns or dies is killed and
replaced at the next render. The environment matches the one Hugging Face's chat templates are written for (and
llama-cpp-python's): trim_blocks, lstrip_blocks, loop controls, ``{% generation %}`` passed through, ``tojson``
without ASCII escapes, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from typing import Any

from localllm.core.errors import TEMPLATE_HINT, TemplateFailure

RENDER_SECONDS = 10.0
"""A real template renders a long conversation in milliseconds."""
RENDER_MEMORY = 1 << 30
"""The child's address space, in bytes: Python and jinja2 take about 30 MB of it."""
START_SECONDS = 30.0
"""The child's first answer also waits for its imports, slow on a busy machine."""


class TemplateRenderer:
    """One child process rendering templates, started on first use (or by ``start``) and restarted after a
    fault. Thread-safe: renders from several threads take turns."""

    def __init__(self, seconds: float = RENDER_SECONDS, memory: int = RENDER_MEMORY) -> None:
        self.seconds, self.memory = seconds, memory
        self._process: subprocess.Popen[bytes] | None = None
        self._answers: queue.Queue[bytes] = queue.Queue()
        """The child's lines, read by a thread: a pipe read cannot wait with a time-out everywhere."""
        self._lock = threading.Lock()
        self._ready = False

    def start(self) -> None:
        """Starts the child now, so its imports overlap the caller's model load."""
        with self._lock:
            self._ensure_child()

    def render(self, template: str, model: str, **context: Any) -> str:
        """The template rendered with ``context`` (JSON data: messages, tokens, flags); a TemplateFailure naming
        ``model`` when the template raises, overruns its time or memory, or kills the child."""
        answer = self._ask({"template": template, "context": context}, model)
        if "error" in answer:
            raise TemplateFailure(f"the chat template of {model} failed: {answer['error']}", hint=TEMPLATE_HINT)
        return answer["prompt"]

    def check(self, template: str, model: str) -> None:
        """Compiles the template in the child, as a load does to report a broken one at once: compiling evaluates
        constant expressions (``'A' * 2000000000``), so it is bounded like a render. A TemplateFailure when it
        does not compile."""
        answer = self._ask({"template": template}, model)
        if "syntax" in answer:
            raise TemplateFailure(f"the chat template in {model} is not valid Jinja: {answer['syntax']}",
                                  hint=TEMPLATE_HINT)
        if "error" in answer:
            raise TemplateFailure(f"the chat template of {model} failed: {answer['error']}", hint=TEMPLATE_HINT)

    def _ask(self, request: dict[str, Any], model: str) -> dict[str, Any]:
        # ASCII JSON both ways: any str crosses the pipe, lone surrogates included, whatever the locale.
        line = json.dumps(request).encode("ascii")
        with self._lock:
            self._ensure_child()
            process = self._process
            assert process is not None and process.stdin is not None
            if not self._ready:  # the child says so once its imports are done, which a busy machine slows
                self._ready = self._next_answer(model, START_SECONDS) == b"ready\n"
            try:
                process.stdin.write(line + b"\n")
                process.stdin.flush()
            except OSError:
                raise self._died(model) from None
            answer = self._next_answer(model, self.seconds)
        return json.loads(answer)

    def _next_answer(self, model: str, seconds: float) -> bytes:
        try:
            line = self._answers.get(timeout=seconds)
        except queue.Empty:
            self._stop()
            raise TemplateFailure(f"the chat template of {model} took more than {seconds:g} s to render",
                                  hint=TEMPLATE_HINT) from None
        except BaseException:  # Ctrl-C while waiting: the child may be mid-render, and the next render needs it idle
            self._stop()
            raise
        if not line:
            raise self._died(model)
        return line

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_child(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop()
        process = subprocess.Popen(
            [sys.executable, "-m", "localllm.backends.chat_templates", str(self.memory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        answers: queue.Queue[bytes] = queue.Queue()

        def read_answers() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                answers.put(line)
            answers.put(b"")  # the child is gone

        threading.Thread(target=read_answers, name="template-renderer", daemon=True).start()
        self._process, self._answers, self._ready = process, answers, False

    def _died(self, model: str) -> TemplateFailure:
        process = self._process
        code = process.wait() if process is not None else None
        self._stop()
        import signal

        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               and -code in signal.valid_signals() else f"exited with code {code}")
        return TemplateFailure(f"the chat template of {model} could not be rendered: the renderer {how} "
                               f"(it may need more than {self.memory >> 20} MiB)", hint=TEMPLATE_HINT)

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


_RENDERER = TemplateRenderer()


def shared_renderer() -> TemplateRenderer:
    """The process's renderer: every loaded model shares its one child."""
    return _RENDERER


# -- the child -------------------------------------------------------------------------------------------------------
def _environment():
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}…{% endgeneration %}`` marks the assistant's part for training; rendering keeps the
        text inside."""

        tags = {"generation"}

        def parse(self, parser) -> list[nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationTag, loopcontrols])
    environment.filters["tojson"] = tojson
    return environment


def _serve(memory: int) -> None:
    import signal

    # Ctrl-C in the terminal reaches the whole process group; the parent decides what a render interrupted means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):  # no RLIMIT_AS here (Windows; macOS ignores it): time still bounds
        pass
    from datetime import datetime

    from jinja2.exceptions import TemplateError, TemplateSyntaxError

    environment = _environment()
    compiled: dict[str, Any] = {}

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def strftime_now(form: str = "%Y-%m-%d") -> str:
        return datetime.now().strftime(form)

    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            template = request["template"]
            if template not in compiled:
                if len(compiled) >= 8:
                    compiled.clear()
                compiled[template] = environment.from_string(template)
            if "context" not in request:  # a check: compiled is all it asks
                answer = json.dumps({"compiled": True})
                sys.stdout.buffer.write(answer.encode("ascii") + b"\n")
                sys.stdout.buffer.flush()
                continue
            prompt = compiled[template].render(raise_exception=raise_exception, strftime_now=strftime_now,
                                               **request["context"])
            answer = json.dumps({"prompt": prompt})
            del prompt
        except MemoryError:
            answer = json.dumps({"error": f"it needs more than {memory >> 20} MiB of memory"})
        except RecursionError:
            answer = json.dumps({"error": "it nests too deeply"})
        except TemplateSyntaxError as exc:
            answer = json.dumps({"syntax": error_reason(exc)})
        except Exception as exc:  # untrusted Jinja: whatever it raises is its own fault
            answer = json.dumps({"error": error_reason(exc)})
        sys.stdout.buffer.write(answer.encode("ascii") + b"\n")
        sys.stdout.buffer.flush()


def error_reason(exc: BaseException) -> str:
    """An exception from a template, for a message: its type and text, one line, cut short."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
