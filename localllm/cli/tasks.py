"""Task commands: `localllm summarize` (more tasks share these helpers)."""

from __future__ import annotations

import argparse
import sys

from localllm.cli.arguments import Commands, model_args
from localllm.cli.output import console, note, print_json
from localllm.core.errors import UsageError
from localllm.core.options import GenerationOptions, apply_assignments, preset, with_think
from localllm.core.settings import Settings


def task_options(args: argparse.Namespace) -> GenerationOptions:
    """Tasks default to greedy decoding with a mild repeat penalty: faithful, repeatable, and no loops."""
    base = preset(args.preset) if args.preset else preset("precise").with_overrides(repeat_penalty=1.15)
    return with_think(apply_assignments(base, args.option), getattr(args, "think", None))


def note_single_call(response) -> None:
    """The context accounting of a one-call task, on stderr."""
    if response.final is not None:
        usage = response.final.usage
        note(f"1 call, {usage.prompt_tokens:,} tokens in, {usage.completion_tokens:,} out")


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
    if result.cut:
        note(f"note: the summary reached its {result.plan.answer_tokens:,}-token limit and ends where it was cut; "
             "--words N gives it more room")
    if args.json:
        print_json(result_to_dict(result, documents))
    else:
        sys.stdout.write(result.summary.rstrip() + "\n")
        if args.verbose:
            note(f"{len(result.calls):,} call(s), {result.tokens_in:,} tokens in, {result.tokens_out:,} out, "
                 f"window {result.plan.window:,}")
    return 0


def _plan_only(args: argparse.Namespace, settings: Settings, documents, options) -> int:
    """The chunk plan from the model's tokenizer alone: no weights are loaded and nothing is generated."""
    from localllm.backends import backend_class
    from localllm.hardware.detect import detect_hardware
    from localllm.tasks.loading import describe_model, plan_for
    from localllm.tasks.summarize import Summarizer

    requested = args.backend or settings.backend
    model = args.model or settings.model
    if requested in ("ollama", "openai") or (requested == "auto" and (settings.base_url or
                                                                      model.lower().startswith("ollama/"))):
        # A server model: connecting costs one request and loads nothing here; counts are the backend's.
        from localllm.tasks.loading import load_model

        with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
            plan = Summarizer(settings, loaded.backend, options, style=args.style, words=args.words) \
                .plan(documents)
    else:
        ref, info = describe_model(settings, model)
        window = plan_for(settings, info, detect_hardware(include_llama_cpp="if-gpu"), ctx=options.ctx).n_ctx
        with backend_class("llama.cpp" if requested == "auto" else requested)() as backend:
            backend.load_tokenizer(ref)
            plan = Summarizer(settings, backend, options, style=args.style, words=args.words, window=window) \
                .plan(documents)
    if args.json:
        print_json(plan.to_dict(documents))
        return 0
    out = console()
    out.print(f"input: {plan.input_tokens:,} tokens in {len(documents):,} file(s); window {plan.window:,} tokens; "
              f"answer budget {plan.answer_tokens:,} tokens")
    if plan.single:
        out.print("plan: one call (the whole input fits the window)")
    else:
        out.print(f"plan: {len(plan.chunks):,} chunks of at most {plan.chunk_budget:,} tokens, then combining: "
                  f"{plan.calls:,} calls in all")
        for number, chunk in enumerate(plan.chunks, start=1):
            out.print(f"  chunk {number}: {documents[chunk.document].name} characters {chunk.start:,}-{chunk.end:,}, "
                      f"{chunk.tokens:,} tokens")
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
    note(f"{len(rows):,} row(s): {done:,} done, {failed:,} failed; {calls:,} call(s), {tokens_in:,} tokens in, "
         f"{tokens_out:,} out")
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


def code_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.core.chunks import Response
    from localllm.tasks import code
    from localllm.tasks.loading import load_model

    options = task_options(args)
    options = options.with_overrides(max_tokens=options.max_tokens or code.ANSWER_TOKENS)
    action = args.action
    if args.write and action == "explain":
        raise UsageError("explain writes no code; --write applies to fix, convert, doc, test and gen",
                         hint="drop --write")
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        if action == "gen":
            description = " ".join(args.description).strip()
            if not description:
                raise UsageError("describe the code to write", hint='localllm code gen "a CLI that ..." --lang python')
            request = code.build_request(settings, loaded.backend, options, "gen", None, description,
                                         language_name=args.lang)
        else:
            source = code.read_code(args.target)
            detail = _error_text(args) if action == "fix" else args.to if action == "convert" else ""
            request = code.build_request(settings, loaded.backend, options, action, source, detail)
            note(f"sent {request.sent}")
        response = Response(loaded.backend.chat(request.messages, request.options))
        text = _recorded(settings, loaded, request, response)
    if args.verbose:
        note_single_call(response)
    if args.write:
        written = code.write_code(text, args.write, force=args.force)
        note(f"wrote the code block to {written} (it was not run)")
    return 0


