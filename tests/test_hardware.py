"""Hardware parsing on recorded tool outputs, and detection on this machine with stand-in tools on PATH."""

import json
import os
import stat
import time
from pathlib import Path

from conftest import FIXTURES

from localllm.hardware import cpu, gpus
from localllm.hardware.detect import PROBE_TIMEOUT_S, detect_hardware, reinstall_hint
from localllm.hardware.report import CPUInfo, GPUInfo, HardwareReport, LlamaCppBuild, Vendor

GIB = 1024**3


def test_nvidia_smi_single_gpu():
    (gpu,) = gpus.parse_nvidia_smi((FIXTURES / "nvidia-smi-rtx4090.csv").read_text())
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.total_bytes == 24564 * 1024 * 1024 and gpu.free_bytes == 23871 * 1024 * 1024
    assert (gpu.driver, gpu.compute_capability, gpu.vendor) == ("550.54.14", "8.9", "nvidia")


def test_nvidia_smi_two_gpus_and_unsupported_fields():
    assert [g.index for g in gpus.parse_nvidia_smi((FIXTURES / "nvidia-smi-2xh100.csv").read_text())] == [0, 1]
    (t4,) = gpus.parse_nvidia_smi((FIXTURES / "nvidia-smi-not-supported.csv").read_text())
    assert t4.name == "Tesla T4" and t4.compute_capability == "7.5"


def test_rocm_smi_json():
    (gpu,) = gpus.parse_rocm_smi((FIXTURES / "rocm-smi-rx7900xtx.json").read_text())
    assert gpu.vendor == "amd" and "7900" in gpu.name
    assert gpu.total_bytes == 25753026560 and gpu.free_bytes == 25753026560 - 1035177984


def test_amd_sysfs_tree(tmp_path):
    device = tmp_path / "card1" / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x1002\n")
    (device / "mem_info_vram_total").write_text(str(16 * GIB))
    (device / "mem_info_vram_used").write_text(str(GIB))
    (device / "product_name").write_text("Radeon RX 6800\n")
    other = tmp_path / "card0" / "device"
    other.mkdir(parents=True)
    (other / "vendor").write_text("0x8086\n")
    (gpu,) = gpus.amd_from_sysfs(tmp_path)
    assert (gpu.name, gpu.free_bytes, gpu.index) == ("Radeon RX 6800", 15 * GIB, 1)


def test_apple_silicon_uses_the_working_set_not_all_ram():
    values = cpu.parse_sysctl((FIXTURES / "sysctl-m2-16gb.txt").read_text())
    (gpu,) = gpus.apple_from_sysctl(values, "arm64")
    assert gpu.unified_memory and gpu.total_bytes < 16 * GIB
    assert abs(gpu.total_bytes - 16 * GIB * 2 / 3) < 1024
    info = cpu.cpu_from_sysctl(values, "arm64")
    assert (info.model, info.physical_cores, info.simd) == ("Apple M2", 8, ("NEON",))
    assert gpus.apple_working_set(64 * GIB) == 48 * GIB


def test_intel_mac_has_no_metal_gpu_entry_and_reads_avx():
    values = cpu.parse_sysctl((FIXTURES / "sysctl-intel-mac.txt").read_text())
    assert gpus.apple_from_sysctl(values, "x86_64") == []
    assert cpu.cpu_from_sysctl(values, "x86_64").simd == ("AVX", "AVX2")


def test_proc_cpuinfo_x86_and_arm():
    model, simd = cpu.parse_proc_cpuinfo((FIXTURES / "cpuinfo-x86.txt").read_text())
    assert model and "AVX2" in simd
    model, simd = cpu.parse_proc_cpuinfo((FIXTURES / "cpuinfo-arm64.txt").read_text())
    assert {"NEON", "SVE", "SVE2", "I8MM", "DOTPROD"} <= set(simd)


def test_detect_on_this_machine_states_what_is_missing():
    report = detect_hardware()
    assert report.cpu.logical_cores >= 1 and report.ram_total > report.ram_available > 0
    assert report.llama_cpp.installed and report.llama_cpp.version
    if not report.gpus:
        assert "no GPU found" in report.facts


