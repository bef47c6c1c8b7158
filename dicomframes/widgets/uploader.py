"""An upload panel for notebooks (ipywidgets 8): pick files or a folder, store, see each outcome.

The panel calls ``client.store`` (:func:`dicomframes.client.store.store`) in a background
thread so that the notebook stays responsive and the Cancel button works (it stops after the
requests under way). The outcome table is the DataFrame ``client.store`` returns, kept in
``result``.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

if TYPE_CHECKING:
    import pandas

    from ..client import Client
    from ..client.store import Progress

__all__ = ["Uploader"]

_STATUS_COLOURS = {"stored": "#1b7f3b", "already stored": "#555", "skipped": "#555",
                   "failed": "#b00020"}


class Uploader(widgets.VBox):
    """Store DICOM files from the browser's file picker or a folder on the kernel's machine.

    >>> from dicomframes import connect
    >>> from dicomframes.widgets import Uploader
    >>> Uploader(connect())          # doctest: +SKIP

    Parts (public, so a notebook or a test can drive them): ``files`` (FileUpload, several
    files; zip files are expanded), ``folder`` (a path, file or glob pattern on the kernel's
    machine), ``skip_existing``, ``upload_button``, ``cancel_button``, ``progress``,
    ``status``, ``outcome`` (an HTML table) and ``message``. After an upload ``result`` holds
    the DataFrame of outcomes; :meth:`wait` waits for a running upload.
    """

    def __init__(self, client: Client, *, workers: int | None = None,
                 **store_options: Any) -> None:
        self.client = client
        self.store_options = {"workers": workers, **store_options}
        self.result: pandas.DataFrame | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

        # No accept filter: DICOM files often have no extension at all.
        self.files = widgets.FileUpload(multiple=True, description="Files")
        self.folder = widgets.Text(description="Folder", placeholder="path, folder or *.dcm "
                                   "pattern on the kernel's machine",
                                   layout=widgets.Layout(width="60%"))
        self.skip_existing = widgets.Checkbox(value=False, description="skip what the server has",
                                              indent=False)
        self.upload_button = widgets.Button(description="Upload", button_style="primary",
                                            icon="upload")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Progress")
        self.status = widgets.Label()
        self.message = widgets.HTML()
        self.outcome = widgets.HTML()

        self.upload_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([
            widgets.HBox([self.files, self.folder]),
            widgets.HBox([self.skip_existing, self.upload_button, self.cancel_button]),
            widgets.HBox([self.progress, self.status]),
            self.message,
            self.outcome,
        ])
        self.add_class("dicomframes-uploader")

    # -- what to send -------------------------------------------------------------------

    def items(self) -> list[Any]:
        """What the next upload sends: ``(name, bytes)`` for each picked file, then the folder
        path (as ``client.store`` accepts them)."""
        items: list[Any] = []
        for upload in self.files.value or ():
            content = upload["content"]
            items.append((str(upload["name"]), bytes(content)))
        path = self.folder.value.strip()
        if path:
            items.append(path)
        return items

    # -- running ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while an upload is under way."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start uploading :meth:`items` in a background thread (the Upload button)."""
        if self.running:
            return
        items = self.items()
        if not items:
            self._show_message("Choose files or type a folder first.", error=True)
            return
        self._cancel.clear()
        self.result = None
        self.error = None
        self.outcome.value = ""
        self._show_message("Reading the headers…")
        self.progress.value, self.progress.max = 0, 1
        self.progress.bar_style = ""
        self.status.value = ""
        self.upload_button.disabled = True
        self.cancel_button.disabled = False
        self._thread = threading.Thread(target=self._upload, args=(items,),
                                        name="dicomframes-uploader", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop after the requests under way (the Cancel button); the rest is ``skipped``."""
        self._cancel.set()
        self.cancel_button.disabled = True
        self._show_message("Cancelling after the requests under way…")

    def wait(self, timeout: float | None = None) -> pandas.DataFrame | None:
        """Wait for the running upload (if any) and return its outcome table."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def _on_progress(self, progress: Progress) -> None:
        self.progress.max = max(progress.instances_total, 1)
        self.progress.value = progress.instances_done
        self.status.value = (f"{progress.instances_done}/{progress.instances_total} instances, "
                             f"{progress.bytes_done / 1e6:.1f}/{progress.bytes_total / 1e6:.1f} MB")
        if self.message.value.startswith("<span>Reading"):
            self._show_message("Uploading…")

    def _upload(self, items: list[Any]) -> None:
        from ..client.store import FAILED, summary_text

        try:
            df = self.client.store(items, progress=False, callback=self._on_progress,
                                   cancel=self._cancel,
                                   skip_existing=self.skip_existing.value,
                                   **self.store_options)
        except Exception as exc:
            self.error = exc
            self._show_error(exc)
            self.progress.bar_style = "danger"
        else:
            self.result = df
            failed = bool((df["status"] == FAILED).any())
            self.progress.bar_style = "warning" if failed else "success"
            if len(df) and self.progress.value == 0 and not failed:
                self.progress.max, self.progress.value = 1, 1
            self._show_message(summary_text(df) + (" (cancelled)" if self._cancel.is_set()
                                                     else ""), error=failed)
            self.outcome.value = _table_html(df)
        finally:
            self.upload_button.disabled = False
            self.cancel_button.disabled = True

    def _show_message(self, text: str, error: bool = False) -> None:
        style = ' style="color:#b00020"' if error else ""
        self.message.value = f"<span{style}>{html.escape(text)}</span>"

    def _show_error(self, exc: BaseException) -> None:
        from ..errors import DICOMwebError

        if isinstance(exc, DICOMwebError):
            text = f"The server answered {exc.status}: {exc.message[:300]}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        self._show_message(text, error=True)


def _table_html(df: pandas.DataFrame, max_rows: int = 500) -> str:
    """The outcome table as HTML, with the status coloured."""
    shown = df[["source", "SOPInstanceUID", "status", "reason", "message"]].head(max_rows)
    rows = []
    for _, row in shown.iterrows():
        colour = _STATUS_COLOURS.get(str(row["status"]), "#000")
        reason = "" if row["reason"] is None or str(row["reason"]) == "<NA>" else row["reason"]
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v if v is not None else ''))}</td>"
                             for v in (row["source"], row["SOPInstanceUID"]))
            + f'<td style="color:{colour}">{html.escape(str(row["status"]))}</td>'
            + f"<td>{html.escape(str(reason))}</td>"
            + f"<td>{html.escape(str(row['message'] or ''))}</td></tr>")
    more = (f"<p>… {len(df) - max_rows} more rows in <code>uploader.result</code></p>"
            if len(df) > max_rows else "")
    return ("<table class='dicomframes-outcome'><thead><tr><th>source</th><th>SOPInstanceUID"
            "</th><th>status</th><th>reason</th><th>message</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + more)
