from memorize.chunking import chunk_document, count_tokens, split_sentences
from memorize.extract import Document, Page


def _doc(*pages):
    return Document(path="/x/rules.pdf", sha256="0" * 64, pages=tuple(Page(i + 1, t) for i, t in enumerate(pages)))


def test_token_counting_works_offline():
    assert count_tokens("hello world") == 2


def test_chunks_respect_budget_and_sentence_boundaries():
    sentences = [f"Rule {i} says that players must stand {i} metres apart." for i in range(200)]
    chunks = chunk_document(_doc(" ".join(sentences)), max_tokens=120, overlap=20)
    assert len(chunks) > 5
    for c in chunks:
        assert c.tokens <= 120
        assert c.text.startswith("Rule ") and c.text.endswith("apart.")  # whole sentences only
    # every sentence is covered, in order, and consecutive chunks overlap by whole sentences
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)
    assert split_sentences(chunks[0].text)[-1] == split_sentences(chunks[1].text)[0]


def test_chunks_keep_source_pages_index_and_hash():
    chunks = chunk_document(_doc("Page one text.", "Page two text."), max_tokens=500)
    assert [(c.page_start, c.page_end, c.index, c.chunk_id) for c in chunks] == [(1, 1, 0, "/x/rules.pdf#0000"),
                                                                                  (2, 2, 1, "/x/rules.pdf#0001")]
    assert chunks[0].source == "/x/rules.pdf"
    named = chunk_document(_doc("Page one text."), source="a/rules.pdf")
    assert (named[0].chunk_id, named[0].source) == ("a/rules.pdf#0000", "a/rules.pdf")
    assert chunks[0].sha256 != chunks[1].sha256


def test_editing_one_page_changes_only_its_chunks():
    before = chunk_document(_doc("Alpha facts. " * 100, "Beta facts. " * 100, "Gamma facts. " * 100), max_tokens=100)
    after = chunk_document(_doc("Alpha facts. " * 100, "Beta facts, edited. " * 100, "Gamma facts. " * 100), max_tokens=100)
    changed = {c.sha256 for c in after} - {c.sha256 for c in before}
    assert changed and all(c.page_start == 2 for c in after if c.sha256 in changed)


def test_overlong_sentence_is_cut_by_tokens():
    chunks = chunk_document(_doc("word " * 1000), max_tokens=100, overlap=0)
    assert len(chunks) >= 10 and all(c.tokens <= 101 for c in chunks)
