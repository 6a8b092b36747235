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


def _batch(args: argparse.Namespace, settings: Settings, messages_for, schema: dict, key: str | None,
           pick=lambda value: value) -> int:
    """Run a JSON task over the rows of args.file; JSONL out (one JSON value for a single text file)."""
    import json

    from localllm.tasks.loading import load_model
    from localllm.tasks.rows import read_rows
    from localllm.tasks.structured import ask_json, run_rows

    options = task_options(args)
    rows = list(read_rows(args.file, getattr(args, "field", None)))
    single_text = len(rows) == 1 and "file" in rows[0].record and rows[0].problem is None
    done = failed = tokens_in = tokens_out = calls = 0
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        backend = loaded.backend
        for result in run_rows(rows, lambda text: ask_json(backend, messages_for(text), schema, options), pick):
            if result.answer is not None:
                tokens_in += result.answer.prompt_tokens
                tokens_out += result.answer.completion_tokens
                calls += result.answer.attempts
            if result.error is not None:
                failed += 1
                note(f"row {result.row.number}: {result.error}")
            else:
                done += 1
            if single_text and result.error is None:
                print_json(result.value)
            elif not single_text:
                sys.stdout.write(json.dumps(result.to_record(key), ensure_ascii=False) + "\n")
                sys.stdout.flush()
        for warning in getattr(backend, "grammar_warnings", []):
            note(f"note: {warning}")
    note(f"{len(rows)} row(s): {done} done, {failed} failed; {calls} call(s), {tokens_in} tokens in, "
         f"{tokens_out} out")
    return 1 if failed else 0


def classify_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.structured import classify_messages, label_schema, parse_labels

    labels = parse_labels(args.labels)
    return _batch(args, settings, lambda text: classify_messages(settings, text, labels), label_schema(labels),
                  "label", pick=lambda value: value["label"])


def sentiment_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.structured import SENTIMENT_SCHEMA, sentiment_messages

    return _batch(args, settings, lambda text: sentiment_messages(settings, text), SENTIMENT_SCHEMA, None)


def extract_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.structured import extract_messages, load_schema

    schema = load_schema(args.schema)
    return _batch(args, settings, lambda text: extract_messages(settings, text, schema), schema, "extracted")


def ner_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.structured import NER_SCHEMA, ner_messages

    return _batch(args, settings, lambda text: ner_messages(settings, text), NER_SCHEMA, "entities")
