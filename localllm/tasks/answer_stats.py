"""What one answer cost, for people: the CLI's `run -v` and `/stats` line, and the app's status bar."""

from __future__ import annotations

from localllm.core.chunks import FinalChunk

READ_RATE_MIN_TOKENS = 32
"""Fewer prompt tokens read than this (the rest came from the cache) give no reading speed: the time to the first
token is then mostly the first token's own decoding, and one token read in 0.08 s read as "12/s"."""


def read_rate(final: FinalChunk) -> float | None:
    """Prompt tokens read per second, where enough were read to tell."""
    read = final.usage.prompt_tokens - final.usage.cached_tokens
    first = final.timings.first_token_s
    return read / first if first and read >= READ_RATE_MIN_TOKENS else None


def stats_line(final: FinalChunk | None, load_s: float | None = None) -> str:
    """What one answer cost, as Ollama's --verbose says it and more: the load, the prompt (what was read again and
    how fast), the answer and its speed, the time to the first token, how it ended."""
    if final is None:
        return "stopped"
    usage = final.usage
    rate = final.tokens_per_second
    first = final.timings.first_token_s
    generated = f"{usage.completion_tokens:,} generated"
    if usage.thinking_tokens:
        generated += f" ({usage.thinking_tokens:,} of them thinking)"
    prompt = f"{usage.prompt_tokens:,} prompt tokens"
    if usage.cached_tokens:
        prompt += f" ({usage.cached_tokens:,} reused from the cache)"
    if (reading := read_rate(final)) is not None:
        prompt += f" read at {reading:,.0f} tokens/s"
    parts = ([f"load {load_s:.2f} s"] if load_s is not None else []) + [prompt, generated]
    if rate is not None:
        parts.append(f"{rate:.1f} tokens/s")
    if first is not None:
        parts.append(f"first token after {first:.3f} s")
    parts.append(f"finish: {final.finish_reason}")
    return ", ".join(parts)


def compact_stats(final: FinalChunk | None, load_s: float | None = None, *, finish: bool = True) -> str:
    """The same, short enough for a status bar: "answer 64 tokens 61/s · first 0.21 s · prompt 412 (380 cached)
    950/s · load 1.10 s · stop" (speeds in tokens per second)."""
    if final is None:
        return "stopped"
    usage, first = final.usage, final.timings.first_token_s
    answer = f"answer {usage.completion_tokens:,} tokens"
    if usage.thinking_tokens:
        answer += f" ({usage.thinking_tokens:,} thinking)"
    if (rate := final.tokens_per_second) is not None:
        answer += f" {rate:.0f}/s"
    parts = [answer]
    if first is not None:
        parts.append(f"first {first:.2f} s")
    prompt = f"prompt {usage.prompt_tokens:,}"
    if usage.cached_tokens:
        prompt += f" ({usage.cached_tokens:,} cached)"
    if (reading := read_rate(final)) is not None:
        prompt += f" {reading:,.0f}/s"
    parts.append(prompt)
    if load_s is not None:
        parts.append(f"load {load_s:.2f} s")
    if finish:
        parts.append(final.finish_reason)
    return " · ".join(parts)
