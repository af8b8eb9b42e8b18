"""Small real office, web and e-book files for tests, written with the libraries that author them."""
from __future__ import annotations

import zipfile
from pathlib import Path


def write_docx(path: Path, sections: list[tuple[str, list[str]]]) -> Path:
    import docx

    d = docx.Document()
    for heading, paragraphs in sections:
        d.add_heading(heading, level=1)
        for text in paragraphs:
            d.add_paragraph(text)
    d.save(path)
    return path


def write_pptx(path: Path, slides: list[tuple[str, str]]) -> Path:
    from pptx import Presentation

    deck = Presentation()
    for title, body in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(path)
    return path


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def write_epub(path: Path, title: str, chapters: list[tuple[str, str]]) -> Path:
    """A minimal EPUB 3: mimetype, container, package document and one XHTML file per chapter."""
    items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(chapters)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("content.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
                   f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">test</dc:identifier>'
                   f'<dc:title>{title}</dc:title><dc:language>en</dc:language></metadata>'
                   f'<manifest>{items}</manifest><spine>{spine}</spine></package>')
        for i, (heading, text) in enumerate(chapters):
            z.writestr(f"c{i}.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>{heading}'
                                      f'</title></head><body><h1>{heading}</h1><p>{text}</p></body></html>')
    return path


def write_html(path: Path, sections: list[tuple[str, str]]) -> Path:
    """A web page with the furniture a real one has: script, navigation, header and footer."""
    body = "".join(f"<h2>{h}</h2><p>{t}</p>" for h, t in sections)
    path.write_text(
        "<html><head><title>Ferry</title><style>p {color: red}</style><script>var tracking = 'NAVSCRIPT';</script></head>"
        "<body><header>SITEHEADER</header><nav><a href='/'>NAVHOME</a> <a href='/x'>NAVABOUT</a></nav>"
        f"<main>{body}</main><footer>SITEFOOTER copyright</footer></body></html>", encoding="utf-8")
    return path
