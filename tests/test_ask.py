"""`localllm ask`: retrieval puts the passage that holds the answer into the prompt (checked on the retrieval, not
on the small model's wording)."""

import json
from pathlib import Path

from conftest import run_cli
from test_summarize import long_document

from localllm.tasks.ask_docs import passages_of, rank
from localllm.tasks.documents import read_document

DOCS = Path(__file__).parent / "data" / "docs"
QUESTION = "How do I rotate the API key?"


def words(text: str) -> int:
    return len(text.split())


def test_bm25_ranks_the_passage_with_the_answer_first():
    documents = [read_document(str(DOCS / "security.md")), read_document(str(DOCS / "billing.md"))]
    ranked = rank(passages_of(documents, words, size=40), QUESTION)
    assert ranked[0].document == "security.md" and "Rotate key" in ranked[0].text
    assert ranked[0].score > ranked[-1].score
    assert ranked[0].id.startswith("security.md:")


def test_documents_that_fit_are_sent_whole(shared_home):
    done = run_cli("ask", str(DOCS / "security.md"), str(DOCS / "billing.md"), QUESTION, "--json",
                   "-o", "max_tokens=24", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert data["retrieved"] is False and len(data["sources"]) == data["candidates"]
    assert data["answer"] and data["prompt_tokens"] > 300


def test_large_document_sets_are_retrieved_and_cited(shared_home, tmp_path):
    filler = tmp_path / "python-reference.md"
    filler.write_text(long_document(60_000))
    done = run_cli("ask", str(filler), str(DOCS / "billing.md"), str(DOCS / "security.md"), QUESTION, "--json",
                   "-o", "ctx=1024", "-o", "max_tokens=24", home=shared_home)
    assert done.returncode == 0, done.stderr_text
    data = json.loads(done.stdout_text)
    assert data["retrieved"] is True and len(data["sources"]) < data["candidates"]
    assert data["prompt_tokens"] + 24 <= 1024
    ids = [source["id"] for source in data["sources"]]
    text = (DOCS / "security.md").read_text().splitlines()
    holding = [s for s in data["sources"] if s["file"] == "security.md"
               and any("Rotate key" in line for line in text[s["lines"][0] - 1:s["lines"][1]])]
    assert holding, ids
    assert "sent " in done.stderr_text and "ranked by BM25" in done.stderr_text


def test_ask_needs_documents_and_a_question(shared_home):
    done = run_cli("ask", QUESTION, home=shared_home)
    assert done.returncode == 2 and "name the documents, then the question" in done.stderr_text
