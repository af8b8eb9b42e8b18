import pytest
from office_docs import write_docx, write_epub, write_html, write_pptx, write_xlsx
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
    (tmp_path / "x.odt").write_bytes(b"PK")
    with pytest.raises(ExtractionError, match="unsupported file type .odt"):
        extract(tmp_path / "x.odt")
    (tmp_path / "y.docx").write_bytes(b"PK not a zip")
    with pytest.raises(ExtractionError, match="corrupt or unreadable .docx"):
        extract(tmp_path / "y.docx")


def test_find_documents_expands_folders_and_names_what_it_skips(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "b.md").write_text("b")
    (tmp_path / "c.png").write_bytes(b"")
    found, skipped = find_documents([tmp_path])
    assert [p.name for p in found] == ["b.md", "a.txt"]
    assert [(s["file"], s["reason"].split(";")[0]) for s in skipped] == [(str(tmp_path / "c.png"), "unsupported file type .png")]
    with pytest.raises(FileNotFoundError, match="nope"):
        find_documents([tmp_path / "nope"])


def test_docx_headings_become_sections(tmp_path):
    f = write_docx(tmp_path / "h.docx", [("Fares", ["A single ticket costs 4 crowns.", "Children ride free."]),
                                         ("Timetable", ["The first ferry leaves at 7:40."])])
    doc = extract(f)
    assert [(p.number, p.label) for p in doc.pages] == [(1, "Fares"), (2, "Timetable")]
    assert "A single ticket costs 4 crowns." in doc.pages[0].text and "7:40" in doc.pages[1].text


def test_html_drops_page_furniture_and_keeps_sections(tmp_path):
    f = write_html(tmp_path / "p.html", [("Fares", "A single ticket costs 4 crowns."), ("Crew", "The captain is Orla Venn.")])
    doc = extract(f)
    text = "\n".join(p.text for p in doc.pages)
    assert "4 crowns" in text and "Orla Venn" in text
    for furniture in ("NAVSCRIPT", "NAVHOME", "SITEHEADER", "SITEFOOTER", "color"):
        assert furniture not in text
    assert [p.label for p in doc.pages] == ["Fares", "Crew"]


def test_slides_sheets_and_epub_chapters(tmp_path):
    deck = extract(write_pptx(tmp_path / "d.pptx", [("Fares", "Tickets cost 4 crowns."), ("Crew", "Captain Orla Venn.")]))
    assert [p.label for p in deck.pages] == ["slide 1", "slide 2"] and "Orla Venn" in deck.pages[1].text
    book = extract(write_xlsx(tmp_path / "t.xlsx", {"Prices": [["ticket", "crowns"], ["single", 4]],
                                                     "Crew": [["role", "name"], ["captain", "Orla Venn"]]}))
    assert [p.label for p in book.pages] == ["sheet Prices", "sheet Crew"] and "Orla Venn" in book.pages[1].text
    epub = extract(write_epub(tmp_path / "b.epub", "Ferry", [("Fares", "Tickets cost 4 crowns."), ("Crew", "Captain Orla Venn.")]))
    text = "\n".join(p.text for p in epub.pages)
    assert "4 crowns" in text and "Orla Venn" in text