def fake_tool(folder: Path, name: str, script: str) -> None:
    """A stand-in executable for a GPU tool that this machine lacks; it prints the tool's recorded output."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_stand_in_nvidia_smi_is_parsed_and_a_slow_tool_is_bounded(tmp_path, monkeypatch):
    fake_tool(tmp_path, "nvidia-smi", f"cat {FIXTURES / 'nvidia-smi-rtx4090.csv'}\n")
    fake_tool(tmp_path, "rocm-smi", "sleep 30\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # The tool's own limit is a little under its probe's, so that the fact names the tool; a loaded machine can
    # take longer than that little to end the tool and say so. Here a third of the probe's time is left for it (the
    # probe's limit is bound when detect is imported; the tool's is read at each run).
    from localllm.hardware import detect

    monkeypatch.setattr(detect, "PROBE_TIMEOUT_S", PROBE_TIMEOUT_S * 0.75)
    started = time.monotonic()
    report = detect_hardware()
    elapsed = time.monotonic() - started
    assert [g.name for g in report.gpus] == ["NVIDIA GeForce RTX 4090"]
    assert report.gpus[0].source == "nvidia-smi"
    assert any("rocm-smi did not answer" in fact for fact in report.facts), report.facts
    assert elapsed < 15  # not the 30 s the tool would take (room for a loaded machine's llama-cpp-python import)


def report_with(vendor: Vendor, offload: bool) -> HardwareReport:
    return HardwareReport(
        os="Linux", cpu=CPUInfo("x", "x86_64", 8, 16, ("AVX2",)), ram_total=32 * GIB, ram_available=30 * GIB,
        gpus=(GPUInfo(vendor, "gpu", 24 * GIB, 24 * GIB),),
        llama_cpp=LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=offload),
    )


def test_reinstall_hint_names_the_right_build_flag():
    assert "-DGGML_CUDA=on" in reinstall_hint(report_with("nvidia", False))
    assert "-DGGML_METAL=on" in reinstall_hint(report_with("apple", False))
    assert "-DGGML_HIP=on" in reinstall_hint(report_with("amd", False))
    assert "--force-reinstall --no-cache-dir" in reinstall_hint(report_with("amd", False))
    assert reinstall_hint(report_with("nvidia", True)) is None


def test_report_serialises_to_json():
    assert json.loads(json.dumps(report_with("nvidia", True).to_dict()))["gpus"][0]["vendor"] == "nvidia"


def test_nvml_bandwidth_is_bus_width_times_memory_clock_and_none_where_unsupported():
    """Published peaks: A100 40GB (5120 bits, 1215 MHz) 1.56 TB/s; RTX 3090 (384 bits, 9751 MHz) 936 GB/s."""

    class NVMLError(Exception):
        pass

    class FakeNVML:
        NVML_CLOCK_MEM = 2

        def __init__(self, bits, mhz):
            self.bits, self.mhz = bits, mhz

        def nvmlDeviceGetMemoryBusWidth(self, handle):
            if self.bits is None:
                raise NVMLError("Not Supported")
            return self.bits

        def nvmlDeviceGetMaxClockInfo(self, handle, clock):
            assert clock == self.NVML_CLOCK_MEM
            return self.mhz

    assert gpus.nvml_bandwidth(FakeNVML(5120, 1215), None) == 1_555_200_000_000
    assert gpus.nvml_bandwidth(FakeNVML(384, 9751), None) == 936_096_000_000
    assert gpus.nvml_bandwidth(FakeNVML(None, 1215), None) is None
    assert gpus.nvml_bandwidth(FakeNVML(384, 0), None) is None


def test_a_slow_llama_cpp_probe_is_still_an_installed_llama_cpp(monkeypatch):
    """On a busy machine (or a GPU's first use) the probe's import can take seconds: llama.cpp is then installed
    and its build unknown, never "missing" (which made `auto` choose a backend that could not run the model)."""
    import time

    from localllm.hardware import detect

    def slow_probe():
        time.sleep(1.0)
        return detect.LlamaCppBuild(installed=True, version="x")

    monkeypatch.setattr(detect, "probe_llama_cpp", slow_probe)
    monkeypatch.setattr(detect, "LLAMA_PROBE_TIMEOUT_S", 0.2)
    report = detect.detect_hardware()
    assert report.llama_cpp.installed and report.llama_cpp.error == "the llama-cpp-python probe did not finish"
    assert any("llama-cpp-python probe did not answer within 0.2 s" in fact for fact in report.facts)