def _recorded(settings: Settings, loaded, request, response) -> str:
    """The answer streamed to stdout and recorded as a one-shot of its own (`localllm logs`; the app's list shows
    it with the one-shots), as the app's code pane records it."""
    from localllm.cli.generate import stream_to_stdout
    from localllm.tasks.conversation_log import ConversationLog

    log = ConversationLog(settings, origin="code")
    try:
        exchange = log.begin(request.prompt, model=loaded.ref.name, system=None, title=request.title)
        try:
            return stream_to_stdout(response, on_text=lambda text: log.progress(exchange, text))
        finally:
            log.end(exchange, response, model=loaded.ref.name, backend=loaded.choice.name, options=request.options)
    finally:
        log.close()


def _error_text(args: argparse.Namespace) -> str:
    from pathlib import Path

    from localllm.tasks.documents import read_limited

    if args.error:
        path = Path(args.error)
        if not path.is_file():
            raise UsageError(f"no such file: {args.error}", hint="pass the file that holds the error or traceback")
        with path.open("rb") as handle:
            return read_limited(handle, path.name, text_only=False).decode("utf-8", errors="replace")
    if sys.stdin is not None and not sys.stdin.isatty():
        text = read_limited(sys.stdin.buffer, "stdin", text_only=False).decode("utf-8", errors="replace")
        if text.strip():
            return text
    raise UsageError("code fix needs the error: --error FILE, or the traceback on stdin",
                     hint="python app.py 2>&1 | localllm code fix app.py")


def ask_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.cli.generate import stream_to_stdout
    from localllm.core.chunks import Response
    from localllm.tasks.ask_docs import ANSWER_TOKENS, ask_messages, plan_ask
    from localllm.tasks.loading import load_model

    if len(args.inputs) < 2:
        raise UsageError("name the documents, then the question", hint='localllm ask docs/*.md "How do I ...?"')
    *paths, question = args.inputs
    documents = read_inputs(paths)
    options = task_options(args)
    options = options.with_overrides(max_tokens=options.max_tokens or ANSWER_TOKENS)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        plan = plan_ask(settings, loaded.backend, documents, question, answer_tokens=options.max_tokens)
        how = (f"{len(plan.passages):,} of {plan.candidates:,} passages, ranked by BM25" if plan.retrieved
               else f"the documents whole ({plan.candidates:,} passages)")
        note(f"sent {how}: {', '.join(p.id for p in plan.passages)}")
        response = Response(loaded.backend.chat(ask_messages(settings, plan.passages, question), options))
        if args.json:
            answer = response.text().strip()
        else:
            stream_to_stdout(response)
    final = response.final
    if args.json:
        print_json({"answer": answer, "retrieved": plan.retrieved, "candidates": plan.candidates,
                    "sources": [{"id": p.id, "file": p.document, "lines": [p.first_line, p.last_line],
                                 "score": p.score} for p in plan.passages],
                    "prompt_tokens": final.usage.prompt_tokens if final else None,
                    "completion_tokens": final.usage.completion_tokens if final else None})
    elif args.verbose:
        note_single_call(response)
    return 0


def _stdout_writer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _rewrite(args: argparse.Namespace, settings: Settings, run) -> int:
    from localllm.tasks.loading import load_model
    from localllm.tasks.rewrite import CallLog

    documents = read_inputs(args.files)
    options = task_options(args)
    log = CallLog()
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        run(loaded.backend, documents, options, log)
    note(log.line())
    return 0


def translate_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.rewrite import translate

    return _rewrite(args, settings, lambda backend, documents, options, log: translate(
        settings, backend, documents, args.to, options, _stdout_writer, log, progress=note))


def simplify_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.rewrite import simplify

    return _rewrite(args, settings, lambda backend, documents, options, log: simplify(
        settings, backend, documents, args.level, options, _stdout_writer, log, progress=note))


