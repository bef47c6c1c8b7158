"""The StudyBrowser in a real browser: JupyterLab started headless, Debian's Chromium driven by
Playwright (the system browser, never a downloaded one): a search, series rows with thumbnails,
keyboard frame navigation, and at 1400 and 1000 px no part drawn over another (element bounding
boxes), with a screenshot of each width under the test's tmp_path."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import make_dataset, make_files, require

from dicomframes import connect
from dicomframes.standard.uids import new_uid

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DICOMFRAMES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
PATIENT_ID = "BROWSER-UI-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _notebook(url: str) -> dict:
    source = (
        "from dicomframes import connect\n"
        "from dicomframes.widgets import StudyBrowser\n"
        f"browser = StudyBrowser(connect({url!r}))\n"
        "browser"
    )
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "browser",
                   "metadata": {}, "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


@pytest.fixture
def jupyterlab(tmp_path: Path, embedded) -> Iterator[tuple[str, str]]:
    """JupyterLab on a free loopback port with a notebook that shows a StudyBrowser of the
    embedded server; yields (notebook URL, token)."""
    require(shutil.which(CHROMIUM) is not None, "Chromium", "apt-get install chromium")
    require(importlib.util.find_spec("playwright") is not None, "Playwright",
            "pip install playwright (no browser download: the system Chromium is used)")
    require(importlib.util.find_spec("jupyterlab") is not None, "JupyterLab",
            "pip install jupyterlab")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "browser.ipynb").write_text(json.dumps(_notebook(embedded.url)))
    # No "official Jupyter news?" question over the widget in the screenshot.
    notification = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                      ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                      ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
        env[name] = str(tmp_path / sub)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        "--allow-root",  # CI containers run as root
    ]
    log = (tmp_path / "jupyterlab.log").open("wb")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/api/status", params={"token": token},
                                timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n"
                                   + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.3)
        yield f"{base}/lab/tree/browser.ipynb?reset&token={token}", token
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _boxes_overlap(a: dict, b: dict) -> bool:
    """True when two bounding boxes share more than a pixel of area."""
    width = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    height = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return width > 1 and height > 1


def _stored_study(folder: Path) -> tuple[str, str, str]:
    """A study of two series: three 64x64 instances (series 1) and one instance of four
    48x48 frames (series 2); returns (study, first series, multi-frame series)."""
    study, series, cine = new_uid(), new_uid(), new_uid()
    make_files(folder / "a", 3, study, series, patient_id=PATIENT_ID, rows=64, cols=64,
               description="BROWSER UI")
    multi = make_dataset(study, cine, 1, rows=48, cols=48, frames=4, patient_id=PATIENT_ID,
                         description="BROWSER UI")
    multi.SeriesNumber, multi.SeriesDescription = 2, "CINE LOOP"
    (folder / "b").mkdir()
    multi.save_as(folder / "b" / "cine.dcm", enforce_file_format=True)
    return study, series, cine


def test_study_browser_in_jupyterlab(jupyterlab, embedded, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    _, _, cine = _stored_study(tmp_path / "in")
    assert (connect(embedded.url).store(tmp_path / "in", progress=False)["status"]
            == "stored").all()
    url, _ = jupyterlab

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(60_000)
            page.goto(url)
            cell = page.locator(".jp-Notebook .jp-Cell").first
            expect(cell).to_be_visible(timeout=120_000)
            # Wait for the kernel, then run the cell (again if the first request was lost
            # while the kernel connection was still settling).
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(
                timeout=120_000)
            widget = page.locator(".dicomframes-study-browser")
            for attempt in range(3):
                cell.locator(".jp-InputArea-editor").click()
                page.keyboard.press("Control+Enter")
                try:
                    expect(widget).to_be_visible(timeout=40_000)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
            patient_id = widget.locator(".widget-text", has_text="Patient ID").locator("input")
            patient_id.fill(PATIENT_ID)
            patient_id.press("Enter")
            widget.locator("button", has_text="Search").click()

            studies = widget.locator(".dicomframes-studies select")
            expect(studies.locator("option")).to_have_count(1)
            expect(studies.locator("option").first).to_contain_text(PATIENT_ID)
            expect(widget).to_contain_text("1 study")
            studies.select_option(index=0)

            # Series rows, each with a thumbnail that loaded.
            rows = widget.locator(".dicomframes-series-row")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("Series 1")
            expect(rows.nth(0)).to_contain_text("3 instances")
            expect(rows.nth(1)).to_contain_text("CINE LOOP")
            for i in range(2):
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth === 64 || "
                    "img.complete && img.naturalWidth === 48",
                    arg=rows.nth(i).locator("img").element_handle())

            rows.nth(0).locator("button", has_text="View").click()
            expect(rows.nth(0).locator("button")).to_have_text("Viewing")
            instances = widget.locator(".dicomframes-instances select")
            expect(instances.locator("option")).to_have_count(3)
            image = widget.locator(".dicomframes-preview .widget-image")
            expect(image).to_be_visible()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth === 64",
                arg=image.element_handle(), timeout=60_000)
            expect(widget).to_contain_text("64×64 MONOCHROME2, frame 1 of 1")

            # Keyboard: ArrowRight on the focused frame slider shows the next frame.
            rows.nth(1).locator("button", has_text="View").click()
            expect(widget).to_contain_text("48×48 MONOCHROME2, frame 1 of 4")
            handle = widget.locator(".dicomframes-frame-slider .noUi-handle")
            handle.focus()
            page.keyboard.press("ArrowRight")
            expect(widget).to_contain_text("48×48 MONOCHROME2, frame 2 of 4")
            page.keyboard.press("ArrowRight")
            expect(widget).to_contain_text("frame 3 of 4")
            widget.locator(".dicomframes-preview button[title='previous frame']").click()
            expect(widget).to_contain_text("frame 2 of 4")
            expect(widget.locator(".dicomframes-preview")).to_contain_text(
                str(_one_sop(embedded.url, cine)))

            # No part on top of another at common widths; the full UID wraps, not cut.
            parts = {name: widget.locator(selector) for name, selector in (
                ("studies", ".dicomframes-studies"), ("series", ".dicomframes-series-list"),
                ("instances", ".dicomframes-instances"), ("preview", ".dicomframes-preview"))}
            for width in (1400, 1000):
                page.set_viewport_size({"width": width, "height": 1800})  # all of it shown
                expect(handle).to_be_visible()
                outer = widget.bounding_box()
                boxes = {name: part.bounding_box() for name, part in parts.items()}
                assert outer is not None and all(boxes.values()), boxes
                for name, box in boxes.items():
                    assert box["x"] >= outer["x"] - 1, (width, name, box, outer)
                    assert (box["x"] + box["width"] <= outer["x"] + outer["width"] + 1), (
                        width, name, box, outer)
                names = list(boxes)
                for i, first in enumerate(names):
                    for second in names[i + 1:]:
                        assert not _boxes_overlap(boxes[first], boxes[second]), (
                            width, first, second, boxes)
                uid = widget.locator(".dicomframes-preview code")
                assert uid.evaluate("e => e.parentElement.scrollWidth "
                                    "<= e.parentElement.clientWidth + 1"), width
                shot = tmp_path / f"study-browser-{width}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
        finally:
            chromium.close()


def _one_sop(url: str, series: str) -> str:
    """The SOP Instance UID of a series' only instance."""
    found = connect(url).search_instances(series=series)
    assert len(found) == 1
    return str(found["SOPInstanceUID"].iloc[0])
