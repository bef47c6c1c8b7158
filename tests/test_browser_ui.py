"""The StudyBrowser in a real browser: JupyterLab started headless, Debian's Chromium driven by
Playwright (the system browser, never a downloaded one), a search, a series, a screenshot."""

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
from support import make_files, require

from dicomframes import connect
from dicomframes.standard.uids import new_uid

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DICOMFRAMES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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


def test_study_browser_in_jupyterlab(jupyterlab, embedded, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    study, series = new_uid(), new_uid()
    make_files(tmp_path / "in", 3, study, series, patient_id=PATIENT_ID, rows=64, cols=64,
               description="BROWSER UI")
    assert (connect(embedded.url).store(tmp_path / "in", progress=False)["status"]
            == "stored").all()
    url, _ = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)

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

            studies = widget.locator("select").nth(0)
            expect(studies.locator("option")).to_have_count(1)
            expect(studies.locator("option").first).to_contain_text(PATIENT_ID)
            expect(widget).to_contain_text("1 study")
            studies.select_option(index=0)

            series_list = widget.locator("select").nth(1)
            expect(series_list.locator("option")).to_have_count(1)
            series_list.select_option(index=0)

            instances = widget.locator("select").nth(2)
            expect(instances.locator("option")).to_have_count(3)
            image = widget.locator(".widget-image")
            expect(image).to_be_visible()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth === 64",
                arg=image.element_handle(), timeout=60_000)
            expect(widget).to_contain_text("64×64 MONOCHROME2, frame 1 of 1")
            page.screenshot(path=str(ARTIFACTS / "study-browser.png"), full_page=True)
        finally:
            chromium.close()
    assert (ARTIFACTS / "study-browser.png").stat().st_size > 10_000
