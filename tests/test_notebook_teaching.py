"""notebooks/teaching.py, the setup the notebooks share, leaves no temporary folder behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pydicom
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ROOT = NOTEBOOKS.parent


@pytest.fixture
def teaching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The notebooks' helper module, imported as the notebooks import it, with its temporary
    folders made in ``tmp_path``."""
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    import teaching

    yield teaching
    teaching.cleanup()


def leftovers(folder: Path) -> list[Path]:
    """The notebooks' temporary folders still in ``folder``."""
    return sorted(folder.glob("dicomframes-samples-*"))


def test_samples_are_the_tutorial_files_and_a_cine(teaching: ModuleType, tmp_path: Path) -> None:
    samples = teaching.write_samples()
    assert samples.folder.parent == tmp_path
    assert [p.name for p in samples.tutorial_files] == [
        "green-square.dcm", "red-triangle.dcm", "blue-circle.dcm"]
    ds = pydicom.dcmread(samples.green, stop_before_pixels=True)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        teaching.STUDY, teaching.SERIES_1, teaching.GREEN)
    cine = pydicom.dcmread(samples.cine, stop_before_pixels=True)
    assert samples.cine_uids == (cine.StudyInstanceUID, cine.SeriesInstanceUID,
                                 cine.SOPInstanceUID)
    assert int(cine.NumberOfFrames) == 10


def test_cleanup_removes_every_folder_the_setup_made(teaching: ModuleType,
                                                      tmp_path: Path) -> None:
    teaching.write_samples()
    teaching.temporary_folder()
    assert len(leftovers(tmp_path)) == 2
    assert teaching.cleanup() == "removed 2 temporary folders"
    assert leftovers(tmp_path) == []
    assert teaching.cleanup() == "removed 0 temporary folders"


def test_a_kernel_that_exits_without_the_last_cell_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = "import teaching; print(teaching.write_samples().folder)"
    result = subprocess.run([sys.executable, "-c", script], cwd=NOTEBOOKS, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert Path(result.stdout.strip()).parent == tmp_path
    assert leftovers(tmp_path) == []


def test_last_request_writes_uids_as_names(teaching: ModuleType, embedded: object) -> None:
    import dicomframes

    client = dicomframes.connect(embedded.url)  # type: ignore[attr-defined]
    samples = teaching.write_samples()
    client.search_instances(teaching.STUDY, teaching.SERIES_1, SOPInstanceUID=teaching.GREEN)
    assert teaching.last_request(client) == (
        "GET /studies/{study}/series/{series1}/instances?SOPInstanceUID={green}")
    client.search_series(samples.cine_uids[0])
    assert teaching.last_request(client, samples) == "GET /studies/{cine_study}/series?limit=100"
