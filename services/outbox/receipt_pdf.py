"""A receipt as a PDF, with the same rows as its page and its mail (services.outbox.receipts), made by fpdf2.

fpdf2's core fonts (Helvetica) need no font file; they cover Latin-1, which every field of a receipt is written in
(a character outside it would print as "?"). The document carries no timestamp of its own, so the same receipt
gives the same bytes.
"""

from __future__ import annotations

from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos

from services.outbox.receipts import Receipt, receipt_rows

LABEL_WIDTH_MM = 42
LINE_HEIGHT_MM = 7


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def receipt_pdf(receipt: Receipt) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Receipt {receipt.number}")
    pdf.set_creation_date(receipt.credited_at)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, _latin1(f"Receipt {receipt.number}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 11)
    pdf.cell(0, LINE_HEIGHT_MM * 1.5, "Thank you for your purchase.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    value_width = pdf.epw - LABEL_WIDTH_MM
    for label, value in receipt_rows(receipt):
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(LABEL_WIDTH_MM, LINE_HEIGHT_MM, _latin1(label), border="B")
        pdf.set_font("Helvetica", "", 11)
        link = value if label == "Explorer" else None
        pdf.multi_cell(
            value_width,
            LINE_HEIGHT_MM,
            _latin1(value),
            border="B",
            align="L",
            link=link,
            wrapmode=WrapMode.CHAR,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
    pdf.ln(LINE_HEIGHT_MM)
    pdf.multi_cell(0, LINE_HEIGHT_MM, _latin1("Questions? " + "; ".join(receipt.support)), align="L")
    return bytes(pdf.output())
