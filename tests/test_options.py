import pytest

from localllm.core.errors import UsageError
from localllm.core.options import PRESETS, GenerationOptions, apply_assignments, coerce_option, preset


def test_presets_cover_greedy_balanced_creative():
    assert preset("precise").greedy and preset("precise").top_k == 1
    assert not preset("balanced").greedy
    assert preset("creative").temperature > preset("balanced").temperature
    assert set(PRESETS) == {"precise", "balanced", "creative"}


def test_unknown_preset_lists_choices():
    with pytest.raises(UsageError) as err:
        preset("wild")
    assert "precise" in err.value.hint


def test_assignments_are_typed_and_stop_accumulates():
    options = apply_assignments(GenerationOptions(), [
        "temperature=0.2", "top_k=5", "top-p=0.5", "min_p=0.1", "repeat_penalty=1.2", "seed=7", "max_tokens=12",
        "stop=END", "stop=\n\n", "ctx=1024",
    ])
    assert (options.temperature, options.top_k, options.top_p, options.min_p) == (0.2, 5, 0.5, 0.1)
    assert (options.repeat_penalty, options.seed, options.max_tokens, options.ctx) == (1.2, 7, 12, 1024)
    assert options.stop == ("END", "\n\n")


@pytest.mark.parametrize("item, fragment", [
    ("temp=1", "did you mean 'temperature'"),
    ("top_k=abc", "needs an integer"),
    ("temperature=hot", "needs a number"),
    ("top_p=1.5", "out of range"),
    ("max_tokens=0", "out of range"),
    ("novalue", "not key=value"),
])
def test_bad_assignments_say_what_is_wrong(item, fragment):
    with pytest.raises(UsageError) as err:
        apply_assignments(GenerationOptions(), [item])
    assert fragment in f"{err.value.message} {err.value.hint}"


def test_coerce_keeps_stop_text_verbatim():
    assert coerce_option("stop", " a b ") == " a b "
