"""`localllm serve`'s OpenAI routes as evaluation harnesses and real clients use them: log-probabilities (the
prompt's, scored from the model's logits at each position, and the answer's), echo, max_tokens 0, prompts as token
ids, n answers, presence and frequency penalties and logit_bias. Through a real `localllm serve` process on
loopback with the bundled model and the official `openai` client, checked against llama-cpp-python's own logits
computed in this process."""

import math

import httpx
import pytest
from conftest import seed_verdict
from helpers.serve_process import serving

KEY = "logprobs-key-5678"
MODEL = "smollm2-135m"
CONTEXT = "Question: What is the capital of France?\nAnswer:"
CHOICES = (" Paris", " Berlin", " a small village near the sea")


@pytest.fixture(scope="module")
def server(tmp_path_factory, build_verdict):
    """The default preset (sampling, as a client's temperature and seed ask): each test says what it needs. The
    backend is named and the session's llama.cpp self-check verdict given: a check run again on a busy machine can
    run out of time, and `auto` would then pick another backend."""
    home = seed_verdict(tmp_path_factory.mktemp("serve-logprobs"), build_verdict)
    with serving(home, "-b", "llama.cpp", "--api-key", KEY) as url:
        yield url


class Reference:
    """llama-cpp-python in this process, keeping every position's logits (logits_all: fine for a few short
    prompts), to compute what the server should answer: the log-softmax of the logits before each token."""

    def __init__(self, model_path) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, logits_all=True, verbose=False)

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode()

    def logprobs(self, ids: list[int]) -> list:
        """Row i: the log-probabilities of every token after ids[:i + 1], in double precision."""
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        rows = np.array(self.llm.scores[:len(ids)], dtype=np.float64)
        return [row - row.max() - np.log(np.exp(row - row.max()).sum()) for row in rows]


@pytest.fixture(scope="module")
def reference(server, bundled_model):
    model = Reference(bundled_model)
    yield model
    model.llm.close()


def client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def test_prompt_logprobs_as_lm_eval_asks_for_them_match_the_models_logits(server, reference):
    """lm-evaluation-harness's local-completions model scores each choice of a multiple-choice question as
    context + continuation in token ids, several prompts a request: max_tokens 1, logprobs 1, echo, temperature
    0, a seed. It sums token_logprobs[ctxlen:-1] and calls the choice greedy when each of those tokens is the
    likeliest of its top_logprobs."""
    import numpy as np

    context = reference.tokens(CONTEXT)
    prompts = [context + reference.tokens(choice) for choice in CHOICES]
    answer = client(server).completions.create(model=MODEL, prompt=prompts, max_tokens=1, logprobs=1,
                                               echo=True, temperature=0, seed=1234)
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    sums = []
    for prompt, choice in zip(prompts, answer.choices, strict=True):
        served = choice.logprobs
        assert len(served.tokens) == len(prompt) + 1 and choice.finish_reason == "length"
        rows = reference.logprobs(prompt)
        expected = [float(rows[i - 1][prompt[i]]) for i in range(1, len(prompt))]
        assert served.token_logprobs[0] is None and served.top_logprobs[0] is None
        assert max(abs(got - want) for got, want in zip(served.token_logprobs[1:len(prompt)], expected,
                                                        strict=True)) < 1e-3
        # The generated token: the likeliest after the whole prompt (temperature 0).
        assert served.tokens[-1] == reference.piece(int(np.argmax(rows[-1])))
        # The echoed text is the prompt's tokens' text, and text_offset says where each starts in it.
        text = choice.text
        assert text.startswith(CONTEXT) and "".join(served.tokens) == text
        assert all(text[offset:].startswith(token) for token, offset in zip(served.tokens, served.text_offset,
                                                                            strict=True))
        # As lm-eval reads it: the continuation's sum, and whether each of its tokens was the likeliest.
        continuation = slice(len(context), -1)
        sums.append(sum(served.token_logprobs[continuation]))
        greedy = all(value == max(top.values()) for value, top in zip(
            served.token_logprobs[continuation], served.top_logprobs[continuation], strict=True))
        likeliest = [int(np.argmax(rows[i - 1])) for i in range(len(context), len(prompt))]
        assert greedy == (likeliest == prompt[len(context):])
        assert math.isclose(sums[-1], sum(expected[len(context) - 1:]), abs_tol=1e-3)
    assert sums[0] == max(sums)  # by the model's own numbers, Paris is the likeliest answer