def write_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.cli.generate import stream_to_stdout
    from localllm.core.chunks import Response
    from localllm.tasks.loading import load_model
    from localllm.tasks.rewrite import write_messages
    from localllm.tasks.summarize import words_to_tokens

    messages = write_messages(settings, args.kind, args.topic, args.audience, args.words)
    options = task_options(args)
    if not args.preset:
        options = options.with_overrides(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)  # writing wants variety
    options = options.with_overrides(max_tokens=options.max_tokens or words_to_tokens(args.words) * 2)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        response = Response(loaded.backend.chat(messages, options))
        stream_to_stdout(response)
    if args.verbose:
        note_single_call(response)
    return 0


def reply_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.cli.generate import stream_to_stdout
    from localllm.core.chunks import Response
    from localllm.tasks.loading import load_model
    from localllm.tasks.prompting import check_fits
    from localllm.tasks.rewrite import reply_messages

    (document,) = read_inputs([args.file])
    options = task_options(args)
    options = options.with_overrides(max_tokens=options.max_tokens or 400)
    messages = reply_messages(settings, document.text, args.tone)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        tokens = loaded.backend.count_prompt_tokens(messages)
        check_fits(tokens, loaded.backend.context_window, options.max_tokens, loaded.info.context_length, True)
        response = Response(loaded.backend.chat(messages, options))
        stream_to_stdout(response)
    if args.verbose:
        note_single_call(response)
    return 0


def feedback_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.feedback import analyse
    from localllm.tasks.loading import load_model
    from localllm.tasks.rows import read_rows

    if args.top < 1:
        raise UsageError("--top must be at least 1", hint="e.g. --top 5")
    rows = list(read_rows(args.file, args.field))
    for number, problem in ((r.number, r.problem) for r in rows if r.problem):
        note(f"row {number}: {problem}")
    options = task_options(args)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        result = analyse(settings, loaded.backend, rows, options, progress=note)
    top = result.top(args.top)
    if args.json:
        print_json({"rows_analysed": result.analysed, "rows_failed": [{"row": n, "error": e} for n, e in result.failed],
                    "themes": [{"theme": t.name, "count": len(t.rows), "rows": sorted(t.rows),
                                "quotes": result.quotes(t)} for t in result.top(len(result.themes))],
                    "top": [t.name for t in top], "calls": result.calls, "tokens_in": result.tokens_in,
                    "tokens_out": result.tokens_out})
        return 0
    lines = [f"Top {len(top)} themes in {result.analysed:,} rows:", ""]
    for rank, theme in enumerate(top, start=1):
        share = 100 * len(theme.rows) / result.analysed
        lines.append(f"{rank}. **{theme.name}**: {len(theme.rows):,} rows ({share:.0f} %)")
        lines.extend(f'   > "{quote}"' for quote in result.quotes(theme))
    sys.stdout.write("\n".join(lines) + "\n")
    note(f"{result.calls:,} call(s), {result.tokens_in:,} tokens in, {result.tokens_out:,} out")
    return 0


def embed_command(args: argparse.Namespace, settings: Settings) -> int:
    """Vectors for a text, a file, piped text, or each row of a JSONL/CSV file (--field)."""
    import json
    from pathlib import Path

    from localllm.tasks.loading import load_model

    if args.input and Path(args.input).is_file():
        from localllm.tasks.rows import read_rows

        rows = list(read_rows(args.input, args.field))
        for row in rows:
            if row.problem:
                raise UsageError(row.problem, hint="fix the row, or leave it out")
        texts = [row.text or "" for row in rows]
        labels = [row.number for row in rows]
    elif args.input:
        texts, labels = [args.input], [1]
    else:
        (document,) = read_inputs(["-"])
        texts, labels = [document.text], [1]
    options = task_options(args)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx, embeddings=True) as loaded:
        vectors = loaded.backend.embed(texts)
        tokens_in = sum(loaded.backend.count_tokens(text) for text in texts)
        name = loaded.ref.name
    if args.json:
        print_json({"model": name, "dimensions": len(vectors[0]) if vectors else 0,
                    "vectors": [{"row": label, "embedding": vector} for label, vector in zip(labels, vectors,
                                                                                             strict=True)]})
    else:
        for vector in vectors:
            sys.stdout.write(json.dumps([round(value, 6) for value in vector]) + "\n")
    note(f"{len(vectors)} vector(s) of {len(vectors[0]) if vectors else 0} dimensions from {name}, "
         f"{tokens_in:,} tokens in")
    return 0


