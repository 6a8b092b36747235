"""The hardware pane: the detection report, the backend localllm would choose and why, the GPU reinstall hint."""

from __future__ import annotations

from textual import work
from textual.containers import VerticalScroll
from textual.widgets import Markdown

from localllm.core.settings import Settings
from localllm.hardware.report import HardwareReport


class HardwarePane(VerticalScroll):
    def __init__(self, settings: Settings, *, report: HardwareReport | None = None) -> None:
        """``report``: judge this hardware instead of detecting it (a reproducible display)."""
        super().__init__(id="hardware-pane")
        self.settings = settings
        self.report = report

    def compose(self):
        yield Markdown("Detecting hardware…", id="hardware-report")

    def on_mount(self) -> None:
        self.detect()

    @work(thread=True, exclusive=True)
    def detect(self) -> None:
        from localllm.tasks.reports import machine_report

        report = machine_report(self.settings, self.report)
        self.app.call_from_thread(self.query_one("#hardware-report", Markdown).update, render_report(report))


def render_report(report) -> str:
    from localllm.core.units import human_size
    from localllm.tasks.llama_build import simd_text

    hw = report.hardware
    lines = ["# Hardware", "", f"- **System**: {hw.os}", f"- **CPU**: {hw.cpu.model} ({hw.cpu.arch}), "
             f"{hw.cpu.physical_cores} physical / {hw.cpu.logical_cores} logical cores",
             f"- **SIMD**: {simd_text(hw.cpu.simd, report.build)}",
             f"- **RAM**: {human_size(hw.ram_available)} available of {human_size(hw.ram_total)}"]
    for gpu in hw.gpus:
        lines.append(f"- **GPU {gpu.index}**: {gpu.name}, {human_size(gpu.free_bytes)} free of "
                     f"{human_size(gpu.total_bytes)}")
    if not hw.gpus:
        lines.append("- **GPU**: none")
    llama = hw.llama_cpp
    lines.append(f"- **llama-cpp-python**: {llama.version}, {'GPU offload' if llama.gpu_offload else 'CPU only'}"
                 if llama.installed else f"- **llama-cpp-python**: not installed ({llama.error})")
    lines += ["", "# Backend", ""]
    if report.choice:
        lines.append(f"**{report.choice.name}**")
        lines += [f"- {reason}" for reason in report.choice.reasons]
    else:
        lines.append(f"none: {report.choice_error}")
    if report.reinstall:
        lines += ["", "To use the GPU, rebuild llama-cpp-python:", "", "```", report.reinstall, "```"]
    if hw.facts:
        lines += ["", "# Notes", ""] + [f"- {fact}" for fact in hw.facts]
    return "\n".join(lines)
