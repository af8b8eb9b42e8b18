"""Text extraction from PDF, plain-text and Markdown files, keeping page numbers."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".pdf"}


class ExtractionError(Exception):
    """A document that cannot be read; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Page:
    number: int  # 1-based; plain-text files are a single page
    text: str


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


def find_documents(inputs: list[str | Path]) -> list[Path]:
    """Expand folders (recursively) into supported files; an explicit file must exist."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found


def _pdf_pages(path: Path) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # An empty user password still opens many "encrypted" PDFs.
            try:
                if not reader.decrypt(""):
                    raise ExtractionError(path, "the PDF is encrypted with a password; decrypt it first (e.g. qpdf --decrypt)")
            except ExtractionError:
                raise
            except Exception as exc:
                raise ExtractionError(path, f"the PDF is encrypted and cannot be opened ({exc})") from exc
        pages = [Page(i + 1, normalize(page.extract_text() or "")) for i, page in enumerate(reader.pages)]
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionError(path, f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if not pages:
        raise ExtractionError(path, "the PDF has no pages")
    if not any(p.text for p in pages):
        raise ExtractionError(path, f"no text layer in any of its {len(pages)} page(s) (a scanned/image-only PDF?); run OCR first (e.g. ocrmypdf)")
    return pages


def extract(path: str | Path) -> Document:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ExtractionError(path, f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    if suffix == ".pdf":
        pages = _pdf_pages(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ExtractionError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        pages = [Page(1, normalize(raw))]
        if not pages[0].text:
            raise ExtractionError(path, "the file is empty")
    return Document(path=str(path), sha256=file_sha256(path), pages=tuple(pages))