def segment_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.grouping import segment
    from localllm.tasks.loading import load_model
    from localllm.tasks.rows import read_rows

    rows = list(read_rows(args.file, args.field))
    for row in rows:
        if row.problem:
            note(f"row {row.number}: {row.problem}")
    options = task_options(args)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        segments, tally = segment(settings, loaded.backend, rows, args.segments, options, progress=note)
    if args.json:
        print_json({"segments": [{"name": s.name, "description": s.description, "count": len(s.rows),
                                  "rows": sorted(s.rows)} for s in segments],
                    "rows_analysed": sum(len(s.rows) for s in segments), "calls": tally.calls,
                    "tokens_in": tally.tokens_in, "tokens_out": tally.tokens_out})
    else:
        for item in segments:
            sys.stdout.write(f"## {item.name} ({len(item.rows):,} rows)\n{item.description}\n"
                             f"rows: {', '.join(map(str, sorted(item.rows)))}\n\n")
        note(f"{tally.calls:,} call(s), {tally.tokens_in:,} tokens in, {tally.tokens_out:,} out")
    return 0


def recommend_command(args: argparse.Namespace, settings: Settings) -> int:
    from localllm.tasks.grouping import recommend
    from localllm.tasks.loading import load_model
    from localllm.tasks.rows import read_records

    catalogue = read_records(args.catalog)
    options = task_options(args)
    with load_model(settings, args.model, backend=args.backend or "auto", ctx=options.ctx) as loaded:
        picks, tally = recommend(settings, loaded.backend, catalogue, args.profile, args.top, options, progress=note)
    if args.json:
        print_json({"picks": [{"row": p.row.number, "item": p.row.record, "reason": p.reason} for p in picks],
                    "calls": tally.calls, "tokens_in": tally.tokens_in, "tokens_out": tally.tokens_out})
        return 0
    for rank, pick in enumerate(picks, start=1):
        label = next(iter(pick.row.record.values()), f"row {pick.row.number}")
        sys.stdout.write(f"{rank}. **{label}** (row {pick.row.number}): {pick.reason}\n")
    note(f"{tally.calls:,} call(s), {tally.tokens_in:,} tokens in, {tally.tokens_out:,} out")
    return 0


