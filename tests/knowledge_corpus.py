"""A small corpus of every file type knowledge bases read, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica (objects and xref written by hand)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>"),
        (b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
         + b"\nendstream"),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
            .encode())
    return bytes(out)


def write_corpus(folder: Path) -> dict[str, Path]:
    """One file of each type, each about a different subject (its keyword in the name)."""
    import docx
    from openpyxl import Workbook
    from pptx import Presentation
    from pptx.util import Inches

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def put(name: str, data: str | bytes) -> None:
        path = folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        files[Path(name).suffix.lstrip(".")] = path

    put("volcano.txt", "Volcanoes erupt molten lava and ash.\n\nMagma rises from the mantle.")
    put("glacier.md", "# Glaciers\n\nGlaciers are rivers of ice that carve valleys.")
    put("desert.html", "<html><head><title>x</title><style>p{}</style></head><body>"
        "<h1>Deserts</h1><p>Deserts receive little rainfall; cacti store water.</p></body></html>")
    put("coral.csv", "organism,habitat\ncoral,reef\nclownfish,anemone\n")
    put("tundra.json", json.dumps({"biome": "tundra", "facts": ["permafrost", "lichen"]}))
    put("nebula.pdf", minimal_pdf("Nebulae are clouds of interstellar dust and hydrogen"))
    document = docx.Document()
    document.add_paragraph("Rainforests hold most of the planet's biodiversity.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "layer", "height"
    table.cell(1, 0).text, table.cell(1, 1).text = "canopy", "30m"
    document.save(folder / "rainforest.docx")
    files["docx"] = folder / "rainforest.docx"
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Comets"
    box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    box.text_frame.text = "Comets grow tails of vapour near the sun."
    deck.save(folder / "comet.pptx")
    files["pptx"] = folder / "comet.pptx"
    book = Workbook()
    sheet = book.active
    sheet.append(["mineral", "hardness"])
    sheet.append(["quartz", 7])
    sheet.append(["talc", 1])
    book.save(folder / "minerals.xlsx")
    files["xlsx"] = folder / "minerals.xlsx"
    return files
