"""The series list of the study browser: one row per series with a thumbnail, the series
number, modality, description and number of instances, and a button that chooses it.

Thumbnails are the server's rendered picture (``client.rendered``) of each series' middle
instance, shrunk with Pillow; see :func:`series_thumbnail`.
"""

from __future__ import annotations

import functools
import html
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np
import traitlets

from ..errors import DicomFramesError
from .preview import png_bytes

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["SeriesList"]

#: Edge of a thumbnail in pixels.
THUMBNAIL_SIZE = 96
_BORDER = "1px solid #d0d0d0"
_CHOSEN_BORDER = "2px solid #1976d2"


@functools.cache
def placeholder_png(text: str = "no image", size: int = THUMBNAIL_SIZE) -> bytes:
    """A grey square with a word on it: the thumbnail of a series without a picture."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 228)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text)
    draw.text(((size - (box[2] - box[0])) / 2, (size - (box[3] - box[1])) / 2), text,
              fill=90)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def series_thumbnail(client: Client, study: str, series: str, instance: str,
                     frame: int | None = None, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of a small picture of ``instance`` (``frame``, else its first): the server's
    rendered image (``client.rendered``) shrunk to fit ``size`` pixels. An instance the server
    cannot render (no pixel data, an undecodable syntax) gives :func:`placeholder_png`."""
    try:
        array = client.rendered(study, series, instance, frame=frame)
    except (DicomFramesError, OSError, ValueError):
        return placeholder_png("no image", size)
    if array.ndim == 3 and array.shape[2] == 4:  # drop alpha: thumbnails sit on white
        array = array[..., :3]
    return png_bytes(np.ascontiguousarray(array), size)


@dataclass(frozen=True)
class SeriesEntry:
    """What a row of the series list shows."""

    uid: str
    number: str = ""
    modality: str = ""
    description: str = ""
    instances: str = ""

    @property
    def label(self) -> str:
        """One line of text: number, modality, instances, description."""
        parts = [f"#{self.number}" if self.number else "#?", self.modality or "?"]
        if self.instances:
            parts.append(f"{self.instances} instance{'' if self.instances == '1' else 's'}")
        if self.description:
            parts.append(self.description)
        return " · ".join(parts)


class SeriesRow(widgets.HBox):
    """One series: thumbnail, text, and a button that chooses it."""

    def __init__(self, entry: SeriesEntry, size: int, thumbnail: bool = True) -> None:
        self.entry = entry
        self.thumbnail = widgets.Image(
            value=placeholder_png("loading", size) if thumbnail else b"", format="png",
            layout=widgets.Layout(width=f"{size}px", height=f"{size}px", flex="0 0 auto",
                                  object_fit="contain",
                                  display=None if thumbnail else "none"))
        title = html.escape(entry.description or "(no description)")
        count = (f"{entry.instances} instance{'' if entry.instances == '1' else 's'}"
                 if entry.instances else "")
        self.text = widgets.HTML(
            f'<div title="{html.escape(entry.uid, quote=True)}" style="line-height:1.35">'
            f"<b>Series {html.escape(entry.number or '?')}</b> · "
            f"{html.escape(entry.modality or '?')}<br>"
            f'<span style="overflow-wrap:anywhere">{title}</span><br>'
            f'<span style="color:#555">{count}</span></div>',
            layout=widgets.Layout(flex="1 1 auto", min_width="0"))
        self.button = widgets.Button(description="View", tooltip=f"show series {entry.uid}",
                                     layout=widgets.Layout(width="72px", flex="0 0 auto"))
        super().__init__([self.thumbnail, self.text, self.button], layout=widgets.Layout(
            align_items="center", border=_BORDER, padding="4px", margin="0 0 4px 0",
            min_width="0", grid_gap="8px", flex="0 0 auto"))
        self.add_class("dicomframes-series-row")

    def mark(self, chosen: bool) -> None:
        """Highlight the row (the chosen series) or not."""
        self.layout.border = _CHOSEN_BORDER if chosen else _BORDER
        self.button.description = "Viewing" if chosen else "View"
        self.button.button_style = "info" if chosen else ""


class SeriesList(widgets.VBox):
    """The series of a study, one :class:`SeriesRow` each. ``value`` is the chosen
    SeriesInstanceUID (None for none; observe it like a ``Select``'s value), ``options`` the
    rows as ``(label, uid)`` pairs, ``rows`` the row widgets by UID."""

    value = traitlets.Unicode(None, allow_none=True)

    def __init__(self, *, size: int = THUMBNAIL_SIZE) -> None:
        self.size = size
        self.rows: dict[str, SeriesRow] = {}
        self.empty = widgets.HTML("<i>Choose a study to see its series.</i>")
        super().__init__([self.empty], layout=widgets.Layout(
            min_width="0", max_height="440px", overflow="hidden auto"))
        self.add_class("dicomframes-series-list")

    @property
    def options(self) -> list[tuple[str, str]]:
        """The rows as ``(label, SeriesInstanceUID)``, in list order."""
        return [(row.entry.label, uid) for uid, row in self.rows.items()]

    def show(self, entries: list[SeriesEntry], thumbnails: bool = True) -> None:
        """Replace the rows, each with a "loading" thumbnail until :meth:`set_thumbnail`
        (``thumbnails=False``: rows without a picture)."""
        self.rows = {}
        for entry in entries:
            row = SeriesRow(entry, self.size, thumbnails)
            row.button.on_click(functools.partial(self._choose, entry.uid))
            self.rows[entry.uid] = row
        self.children = list(self.rows.values()) or [self.empty]

    def set_thumbnail(self, uid: str, png: bytes) -> None:
        """Show ``png`` as the thumbnail of series ``uid`` (if it is still listed)."""
        if uid in self.rows:
            self.rows[uid].thumbnail.value = png

    def _choose(self, uid: str, *_: object) -> None:
        self.value = uid

    @traitlets.observe("value")
    def _mark(self, change: traitlets.Bunch) -> None:
        for uid, row in self.rows.items():
            row.mark(uid == change["new"])