def register(commands: Commands) -> None:
    summarize = commands.add_parser("summarize", help="summarize files or piped text of any length")
    summarize.add_argument("files", nargs="*", help="files to summarize; - for stdin (default: stdin)")
    summarize.add_argument("--style", choices=("tldr", "bullets", "executive", "detailed"), default="bullets")
    summarize.add_argument("--words", type=int, help="about how many words the summary should have")
    summarize.add_argument("--plan", action="store_true", help="show the chunk plan only; nothing is generated")
    summarize.add_argument("--json", action="store_true", help="the summary, per-chunk notes and token counts")
    model_args(summarize, generation=True)
    summarize.set_defaults(handler=summarize_command)

    classify = commands.add_parser("classify", help="label each row (JSONL/CSV) or a text file; JSONL out")
    classify.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    classify.add_argument("--labels", required=True, help="comma-separated labels, e.g. bug,feature,question")
    classify.add_argument("--field", help="the column or key that holds the text (for JSONL/CSV)")
    model_args(classify, generation=True)
    classify.set_defaults(handler=classify_command)

    sentiment = commands.add_parser("sentiment", help="sentiment and a score for each row or a text file")
    sentiment.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    sentiment.add_argument("--field")
    model_args(sentiment, generation=True)
    sentiment.set_defaults(handler=sentiment_command)

    extract = commands.add_parser("extract", help="fill a JSON schema's fields from text; always valid JSON")
    extract.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    extract.add_argument("--schema", required=True, help="a JSON schema file")
    extract.add_argument("--field")
    model_args(extract, generation=True)
    extract.set_defaults(handler=extract_command)

    ner = commands.add_parser("ner", help="persons, organisations, places and dates named in a text")
    ner.add_argument("file", nargs="?", default="-", help="JSONL, CSV or a text file (default: stdin)")
    ner.add_argument("--field")
    model_args(ner, generation=True)
    ner.set_defaults(handler=ner_command)

    ask = commands.add_parser("ask", help="answer a question from documents only, citing passages")
    ask.add_argument("inputs", nargs="+", metavar="FILE ... QUESTION", help="the documents, then the question")
    ask.add_argument("--json", action="store_true", help="the answer with the passages sent and their scores")
    model_args(ask, generation=True)
    ask.set_defaults(handler=ask_command)

    feedback = commands.add_parser("feedback", help="top themes in feedback rows, with counts and quotes")
    feedback.add_argument("file", nargs="?", default="-", help="JSONL or CSV of feedback (default: stdin)")
    feedback.add_argument("--field", help="the column or key that holds the text")
    feedback.add_argument("--top", type=int, default=5, help="how many themes to show (default 5)")
    feedback.add_argument("--json", action="store_true", help="every theme with its count, rows and quotes")
    model_args(feedback, generation=True)
    feedback.set_defaults(handler=feedback_command)

    segment = commands.add_parser("segment", help="named customer segments with descriptions and members")
    segment.add_argument("file", nargs="?", default="-", help="JSONL or CSV of customers (default: stdin)")
    segment.add_argument("--field", help="the column or key that describes each customer")
    segment.add_argument("--segments", type=int, default=4, help="at most this many segments (default 4)")
    segment.add_argument("--json", action="store_true")
    model_args(segment, generation=True)
    segment.set_defaults(handler=segment_command)

    recommend = commands.add_parser("recommend", help="ranked catalogue items for a customer profile, with reasons")
    recommend.add_argument("--catalog", required=True, help="CSV or JSONL, one item per row")
    recommend.add_argument("--profile", required=True, help='e.g. "likes hiking, budget under 100"')
    recommend.add_argument("--top", type=int, default=3, help="how many items (default 3)")
    recommend.add_argument("--json", action="store_true")
    model_args(recommend, generation=True)
    recommend.set_defaults(handler=recommend_command)

    translate = commands.add_parser("translate", help="translate files or piped text of any length")
    translate.add_argument("files", nargs="*", help="files to translate; - for stdin (default: stdin)")
    translate.add_argument("--to", required=True, help="target language, e.g. German or de")
    model_args(translate, generation=True)
    translate.set_defaults(handler=translate_command)

    simplify = commands.add_parser("simplify", help="rewrite files or piped text in plain language")
    simplify.add_argument("files", nargs="*", help="files; - for stdin (default: stdin)")
    simplify.add_argument("--level", default="beginner", choices=("beginner", "intermediate", "expert"))
    model_args(simplify, generation=True)
    simplify.set_defaults(handler=simplify_command)

    write = commands.add_parser("write", help="write a story, script, docs, manual, blog or social post")
    write.add_argument("kind", choices=("story", "script", "docs", "manual", "blog", "social"))
    write.add_argument("--topic", required=True)
    write.add_argument("--audience", help="who it is for (default: general readers)")
    write.add_argument("--words", type=int, default=300, help="about how many words (default 300)")
    model_args(write, generation=True)
    write.set_defaults(handler=write_command)

    embed = commands.add_parser("embed", help="dense vectors for a text, a file, or each row (--field)")
    embed.add_argument("input", nargs="?", help="text, or a file (default: stdin)")
    embed.add_argument("--field", help="for JSONL/CSV: the column or key to embed, one vector per row")
    embed.add_argument("--json", action="store_true")
    model_args(embed, generation=True)
    embed.set_defaults(handler=embed_command)

    reply = commands.add_parser("reply", help="draft a reply to a customer message")
    reply.add_argument("file", nargs="?", default="-", help="the customer's message (default: stdin)")
    reply.add_argument("--tone", default="polite", choices=("polite", "friendly", "formal", "apologetic", "firm"))
    model_args(reply, generation=True)
    reply.set_defaults(handler=reply_command)

    code = commands.add_parser("code", help="explain, fix, convert, document, test or generate code")
    code.set_defaults(handler=code_command)
    actions = code.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("explain", "explain FILE[:START-END]"), ("fix", "fix FILE with its error or traceback"),
                         ("convert", "convert FILE to another language"), ("doc", "document FILE"),
                         ("test", "write tests for FILE"), ("gen", "generate code from a description")):
        sub = actions.add_parser(action, help=text)
        if action == "gen":
            sub.add_argument("description", nargs="+", help="what the code should do")
            sub.add_argument("--lang", default="python", help="language (default: python)")
        else:
            sub.add_argument("target", metavar="FILE[:START-END]")
        if action == "fix":
            sub.add_argument("--error", help="file with the error or traceback (default: stdin)")
        if action == "convert":
            sub.add_argument("--to", required=True, help="target language")
        sub.add_argument("--write", metavar="PATH", help="write the answer's code block to a new file")
        sub.add_argument("--force", action="store_true", help="let --write replace an existing file")
        model_args(sub, generation=True)
