"""write, simplify and embed on the real bundled model."""

import json
import math
from pathlib import Path

from conftest import run_cli

DATA = Path(__file__).parent / "data"


def test_write_and_simplify(shared_home):
    written = run_cli("write", "social", "--topic", "our harbour opens a fuel dock on 1 May", "--words", "30",
                      "-v", home=shared_home)
    assert written.returncode == 0 and written.stdout_text.strip() and "1 call" in written.stderr_text
    simple = run_cli("simplify", "--level", "beginner", "-o", "ctx=1024", str(DATA / "docs" / "security.md"),
                     home=shared_home)
    assert simple.returncode == 0 and simple.stdout_text.strip() and "part 1 of" in simple.stderr_text
    bad = run_cli("write", "poem", "--topic", "x", home=shared_home)
    assert bad.returncode == 2


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_normalised_deterministic_and_meaningful(shared_home):
    texts = ["the cat sat on the mat", "a cat is sitting on a mat", "quarterly revenue grew by four percent"]
    vectors = [json.loads(run_cli("embed", text, home=shared_home).stdout_text) for text in texts]
    assert all(len(v) == 576 and math.isclose(math.sqrt(cosine(v, v)), 1.0, abs_tol=1e-3) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    again = json.loads(run_cli("embed", texts[0], home=shared_home).stdout_text)
    assert max(abs(x - y) for x, y in zip(again, vectors[0], strict=True)) < 1e-5


def test_embed_rows_and_too_long_text(shared_home, tmp_path):
    rows = json.loads(run_cli("embed", str(DATA / "tickets.jsonl"), "--field", "text", "--json",
                              home=shared_home).stdout_text)
    assert rows["dimensions"] == 576 and [v["row"] for v in rows["vectors"]] == list(range(1, 21))
    long = tmp_path / "long.txt"
    long.write_text("word " * 3000)
    refused = run_cli("embed", str(long), "-o", "ctx=512", home=shared_home)
    assert refused.returncode == 1 and "over the 512-token window" in refused.stderr_text