def test_max_tokens_zero_scores_a_text_prompt_plainly_and_streamed(server, reference):
    """A text prompt is tokenized by the server; max_tokens 0 with echo scores it and generates nothing (how a
    harness asks for a whole text's likelihood), and the stream carries the same numbers."""
    prompt = "The quick brown fox jumps over the lazy dog."
    openai_client = client(server)
    plain = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=3)
    (choice,) = plain.choices
    ids = reference.tokens(prompt)
    rows = reference.logprobs(ids)
    assert choice.text == prompt and "".join(choice.logprobs.tokens) == prompt and choice.finish_reason == "length"
    assert plain.usage.completion_tokens == 0 and plain.usage.prompt_tokens == len(ids)
    for place, (value, top) in enumerate(zip(choice.logprobs.token_logprobs[1:], choice.logprobs.top_logprobs[1:],
                                             strict=True), start=1):
        assert abs(value - rows[place - 1][ids[place]]) < 1e-3
        likeliest = sorted(rows[place - 1], reverse=True)[:3]
        # The three likeliest, and the token itself where it is not among them.
        assert 3 <= len(top) <= 4 and choice.logprobs.tokens[place] in top
        assert all(abs(a - b) < 1e-3 for a, b in zip(sorted(top.values(), reverse=True), likeliest, strict=False))
    unechoed = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=0)
    assert unechoed.choices[0].text == "" and unechoed.usage.completion_tokens == 0
    tokens, values, offsets, text = [], [], [], ""
    for chunk in openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=3,
                                                  stream=True):
        for part in chunk.choices:
            text += part.text
            if part.logprobs is not None:
                tokens += part.logprobs.tokens
                values += part.logprobs.token_logprobs
                offsets += part.logprobs.text_offset
    assert text == prompt and tokens == choice.logprobs.tokens and offsets == choice.logprobs.text_offset
    assert values == choice.logprobs.token_logprobs  # the same computation, the same batches: the same numbers


def test_answer_tokens_logprobs_in_completions_and_chat_plain_and_streamed(server, reference):
    openai_client = client(server)
    prompt = "Water boils at a temperature of"
    answer = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
    served = answer.choices[0].logprobs
    assert "".join(served.tokens) == answer.choices[0].text and len(served.tokens) == 6
    assert served.text_offset[0] == len(prompt)  # counted from the prompt's start, as OpenAI counts
    ids = reference.tokens(prompt) + [reference.tokens(token)[0] for token in served.tokens]
    rows = reference.logprobs(ids)
    start = len(ids) - 6
    for place, (value, top) in enumerate(zip(served.token_logprobs, served.top_logprobs, strict=True)):
        # Each generated token, scored as llama.cpp decoded it. llama.cpp's numbers for a position differ a little
        # with the batch it was evaluated in (the prompt read whole here, token by token there), hence 2e-2, not
        # the prompt's 1e-3; a token scored at the wrong place would be off by whole units.
        assert abs(value - rows[start + place - 1][ids[start + place]]) < 2e-2
        # Reported before the repeat penalty the default preset applies: the token chosen need not be the first.
        assert served.tokens[place] in top and value <= max(top.values())
    question = [{"role": "user", "content": "Name three colours."}]
    chat = openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=8, logprobs=True,
                                                 top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == chat.choices[0].message.content and len(content) == 8
    for entry in content:
        assert bytes(entry.bytes).decode() == entry.token and len(entry.top_logprobs) == 3
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and entry.logprob <= values[0] + 1e-9 < 0
    plain = openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=4)
    assert plain.choices[0].logprobs is None  # only when asked for
    streamed_text, streamed_tokens = "", []
    for chunk in openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=8, logprobs=True,
                                                       stream=True):
        for part in chunk.choices:
            streamed_text += part.delta.content or ""
            if part.logprobs is not None:
                streamed_tokens += part.logprobs.content
    assert "".join(entry.token for entry in streamed_tokens) == streamed_text and len(streamed_tokens) == 8
    assert all(entry.top_logprobs == [] for entry in streamed_tokens)  # top_logprobs left out: none


