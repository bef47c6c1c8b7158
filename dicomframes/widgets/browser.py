"""A study browser for notebooks (ipywidgets 8): search, pick a series, look at its frames.

Everything the browser does is a call a user could type: ``client.search_studies``,
``client.search_series``, ``client.search_instances``, ``client.metadata``, ``client.frames``,
:func:`dicomframes.client.download.download` and ``client.delete``; windowing comes from
:func:`dicomframes.pixels.apply_window`. Errors from the server appear in the message line of
the widget, never as a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import html
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

if TYPE_CHECKING:
    import pandas

    from ..client import Client

__all__ = ["StudyBrowser"]

_STYLE = ("<style>.dicomframes-mono select, .dicomframes-mono option "
          "{font-family: monospace; white-space: pre;}</style>")


def _cell(value: Any, width: int) -> str:
    """A fixed-width text cell for the list labels (missing values left blank)."""
    text = _plain(value)
    return (text[: width - 1] + "…") if len(text) > width else text.ljust(width)


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, (list, tuple, np.ndarray))
                               and pd.isna(value)):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y-%m-%d")
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, (list, tuple, np.ndarray)):
        return "\\".join(_plain(v) for v in value)
    return str(value)


def _get(row: Any, name: str) -> Any:
    return row[name] if name in row.index else None


def _first_number(value: Any) -> float | None:
    if isinstance(value, (list, tuple, np.ndarray)):
        value = value[0] if len(value) else None
    if isinstance(value, str):
        value = value.split("\\")[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class StudyBrowser(widgets.VBox):
    """Browse a DICOMweb archive: search studies, choose a study, a series, an instance; view
    its frames with a frame slider and windowing; download or delete the selection.

    >>> from dicomframes import connect
    >>> from dicomframes.widgets import StudyBrowser
    >>> StudyBrowser(connect())          # doctest: +SKIP

    The parts are public attributes (``patient_name``, ``search_button``, ``studies``,
    ``series``, ``instances``, ``frame``, ``center``, ``width``, ``image``, ``folder``,
    ``download_button``, ``delete_button``, ``confirm_button``, ``message``...) so a notebook or
    a test can drive them. The last search results are DataFrames in ``study_table``,
    ``series_table`` and ``instance_table``.
    """

    def __init__(self, client: Client, *, limit: int = 100,
                 folder: str = "dicom-downloads") -> None:
        self.client = client
        self.limit = limit
        self.study_table: pandas.DataFrame | None = None
        self.series_table: pandas.DataFrame | None = None
        self.instance_table: pandas.DataFrame | None = None
        self.pixels: np.ndarray | None = None
        self._meta: pandas.Series | None = None
        self._quiet = False

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

        self.studies_header = widgets.HTML()
        self.studies = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="100%"))
        self.series = widgets.Select(options=[], rows=6, layout=widgets.Layout(width="100%"))
        self.instances = widgets.Select(options=[], rows=6,
                                        layout=widgets.Layout(width="100%"))
        for select in (self.studies, self.series, self.instances):
            select.add_class("dicomframes-mono")

        self.frame = widgets.IntSlider(description="Frame", min=1, max=1, value=1,
                                       continuous_update=False, disabled=True)
        self.center = widgets.FloatSlider(description="Center", continuous_update=False,
                                          disabled=True)
        self.width = widgets.FloatSlider(description="Width", min=1, continuous_update=False,
                                         disabled=True)
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            width="384px", height="auto", object_fit="contain"))
        self.image_info = widgets.HTML()

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
                                        layout=widgets.Layout(display="none"))

        self.search_button.on_click(self._guard(self.search))
        self.studies.observe(self._guard(self._on_study), names="value")
        self.series.observe(self._guard(self._on_series), names="value")
        self.instances.observe(self._guard(self._on_instance), names="value")
        self.frame.observe(self._guard(self._on_frame), names="value")
        self.center.observe(self._guard(self._on_window), names="value")
        self.width.observe(self._guard(self._on_window), names="value")
        self.download_button.on_click(self._guard(self.download))
        self.delete_button.on_click(self._guard(self.ask_delete))
        self.confirm_button.on_click(self._guard(self.delete))
        self.cancel_button.on_click(self._guard(self._cancel_delete))

        form = widgets.GridBox(
            [self.patient_name, self.patient_id, self.date_from, self.date_to, self.modality,
             self.accession, self.description, self.search_button],
            layout=widgets.Layout(grid_template_columns="repeat(auto-fill, minmax(270px, 1fr))",
                                  grid_gap="4px"),
        )
        viewer = widgets.VBox([self.frame, self.center, self.width, self.image_info])
        super().__init__([
            widgets.HTML(_STYLE),
            form,
            self.message,
            self.studies_header,
            self.studies,
            widgets.HBox([
                widgets.VBox([widgets.HTML("<b>Series</b> (number, modality, instances, "
                                           "description)"), self.series,
                              widgets.HTML("<b>Instances</b> (number, frames, "
                                           "SOPInstanceUID)"), self.instances],
                             layout=widgets.Layout(width="50%")),
                widgets.VBox([self.image, viewer], layout=widgets.Layout(width="50%")),
            ]),
            widgets.HBox([self.target, self.folder, self.download_button,
                          self.delete_button]),
            self.confirm_box,
        ])
        self.add_class("dicomframes-study-browser")

    # -- plumbing -------------------------------------------------------------------------

    def _guard(self, func: Callable[..., Any]) -> Callable[..., None]:
        """Run a handler; show any error in the message line instead of raising."""

        @functools.wraps(func)
        def handler(*args: Any) -> None:
            if self._quiet:
                return
            try:
                func()
            except Exception as exc:
                self.show_error(exc)

        return handler

    @contextlib.contextmanager
    def _silently(self) -> Iterator[None]:
        previous, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = previous

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
        with self._silently():
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
            filters["StudyDate"] = (f"{start.strftime('%Y%m%d') if start else ''}-"
                                    f"{end.strftime('%Y%m%d') if end else ''}")
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
            f"<pre style='margin:0'>{html.escape(header)}</pre>")
        self._set_options(self.studies, options)

    def _clear_series(self) -> None:
        self._set_options(self.series, [])
        self._clear_instances()

    def _clear_instances(self) -> None:
        self._set_options(self.instances, [])
        self.instance_table = None
        self._meta = None
        self.pixels = None
        self.image.value = b""
        self.image_info.value = ""
        for slider in (self.frame, self.center, self.width):
            slider.disabled = True

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
        options = []
        for _, row in df.iterrows():
            label = " ".join([
                _cell(_get(row, "SeriesNumber"), 4), _cell(_get(row, "Modality"), 4),
                _cell(_get(row, "NumberOfSeriesRelatedInstances"), 5),
                _cell(_get(row, "SeriesDescription"), 30),
            ])
            options.append((label, str(row["SeriesInstanceUID"])))
        self._set_options(self.series, options)

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
            label = " ".join([
                _cell(_get(row, "InstanceNumber"), 5),
                _cell(_get(row, "NumberOfFrames") or 1, 4),
                _cell(row["SOPInstanceUID"], 64),
            ])
            options.append((label, str(row["SOPInstanceUID"])))
        self._set_options(self.instances, options)
        if options:
            with self._silently():
                self.instances.index = 0
            self._show_instance()

    def _on_instance(self) -> None:
        self.target.value = "instance"
        self._show_instance()

    # -- the frame viewer -----------------------------------------------------------------

    def _show_instance(self) -> None:
        study, series, sop = self.studies.value, self.series.value, self.instances.value
        if not (study and series and sop):
            return
        meta = self.client.metadata(study, series, sop)
        row = meta.iloc[0]
        self._meta = row
        frames = int(_first_number(_get(row, "NumberOfFrames")) or 1)
        with self._silently():
            self.frame.max = max(frames, 1)
            self.frame.value = 1
            self.frame.disabled = frames <= 1
        self._load_frame(reset_window=True)

    def _on_frame(self) -> None:
        self._load_frame(reset_window=False)

    def _load_frame(self, reset_window: bool) -> None:
        from ..pixels import apply_modality_lut

        study, series, sop = self.studies.value, self.series.value, self.instances.value
        if not (study and series and sop) or self._meta is None:
            return
        row = self._meta
        samples = int(_first_number(_get(row, "SamplesPerPixel")) or 1)
        arr = np.asarray(self.client.frames(study, series, sop, frames=[self.frame.value]))
        if arr.ndim == (3 if samples == 1 else 4) and arr.shape[0] == 1:
            arr = arr[0]
        if samples == 1:
            arr = apply_modality_lut(arr, _get(row, "RescaleSlope"),
                                     _get(row, "RescaleIntercept"))
        self.pixels = arr
        if samples == 1:
            if reset_window:
                self._reset_window(arr, row)
            for slider in (self.center, self.width):
                slider.disabled = False
        else:
            for slider in (self.center, self.width):
                slider.disabled = True
        self._render()

    def _reset_window(self, arr: np.ndarray, row: Any) -> None:
        low, high = float(np.min(arr)), float(np.max(arr))
        span = max(high - low, 1.0)
        center = _first_number(_get(row, "WindowCenter"))
        width = _first_number(_get(row, "WindowWidth"))
        if center is None or width is None or width < 1:
            center, width = (low + high) / 2, span
        with self._silently():
            self.center.min, self.center.max = min(low - span, center), max(high + span, center)
            self.center.step = max(span / 500, 0.01)
            self.center.value = center
            self.width.max = max(2 * span, width, 2.0)
            self.width.min = 1.0
            self.width.step = max(span / 500, 0.01)
            self.width.value = max(width, 1.0)

    def _on_window(self) -> None:
        self._render()

    def _render(self) -> None:
        from ..pixels import apply_window

        arr = self.pixels
        if arr is None:
            return
        row = self._meta
        photometric = _plain(_get(row, "PhotometricInterpretation")) if row is not None else ""
        if arr.ndim == 2:
            shown = apply_window(arr, self.center.value, self.width.value,
                                 invert=photometric == "MONOCHROME1")
            image = (shown * 255 + 0.5).astype(np.uint8)
        else:
            image = arr
            if image.dtype != np.uint8:
                top = float(np.max(image)) or 1.0
                image = (image.astype(np.float64) / top * 255).astype(np.uint8)
        self.image.value = _png(image)
        rows, cols = arr.shape[:2]
        self.image_info.value = (
            f"{cols}×{rows} {html.escape(photometric)}, frame {self.frame.value} of "
            f"{self.frame.max}")

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
