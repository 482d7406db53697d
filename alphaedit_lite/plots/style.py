"""One look for every figure of the kit: the palette (Okabe-Ito, colour-blind safe), PNG export, HTML tables."""
from __future__ import annotations

import html
import io
from typing import Mapping, Sequence

__all__ = ["COLORS", "RUN_COLORS", "BEFORE_COLOR", "AFTER_COLOR", "figure_to_png", "html_table"]

#: named colours shared by the plotly and matplotlib figures
COLORS = {"keys": "#0072B2", "plane": "#56B4E9", "null": "#009E73", "update": "#D55E00",
          "projected": "#CC79A7", "memit": "#D55E00", "alphaedit": "#009E73", "cutoff": "#000000",
          "kept": "#F0E442"}
#: one colour per run or method where several sit side by side (the same Okabe-Ito colours, in order)
RUN_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
#: the model before an edit (grey) and after it (vermillion)
BEFORE_COLOR, AFTER_COLOR = "#999999", COLORS["update"]


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (works with any backend, no display needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def html_table(rows: Sequence[Sequence[str]] | Mapping[str, str], header: Sequence[str] | None = None,
               highlight: int | None = None) -> str:
    """A plain HTML table of ``rows`` (a mapping gives two columns, name and value); ``highlight`` marks one row."""
    if isinstance(rows, Mapping):
        rows = list(rows.items())

    def cell(tag, v):
        return f"<{tag} style='padding:1px 10px 1px 0;text-align:left'>{html.escape(str(v))}</{tag}>"

    out = ["<table style='border-collapse:collapse'>"]
    if header:
        out.append("<tr>" + "".join(cell("th", h) for h in header) + "</tr>")
    for i, r in enumerate(rows):
        style = " style='background:#fff3b0'" if highlight is not None and i == highlight else ""
        out.append(f"<tr{style}>" + "".join(cell("td", v) for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)
