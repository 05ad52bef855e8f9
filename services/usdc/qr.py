"""QR codes of payment requests: the EIP-681 URI of a deposit as a standalone SVG document (segno), drawn
server-side so the credits page and widget need no QR library and no image host."""

from __future__ import annotations

import io

import segno

# Medium error correction: a phone reads it off a screen at an angle; a larger level only makes it denser.
_ERROR_LEVEL = "m"
_SCALE = 4
_QUIET_ZONE_MODULES = 4  # the border QR readers expect


def qr_svg(data: str, *, title: str) -> str:
    """``data`` as a QR code: an SVG document (with its namespace, no XML declaration), black on white whatever
    the page's colours, titled ``title`` for screen readers."""
    code = segno.make(data, error=_ERROR_LEVEL, micro=False)
    out = io.BytesIO()
    code.save(
        out,
        kind="svg",
        scale=_SCALE,
        border=_QUIET_ZONE_MODULES,
        dark="#000",
        light="#fff",
        xmldecl=False,
        svgns=True,
        title=title,
        nl=False,
        omitsize=True,  # a viewBox instead: the page sizes it
    )
    return out.getvalue().decode("utf-8")
