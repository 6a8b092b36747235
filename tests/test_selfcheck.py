"""The llama.cpp self-check: real child processes on the bundled model, real signals (a fault-injection switch makes
the child kill itself with SIGILL, as an AMX build dies), a child that hangs, and the verdict cache."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_cli

from localllm.backends import llamacpp_check as check
from localllm.hardware.llama_build import (
    BuildIdentity,
    build_identity,
    compiled_features,
    cpu_features,
    identity_of,
    rebuild_command,
)

pytestmark = pytest.mark.model
AMX_XEON_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512vbmi", "avx512_vnni", "avx512_bf16",
                  "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "sse4_2")


def fresh_identity() -> BuildIdentity:
    """The real build, under a digest no other test has used (so the in-process memo never answers)."""
    real = build_identity()
    assert real is not None
    return BuildIdentity(real.version, real.library, f"test-{uuid.uuid4().hex}")


def test_an_answering_build_passes_once_and_is_cached(tmp_path: Path, bundled_model: Path, monkeypatch) -> None:
    identity = fresh_identity()
    verdict = check.check_build(tmp_path, bundled_model, identity=identity)
    assert verdict.status == "ok" and verdict.fresh and verdict.signal is None
    assert verdict.setting == "default"
    stored = json.loads((tmp_path / check.VERDICT_FILE).read_text())
    assert stored[identity.digest]["status"] == "ok"

    def no_child(*args, **kwargs):
        raise AssertionError("a known build must not be checked again")

    monkeypatch.setattr(check, "run_child", no_child)
    check._memo.clear()  # as a new process would: the verdict comes from the file
    again = check.check_build(tmp_path, bundled_model, identity=identity)
    assert again.status == "ok" and not again.fresh
    assert check.announcement(again) is None


def test_a_build_that_dies_by_default_gets_the_safe_setting(tmp_path: Path, bundled_model: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv(check.FAULT_VARIABLE, "sigill-default")
    verdict = check.check_build(tmp_path, bundled_model, identity=fresh_identity())
    assert verdict.status == "safe", verdict
    assert verdict.signal == "SIGILL"
    assert verdict.setting == "no extra buffer types"
    assert "--no-cache-dir --force-reinstall" in (verdict.rebuild or "")
    message = check.announcement(verdict)
    assert message and "SIGILL" in message and "extra buffer types" in message
    assert check.announcement(check._memo[verdict.digest]) is None  # said once


def test_a_build_that_dies_every_way_is_refused_with_the_rebuild_command(tmp_path: Path, bundled_model: Path,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv(check.FAULT_VARIABLE, "sigill")
    verdict = check.check_build(tmp_path, bundled_model, identity=fresh_identity())
    assert verdict.status == "broken" and verdict.signal == "SIGILL"
    with pytest.raises(check.BrokenBuild) as raised:
        check.apply_verdict(verdict)
    hint = raised.value.hint or ""
    assert "SIGILL" in raised.value.message
    assert hint.startswith("rebuild it for this CPU: ")
    assert "pip install --no-cache-dir --force-reinstall llama-cpp-python" in hint


def test_a_hanging_child_is_bounded_and_not_remembered(tmp_path: Path, bundled_model: Path, monkeypatch) -> None:
    monkeypatch.setenv(check.FAULT_VARIABLE, "hang")
    identity = fresh_identity()
    started = time.monotonic()
    verdict = check.check_build(tmp_path, bundled_model, identity=identity, timeout=2)
    assert time.monotonic() - started < 15
    assert verdict.status == "unchecked"
    assert "did not finish within 2 s" in verdict.detail
    assert not (tmp_path / check.VERDICT_FILE).exists()  # the next process checks again
    assert "could not decide" in (check.announcement(verdict) or "")


def test_a_new_build_or_other_cpu_flags_are_checked_again(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libllama.so").write_bytes(b"build one")
    first = identity_of("0.3.36", lib, ("avx", "avx2"))
    assert identity_of("0.3.36", lib, ("avx", "avx2")).digest == first.digest
    assert identity_of("0.3.36", lib, ("avx", "avx2", "amx_int8")).digest != first.digest
    assert identity_of("0.3.37", lib, ("avx", "avx2")).digest != first.digest
    (lib / "libllama.so").write_bytes(b"build two, rebuilt")
    assert identity_of("0.3.36", lib, ("avx", "avx2")).digest != first.digest
    cache = tmp_path / "cache"
    check._write_store(cache, first.digest, check.BuildVerdict("safe", "d", "0.3.36", first.digest, 1.0, "now",
                                                                "SIGILL", "pip ..."))
    known = check.cached_verdict(cache, first)
    assert known is not None and known.status == "safe"
    other = identity_of("0.3.36", lib, ("avx", "avx2"))
    check._memo.pop(other.digest, None)
    assert check.cached_verdict(cache, other) is None


def test_build_features_and_the_rebuild_command_for_an_amx_cpu() -> None:
    info = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
            "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
            "OPENMP = 1 | REPACK = 1 |")
    assert compiled_features(info) == ("AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VBMI",
                                       "AVX512_VNNI", "AVX512_BF16", "AMX_INT8")
    assert "AMX_INT8" in cpu_features(AMX_XEON_FLAGS)
    command = rebuild_command(AMX_XEON_FLAGS)
    # The command the issue verified on such a machine: every feature named, the native build (and AMX) off.
    assert command == (
        'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON '
        '-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON" '
        "pip install --no-cache-dir --force-reinstall llama-cpp-python")
    assert rebuild_command(("asimd", "asimddp")) == "pip install --no-cache-dir --force-reinstall llama-cpp-python"


def test_run_survives_a_build_that_dies_by_default(tmp_path: Path) -> None:
    """The whole path as a user meets it: the first run says what it did and answers; the next says nothing."""
    home = tmp_path / "home"
    fault = {check.FAULT_VARIABLE: "sigill-default"}
    # One thread in both runs: the threads follow the machine's load when the model loads, and a greedy answer can
    # differ between one and two of them.
    first = run_cli("run", "--preset", "precise", "-o", "max_tokens=8", "-o", "threads=1",
                    "What is the capital of France?", home=home, env=fault)
    assert first.returncode == 0, first.stderr_text
    assert first.stdout_text.strip()
    assert "died with SIGILL" in first.stderr_text and "extra buffer types" in first.stderr_text
    second = run_cli("run", "-v", "--preset", "precise", "-o", "max_tokens=8", "-o", "threads=1",
                     "What is the capital of France?", home=home, env=fault)
    assert second.returncode == 0, second.stderr_text
    assert second.stdout_text == first.stdout_text
    assert "died with SIGILL" not in second.stderr_text
    assert "self-check passed with the safe setting, setting: no extra buffer types" in second.stderr_text
    hw = run_cli("hw", "--json", home=home, env=fault)
    build = json.loads(hw.stdout_text)["llama_cpp_build"]
    assert build["self_check"]["status"] == "safe" and build["self_check"]["setting"] == "no extra buffer types"
    assert "--no-cache-dir --force-reinstall" in build["rebuild"]
    backends = run_cli("backends", home=home, env=fault)
    assert "llama.cpp self-check: passed with the safe setting" in backends.stdout_text
    assert "setting: no extra buffer types" in backends.stdout_text


def test_run_refuses_a_build_that_dies_every_way(tmp_path: Path) -> None:
    done = run_cli("run", "Hello", home=tmp_path / "home", env={check.FAULT_VARIABLE: "sigill"})
    assert done.returncode == 1
    # (A check that takes a while first says it is checking: on a busy machine it may)
    lines = [line for line in done.stderr_text.strip().splitlines() if not line.startswith("note: checking")]
    assert len(lines) == 1, done.stderr_text
    assert lines[0].startswith("error: llama.cpp") and "SIGILL" in lines[0]
    assert "--no-cache-dir --force-reinstall llama-cpp-python" in lines[0]
    assert "Traceback" not in done.stderr_text and not done.stdout_text


@pytest.fixture
def unchecked_process(monkeypatch):
    """This test process as if no check had run in it yet; the safe setting it may apply is undone afterwards."""
    import llama_cpp.llama_cpp as native

    monkeypatch.setattr(native, "llama_model_default_params", native.llama_model_default_params)
    monkeypatch.setattr(check, "_memo", {})
    return monkeypatch


def test_the_app_says_what_the_check_did_and_answers(tmp_path: Path, unchecked_process) -> None:
    from conftest import settings_for
    from helpers.tui_helpers import ask, record_notifications, run, wait_until

    from localllm.core.options import preset
    from localllm.tui.app import LocalLLMApp
    from localllm.tui.chat import ChatPane

    unchecked_process.setenv(check.FAULT_VARIABLE, "sigill-default")
    app = LocalLLMApp(settings_for(tmp_path, threads=1), preset("precise").with_overrides(max_tokens=8))
    notes = record_notifications(app)

    async def session():
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await wait_until(pilot, lambda: any("died with SIGILL" in message for _, message in notes))
            before = await ask(pilot, pane, "Name a river in Europe.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > before)
            assert pane.session.history[-1].content.strip()

    run(session())
    assert ("warning", next(m for _, m in notes if "died with SIGILL" in m)) in notes


def test_the_app_refuses_a_broken_build_with_a_notification_and_stays(tmp_path: Path, unchecked_process) -> None:
    from conftest import settings_for
    from helpers.tui_helpers import record_notifications, run, wait_until

    from localllm.core.options import preset
    from localllm.tui.app import LocalLLMApp

    unchecked_process.setenv(check.FAULT_VARIABLE, "sigill")
    app = LocalLLMApp(settings_for(tmp_path), preset("precise"))
    notes = record_notifications(app)

    async def session():
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: any(severity == "error" for severity, _ in notes), 120)
            error = next(message for severity, message in notes if severity == "error")
            assert "SIGILL" in error and "--no-cache-dir --force-reinstall" in error
            await pilot.press("f5")
            assert app.query_one("TabbedContent").active == "hardware"

    run(session())


def story_for(tmp_path: Path, features: tuple[str, ...], flags: tuple[str, ...], gpus=()):
    from dataclasses import replace

    from conftest import settings_for
    from test_planner import LAPTOP_8GB

    from localllm.hardware.report import LlamaCppBuild
    from localllm.tasks.llama_build import build_story

    hardware = replace(LAPTOP_8GB, gpus=gpus,
                       llama_cpp=LlamaCppBuild(installed=True, version="0.3.36", features=features))
    return build_story(settings_for(tmp_path), hardware, flags=flags)


def test_hw_story_a_generic_build_on_an_avx512_cpu_is_worth_rebuilding(tmp_path: Path) -> None:
    flags = tuple(f for f in AMX_XEON_FLAGS if not f.startswith("amx"))
    story = story_for(tmp_path, ("AVX", "AVX2", "FMA", "F16C"), flags)
    assert "AVX512" in story.unused and not story.missing_on_cpu
    assert story.rebuild == "pip install --no-cache-dir --force-reinstall llama-cpp-python"
    assert "AVX512" in (story.rebuild_why or "") and "faster" in (story.rebuild_why or "")
    assert story.verdict is None and "not run yet" in (story.verdict_note or "")


def test_hw_story_a_build_for_a_newer_cpu_may_die(tmp_path: Path) -> None:
    story = story_for(tmp_path, ("AVX", "AVX2", "AVX512"), ("avx", "avx2", "fma", "f16c"))
    assert story.missing_on_cpu == ("AVX512",)
    assert "SIGILL" in (story.rebuild_why or "") and story.rebuild


def test_hws_simd_line_says_what_matters_in_a_line(tmp_path: Path) -> None:
    """The widest extension and whether the build uses it, not the dozen names of a recent CPU and its build
    twice over (those are in `hw --json`)."""
    from localllm.tasks.llama_build import simd_text

    amx_build = ("AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                 "AVX512_BF16", "AMX_INT8")
    matched = simd_text((), story_for(tmp_path, amx_build, AMX_XEON_FLAGS))
    assert matched == "AVX-512 (VBMI, VNNI, BF16), AMX; the llama.cpp build uses all of it"
    generic = story_for(tmp_path, ("AVX", "AVX2", "FMA", "F16C", "BMI2"),
                        tuple(f for f in AMX_XEON_FLAGS if not f.startswith("amx")))
    assert simd_text((), generic) == "AVX-512 (VBMI, VNNI, BF16); the llama.cpp build leaves AVX-512 (VBMI, VNNI, " \
                                     "BF16) unused"
    newer = story_for(tmp_path, ("AVX", "AVX2", "AVX512"), ("avx", "avx2", "fma", "f16c"))
    assert simd_text((), newer) == "AVX2; the llama.cpp build uses AVX-512, which this CPU lacks"
    arm = story_for(tmp_path, ("NEON", "DOTPROD"), ("asimd", "asimddp", "i8mm"))
    assert simd_text((), arm) == "NEON (DOTPROD, I8MM); the llama.cpp build leaves I8MM unused"
    assert simd_text(("AVX", "AVX2"), None) == "AVX, AVX2"  # no build's story: the CPU's own list


def test_hw_story_a_cpu_build_beside_a_gpu(tmp_path: Path) -> None:
    from localllm.hardware.report import GPUInfo

    story = story_for(tmp_path, ("AVX", "AVX2"), ("avx", "avx2"),
                      gpus=(GPUInfo("nvidia", "RTX 4090", 24 * 1024**3, 23 * 1024**3),))
    assert story.rebuild and "-DGGML_CUDA=on" in story.rebuild
    assert "GPU" in (story.rebuild_why or "")


def test_hw_story_the_native_build_this_machine_has(tmp_path: Path) -> None:
    from localllm.hardware.detect import probe_llama_cpp

    build = probe_llama_cpp()
    assert build.installed and build.features  # llama_print_system_info() named what the build has
    assert set(build.features) <= {name for name, _ in check_names()}


def check_names():
    from localllm.hardware.llama_build import ARM_FEATURES, X86_FEATURES

    return (*X86_FEATURES.values(), *ARM_FEATURES.values())


def test_another_signal_in_every_setting_blames_the_model_not_the_build(tmp_path: Path, bundled_model: Path,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv(check.FAULT_VARIABLE, "sigabrt")
    identity = fresh_identity()
    verdict = check.check_build(tmp_path, bundled_model, identity=identity)
    assert verdict.status == "broken" and verdict.signal == "SIGABRT" and not verdict.about_the_build
    assert identity.digest not in check._memo and not (tmp_path / check.VERDICT_FILE).exists()
    with pytest.raises(check.BrokenBuild) as raised:
        check.apply_verdict(verdict)
    assert str(bundled_model) in raised.value.message and "try another model" in (raised.value.hint or "")


def test_a_model_the_child_cannot_load_leaves_the_error_to_the_real_load(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF" + b"\x00" * 64)
    identity = fresh_identity()
    verdict = check.check_build(tmp_path, damaged, identity=identity)
    assert verdict.status == "unchecked" and not verdict.timed_out
    assert check.announcement(verdict) is None  # the load's own error says what is wrong
    assert identity.digest not in check._memo and not (tmp_path / check.VERDICT_FILE).exists()


@pytest.mark.parametrize("content", [
    "[" * 200_000,
    '{"DIGEST": {"status": "safe", "detail": "d", "version": "v", "digest": "DIGEST", "seconds": "abc", '
    '"checked_at": "now", "signal": "SIGILL", "rebuild": "pip ...", "model": "m", "timed_out": false}}',
    '{"DIGEST": {"status": "broken", "detail": "d", "version": "v", "digest": "DIGEST", "seconds": 1.0, '
    '"checked_at": "now", "signal": null, "rebuild": null, "model": "m", "timed_out": false}}',
    '{"DIGEST": {"status": "ok", "seconds": true}}',
    '{"DIGEST": ["ok"]}',
    "\x00\xff garbage",
], ids=["nested", "seconds-not-a-number", "broken-without-signal", "ok-missing-fields", "list", "garbage"])
def test_a_damaged_verdict_file_is_checked_again(tmp_path: Path, bundled_model: Path, content: str) -> None:
    identity = fresh_identity()
    (tmp_path / check.VERDICT_FILE).write_text(content.replace("DIGEST", identity.digest), encoding="utf-8")
    assert check.cached_verdict(tmp_path, identity) is None
    verdict = check.check_build(tmp_path, bundled_model, identity=identity)
    assert verdict.status == "ok" and verdict.fresh
    known = check.cached_verdict(tmp_path, forget_in_process(identity))
    assert known is not None and known.status == "ok"  # the file was rewritten whole


def forget_in_process(identity: BuildIdentity) -> BuildIdentity:
    check._memo.pop(identity.digest, None)
    return identity


def test_an_oversized_verdict_file_is_not_read(tmp_path: Path) -> None:
    identity = fresh_identity()
    (tmp_path / check.VERDICT_FILE).write_text(" " * (check.MAX_STORE_BYTES + 1) + "{}")
    assert check.cached_verdict(tmp_path, identity) is None


def test_a_recheck_forgets_the_old_verdict_even_when_undecided(tmp_path: Path, bundled_model: Path,
                                                               monkeypatch) -> None:
    identity = fresh_identity()
    monkeypatch.setenv(check.FAULT_VARIABLE, "sigill-default")
    assert check.check_build(tmp_path, bundled_model, identity=identity).status == "safe"
    monkeypatch.setenv(check.FAULT_VARIABLE, "hang")
    undecided = check.check_build(tmp_path, bundled_model, identity=identity, recheck=True, timeout=2)
    assert undecided.status == "unchecked"
    check._memo.pop(identity.digest, None)
    assert check.cached_verdict(tmp_path, identity) is None  # the next process checks again


def test_a_verdict_that_cannot_be_saved_says_so(tmp_path: Path, bundled_model: Path, monkeypatch) -> None:
    cache = tmp_path / "not-a-folder"
    cache.write_text("a file where the cache folder should be")
    monkeypatch.setenv(check.FAULT_VARIABLE, "sigill-default")
    verdict = check.check_build(cache, bundled_model, identity=fresh_identity())
    assert verdict.status == "safe" and not verdict.saved
    assert "the next run checks again" in (check.announcement(verdict) or "")


def test_a_slow_check_is_announced(tmp_path: Path, bundled_model: Path, monkeypatch, caplog) -> None:
    import logging

    monkeypatch.setattr(check, "SLOW_CHECK_S", 0.01)
    with caplog.at_level(logging.WARNING, logger="localllm"):
        check.check_build(tmp_path, bundled_model, identity=fresh_identity())
    assert any("checking llama.cpp" in record.getMessage() for record in caplog.records)
