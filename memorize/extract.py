"""Text extraction keeping where each part came from: PDF pages; the slides, sheets or top-level sections of
office, web and e-book files (converted to Markdown by markitdown); plain-text and Markdown files whole."""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
MARKITDOWN_SUFFIXES = {".docx", ".pptx", ".xlsx", ".html", ".htm", ".epub"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKITDOWN_SUFFIXES | {".pdf"}
# Page furniture of web pages, not content: dropped before conversion.
HTML_BOILERPLATE = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "template")


class ExtractionError(Exception):
    """A document that cannot be read; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Page:
    number: int  # 1-based: a PDF page, a slide, a sheet or a section; plain-text files are a single page
    text: str
    label: str = ""  # what the number counts where it is not a PDF page: "slide 3", "sheet Prices", a heading


@dataclass(frozen=True)
class Document:
    path: str
    sha256: str
    pages: tuple[Page, ...]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def normalize(text: str) -> str:
    """Join words hyphenated across line ends, fold runs of spaces, keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00ad", "")
    text = re.sub(r"(\w)-\n[ \t]*(\w)", r"\1\2", text)
    text = re.sub(r"[ \t\f\v\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def find_documents(inputs: list[str | Path]) -> tuple[list[Path], list[dict]]:
    """Expand folders (recursively) into supported files; an explicit file must exist (an unsupported one is
    kept, so that extraction reports it as a failure). Returns (documents, skipped): every other file found
    in a folder, with the reason, so that nothing is left out without a word. Symbolic links inside a folder
    are skipped: one could point anywhere (~/.ssh), and its content would end up in a dataset."""
    found: list[Path] = []
    skipped: list[dict] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_symlink() or f.is_file()):
                if f.is_symlink():
                    skipped.append({"file": str(f), "reason": "a symbolic link (not followed; copy the file "
                                    "into the folder, or name it on the command line)"})
                elif f.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append(f)
                else:
                    skipped.append({"file": str(f), "reason": _unsupported(f)})
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found, skipped


def _unsupported(path: Path) -> str:
    return (f"unsupported file type {path.suffix.lower() or '(none)'}; supported: "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))} (convert it to one of these, e.g. PDF or Markdown)")


def _pdf_pages(path: Path) -> list[Page]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # An empty user password still opens many "encrypted" PDFs.
            try:
                if not reader.decrypt(""):
                    raise ExtractionError(path, "the PDF is encrypted with a password; decrypt it first "
                                                "(e.g. qpdf --decrypt)")
            except ExtractionError:
                raise
            except Exception as exc:
                raise ExtractionError(path, f"the PDF is encrypted and cannot be opened ({exc})") from exc
        pages = [Page(i + 1, normalize(page.extract_text() or "")) for i, page in enumerate(reader.pages)]
    except ExtractionError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files (PdfReadError, KeyError, AssertionError, ...)
        raise ExtractionError(path, f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if not pages:
        raise ExtractionError(path, "the PDF has no pages")
    if not any(p.text for p in pages):
        raise ExtractionError(path, f"no text layer in any of its {len(pages)} page(s) (a scanned/image-only PDF?); "
                                    "run OCR first (e.g. ocrmypdf)")
    return pages


_SLIDE = re.compile(r"^<!-- Slide number: (\d+) -->$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,2}) +(.+?)#*$", re.MULTILINE)


def _sections(markdown: str, suffix: str) -> list[tuple[str, str]]:
    """(label, text) parts that chunks must not cross: slides of a deck (markitdown marks them), sheets of a
    workbook and level-1/2 sections of other documents (a sheet name is a level-2 heading)."""
    if suffix == ".pptx":
        marks = [(m.start(), f"slide {m.group(1)}") for m in _SLIDE.finditer(markdown)]
    else:
        marks = [(m.start(), ("sheet " if suffix == ".xlsx" else "") + m.group(2).strip())
                 for m in _HEADING.finditer(markdown) if suffix != ".xlsx" or len(m.group(1)) == 2]
    if not marks or marks[0][0] > 0:
        marks.insert(0, (0, ""))
    bounds = [start for start, _ in marks] + [len(markdown)]
    return [(label, _SLIDE.sub("", markdown[bounds[i]:bounds[i + 1]])) for i, (_, label) in enumerate(marks)]


def _markitdown_pages(path: Path) -> list[Page]:
    from bs4 import BeautifulSoup
    from markitdown import StreamInfo
    from markitdown.converters import DocxConverter, EpubConverter, HtmlConverter, PptxConverter, XlsxConverter

    # The converter of the file's type, called directly: MarkItDown().convert would sniff the content and
    # turn a damaged .docx into "plain text" instead of saying it is damaged.
    suffix = path.suffix.lower()
    converter = {".docx": DocxConverter, ".pptx": PptxConverter, ".xlsx": XlsxConverter, ".html": HtmlConverter,
                 ".htm": HtmlConverter, ".epub": EpubConverter}[suffix]()
    data = path.read_bytes()
    if converter.__class__ is HtmlConverter:
        soup = BeautifulSoup(data, "html.parser")
        for tag in soup(HTML_BOILERPLATE):
            tag.decompose()
        data = str(soup).encode("utf-8")
    try:
        markdown = converter.convert(io.BytesIO(data), StreamInfo(extension=suffix, charset="utf-8")).markdown
    except Exception as exc:  # each format's own parser raises its own types (zip, XML, OOXML, ...)
        raise ExtractionError(path, f"corrupt or unreadable {suffix} file ({type(exc).__name__}: {exc})") from exc
    parts = [(label, normalize(text)) for label, text in _sections(markdown, suffix)]
    pages = [Page(i, text, label) for i, (label, text) in enumerate((p for p in parts if p[1]), 1)]
    if not pages:
        raise ExtractionError(path, f"no text found in the {suffix} file")
    return pages


def extract(path: str | Path) -> Document:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ExtractionError(path, _unsupported(path))
    if suffix == ".pdf":
        pages = _pdf_pages(path)
    elif suffix in MARKITDOWN_SUFFIXES:
        pages = _markitdown_pages(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ExtractionError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        pages = [Page(1, normalize(raw))]
        if not pages[0].text:
            raise ExtractionError(path, "the file is empty")
    return Document(path=str(path), sha256=file_sha256(path), pages=tuple(pages))
