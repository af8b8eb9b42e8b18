import pytest
from pdfs import write_encrypted_pdf, write_pdf

from memorize.extract import ExtractionError, extract, find_documents, normalize


def test_normalize_joins_hyphenated_words_and_folds_space():
    assert normalize("The inter-\nnational  rules\r\n\n\n\napply\t here.") == "The international rules\n\napply here."


def test_text_and_markdown_are_one_page(tmp_path):
    f = tmp_path / "a.md"
    f.write_text("# Title\n\nSome  text that is hyphen-\nated.\n")
    doc = extract(f)
    assert [p.number for p in doc.pages] == [1]
    assert "hyphenated" in doc.pages[0].text
    assert len(doc.sha256) == 64


def test_pdf_keeps_page_numbers(tmp_path):
    f = write_pdf(tmp_path / "r.pdf", [["First page fact."], ["Second page fact."], ["Third page fact."]])
    doc = extract(f)
    assert [(p.number, p.text) for p in doc.pages] == [(1, "First page fact."), (2, "Second page fact."), (3, "Third page fact.")]


@pytest.mark.parametrize("make, reason", [
    (lambda p: write_encrypted_pdf(p, [["Secret."]]), "encrypted"),
    (lambda p: p.write_bytes(b"%PDF-1.4\n1 0 obj garbage\n") or p, "corrupt"),
    (lambda p: p.write_bytes(b"") or p, "corrupt"),
    (lambda p: write_pdf(p, [None, None]), "no text layer"),
])
def test_bad_pdfs_name_the_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.pdf"
    make(path)
    with pytest.raises(ExtractionError) as err:
        extract(path)
    assert err.value.path == str(path)
    assert reason in err.value.reason
    assert str(path) in str(err.value)


def test_empty_text_file_and_unsupported_type(tmp_path):
    (tmp_path / "e.txt").write_text("  \n")
    with pytest.raises(ExtractionError, match="empty"):
        extract(tmp_path / "e.txt")
    (tmp_path / "x.docx").write_bytes(b"PK")
    with pytest.raises(ExtractionError, match="unsupported file type .docx"):
        extract(tmp_path / "x.docx")


def test_find_documents_expands_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "b.md").write_text("b")
    (tmp_path / "c.png").write_bytes(b"")
    assert [p.name for p in find_documents([tmp_path])] == ["b.md", "a.txt"]
    with pytest.raises(FileNotFoundError, match="nope"):
        find_documents([tmp_path / "nope"])
