"""The llama.cpp backend on the real bundled SmolLM2 model: streaming, options, counting, stopping, overflow."""

import pytest

from localllm.core.chunks import FinalChunk, Response, TextChunk
from localllm.core.errors import ContextOverflow
from localllm.core.messages import Message
from localllm.core.options import preset

QUESTION = [Message("user", "Name three colours.")]


def greedy(**changes):
    return preset("precise").with_overrides(**changes)


def test_texts_are_embedded_in_groups_of_a_few_hundred_tokens_a_long_one_alone():
    from localllm.backends.llamacpp import token_groups

    assert token_groups([100, 100, 50, 300, 10, 10], 256) == [range(0, 3), range(3, 4), range(4, 6)]
    assert token_groups([], 256) == [] and token_groups([900], 256) == [range(0, 1)]


def test_stream_is_text_chunks_then_one_final_chunk(loaded):
    chunks = list(loaded.backend.chat(QUESTION, greedy(max_tokens=12)))
    assert all(isinstance(c, TextChunk) for c in chunks[:-1]) and len(chunks) > 2
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert final.usage.prompt_tokens == loaded.backend.count_prompt_tokens(QUESTION)
    assert final.usage.completion_tokens == 12 and final.finish_reason == "length"
    assert final.timings.first_token_s is not None and final.tokens_per_second > 0


def test_greedy_is_deterministic_and_seeded_sampling_repeats(loaded):
    first = Response(loaded.backend.chat(QUESTION, greedy(max_tokens=16))).text()
    second = Response(loaded.backend.chat(QUESTION, greedy(max_tokens=16))).text()
    assert first and first == second
    creative = preset("creative").with_overrides(max_tokens=16, seed=1234)
    assert Response(loaded.backend.chat(QUESTION, creative)).text() == \
        Response(loaded.backend.chat(QUESTION, creative)).text()


def test_stop_string_ends_the_answer(loaded):
    # Both answers compared are read from the same cache (the prompt kept from a first answer): a prompt read whole
    # and one whose cached prefix is reused can tip a greedy choice apart.
    Response(loaded.backend.chat(QUESTION, greedy(max_tokens=4))).text()
    unstopped = Response(loaded.backend.chat(QUESTION, greedy(max_tokens=24))).text()
    word = unstopped.split()[2]
    response = Response(loaded.backend.chat(QUESTION, greedy(max_tokens=24, stop=(word,))))
    text = response.text()
    assert word not in text and unstopped.startswith(text.rstrip())
    assert response.final.finish_reason == "stop" and response.final.stop_sequence == word


def test_an_empty_raw_prompt_is_refused_not_asserted_on(loaded):
    from localllm.core.errors import UsageError

    with pytest.raises(UsageError, match="the prompt is empty"):
        loaded.backend.complete_text("", greedy(max_tokens=4))


def test_chat_template_comes_from_the_gguf(loaded):
    formatted, tokens = loaded.backend._render([Message("system", "Be brief."), *QUESTION])
    assert formatted.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert formatted.prompt.endswith("<|im_start|>assistant\n")
    assert len(tokens) == loaded.backend.count_prompt_tokens([Message("system", "Be brief."), *QUESTION])


def test_closing_the_stream_stops_decoding(loaded):
    response = Response(loaded.backend.chat([Message("user", "Write a long story about a dragon.")],
                                            greedy(max_tokens=400)))
    pieces = []
    for chunk in response:
        pieces.append(chunk)
        if len(pieces) == 5:
            response.close()
            break
    assert response.final is None and len(response.partial_text) > 0
    # The backend is ready for the next request at once.
    assert Response(loaded.backend.chat(QUESTION, greedy(max_tokens=4))).text()


def test_prompt_longer_than_window_is_refused_not_cut(loaded):
    long = [Message("user", "word " * 3000)]
    with pytest.raises(ContextOverflow) as err:
        list(loaded.backend.chat(long, greedy(max_tokens=4)))
    assert err.value.prompt_tokens > err.value.window == 2048


def test_tokenize_round_trip(loaded):
    tokens = loaded.backend.tokenize("Hello world, ünïcode")
    assert tokens[0].piece == "Hello" and len(tokens) >= 5
    ids = [t.id for t in tokens]
    assert loaded.backend._llm.detokenize(ids).decode() == "Hello world, ünïcode"


def test_a_window_that_is_not_a_multiple_of_256_is_the_size_asked_for(bundled_model, tmp_path):
    from conftest import settings_for

    from localllm.tasks.loading import load_model

    with load_model(settings_for(tmp_path), str(bundled_model), ctx=640) as loaded:
        assert loaded.backend.context_window == 640
        long_text = "word " * 700  # about 700 tokens: over 640, under the 768 llama.cpp pads to
        with pytest.raises(ContextOverflow):
            list(loaded.backend.chat([Message("user", long_text)], preset("precise").with_overrides(max_tokens=4)))


def test_a_prompt_longer_than_a_batch_is_read_in_pieces_each_reported_and_answered_the_same(loaded):
    """What the summarize pane's bar moves by: llama.cpp reads the prompt a batch (512 tokens) at a time and says
    how far it got after each, and the answer is the one it gives a prompt read whole."""
    prompt = [Message("user", "Summarize this: " + "The river flows past the old mill. " * 70)]
    whole = Response(loaded.backend.chat(prompt, greedy(max_tokens=6)))
    assert whole.text()
    Response(loaded.backend.chat(QUESTION, greedy(max_tokens=2))).text()  # the cache now holds another prompt
    reports: list[tuple[int, int]] = []
    with loaded.backend.prompt_progress(lambda read, to_read: reports.append((read, to_read))):
        pieces = Response(loaded.backend.chat(prompt, greedy(max_tokens=6)))
        assert pieces.text() == whole.text()
    to_read = pieces.final.usage.prompt_tokens - pieces.final.usage.cached_tokens
    assert to_read > 512 and reports == [(0, to_read), (512, to_read), (to_read - 1, to_read)]
    assert pieces.final.usage.prompt_tokens == whole.final.usage.prompt_tokens


def test_interrupt_stops_while_the_prompt_is_read_and_the_model_answers_after(tmp_path, bundled_model):
    import threading
    import time

    from conftest import settings_for

    from localllm.core.settings import Tuned
    from localllm.tasks.loading import load_model

    # ~1,800 tokens read in one batch: over ten seconds on two cores. An interrupt that waited for the batch to end,
    # instead of aborting it, would take all of that, far past the bound below (which leaves a loaded machine room).
    long_prompt = [Message("user", "Summarize this: " + "The river flows past the old mill. " * 220)]
    with load_model(settings_for(tmp_path, ctx=2048, tuned=Tuned(batch=2048)), "smollm2-135m") as model:
        started = time.monotonic()
        threading.Timer(0.3, model.backend.interrupt).start()
        chunks: list = []
        # Read on a worker thread, as the app does (on the main thread the prompt is read whole: see _abortable).
        reader = threading.Thread(target=lambda: chunks.extend(model.backend.chat(long_prompt,
                                                                                  greedy(max_tokens=50))))
        reader.start()
        reader.join()
        stopped_after = time.monotonic() - started
        final = chunks[-1]
        assert isinstance(final, FinalChunk) and final.finish_reason == "cancelled"
        assert final.usage.completion_tokens == 0 and len(chunks) == 1  # stopped before the first token
        assert stopped_after < 5, stopped_after
        # The next request is not interrupted by the last one's stop, and the model answers as before.
        again = Response(model.backend.chat(QUESTION, greedy(max_tokens=12)))
        assert again.text() and again.final.finish_reason == "length"
