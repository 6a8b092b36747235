"""How far a model's next-token distributions are from a reference's (a quantization against its original), over
the reference's own windows, as llama-perplexity's --kl-divergence does.

For each scored position, with P the reference's distribution (from the file) and Q the model's:

    KLD = Σ_t P(t) (log P(t) - log Q(t))     over the tokens with log P(t) > -16
    same top: argmax P = argmax Q;           Δp = Q(next) - P(next)

reported as means with their standard errors, KLD's median, 99th percentile and maximum, both perplexities and
their difference (its error from the covariance of the two -log p series, which are measured on the same tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from localllm.core.errors import UsageError
from localllm.tasks.evaluate.logits_file import LogitsFile, scored_per_window, unpacked_rows
from localllm.tasks.evaluate.perplexity import Progress

FLOOR = -16.0


@dataclass
class Divergence:
    kld: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    nll_base: list[float] = field(default_factory=list)
    same_top: int = 0
    p_diff: list[float] = field(default_factory=list)

    def add(self, logits: Any, base: Any, targets: Any) -> None:
        import numpy as np

        high = logits.max(axis=1)
        log_total = high + np.log(np.exp(logits - high[:, None]).sum(axis=1, dtype=np.float64)).astype(np.float32)
        log_q = logits - log_total[:, None]
        kept = base > FLOOR
        p = np.where(kept, np.exp(np.where(kept, base, 0.0)), 0.0)
        self.kld.extend((p * (base - log_q)).sum(axis=1, dtype=np.float64).tolist())
        rows = np.arange(len(targets))
        nll, nll_base = -log_q[rows, targets].astype(np.float64), -base[rows, targets].astype(np.float64)
        self.nll.extend(nll.tolist())
        self.nll_base.extend(nll_base.tolist())
        self.same_top += int((logits.argmax(axis=1) == base.argmax(axis=1)).sum())
        self.p_diff.extend((np.exp(-nll) - np.exp(-nll_base)).tolist())

    def summary(self) -> dict[str, Any]:
        import numpy as np

        count = len(self.kld)
        if count < 2:
            return {"tokens_scored": count}

        def mean_error(values: Any) -> tuple[float, float]:
            mean = float(values.mean())
            return mean, float(values.std(ddof=1) / np.sqrt(count))

        kld = np.asarray(self.kld)
        nll, nll_base = np.asarray(self.nll), np.asarray(self.nll_base)
        kld_mean, kld_error = mean_error(kld)
        log_ppl, log_ppl_error = mean_error(nll)
        log_base, log_base_error = mean_error(nll_base)
        covariance = float(np.cov(nll, nll_base)[0, 1] / count)
        ppl, ppl_base = float(np.exp(log_ppl)), float(np.exp(log_base))
        ppl_error, base_error = ppl * log_ppl_error, ppl_base * log_base_error
        diff_error = float(np.sqrt(max(ppl_error ** 2 + base_error ** 2 - 2 * ppl * ppl_base * covariance, 0.0)))
        same = self.same_top / count
        p_diff = np.asarray(self.p_diff)
        return {
            "tokens_scored": count,
            "kld": kld_mean, "kld_error": kld_error, "kld_median": float(np.median(kld)),
            "kld_p99": float(np.percentile(kld, 99)), "kld_max": float(kld.max()),
            "same_top": same, "same_top_error": float(np.sqrt(same * (1 - same) / (count - 1))),
            "perplexity": ppl, "perplexity_error": ppl_error,
            "perplexity_base": ppl_base, "perplexity_base_error": base_error,
            "delta_perplexity": ppl - ppl_base, "delta_perplexity_error": diff_error,
            "ln_ppl_ratio": log_ppl - log_base,
            "rms_delta_p": float(np.sqrt((p_diff * p_diff).mean())),
        }


@dataclass
class DivergenceReport:
    n_ctx: int
    divergence: Divergence
    windows: int
    windows_planned: int
    seconds: float
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, **self.divergence.summary(), "windows": self.windows,
                "windows_planned": self.windows_planned, "seconds": round(self.seconds, 3), "stopped": self.stopped}


def check_vocabulary(base: LogitsFile, backend: Any, model: str) -> None:
    """A KL divergence compares distributions over the same tokens: a model with another vocabulary is refused."""
    size = backend.vocab_size
    if size != base.n_vocab:
        raise UsageError(f"{model} has {size:,} tokens in its vocabulary but {base.path.name} was made by a model "
                         f"with {base.n_vocab:,}: KL divergence compares distributions over the same vocabulary",
                         hint="compare quantizations of the same model")
    tokens, start = backend.evaluation_tokens("The quick brown fox jumps over the lazy dog.")
    if base.tokens and start is not None and base.tokens[0] != start:
        raise UsageError(f"{base.path.name} does not start with {model}'s start token: it was made by a model "
                         "with another vocabulary", hint="compare quantizations of the same model")


def evaluate_divergence(backend: Any, base: LogitsFile, model: str, *, chunks: int | None = None,
                        progress: Progress | None = None) -> DivergenceReport:
    import numpy as np

    check_vocabulary(base, backend, model)
    n_ctx = base.n_ctx
    first = n_ctx // 2
    count = min(base.n_chunk, chunks) if chunks else base.n_chunk
    start_token = backend.evaluation_tokens("x")[1]
    report = DivergenceReport(n_ctx, Divergence(), 0, count, 0.0)
    started = time.perf_counter()
    try:
        for index in range(count):
            tokens = base.tokens[index * n_ctx:(index + 1) * n_ctx]
            read = [start_token, *tokens[1:]] if start_token is not None else tokens
            targets = np.asarray(tokens[first + 1:])
            stored = base.window_rows(index)
            at = 0
            part = Divergence()
            for logits in backend.window_logits(read[:-1], first):
                rows = len(logits)
                part.add(logits, unpacked_rows(stored[at:at + rows], base.n_vocab), targets[at:at + rows])
                at += rows
            if at != scored_per_window(n_ctx):
                raise KeyboardInterrupt
            whole = report.divergence
            whole.kld += part.kld
            whole.nll += part.nll
            whole.nll_base += part.nll_base
            whole.p_diff += part.p_diff
            whole.same_top += part.same_top
            report.windows = index + 1
            if progress:
                progress(index + 1, count)
    except KeyboardInterrupt:
        report.stopped = True
    report.seconds = time.perf_counter() - started
    return report
