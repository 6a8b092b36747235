"""Hypothesis throws JSON schemas and label sets at the grammar gate with the real llama.cpp behind it. Run as a
child process by test_grammars.py, so that a crash in native code is a failed test that names its signal rather
than the end of the test run:

    python tests/helpers/grammar_fuzz.py MODEL.gguf EXAMPLES

Every schema must give a grammar that llama.cpp parses; every tenth is also used to sample a few tokens (a grammar
that parses but matches nothing would abort in llama.cpp's sampler)."""

from __future__ import annotations

import json
import string
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Pieces of regular expressions that have crashed or hung a grammar, and ordinary ones around them.
REGEX_PIECES = [r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"[\s\S]", r"[\d\D]", r"\.", r"\-", r"\/", r"\\",
                r"\"", '"', r"\1", r"(a)\1", r"\b", r"(?=a)", r"(?!a)", r"(?:ab)", r"(?<n>x)", r"[a-z]", r"[^a-z]",
                r"[z-a]", r"[]", r"[^]", r"]", "}", "{", "{3}", "{2,5}", "{1000000}", r"\x41", r"\u00e9",
                r"\u{1F600}", "a", "é", "|", "(", ")", "*", "+", "?", ".", "^", "$", "\n", "\x00", r"\p{L}",
                r"[\]]", r"[\^]", r"[-a]", r"[a-]", "*?", "+?"]
TEXT = st.text(alphabet=st.sampled_from(list(string.printable) + ['"', "\\", "é", "\x00", "\u2028", "😀"]),
               max_size=12)
COUNT = st.one_of(st.integers(-3, 300), st.sampled_from([100_000, 10**9, 2**31]), st.booleans(), st.none(),
                  st.text(max_size=3), st.floats(allow_nan=True))


def patterns() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(REGEX_PIECES), max_size=8).map("".join)


def leaf() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("string")}, optional={"pattern": patterns(), "minLength": COUNT,
                                                                     "maxLength": COUNT, "format": TEXT}),
        st.fixed_dictionaries({"enum": st.lists(st.one_of(TEXT, st.integers(), st.none()), max_size=4)}),
        st.fixed_dictionaries({"const": st.one_of(TEXT, st.integers(), st.booleans())}),
        st.fixed_dictionaries({"type": st.sampled_from(["integer", "number", "boolean", "null", "object",
                                                        "nonsense", 5])}),
        st.fixed_dictionaries({"$ref": st.sampled_from(["#", "#/properties", "#/$defs/x", "https://x.invalid/s",
                                                        "other.json"])}),
        st.just({}),
    )


def schemas() -> st.SearchStrategy[dict]:
    return st.recursive(leaf(), lambda inner: st.one_of(
        st.fixed_dictionaries({"type": st.just("object"),
                               "properties": st.dictionaries(TEXT, inner, max_size=4)},
                              optional={"required": st.lists(TEXT, max_size=3), "additionalProperties":
                                        st.one_of(st.booleans(), inner)}),
        st.fixed_dictionaries({"type": st.just("array"), "items": inner},
                              optional={"minItems": COUNT, "maxItems": COUNT}),
        st.fixed_dictionaries({"anyOf": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"allOf": st.lists(inner, max_size=2)}),
    ), max_leaves=12)


def main(model_path: str, examples: int) -> None:
    import llama_cpp

    from localllm.backends.grammars import GrammarGate, GrammarRefused
    from localllm.backends.template_tools import HERMES, LLAMA3, MISTRAL
    from localllm.core.tools import ToolSpec
    from localllm.tasks.structured import label_schema

    llm = llama_cpp.Llama(model_path=model_path, n_ctx=256, n_threads=2, verbose=False)
    prompt = llm.tokenize(b"Answer in JSON:", add_bos=True)
    gate = GrammarGate(lambda: llm._model.vocab)
    seen = [0]

    def use(schema: dict) -> None:
        grammar = gate.for_schema(schema)  # parsed by llama.cpp, or an error of localllm's own: never a crash
        seen[0] += 1
        if seen[0] % 3 == 0:  # as a tool's parameters, in each family's call syntax, as the backend does
            tool = ToolSpec('a "tool"', "", schema)
            for family in (HERMES, MISTRAL, LLAMA3):
                try:
                    gate.for_text(family.grammar([tool], "auto", thinking="tag"))
                except GrammarRefused:
                    gate.for_text(family.grammar([tool], "auto", thinking="tag", loose=True))
        if seen[0] % 10 == 0:
            for _token in zip(range(4), llm.generate(prompt, temp=0.8, grammar=grammar, reset=True), strict=False):
                pass

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(schemas())
    def any_schema(schema: dict) -> None:
        use(schema)

    @settings(max_examples=max(examples // 4, 10), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(TEXT.filter(lambda label: label.strip() != ""), min_size=2, max_size=5, unique=True))
    def any_labels(labels: list[str]) -> None:
        use(label_schema(labels))

    any_schema()
    any_labels()
    print(json.dumps({"schemas": seen[0], "cached_bytes": gate.cached_bytes}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
