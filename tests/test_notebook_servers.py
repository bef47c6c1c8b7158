"""The teaching notebooks on the tutorial's kind of server and on Orthanc, and their curl.

- Notebooks 01-05 run top to bottom against the embedded server at ``/v2`` in its Azure-strict
  profile (searches refused as the Azure DICOM service refuses them), and against Orthanc's
  DICOMweb root (``/dicom-web``; what Orthanc does not offer, such as DELETE or single-part
  STOW, the notebooks show as the server's answer without stopping).
- In the strict run, every curl script that notebooks 01-04 print (``teaching.show``) is run
  with Debian's curl in the state the Python call found, and its HTTP status must equal the
  Python call's (the check mode of notebooks/teaching.py).
- Every output line of every notebook fits in 120 characters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support import require

from dicomframes.server import serve

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ON_SERVERS = ("01", "02", "03", "04", "05")
WIDTH = 120


def notebook(prefix: str) -> Path:
    (path,) = NOTEBOOKS.glob(f"{prefix}-*.ipynb")
    return path


def run(path: Path) -> None:
    """Execute ``path`` in a fresh kernel in the notebooks' folder (raises on a failing cell)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment the notebooks' kernels start with: temporary folders of their own."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("DICOMFRAMES_DATA", str(tmp_path / "unused-archive"))
    monkeypatch.delenv("DICOMWEB_TOKEN", raising=False)
    return tmp_path


def test_notebooks_run_on_an_azure_strict_server_and_their_curl_matches(
        kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(shutil.which("curl") is not None, "curl", "apt-get install curl")
    log = kernel_env / "curl.jsonl"
    monkeypatch.setenv("DICOMFRAMES_CURL_CHECK", str(log))
    with serve(kernel_env / "archive", profile="azure") as server:
        monkeypatch.setenv("DICOMWEB_URL", server.url + "/v2")
        for prefix in ON_SERVERS:
            if prefix == "05":
                monkeypatch.delenv("DICOMFRAMES_CURL_CHECK")
            run(notebook(prefix))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 19                         # the tutorial's 19 steps at least
    assert any("--form" in r["command"] for r in records)
    assert any("--data-binary" in r["command"] for r in records)
    assert any("--output" in r["command"] for r in records)
    wrong = [r for r in records if r["curl"] != r["python"]]
    assert not wrong, wrong


def test_notebooks_run_against_orthanc(kernel_env: Path, monkeypatch: pytest.MonkeyPatch,
                                       orthanc: object) -> None:
    # The DICOMweb root, not ``orthanc.url`` (Orthanc's own REST API, whose /studies/{id} take
    # Orthanc's ids, not UIDs: the 404 that stopped 02-05 there).
    monkeypatch.setenv("DICOMWEB_URL", orthanc.dicomweb_url)  # type: ignore[attr-defined]
    monkeypatch.delenv("DICOMFRAMES_CURL_CHECK", raising=False)
    for prefix in ON_SERVERS:
        run(notebook(prefix))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")),
                         ids=lambda path: path.stem)
def test_every_output_line_fits_in_120_characters(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    long = []
    for number, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else (
                output.get("data", {}).get("text/plain", ""))
            long += [(number, len(line)) for line in str(text).splitlines()
                     if len(line) > WIDTH]
    assert not long, f"cells with lines over {WIDTH} characters (cell, length): {long}"
