"""The load planner: a pure function from (hardware, model metadata, request) to a LoadPlan.

Memory model (bytes):
- weights: the GGUF's tensor bytes; llama.cpp maps them from the file.
- KV cache: n_layer × n_ctx × n_head_kv × (k_dim + v_dim) × 2 (f16 cells, llama.cpp's default).
- compute: the working set of one micro-batch. llama.cpp reserves room for logits of every token in the batch, but
  localllm asks for the last token's logits only, so that part is reserved and never touched on the CPU; it is counted
  on a GPU, where a reservation is real memory.

GPU offload fills the GPUs layer by layer (each layer's weights plus its KV cache) after setting aside headroom and
the compute buffer, as Ollama's estimator does; the output head goes last.

The plan also carries an estimate of the decode speed from where the weights land (localllm.hardware.speed).
"""

from __future__ import annotations

from dataclasses import dataclass

from localllm.core.model import ModelInfo
from localllm.core.plan import LoadPlan, MemoryEstimate, Placement
from localllm.hardware.report import HardwareReport
from localllm.hardware.speed import decode_tokens_per_s

KV_BYTES_PER_VALUE = 2  # f16
N_UBATCH = 512
MIN_CTX = 512
MIB = 1024 * 1024


@dataclass(frozen=True)
class PlanRequest:
    ctx: int | None = None
    """Context the user asked for; None lets the planner choose (default_ctx capped by training and memory)."""
    default_ctx: int = 8192
    n_gpu_layers: int | None = None
    """Force a layer count (-1 for all); None lets the planner decide."""
    threads: int | None = None
    """Threads set by the user (config, LOCALLLM_THREADS, -o threads): they win over everything else."""
    tuned_threads: int | None = None
    """Threads `localllm bench --tune` measured fastest here; used where the user set none."""
    batch: int | None = None
    """The prompt batch size `localllm bench --tune` measured fastest here; None: the backend's default."""
    tuned_at: str = ""
    """When the tuned values were measured, for the reasons."""
    gpu_headroom: int = 512 * MIB
    backend: str = "llama.cpp"


def kv_cache_bytes(info: ModelInfo, n_ctx: int, layers: int | None = None) -> int:
    layers = info.block_count if layers is None else layers
    return layers * n_ctx * info.head_count_kv * (info.key_length + info.value_length) * KV_BYTES_PER_VALUE


def compute_bytes(info: ModelInfo, n_ctx: int, *, on_gpu: bool, batch: int | None = None) -> int:
    n_ubatch = min(batch or N_UBATCH, N_UBATCH, n_ctx)  # llama.cpp's micro-batch is at most its batch
    attention_scores = n_ubatch * n_ctx * info.head_count * 4
    activations = n_ubatch * (3 * info.feed_forward_length + 4 * info.embedding_length) * 4
    logits = (n_ubatch if on_gpu else 1) * info.vocab_size * 4
    return attention_scores + activations + logits


