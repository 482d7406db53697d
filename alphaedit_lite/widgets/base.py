"""What every explorer shares: a static PNG + table + text where no widget front end exists.

In JupyterLab an explorer is an ipywidgets ``VBox``; under nbclient/nbconvert or in a terminal the
mime bundle of :class:`StaticFallback` carries a PNG (matplotlib), an HTML table and a text summary
instead, so every notebook still shows (and tests still read) what the widget would.
"""
from __future__ import annotations

import base64
import json

from alphaedit_lite.plots.style import figure_to_png, html_table

__all__ = ["StaticFallback", "ImageReadout", "plotly_output"]


def plotly_output(fig) -> dict:
    """One display_data output holding a plotly figure (JupyterLab's plotly renderer, or HTML)."""
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                     "text/html": fig.to_html(include_plotlyjs="cdn", full_html=False),
                     "text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"}}


class StaticFallback:
    """Mixin for VBox widgets: where no widget front end exists, show a PNG, a table and text.

    Subclasses provide ``_static_figure()`` (a matplotlib Figure or None), ``_table_html()`` and
    ``_summary_text()``; the PNG is rendered lazily and remembered until ``_invalidate()``.
    """

    _png: bytes | None = None

    def _invalidate(self) -> None:
        self._png = None

    def static_png(self) -> bytes:
        """PNG bytes of the current static figure (b"" when there is nothing to draw)."""
        if self._png is None:
            fig = self._static_figure()
            self._png = figure_to_png(fig) if fig is not None else b""
        return self._png

    def _repr_mimebundle_(self, **kwargs):
        data = dict(super()._repr_mimebundle_(**kwargs) or {})
        png = self.static_png()
        img = f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'/>" if png else ""
        data["text/plain"] = self._summary_text()
        data["text/html"] = self._table_html() + img
        if png:
            data["image/png"] = base64.b64encode(png).decode()
        return data


class ImageReadout(StaticFallback):
    """A :class:`StaticFallback` whose view is an ``Image`` widget (``self.image``) and an ``HTML``
    readout (``self.readout``), both set at once by :meth:`_set_outputs`."""

    _summary: str = ""

    def _set_outputs(self, fig, rows: dict[str, str], summary: str) -> None:
        self.image.value = self._png = figure_to_png(fig)
        self.readout.value = html_table(rows)
        self._summary = summary

    def static_png(self) -> bytes:
        return self.image.value

    def _table_html(self) -> str:
        return self.readout.value

    def _summary_text(self) -> str:
        return self._summary
