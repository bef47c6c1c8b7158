"""The notebook widgets driven through their traits against the embedded server over HTTP."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pydicom
from support import make_dataset, make_files, to_bytes

from dicomframes import connect
from dicomframes.standard.uids import new_uid
from dicomframes.widgets import StudyBrowser, Uploader


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_uploader_folder_and_picked_files_end_up_on_the_server(embedded, tmp_path: Path) -> None:
    client = connect(embedded.url)
    study = new_uid()
    make_files(tmp_path / "folder", 3, study, patient_id="WIDGET-UP")
    picked = make_dataset(study, patient_id="WIDGET-UP")
    (tmp_path / "folder" / "junk.txt").write_text("no")

    uploader = Uploader(client)
    uploader.folder.value = str(tmp_path / "folder")
    uploader.files.value = ({"name": "picked.dcm", "type": "application/dicom",
                             "size": len(to_bytes(picked)), "content": memoryview(
                                 to_bytes(picked)),
                             "last_modified": dt.datetime.now(dt.UTC)},)
    uploader.upload_button.click()
    result = uploader.wait(120)

    assert result is not None and not uploader.running
    assert sorted(result["status"]) == ["failed"] + ["stored"] * 4
    assert "picked.dcm" in set(result["source"])
    assert uploader.progress.value == uploader.progress.max == 5  # the junk file counts too
    assert "junk.txt" in uploader.outcome.value and "failed" in uploader.message.value
    assert uploader.upload_button.disabled is False and uploader.cancel_button.disabled is True

    found = client.search_instances(study=study)
    assert len(found) == 4
    assert set(client.search_studies(PatientID="WIDGET-UP")["StudyInstanceUID"]) == {study}


def test_uploader_cancel_and_empty_input(embedded, tmp_path: Path) -> None:
    client = connect(embedded.url)
    files = make_files(tmp_path, 12)
    uploader = Uploader(client, workers=1, batch_size=1)
    uploader.upload_button.click()
    assert "Choose files" in uploader.message.value and uploader.result is None

    uploader.folder.value = str(tmp_path)
    uploader.upload_button.click()
    uploader.cancel_button.click()
    result = uploader.wait(120)
    assert result is not None and len(result) == len(files)
    # However quickly the server answered, every row is stored or was cancelled.
    statuses = set(zip(result["status"], result["message"], strict=True))
    assert statuses <= {("stored", ""), ("skipped", "cancelled before sending")}
    assert uploader.cancel_button.disabled is True

    # Cancel clicked once the first request is answered: the rest is not sent.
    other = make_files(tmp_path / "more", 6)
    uploader = Uploader(client, workers=1, batch_size=1)
    shown = uploader._on_progress

    def progress_then_cancel(progress) -> None:
        shown(progress)
        uploader.cancel_button.click()

    uploader._on_progress = progress_then_cancel
    uploader.folder.value = str(tmp_path / "more")
    uploader.upload_button.click()
    result = uploader.wait(120)
    assert list(result["status"]) == ["stored"] + ["skipped"] * (len(other) - 1)
    assert "(cancelled)" in uploader.message.value
    assert len(client.search_instances(
        study=str(pydicom.dcmread(other[0]).StudyInstanceUID))) == 1


def _stored_study(client, tmp_path: Path, patient_id: str) -> tuple[str, str, str]:
    study, series_a, series_b = new_uid(), new_uid(), new_uid()
    make_files(tmp_path / "a", 2, study, series_a, patient_id=patient_id, rows=32, cols=24)
    multi = make_files(tmp_path / "b", 1, study, series_b, patient_id=patient_id, rows=20,
                       cols=20, frames=4)
    assert (client.store(tmp_path, progress=False)["status"] == "stored").all()
    return study, series_a, str(pydicom.dcmread(multi[0]).SeriesInstanceUID)


def test_browser_search_view_download_delete(embedded, tmp_path: Path) -> None:
    client = connect(embedded.url)
    study, series_a, series_b = _stored_study(client, tmp_path / "in", "WIDGET-BR")
    browser = StudyBrowser(client)

    browser.patient_id.value = "WIDGET-BR"
    browser.date_from.value = dt.date(2021, 1, 1)
    browser.date_to.value = dt.date(2021, 12, 31)
    browser.search_button.click()
    assert browser.message.value == ""
    assert [value for _, value in browser.studies.options] == [study]
    assert browser.filters()["StudyDate"] == "20210101-20211231"

    browser.studies.value = study
    assert {value for _, value in browser.series.options} == {series_a, series_b}

    browser.series.value = series_b
    assert len(browser.instances.options) == 1
    assert _png_size(browser.image.value) == (20, 20)
    assert browser.frame.max == 4 and not browser.frame.disabled
    first = browser.image.value
    browser.frame.value = 3
    assert browser.image.value != first
    third = browser.image.value
    browser.width.value = max(browser.width.min, browser.width.value / 4)
    assert browser.image.value != third

    browser.series.value = series_a
    assert len(browser.instances.options) == 2 and browser.frame.disabled
    assert _png_size(browser.image.value) == (24, 32)

    browser.folder.value = str(tmp_path / "downloads")
    browser.target.value = "series"
    browser.download_button.click()
    assert len(list((tmp_path / "downloads" / study / series_a).glob("*.dcm"))) == 2
    assert "2 files" in browser.message.value

    browser.delete_button.click()
    assert browser.confirm_box.layout.display == "flex"
    assert series_a in browser.confirm_text.value
    browser.cancel_button.click()
    assert browser.confirm_box.layout.display == "none"
    assert len(client.search_series(study=study)) == 2  # nothing deleted yet

    browser.delete_button.click()
    browser.confirm_button.click()
    assert "deleted series" in browser.message.value
    remaining = client.search_series(study=study)
    assert list(remaining["SeriesInstanceUID"]) == [series_b]
    assert [value for _, value in browser.series.options] == [series_b]


def test_browser_shows_server_errors_instead_of_raising(embedded) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    browser = StudyBrowser(connect(f"http://127.0.0.1:{port}", retries=0, timeout=5))
    browser.search_button.click()
    # The client's connection error, in the red message line, naming the address.
    assert f"127.0.0.1:{port}" in browser.message.value
    assert "#b00020" in browser.message.value

    browser = StudyBrowser(connect(embedded.url))
    browser.delete_button.click()  # nothing chosen yet
    assert "choose a study first" in browser.message.value
    browser.studies.options = [("no such study", "1.2.3.4.5.6.7.8.9")]
    browser.studies.value = "1.2.3.4.5.6.7.8.9"
    browser.target.value = "study"
    browser.delete_button.click()
    browser.confirm_button.click()
    assert "404" in browser.message.value


def _thumbnail_study(client, tmp_path: Path, patient_id: str) -> dict[str, object]:
    """A study of three series: a wide 3-instance series (number 2), a 4-frame series
    (number 1) and a series whose one instance has no pixel data (number 3)."""
    study = new_uid()
    wide = [make_dataset(study, None, i + 1, rows=128, cols=192, patient_id=patient_id)
            for i in range(3)]
    for ds in wide:
        ds.SeriesInstanceUID, ds.SeriesNumber = wide[0].SeriesInstanceUID, 2
        ds.SeriesDescription = "WIDE AXIAL"
    cine = make_dataset(study, rows=20, cols=20, frames=4, patient_id=patient_id)
    cine.SeriesDescription = "CINE"
    report = make_dataset(study, patient_id=patient_id)
    report.SeriesNumber, report.Modality, report.SeriesDescription = 3, "SR", "NOTES"
    for name in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
                 "BitsStored", "HighBit", "PixelRepresentation",
                 "PhotometricInterpretation"):
        delattr(report, name)
    assert (client.store([*wide, cine, report], progress=False)["status"] == "stored").all()
    return {"study": study, "wide": str(wide[0].SeriesInstanceUID),
            "wide_middle": str(wide[1].SOPInstanceUID),
            "cine": str(cine.SeriesInstanceUID), "cine_sop": str(cine.SOPInstanceUID),
            "report": str(report.SeriesInstanceUID)}


def test_browser_series_rows_with_thumbnails_and_frame_navigation(embedded,
                                                                   tmp_path: Path) -> None:
    from dicomframes.widgets.serieslist import placeholder_png, series_thumbnail

    client = connect(embedded.url, history_size=200)
    made = _thumbnail_study(client, tmp_path, "WIDGET-TH")
    study = made["study"]
    browser = StudyBrowser(client)
    browser.patient_id.value = "WIDGET-TH"
    browser.search_button.click()
    browser.studies.value = study

    # One row per series, in SeriesNumber order, with number, modality, count, description.
    assert [uid for _, uid in browser.series.options] == [made["cine"], made["wide"],
                                                          made["report"]]
    labels = [label for label, _ in browser.series.options]
    assert labels == ["#1 · OT · 1 instance · CINE", "#2 · OT · 3 instances · WIDE AXIAL",
                      "#3 · SR · 1 instance · NOTES"]
    rows = browser.series.rows
    assert "Series 2" in rows[made["wide"]].text.value
    assert "3 instances" in rows[made["wide"]].text.value

    # Thumbnails: the middle instance (and the middle frame) rendered by the server, shrunk
    # to fit 96 px; a series without pixels shows the placeholder.
    wide_thumb = rows[made["wide"]].thumbnail.value
    assert _png_size(wide_thumb) == (96, 64)
    assert wide_thumb == series_thumbnail(client, study, made["wide"], made["wide_middle"])
    cine_thumb = rows[made["cine"]].thumbnail.value
    assert _png_size(cine_thumb) == (20, 20)
    assert cine_thumb == series_thumbnail(client, study, made["cine"], made["cine_sop"], 2)
    assert cine_thumb != series_thumbnail(client, study, made["cine"], made["cine_sop"], 1)
    assert rows[made["report"]].thumbnail.value == placeholder_png("no image")
    assert browser.thumbnails[study, made["wide"]] == wide_thumb

    # Cached: opening the study again asks for no rendered picture.
    asked = len(client.history)
    browser.studies.value = None
    browser.studies.value = study
    assert not any("/rendered" in exchange.url for exchange in list(client.history)[asked:])
    assert browser.series.rows[made["wide"]].thumbnail.value == wide_thumb

    # The View button chooses the series: its instances and first frame are shown.
    browser.series.rows[made["cine"]].button.click()
    assert browser.series.value == made["cine"] and browser.target.value == "series"
    assert browser.series.rows[made["cine"]].button.description == "Viewing"
    assert browser.series.rows[made["wide"]].button.description == "View"
    assert [value for _, value in browser.instances.options] == [made["cine_sop"]]
    assert made["cine_sop"][-18:] in browser.instances.options[0][0]
    assert made["cine_sop"] in browser.preview.uid.value  # the full UID, wrapped
    assert browser.frame.max == 4 and browser.frame.value == 1

    # Frames: the slider and the previous/next buttons change the frame shown.
    def frame_pixels(number: int):
        return client.frames(study, made["cine"], made["cine_sop"], frames=[number])

    preview = browser.preview
    assert preview.previous_button.disabled and not preview.next_button.disabled
    assert (browser.pixels == frame_pixels(1)).all()
    first = browser.image.value
    preview.next_button.click()
    assert browser.frame.value == 2 and (browser.pixels == frame_pixels(2)).all()
    assert browser.image.value != first and "frame 2 of 4" in browser.image_info.value
    browser.frame.value = 4
    assert (browser.pixels == frame_pixels(4)).all() and preview.next_button.disabled
    preview.next_button.click()  # stays on the last frame
    assert browser.frame.value == 4
    preview.previous_button.click()
    assert browser.frame.value == 3 and (browser.pixels == frame_pixels(3)).all()

    # A series without pixel data: said so, no error.
    browser.series.value = made["report"]
    assert browser.message.value == ""
    assert browser.image_info.value == "no pixel data in this instance"
    assert browser.image.value == b"" and browser.frame.disabled

    # Without thumbnails: rows without pictures, nothing rendered.
    plain = StudyBrowser(client, thumbnails=False)
    asked = len(client.history)
    plain.studies.options = [("study", study)]
    plain.studies.value = study
    assert len(plain.series.options) == 3
    assert all(row.thumbnail.layout.display == "none" for row in plain.series.rows.values())
    assert not any("/rendered" in exchange.url for exchange in list(client.history)[asked:])