def _estimate(info: ModelInfo, n_ctx: int, report: HardwareReport, request: PlanRequest) -> tuple[MemoryEstimate, int]:
    """Memory for ``n_ctx`` and the number of GPU layers (``block_count + 1`` = everything offloaded)."""
    weights = info.weights_bytes
    kv = kv_cache_bytes(info, n_ctx)
    offload_possible = bool(report.gpus) and (report.llama_cpp.gpu_offload or request.backend != "llama.cpp")
    if not offload_possible or request.n_gpu_layers == 0:
        return MemoryEstimate(weights, kv, compute_bytes(info, n_ctx, on_gpu=False, batch=request.batch), gpu=0), 0

    compute = compute_bytes(info, n_ctx, on_gpu=True, batch=request.batch)
    usable = sum(max(g.free_bytes - request.gpu_headroom, 0) for g in report.gpus) - compute
    layer_cost = info.layer_bytes + kv_cache_bytes(info, n_ctx, layers=1)
    if request.n_gpu_layers is not None:
        wanted = info.block_count + 1 if request.n_gpu_layers < 0 else request.n_gpu_layers
        layers = min(wanted, info.block_count + 1)
    elif usable <= 0 or layer_cost <= 0:
        layers = 0
    else:
        layers = min(info.block_count, usable // layer_cost)
        if layers == info.block_count and usable - layers * layer_cost >= info.non_layer_bytes:
            layers += 1
    if layers == 0:
        return MemoryEstimate(weights, kv, compute_bytes(info, n_ctx, on_gpu=False, batch=request.batch), gpu=0), 0
    on_gpu_blocks = min(layers, info.block_count)
    gpu = on_gpu_blocks * layer_cost + compute + (info.non_layer_bytes if layers > info.block_count else 0)
    return MemoryEstimate(weights, kv, compute, gpu=gpu), layers


def _fits(memory: MemoryEstimate, report: HardwareReport) -> bool:
    if report.unified_memory:
        # Apple Silicon: GPU memory is RAM, so everything comes out of one pool.
        return memory.total <= report.ram_available and memory.gpu <= report.gpu_free
    return memory.cpu <= report.ram_available and memory.gpu <= report.gpu_free


def plan_load(report: HardwareReport, info: ModelInfo, request: PlanRequest = PlanRequest()) -> LoadPlan:
    reasons: list[str] = []
    trained = info.context_length or request.default_ctx
    if request.ctx is not None:
        n_ctx = request.ctx
        if n_ctx > trained:
            reasons.append(f"context {n_ctx:,} is beyond the {trained:,} the model was trained on; quality may drop")
    else:
        n_ctx = min(request.default_ctx, trained)
        reasons.append(f"context {n_ctx:,}: the default {request.default_ctx:,} capped by the trained {trained:,}"
                       if n_ctx < request.default_ctx else
                       f"context {n_ctx:,}: the default (the model allows {trained:,})")

    memory, layers = _estimate(info, n_ctx, report, request)
    fits = _fits(memory, report)
    if not fits and request.ctx is None:
        chosen = n_ctx
        while not fits and chosen > MIN_CTX:
            chosen = max(chosen // 2, MIN_CTX)
            memory, layers = _estimate(info, chosen, report, request)
            fits = _fits(memory, report)
        if fits:
            reasons.append(f"context lowered to {chosen:,} so that it fits in free memory")
            n_ctx = chosen

    suggestion = None
    if not fits:
        smaller = next((c for c in _halvings(n_ctx) if _fits(_estimate(info, c, report, request)[0], report)), None)
        if smaller is not None:
            suggestion = f"a context of {smaller:,} tokens fits: -o ctx={smaller}"
        else:
            suggestion = "the weights alone do not fit: choose a smaller quant or a smaller model"

    if not report.gpus:
        reasons.append("no GPU: every layer runs on the CPU")
    elif not report.llama_cpp.gpu_offload and request.backend == "llama.cpp":
        reasons.append("llama-cpp-python was built without GPU support: every layer runs on the CPU")
    elif layers > info.block_count:
        reasons.append(f"all {info.block_count} layers and the output head fit in GPU memory")
    elif layers > 0:
        reasons.append(f"{layers} of {info.block_count} layers fit in GPU memory; the rest run on the CPU")
    elif report.gpus:
        reasons.append("not one layer fits in free GPU memory: every layer runs on the CPU")

    threads, why_threads = default_threads(report)
    if request.threads:
        threads = request.threads
        why_threads = f"{threads} thread{'s' if threads > 1 else ''}: set in the config or with -o threads"
    elif request.tuned_threads:
        threads = request.tuned_threads
        why_threads = (f"{threads} thread{'s' if threads > 1 else ''}: measured fastest here by `localllm bench "
                       f"--tune` ({request.tuned_at or 'see [tuned] in the config'})")
    reasons.append(why_threads)
    if request.batch:
        reasons.append(f"prompt batch {request.batch}: measured fastest here by `localllm bench --tune` "
                       f"({request.tuned_at or 'see [tuned] in the config'})")

    placement: Placement = "none" if not fits else (
        "gpu" if layers > info.block_count else "partial" if layers else "cpu")
    gpu_weights = gpu_weight_bytes(info, layers)
    speed = decode_tokens_per_s(report, cpu_bytes=info.weights_bytes - gpu_weights, gpu_bytes=gpu_weights,
                                threads=threads) if fits else None
    return LoadPlan(
        backend=request.backend,
        n_ctx=n_ctx,
        n_gpu_layers=layers,
        n_layers=info.block_count,
        n_threads=threads,
        memory=memory,
        placement=placement,
        fits=fits,
        ram_available=report.ram_available,
        gpu_available=report.gpu_free,
        reasons=tuple(reasons),
        suggestion=suggestion,
        n_batch=request.batch,
        decode_tokens_per_s=speed,
    )


def gpu_weight_bytes(info: ModelInfo, layers: int) -> int:
    """The weights in GPU memory when ``layers`` are offloaded (``block_count + 1``: the output head too)."""
    return min(layers, info.block_count) * info.layer_bytes + (info.non_layer_bytes if layers > info.block_count
                                                                  else 0)


def default_threads(report: HardwareReport) -> tuple[int, str]:
    """One thread per physical core that other processes are not keeping busy, at least one.

    Measured on 2 cores (benchmarks/threads.py; the table is in docs/llama-cpp.md): idle, 2 threads
    read prompts 1.8x and decode 1.3x faster than 1; beside one CPU-bound process, 2 threads decode 0.65x as fast
    as 1, since llama.cpp's threads wait for each other at every step and one of them is always descheduled.
    """
    cores = report.cpu.physical_cores or 1
    busy = report.cpu_busy
    if busy is None or busy < 0.5:
        return cores, f"{cores} threads: one per physical core" if cores > 1 else "1 thread: one physical core"
    threads = max(cores - round(busy), 1)
    return threads, (f"{threads} thread{'s' if threads > 1 else ''}: {cores} physical cores, about {busy:.1f} of "
                     "them busy with other work just now")


def _halvings(n_ctx: int):
    value = n_ctx
    while value > MIN_CTX:
        value = max(value // 2, MIN_CTX)
        yield value


def parallel_slots(plan: LoadPlan, most: int = 4) -> int:
    """Answers a loaded model can decode at once (serve's slots, each with the whole window): up to ``most`` whose
    KV caches fit in the memory the plan leaves free, where its cache lives (the GPU's with every layer there,
    else the RAM). 1: answers take turns, as they do with no room for a second cache."""
    kv = plan.memory.kv_cache
    if kv <= 0 or plan.placement in ("none", "server") or not plan.fits:
        return 1
    room = plan.gpu_available - plan.memory.gpu if plan.placement == "gpu" else plan.ram_available - plan.memory.cpu
    fitting = int(room // kv)
    return max(1, min(most, fitting)) if fitting >= 2 else 1
