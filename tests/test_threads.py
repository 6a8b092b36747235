"""The default thread count: one per physical core that other processes leave free (benchmarks/threads.py has the
figures behind it); `threads` in the config and `-o threads=N` win."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli
from test_planner import LAPTOP_8GB, LLAMA_8B, machine

from localllm.hardware.detect import busy_cores, detect_hardware
from localllm.hardware.planner import PlanRequest, plan_load


def test_idle_machine_gets_one_thread_per_physical_core() -> None:
    plan = plan_load(replace(LAPTOP_8GB, cpu_busy=0.1), LLAMA_8B)
    assert plan.n_threads == 4
    assert "4 threads: one per physical core" in plan.reasons


def test_cores_busy_with_other_work_are_left_to_it() -> None:
    two_cores = machine(8 * 1024**3, 6 * 1024**3, cores=2)
    assert plan_load(replace(two_cores, cpu_busy=1.0), LLAMA_8B).n_threads == 1
    assert plan_load(replace(two_cores, cpu_busy=2.7), LLAMA_8B).n_threads == 1  # never fewer than one
    assert plan_load(replace(LAPTOP_8GB, cpu_busy=1.4), LLAMA_8B).n_threads == 3
    plan = plan_load(replace(two_cores, cpu_busy=1.0), LLAMA_8B)
    assert any("about 1.0 of them busy with other work" in reason for reason in plan.reasons)
    assert plan_load(replace(two_cores, cpu_busy=None), LLAMA_8B).n_threads == 2  # unknown: all cores


def test_the_setting_wins_over_the_rule() -> None:
    plan = plan_load(replace(LAPTOP_8GB, cpu_busy=3.0), LLAMA_8B, PlanRequest(threads=3))
    assert plan.n_threads == 3
    assert "3 threads: set in the config or with -o threads" in plan.reasons


def test_busy_cores_subtracts_this_process_own_work() -> None:
    # 0.5 s of wall time; the machine spent 1.6 CPU-seconds busy, 0.6 of them in this process: one core elsewhere.
    assert busy_cores((0.0, 10.0, 1.0), (0.5, 10.8, 1.3)) == 1.0
    assert busy_cores((0.0, 10.0, 1.0), (0.05, 10.1, 1.0)) is None  # too short a window to tell


def test_detection_sees_a_competing_process() -> None:
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)
        report = detect_hardware()
    finally:
        competitor.kill()
        competitor.wait()
    assert report.cpu_busy is not None and report.cpu_busy >= 0.5, report.cpu_busy


@pytest.mark.model
def test_run_uses_the_thread_count_asked_for(shared_home: Path) -> None:
    done = run_cli("run", "-v", "-o", "threads=1", "--preset", "precise", "-o", "max_tokens=4", "Hi",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert " on 1 thread, " in done.stderr_text  # the estimated speed says the threads it is for


def test_absurd_thread_counts_are_refused(home: Path) -> None:
    done = run_cli("run", "-o", "threads=1000000", "Hi", home=home)
    assert done.returncode == 2 and "threads=1000000 is out of range" in done.stderr_text
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text("threads = 1000000\n")
    done = run_cli("run", "Hi", home=home)
    assert done.returncode == 1 and "threads = 1000000 is more than 1024" in done.stderr_text
    assert "Traceback" not in done.stderr_text


@pytest.mark.model
def test_more_threads_than_cpus_is_run_with_a_warning(shared_home: Path) -> None:
    import psutil

    too_many = (psutil.cpu_count(logical=True) or 1) + 1
    done = run_cli("run", "-o", f"threads={too_many}", "--preset", "precise", "-o", "max_tokens=2", "Hi",
                   home=shared_home)
    assert done.returncode == 0, done.stderr_text
    assert f"{too_many} threads on {too_many - 1} logical CPUs" in done.stderr_text
    assert "slower, not faster" in done.stderr_text