def test_n_answers_each_under_its_index_plain_and_streamed(server):
    openai_client = client(server)
    question = [{"role": "user", "content": "Write a word."}]
    chat = openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=8, n=3, seed=11,
                                                 temperature=1.0)
    assert [choice.index for choice in chat.choices] == [0, 1, 2]
    assert all(choice.message.content for choice in chat.choices)
    assert len({choice.message.content for choice in chat.choices}) > 1  # each answer samples with its own seed
    single = openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=1)
    # The prompt counted once, every answer's tokens.
    assert chat.usage.prompt_tokens == single.usage.prompt_tokens and 3 <= chat.usage.completion_tokens <= 24
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    roles = []
    for chunk in openai_client.chat.completions.create(model=MODEL, messages=question, max_tokens=4, n=2, seed=3,
                                                       temperature=1.0, stream=True):
        for part in chunk.choices:
            texts[part.index] = texts.get(part.index, "") + (part.delta.content or "")
            roles += [part.index] if part.delta.role else []
            finishes.update({part.index: part.finish_reason} if part.finish_reason else {})
    assert roles == [0, 1] and set(finishes) == {0, 1} and all(texts.values())
    completions = openai_client.completions.create(model=MODEL, prompt=["Red, green,", "One, two,"], max_tokens=3,
                                                   n=2, seed=5, temperature=1.0)
    # Prompt i's answer k is choice i × n + k, as OpenAI orders them; the prompt is counted once per prompt.
    assert [choice.index for choice in completions.choices] == [0, 1, 2, 3]
    counted = [openai_client.completions.create(model=MODEL, prompt=text, max_tokens=0).usage.prompt_tokens
               for text in ["Red, green,", "One, two,"]]
    assert completions.usage.prompt_tokens == sum(counted)


def test_logit_bias_forces_and_bans_tokens_and_penalties_curb_repetition(server, reference):
    openai_client = client(server)
    prompt = "The capital of France is"
    first = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, logprobs=0)
    likeliest = reference.tokens(first.choices[0].logprobs.tokens[0])[0]
    banned = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0,
                                              logit_bias={str(likeliest): -100})
    assert banned.choices[0].text != first.choices[0].text
    (forced,) = reference.tokens(" banana")
    bananas = openai_client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0,
                                                    messages=[{"role": "user", "content": "Name a colour."}],
                                                    logit_bias={str(forced): 100})
    assert bananas.choices[0].message.content == " banana" * 3
    # The answer's own tokens are penalised (llama.cpp's penalties look at what was generated): a counting prompt
    # that greedy decoding answers with the same separator again and again repeats it less.
    counting = "1, 1, 1, 1, 1, 1,"

    def most_repeated(**penalty: float) -> int:
        answer = openai_client.completions.create(model=MODEL, prompt=counting, max_tokens=16, temperature=0,
                                                  logprobs=0, **penalty)
        tokens = answer.choices[0].logprobs.tokens
        return max(tokens.count(token) for token in tokens)

    plain = most_repeated()
    assert most_repeated(frequency_penalty=2.0) < plain and most_repeated(presence_penalty=2.0) < plain


