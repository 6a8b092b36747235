"""Task commands: `localllm summarize` (more tasks share these helpers)."""

from __future__ import annotations

import argparse
import sys

from localllm.cli.output import console, note, print_json
from localllm.core.options import GenerationOptions, apply_assignments, preset
from localllm.core.settings import Settings


def task_options(args: argparse.Namespace) -> GenerationOptions:
    """Tasks default to greedy decoding with a mild repeat penalty: faithful, repeatable, and no loops."""
    base = preset(args.preset) if args.preset else preset("precise").with_overrides(repeat_penalty=1.15)
    return apply_assignments(base, args.option)


def read_inputs(paths: list[str]):
    from localllm.tasks.documents import read_documents

    documents = read_documents(paths)
    for document in documents:
        for warning in document.warnings:
            note(f"note: {warning}")
    return documents


def summarize_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.summarize import Summarizer, result_to_dict

    documents = read_inputs(args.files)
    options = task_options(args)
    verbose = args.verbose or not args.json
    progress = (lambda message: note(message)) if verbose else None
    if args.plan:
        return _plan_only(args, settings, documents, options)
    from localllm.tasks.loading import load_model

    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        summarizer = Summarizer(settings, loaded.backend, options, style=args.style, words=args.words,
                                progress=progress)
        result = summarizer.run(documents)
    if args.json:
        print_json(result_to_dict(result, documents))
    else:
        sys.stdout.write(result.summary.rstrip() + "\n")
        if args.verbose:
            note(f"{len(result.calls)} call(s), {result.tokens_in} tokens in, {result.tokens_out} out, "
                 f"window {result.plan.window}")
    return 0


def _plan_only(args: argparse.Namespace, settings: Settings, documents, options) -> int:
    """The chunk plan from the model's tokenizer alone: no weights are loaded and nothing is generated."""
    from localllm.backends import backend_class
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.loading import describe_model, plan_for
    from localllm.tasks.summarize import Summarizer

    ref, info = describe_model(settings, args.model or settings.model)
    window = plan_for(settings, info, detect_hardware(include_llama_cpp="if-gpu"), ctx=options.ctx).n_ctx
    with backend_class("llama.cpp" if (args.backend or "auto") == "auto" else args.backend)() as backend:
        backend.load_tokenizer(ref)
        plan = Summarizer(settings, backend, options, style=args.style, words=args.words, window=window) \
            .plan(documents)
    if args.json:
        print_json(plan.to_dict(documents))
        return 0
    out = console()
    out.print(f"input: {plan.input_tokens} tokens in {len(documents)} file(s); window {plan.window} tokens; "
              f"answer budget {plan.answer_tokens} tokens")
    if plan.single:
        out.print("plan: one call (the whole input fits the window)")
    else:
        out.print(f"plan: {len(plan.chunks)} chunks of at most {plan.chunk_budget} tokens, then combining: "
                  f"{plan.calls} calls in all")
        for number, chunk in enumerate(plan.chunks, start=1):
            out.print(f"  chunk {number}: {documents[chunk.document].name} characters {chunk.start}-{chunk.end}, "
                      f"{chunk.tokens} tokens")
    return 0
