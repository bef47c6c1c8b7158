"""A study browser for notebooks (ipywidgets 8): search, pick a series, look at its frames.

Everything the browser does is a call a user could type: ``client.search_studies``,
``client.search_series``, ``client.search_instances``, ``client.metadata``, ``client.frames``,
``client.rendered`` (the series thumbnails), :func:`dicomframes.client.download.download` and
``client.delete``; windowing comes from :func:`dicomframes.convert.pixels.apply_window`. Errors from
the server appear in the message line of the widget, never as a traceback.

The parts sit in a grid that wraps instead of overlapping: the study list on top, then the
series list (:mod:`.serieslist`) and instance list beside the frame preview (:mod:`.preview`)
when there is room for both, below each other when there is not.
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..standard.lut import first_number
from ..standard.temporal import query_date
from .events import HandlerGuard
from .preview import FramePreview, short_uid, text_of
from .serieslist import (
    THUMBNAIL_SIZE,
    SeriesEntry,
    SeriesList,
    placeholder_png,
    series_thumbnail,
)

if TYPE_CHECKING:
    import pandas

    from ..client import Client

__all__ = ["StudyBrowser"]

_STYLE = ("<style>.dicomframes-mono select, .dicomframes-mono option "
          "{font-family: monospace; white-space: pre;}</style>")


def _cell(value: Any, width: int) -> str:
    """A fixed-width text cell for the list labels (missing values left blank)."""
    text = text_of(value)
    return (text[: width - 1] + "…") if len(text) > width else text.ljust(width)


def _get(row: Any, name: str) -> Any:
    return row[name] if name in row.index else None


class StudyBrowser(widgets.VBox):
    """Browse a DICOMweb archive: search studies, choose a study, a series (each shown with a
    thumbnail), an instance; view its frames with a frame slider (arrow keys when focused) or
    the previous/next buttons, and windowing; download or delete the selection.

    >>> from dicomframes import connect
    >>> from dicomframes.widgets import StudyBrowser
    >>> StudyBrowser(connect())          # doctest: +SKIP

    The parts are public attributes (``patient_name``, ``search_button``, ``studies``,
    ``series`` (a :class:`~dicomframes.widgets.serieslist.SeriesList`), ``instances``,
    ``preview`` with its ``frame``, ``center``, ``width``, ``image`` (also reachable from the
    browser), ``folder``, ``download_button``, ``delete_button``, ``confirm_button``,
    ``message``...) so a notebook or a test can drive them. The last search results are
    DataFrames in ``study_table``, ``series_table`` and ``instance_table``; thumbnails
    (PNG bytes) are kept in ``thumbnails`` by ``(study, series)`` and fetched once.
    ``thumbnails=False`` lists series without fetching pictures.
    """

    def __init__(self, client: Client, *, limit: int = 100,
                 folder: str = "dicom-downloads", thumbnails: bool = True,
                 thumbnail_size: int = THUMBNAIL_SIZE) -> None:
        self.client = client
        self.limit = limit
        self.show_thumbnails = thumbnails
        self.thumbnail_size = thumbnail_size
        self.thumbnails: dict[tuple[str, str], bytes] = {}
        self.study_table: pandas.DataFrame | None = None
        self.series_table: pandas.DataFrame | None = None
        self.instance_table: pandas.DataFrame | None = None
        self._events = HandlerGuard(self.show_error)

        label = {"description_width": "80px"}
        text = functools.partial(widgets.Text, continuous_update=False, style=label,
                                 layout=widgets.Layout(width="auto"))
        self.patient_name = text(description="Patient", placeholder="name, e.g. Doe*")
        self.patient_id = text(description="Patient ID")
        self.date_from = widgets.DatePicker(description="From", style=label,
                                            layout=widgets.Layout(width="auto"))
        self.date_to = widgets.DatePicker(description="To", style=label,
                                          layout=widgets.Layout(width="auto"))
        self.modality = widgets.Combobox(description="Modality", placeholder="CT, MR...",
                                         options=["CT", "MR", "CR", "DX", "US", "OT", "PT",
                                                  "NM", "XA", "MG", "SM"],
                                         style=label, layout=widgets.Layout(width="auto"))
        self.accession = text(description="Accession")
        self.description = text(description="Description", placeholder="words of it")
        self.search_button = widgets.Button(description="Search", button_style="primary",
                                            icon="search")
        self.message = widgets.HTML()

        self.studies_header = widgets.HTML(layout=widgets.Layout(overflow="hidden"))
        self.studies = widgets.Select(options=[], rows=8,
                                      layout=widgets.Layout(width="100%", margin="2px 0"))
        self.studies.add_class("dicomframes-mono")
        self.studies.add_class("dicomframes-studies")
        self.series = SeriesList(size=thumbnail_size)
        self.instances = widgets.Select(options=[], rows=6,
                                        layout=widgets.Layout(width="100%", margin="2px 0"))
        self.instances.add_class("dicomframes-mono")
        self.instances.add_class("dicomframes-instances")
        self.preview = FramePreview(client, on_error=self.show_error)
        self.frame, self.center, self.width = (self.preview.frame, self.preview.center,
                                               self.preview.width)
        self.image, self.image_info = self.preview.image, self.preview.image_info

        self.target = widgets.ToggleButtons(options=["study", "series", "instance"],
                                            value="study", description="Selection",
                                            style={"button_width": "80px"})
        self.folder = widgets.Text(value=folder, description="Folder")
        self.download_button = widgets.Button(description="Download", icon="download")
        self.delete_button = widgets.Button(description="Delete…", button_style="danger",
                                            icon="trash")
        self.confirm_text = widgets.HTML()
        self.confirm_button = widgets.Button(description="Yes, delete", button_style="danger")
        self.cancel_button = widgets.Button(description="Keep it")
        self.confirm_box = widgets.HBox([self.confirm_text, self.confirm_button,
                                         self.cancel_button],
                                        layout=widgets.Layout(display="none",
                                                              flex_flow="row wrap"))

        self.search_button.on_click(self._events.guard(self.search))
        self.studies.observe(self._events.guard(self._on_study), names="value")
        self.series.observe(self._events.guard(self._on_series), names="value")
        self.instances.observe(self._events.guard(self._on_instance), names="value")
        self.download_button.on_click(self._events.guard(self.download))
        self.delete_button.on_click(self._events.guard(self.ask_delete))
        self.confirm_button.on_click(self._events.guard(self.delete))
        self.cancel_button.on_click(self._events.guard(self._cancel_delete))

        form = widgets.GridBox(
            [self.patient_name, self.patient_id, self.date_from, self.date_to, self.modality,
             self.accession, self.description, self.search_button],
            layout=widgets.Layout(grid_template_columns="repeat(auto-fill, minmax(270px, 1fr))",
                                  grid_gap="4px"),
        )
        lists = widgets.VBox([
            widgets.HTML("<b>Series</b> <span style='color:#555'>(choose one to see its "
                         "instances)</span>"), self.series,
            widgets.HTML("<b>Instances</b> <span style='color:#555'>(number, frames, end of "
                         "the SOP Instance UID)</span>"), self.instances,
        ], layout=widgets.Layout(min_width="0", overflow="hidden"))
        lists.add_class("dicomframes-lists")
        # Two columns when each gets 340 px, one below the other otherwise: never on top.
        body = widgets.GridBox([lists, self.preview], layout=widgets.Layout(
            grid_template_columns="repeat(auto-fit, minmax(340px, 1fr))", grid_gap="12px",
            width="100%"))
        actions = widgets.HBox([self.target, self.folder, self.download_button,
                                self.delete_button],
                               layout=widgets.Layout(flex_flow="row wrap", grid_gap="4px"))
        super().__init__([
            widgets.HTML(_STYLE), form, self.message, self.studies_header, self.studies, body,
            actions, self.confirm_box,
        ], layout=widgets.Layout(min_width="0"))
        self.add_class("dicomframes-study-browser")

    @property
    def pixels(self) -> np.ndarray | None:
        """The frame shown, in output units (modality LUT applied), before windowing."""
        return self.preview.pixels

    # -- plumbing -------------------------------------------------------------------------

    def show_error(self, exc: BaseException | str) -> None:
        """Show an error in the message line (the server's status and words when known)."""
        from ..errors import DICOMwebError

        if isinstance(exc, DICOMwebError):
            text = f"The server answered {exc.status} to {exc.method}"
            if exc.message:
                text += f": {exc.message[:300]}"
        else:
            text = str(exc) if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.message.value = f'<span style="color:#b00020">{html.escape(text)}</span>'

    def show_info(self, text: str) -> None:
        """Show a plain message in the message line."""
        self.message.value = f"<span>{html.escape(text)}</span>"

    def _set_options(self, select: widgets.Select, options: list[tuple[str, str]]) -> None:
        with self._events.silently():
            select.options = options
            select.index = None

    # -- search and selection -------------------------------------------------------------

    def filters(self) -> dict[str, Any]:
        """The QIDO-RS filters the search form stands for (what :meth:`search` sends)."""
        filters: dict[str, Any] = {}
        name = self.patient_name.value.strip()
        if name:
            filters["PatientName"] = name if any(c in name for c in "*?") else f"{name}*"
        for field, key in ((self.patient_id, "PatientID"), (self.accession, "AccessionNumber"),
                           (self.modality, "ModalitiesInStudy")):
            if field.value.strip():
                filters[key] = field.value.strip()
        words = self.description.value.strip()
        if words:
            filters["StudyDescription"] = words if any(c in words for c in "*?") \
                else f"*{words}*"
        start, end = self.date_from.value, self.date_to.value
        if start or end:
            filters["StudyDate"] = (f"{query_date(start) if start else ''}-"
                                    f"{query_date(end) if end else ''}")
        return filters

    def search(self) -> None:
        """Search studies with the form's filters and list them."""
        self.message.value = ""
        df = self.client.search_studies(limit=self.limit, **self.filters())
        self.study_table = df
        self._clear_series()
        options = []
        for _, row in df.iterrows():
            label = " ".join([
                _cell(_get(row, "PatientName"), 22), _cell(_get(row, "PatientID"), 12),
                _cell(_get(row, "StudyDate"), 10), _cell(_get(row, "ModalitiesInStudy"), 8),
                _cell(_get(row, "AccessionNumber"), 10), _cell(_get(row, "StudyDescription"), 30),
            ])
            options.append((label, str(row["StudyInstanceUID"])))
        header = " ".join([_cell("Patient", 22), _cell("ID", 12), _cell("Date", 10),
                           _cell("Modality", 8), _cell("Accession", 10),
                           _cell("Description", 30)])
        self.studies_header.value = (
            f"<b>{len(options)} stud{'y' if len(options) == 1 else 'ies'}</b>"
            f"<pre style='margin:0;white-space:pre;overflow:hidden'>{html.escape(header)}</pre>")
        self._set_options(self.studies, options)

    def _clear_series(self) -> None:
        with self._events.silently():
            self.series.value = None
        self.series.show([])
        self.series_table = None
        self._clear_instances()

    def _clear_instances(self) -> None:
        self._set_options(self.instances, [])
        self.instance_table = None
        self.preview.clear()

    def _on_study(self) -> None:
        self.target.value = "study"
        self._load_series()

    def _load_series(self) -> None:
        self._clear_series()
        study = self.studies.value
        if not study:
            return
        df = self.client.search_series(study=study)
        if "SeriesNumber" in df.columns:
            df = df.sort_values("SeriesNumber", na_position="last", kind="stable")
        self.series_table = df
        entries = []
        for _, row in df.iterrows():
            count = first_number(_get(row, "NumberOfSeriesRelatedInstances"))
            entries.append(SeriesEntry(
                uid=str(row["SeriesInstanceUID"]), number=text_of(_get(row, "SeriesNumber")),
                modality=text_of(_get(row, "Modality")),
                description=text_of(_get(row, "SeriesDescription")),
                instances="" if count is None else str(int(count))))
        self.series.show(entries, thumbnails=self.show_thumbnails)
        if self.show_thumbnails and entries:
            self._load_thumbnails(study, [entry.uid for entry in entries])

    def _load_thumbnails(self, study: str, series: list[str]) -> None:
        """Fill the rows' thumbnails, fetching only those not fetched before (one QIDO for
        the study's instances, then one rendered picture per series)."""
        missing = [uid for uid in series if (study, uid) not in self.thumbnails]
        middles = self.middle_instances(study) if missing else {}
        for uid in series:
            if (study, uid) not in self.thumbnails:
                middle = middles.get(uid)
                self.thumbnails[study, uid] = series_thumbnail(
                    self.client, study, uid, *middle, size=self.thumbnail_size) \
                    if middle else placeholder_png("no image", self.thumbnail_size)
            self.series.set_thumbnail(uid, self.thumbnails[study, uid])

    def middle_instances(self, study: str) -> dict[str, tuple[str, int | None]]:
        """For each series of ``study``: its middle instance by InstanceNumber and, for a
        multi-frame one, its middle frame (else None), from one ``client.search_instances``."""
        df = self.client.search_instances(study=study)
        if df.empty or "SeriesInstanceUID" not in df.columns:
            return {}
        if "InstanceNumber" in df.columns:
            df = df.sort_values("InstanceNumber", na_position="last", kind="stable")
        middles: dict[str, tuple[str, int | None]] = {}
        for uid, group in df.groupby("SeriesInstanceUID", sort=False):
            row = group.iloc[len(group) // 2]
            frames = int(first_number(_get(row, "NumberOfFrames")) or 1)
            middles[str(uid)] = (str(row["SOPInstanceUID"]),
                                 (frames + 1) // 2 if frames > 1 else None)
        return middles

    def _on_series(self) -> None:
        self.target.value = "series"
        self._load_instances()

    def _load_instances(self) -> None:
        self._clear_instances()
        study, series = self.studies.value, self.series.value
        if not (study and series):
            return
        df = self.client.search_instances(study=study, series=series)
        if "InstanceNumber" in df.columns:
            df = df.sort_values("InstanceNumber", na_position="last", kind="stable")
        self.instance_table = df
        options = []
        for _, row in df.iterrows():
            frames = int(first_number(_get(row, "NumberOfFrames")) or 1)
            label = " ".join([
                _cell(_get(row, "InstanceNumber"), 5),
                _cell(f"{frames} frame{'s' if frames != 1 else ''}", 10),
                short_uid(str(row["SOPInstanceUID"])),
            ])
            options.append((label, str(row["SOPInstanceUID"])))
        self._set_options(self.instances, options)
        if options:
            with self._events.silently():
                self.instances.index = 0
            self._show_instance()

    def _on_instance(self) -> None:
        self.target.value = "instance"
        self._show_instance()

    def _show_instance(self) -> None:
        study, series, sop = self.studies.value, self.series.value, self.instances.value
        if study and series and sop:
            self.preview.show(study, series, sop)

    # -- download and delete --------------------------------------------------------------

    def selection(self) -> tuple[str, str | None, str | None]:
        """(study, series, instance) the Download and Delete buttons act on, as chosen by
        ``target`` (a level without a choice raises ``ValueError``)."""
        study, series, sop = self.studies.value, self.series.value, self.instances.value
        if not study:
            raise ValueError("choose a study first")
        if self.target.value == "study":
            return study, None, None
        if not series:
            raise ValueError("choose a series first")
        if self.target.value == "series":
            return study, series, None
        if not sop:
            raise ValueError("choose an instance first")
        return study, series, sop

    def _describe(self, selection: tuple[str, str | None, str | None]) -> str:
        study, series, sop = selection
        if sop:
            return f"instance {sop}"
        if series:
            return f"series {series}"
        return f"study {study}"

    def download(self) -> None:
        """Retrieve the selection into ``folder`` (STUDY/SERIES/SOP.dcm files)."""
        from ..client.download import download

        selection = self.selection()
        paths = download(self.client, self.folder.value or ".", *selection)
        self.show_info(f"{len(paths)} file{'s' if len(paths) != 1 else ''} of "
                       f"{self._describe(selection)} written under {self.folder.value}")

    def ask_delete(self) -> None:
        """Ask for confirmation before deleting the selection."""
        selection = self.selection()
        self.confirm_text.value = (f"<b>Delete {html.escape(self._describe(selection))} from "
                                   "the server?</b> This cannot be undone.")
        self.confirm_box.layout.display = "flex"

    def _cancel_delete(self) -> None:
        self.confirm_box.layout.display = "none"

    def delete(self) -> None:
        """Delete the selection on the server (the Yes button after :meth:`ask_delete`)."""
        self.confirm_box.layout.display = "none"
        selection = self.selection()
        from ..errors import NotFound

        self.client.delete(*selection)
        _, series, sop = selection
        try:
            if sop:
                self._load_instances()
            elif series:
                self._load_series()
            else:
                self.search()
        except NotFound:
            self.search()
        self.show_info(f"deleted {self._describe(selection)}")