@pytest.mark.parametrize(("request_body", "message"), [
    ({"prompt": [1, 2, 49152]}, "prompt[2] must be a token id of the model's vocabulary, from 0 to 49151"),
    ({"prompt": [[1, 2], [3, -1]]}, "prompt[1][1] must be a token id"),
    ({"prompt": [[1, True]]}, "prompt[0][1] must be a token id"),
    ({"prompt": [2 ** 80]}, "prompt[0] must be a token id"),
    ({"prompt": [[1], "text"]}, "prompt must hold strings, token ids, or lists of token ids, not a mix"),
    ({"prompt": [[]]}, "prompt[0] must not be empty"),
    ({"prompt": "hi", "logprobs": 21}, "logprobs must be an integer from 0 to 20"),
    ({"prompt": "hi", "logprobs": True}, "logprobs must be an integer from 0 to 20"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens must be an integer from 0 to 1000000"),
    ({"prompt": "hi", "n": 9}, "n must be an integer from 1 to 8"),
    ({"prompt": "hi", "n": 2, "best_of": 3}, "best_of must equal n"),
    ({"prompt": "hi", "presence_penalty": 2.5}, "presence_penalty must be a number from -2 to 2"),
    ({"prompt": "hi", "frequency_penalty": "high"}, "frequency_penalty must be a number from -2 to 2"),
    ({"prompt": "hi", "logit_bias": {"49152": 1}}, 'logit_bias["49152"] must be a token id'),
    ({"prompt": "hi", "logit_bias": {"12": 101}}, 'logit_bias["12"] must be a number from -100 to 100'),
    ({"prompt": "hi", "logit_bias": {"-3": 1}}, 'logit_bias["-3"]: the keys of logit_bias must be token ids'),
    ({"prompt": "hi", "logit_bias": [1, 2]}, "logit_bias must be an object"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, "top_logprobs needs logprobs: true"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
     "top_logprobs must be an integer from 0 to 20"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": 1}, "logprobs must be true or false"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n must be an integer from 1 to 8"),
])
def test_bad_values_are_400s_naming_the_field_and_never_reach_llama_cpp(server, request_body, message):
    route = "chat/completions" if "messages" in request_body else "completions"
    refused = httpx.post(f"{server}/v1/{route}", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": MODEL, "max_tokens": 2, **request_body}, timeout=60)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"].startswith(message) and error["type"] == "invalid_request_error"
    # The server is still there, and still answers.
    assert httpx.get(f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).is_success


# -- without a model ------------------------------------------------------------------------------------------------
def test_a_backend_without_logprobs_or_logit_bias_refuses_them_by_name():
    """Checked before the backend is asked anything, so a real but unconnected Ollama backend is enough here."""
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from localllm.backends.ollama import OllamaBackend
    from localllm.core.options import preset
    from localllm.server.app import build_app
    from localllm.server.engine import Engine

    loaded = SimpleNamespace(backend=OllamaBackend(), ref=SimpleNamespace(name="llama3.2"))
    question = [{"role": "user", "content": "hi"}]
    with TestClient(build_app(Engine(loaded), preset("precise"))) as http:
        for field, value in (("logprobs", True), ("logit_bias", {"12": 5})):
            refused = http.post("/v1/chat/completions", json={"messages": question, field: value})
            assert refused.status_code == 400
            assert refused.json()["error"]["message"].startswith(
                f"{field} is not supported by backend ollama (serve with --backend llama.cpp for it")


def test_the_cli_options_take_penalties_and_logit_bias_and_a_backend_refuses_what_it_cannot_apply():
    from localllm.backends.gpt4all import GPT4AllBackend
    from localllm.backends.ollama import OllamaBackend
    from localllm.core.errors import UsageError
    from localllm.core.options import GenerationOptions, apply_assignments

    options = apply_assignments(GenerationOptions(), ["presence_penalty=0.5", "frequency_penalty=-1",
                                                      "logit_bias=12:5, 7:-100,12:1"])
    assert (options.presence_penalty, options.frequency_penalty) == (0.5, -1.0)
    assert options.logit_bias == ((12, 1.0), (7, -100.0))  # a token given twice keeps its last bias
    for bad, said in (("presence_penalty=3", "out of range"), ("logit_bias=12", "is not TOKEN_ID:BIAS"),
                      ("logit_bias=12:500", "out of range"), ("logit_bias=-1:5", "out of range"),
                      ("logit_bias=1:nan", "out of range")):
        with pytest.raises(UsageError, match=said):
            apply_assignments(GenerationOptions(), [bad])
    OllamaBackend().check_options(options.with_overrides(logit_bias=()))  # Ollama applies the penalties
    with pytest.raises(UsageError, match="backend ollama cannot apply logit_bias"):
        OllamaBackend().check_options(options)
    with pytest.raises(UsageError, match="backend gpt4all cannot apply presence_penalty, frequency_penalty"):
        GPT4AllBackend().check_options(options)


def test_a_named_models_penalties_and_logit_bias_survive_its_record():
    """A named model keeps parameters by the -o keys (Ollama's Modelfile has presence_penalty and
    frequency_penalty): logit_bias is kept as [[id, bias], ...] and read back from that, or from OpenAI's shape."""
    import json

    from localllm.core.errors import UsageError
    from localllm.store.named import parameters_from

    kept = parameters_from([("logit_bias", "12:5,7:-100"), ("presence_penalty", "0.5")], "PARAMETER")
    assert kept == {"logit_bias": ((12, 5.0), (7, -100.0)), "presence_penalty": 0.5}
    assert parameters_from(list(json.loads(json.dumps(kept)).items()), "parameters") == kept
    assert parameters_from([("logit_bias", {"12": 5})], "parameters") == {"logit_bias": ((12, 5.0),)}
    with pytest.raises(UsageError, match="parameters.logit_bias must be token ids with their biases"):
        parameters_from([("logit_bias", [12, 5])], "parameters")
    with pytest.raises(UsageError, match="parameters.logit_bias: 12:500 is out of range"):
        parameters_from([("logit_bias", [[12, 500]])], "parameters")
