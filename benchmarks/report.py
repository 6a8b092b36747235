"""The suite's results: each bar as it was measured, printed as it comes and written to docs/performance.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    group: str
    """The benchmark's name on the command line (`python benchmarks/run.py GROUP`)."""
    name: str
    value: float
    bar: str
    ok: bool
    spread: tuple[float, float] | None = None
    """The lowest and highest of the rounds' values (the value is their median, or a ratio of medians)."""
    rounds: int = 1
    """How many rounds the value is the median of (1: a single measurement, which has no spread)."""

    def around(self) -> str:
        """The rounds and their spread, as printed and on the page."""
        if self.rounds <= 1 or self.spread is None:
            return "1 measurement"
        return f"{self.spread[0]:.3f} .. {self.spread[1]:.3f} over {self.rounds} rounds"


class Results:
    def __init__(self) -> None:
        self.items: list[Result] = []
        self.notes: dict[str, list[str]] = {}
        self.group = ""

    def record(self, name: str, value: float, bar: str, ok: bool, spread: tuple[float, float] | None = None,
               rounds: int | None = None) -> None:
        """``rounds``: how many rounds the value is the median of; a spread without it is taken to have two."""
        result = Result(self.group, name, value, bar, ok, spread, rounds or (2 if spread else 1))
        self.items.append(result)
        print(f"  {name}: {value:.3f} [{result.around()}] (bar {bar}) {'PASS' if ok else 'FAIL'}", flush=True)

    def note(self, text: str) -> None:
        """A line of what was measured besides the bars (printed, and kept for the page)."""
        print(f"  {text}", flush=True)
        self.notes.setdefault(self.group, []).append(text)

    def summary(self) -> str:
        return "\n".join(f"  {'PASS' if r.ok else 'FAIL'}  {r.name} = {r.value:.3f}  (bar {r.bar})"
                         for r in self.items)

    def write_page(self, path: Path, started: datetime.datetime, seconds: float) -> None:
        """docs/performance.md: per bar the measured value (median, spread), pass or fail, the command; the date
        and the machine. Groups not run this time keep their rows from the page as it was."""
        ran = {r.group for r in self.items} | set(self.notes)
        kept = _rows_of_other_groups(path, ran)
        notes = {**_notes_of_other_groups(path, ran), **self.notes}
        rows = kept + [_row(r, started) for r in self.items]
        rows.sort(key=lambda row: row[0])
        passed = sum(1 for r in self.items if r.ok)
        lines = [
            "# Performance",
            "",
            "Every speed and memory bar localllm's issues set, measured side by side in one run of",
            "`python benchmarks/run.py` (this page is written by it). Ratios compare runs interleaved in the same",
            "minutes on the same machine, by their medians; the spread is the lowest and highest round's value, and",
            "the rounds are how many each median is taken over (a bar measured once says so).",
            "A busy machine moves every absolute time (the same model decoded at 64-99 tokens/s quiet and 3-13 under",
            "load here), which is why bars are ratios.",
            "",
            f"Last run: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.0f} min, {passed} of {len(self.items)} bars met "
            f"in the groups it ran ({', '.join(sorted({r.group for r in self.items}))}).",
            "",
            "Machine: " + machine_summary(),
            "",
            "| group | bar | measured | spread | result | date | command |",
            "|---|---|---|---|---|---|---|",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        ]
        for group in sorted(notes):
            lines += [f"## {group}", "", *(f"- {note}" for note in notes[group]), ""]
        path.write_text("\n".join(lines))


def _row(result: Result, started: datetime.datetime) -> list[str]:
    return [result.group, f"{result.name} {result.bar}", f"{result.value:.3f}", result.around(),
            "pass" if result.ok else "**FAIL**", f"{started:%Y-%m-%d}", f"`python benchmarks/run.py {result.group}`"]


def _rows_of_other_groups(path: Path, groups: set[str]) -> list[list[str]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] not in ("group", "---") \
                and not cells[0].startswith("-") and cells[0] not in groups:
            rows.append(cells)
    return rows


def _notes_of_other_groups(path: Path, groups: set[str]) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    if not path.is_file():
        return notes
    group = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            group = line[3:].strip()
        elif group and group not in groups and line.startswith("- "):
            notes.setdefault(group, []).append(line[2:])
    return notes


def machine_summary() -> str:
    """The CPU, cores, memory, OS and llama-cpp-python, as `localllm hw --json` reports them."""
    try:
        done = subprocess.run([sys.executable, "-m", "localllm", "hw", "--json"], capture_output=True, text=True,
                              timeout=60, check=True)
        hardware = json.loads(done.stdout)["hardware"]
    except (subprocess.SubprocessError, ValueError, KeyError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (localllm hw failed)"
    cpu = hardware["cpu"]
    llama = hardware.get("llama_cpp") or {}
    gpus = ", ".join(gpu.get("name", "?") for gpu in hardware.get("gpus") or []) or "no GPU"
    return (f"{cpu['model']} ({cpu['arch']}), {cpu['physical_cores']} cores / {cpu['logical_cores']} threads, "
            f"{hardware['ram_total'] / 2**30:.0f} GiB RAM, {gpus}, {hardware['os']}, Python "
            f"{platform.python_version()}, llama-cpp-python {llama.get('version', 'not installed')}")
