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
    assert "ConnectionError" in browser.message.value

    browser = StudyBrowser(connect(embedded.url))
    browser.delete_button.click()  # nothing chosen yet
    assert "choose a study first" in browser.message.value
    browser.studies.options = [("no such study", "1.2.3.4.5.6.7.8.9")]
    browser.studies.value = "1.2.3.4.5.6.7.8.9"
    browser.target.value = "study"
    browser.delete_button.click()
    browser.confirm_button.click()
    assert "404" in browser.message.value
