"""Text out of documents: Dify's document extractor, by file extension or MIME type.

Plain text, Markdown, HTML and XML are decoded as they are (Dify's document-extractor node
keeps HTML markup; knowledge-base ingest asks for ``html="text"`` to strip it, as Dify's
indexing does). JSON is pretty-printed, CSV and spreadsheets become Markdown tables, DOCX
gives its paragraphs and then its tables, PPTX the text of each slide, PDF the text of each
page (pypdf, python-docx, python-pptx and openpyxl do the reading).
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Literal

import yaml

#: Extensions read, each with the MIME type Dify gives it.
MIME_TYPES: dict[str, str] = {
    ".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
    ".html": "text/html", ".htm": "text/html", ".xml": "text/xml", ".vtt": "text/vtt",
    ".json": "application/json", ".yaml": "application/x-yaml", ".yml": "application/x-yaml",
    ".csv": "text/csv", ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_BY_MIME = {mime: ext for ext, mime in reversed(MIME_TYPES.items())}
_BY_MIME["text/htm"] = ".html"


class ExtractionError(ValueError):
    """A document could not be read: the message names the file and what went wrong."""


def extension_of(name: str | None, mime_type: str | None = None) -> str:
    """The extension text is extracted by: ``name``'s suffix, else the one of ``mime_type``.
    Raises :class:`ExtractionError` when neither is a known type."""
    suffix = PurePath(name or "").suffix.lower()
    if suffix in MIME_TYPES:
        return suffix
    if mime_type and mime_type.split(";")[0].strip() in _BY_MIME:
        return _BY_MIME[mime_type.split(";")[0].strip()]
    shown = repr(name) if name else "the file"
    raise ExtractionError(
        f"{shown} is of a type cellwire cannot extract text from "
        f"({suffix or mime_type or 'no extension and no MIME type'}); supported: "
        f"{', '.join(sorted(MIME_TYPES))}")


def mime_type_of(name: str) -> str:
    """The MIME type of a file name, as Dify's file objects carry it."""
    suffix = PurePath(name).suffix.lower()
    return MIME_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def extract_text(data: bytes, name: str | None = None, mime_type: str | None = None, *,
                 html: Literal["raw", "text"] = "raw") -> str:
    """The text of the document ``data`` named ``name`` (or of type ``mime_type``)."""
    ext = extension_of(name, mime_type)
    try:
        if ext in (".html", ".htm") and html == "text":
            return _html_text(_decode(data))
        if ext in (".txt", ".md", ".markdown", ".html", ".htm", ".xml", ".vtt"):
            return _decode(data)
        if ext == ".json":
            return json.dumps(json.loads(_decode(data)), indent=2, ensure_ascii=False)
        if ext in (".yaml", ".yml"):
            return str(yaml.dump_all(yaml.safe_load_all(_decode(data)), allow_unicode=True,
                                     sort_keys=False))
        if ext == ".csv":
            return _markdown_table(list(csv.reader(io.StringIO(_decode(data)))))
        if ext == ".pdf":
            return _pdf(data)
        if ext == ".docx":
            return _docx(data)
        if ext == ".pptx":
            return _pptx(data)
        return _xlsx(data)
    except ExtractionError:
        raise
    except Exception as exc:  # noqa: BLE001 - each reader raises its own kinds
        raise ExtractionError(f"cannot extract text from {name or 'the ' + ext + ' file'}: "
                              f"{type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> str:
    return data.decode("utf-8-sig", "ignore")


def _markdown_table(rows: list[list[str]]) -> str:
    # Dify's shape: the first row as header, a '---' rule, then every other row.
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join(["---"] * len(rows[0])) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def _docx(data: bytes) -> str:
    import docx

    document = docx.Document(io.BytesIO(data))
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        rows = [[cell.text for cell in row.cells] for row in table.rows]
        if any(cell.strip() for row in rows for cell in row):
            parts.append(_markdown_table(rows) + "\n")
    return "\n".join(parts)


def _pptx(data: bytes) -> str:
    from pptx import Presentation

    texts: list[str] = []
    for slide in Presentation(io.BytesIO(data)).slides:
        for shape in slide.shapes:
            if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text)
            elif getattr(shape, "has_table", False):
                rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                texts.append(_markdown_table(rows))
    return "\n".join(texts)


def _xlsx(data: bytes) -> str:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        tables = []
        for sheet in book.worksheets:
            rows = [["" if cell is None else str(cell) for cell in row]
                    for row in sheet.iter_rows(values_only=True)]
            table = _markdown_table(rows)
            if table:
                tables.append(table + "\n\n")
        return "".join(tables)
    finally:
        book.close()


class _TextOnly(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "noscript"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "table", "ul", "ol", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
