"""Setup that the teaching notebooks share, so that no notebook repeats it in its own cells.

The notebooks import this module as ``import teaching`` (Jupyter and nbval start their kernels
in this folder, so it is found without installing anything). It gives:

- the tutorial's UIDs under short names (``STUDY``, ``SERIES_1``, ``GREEN`` ...);
- :func:`write_samples`: the tutorial's three files and a ten-frame instance, written into a
  temporary folder;
- :func:`temporary_folder` and :func:`cleanup`: temporary folders that are removed by the last
  cell of each notebook, and in any case when the kernel's Python exits normally;
- :func:`put_tutorial_study`: the tutorial's starting state on the server (its study with three
  instances), so that a notebook shows the same output on every run;
- :func:`last_request`: the client's last request as one short line, UIDs written as
  ``{names}``.

Everything here uses the public API of ``dicomframes`` only.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

import dicomframes
from dicomframes.samples import TUTORIAL, write_multiframe_study, write_tutorial_files

#: The tutorial that notebooks 01 to 04 follow step by step.
TUTORIAL_TITLE = "Using DICOMweb Standard APIs with cURL"
TUTORIAL_URL = (
    "https://learn.microsoft.com/en-us/azure/healthcare-apis/dicom/dicomweb-standard-apis-curl"
)

STUDY, SERIES_1, GREEN = TUTORIAL["green-square"]
_, _, RED = TUTORIAL["red-triangle"]
_, SERIES_2, BLUE = TUTORIAL["blue-circle"]

#: Short names for the tutorial's UIDs, as :func:`last_request` writes them.
TUTORIAL_NAMES = {STUDY: "{study}", SERIES_1: "{series1}", SERIES_2: "{series2}",
                  GREEN: "{green}", RED: "{red}", BLUE: "{blue}"}

#: The prefix of every temporary folder that the notebooks create.
PREFIX = "dicomframes-samples-"

_folders: list[Path] = []


def temporary_folder() -> Path:
    """A new, empty temporary folder; :func:`cleanup` (or the end of Python) removes it."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    _folders.append(folder)
    return folder


def cleanup() -> str:
    """Remove every folder made by :func:`temporary_folder`; say how many were removed."""
    removed = 0
    while _folders:
        folder = _folders.pop()
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return f"removed {removed} temporary folder{'s' if removed != 1 else ''}"


atexit.register(cleanup)   # a kernel that is restarted or shut down leaves nothing behind


@dataclass(frozen=True)
class Samples:
    """The sample files of the notebooks, in one temporary folder.

    ``green``, ``red`` and ``blue`` are the tutorial's three files (study ``STUDY``);
    ``cine`` is one instance of ten frames in a second study, whose UIDs are ``cine_uids``
    (study, series, instance).
    """

    folder: Path
    green: Path
    red: Path
    blue: Path
    cine: Path
    cine_uids: tuple[str, str, str]

    @property
    def tutorial_files(self) -> list[Path]:
        """The tutorial's three files, in the tutorial's order."""
        return [self.green, self.red, self.blue]

    def names(self) -> dict[str, str]:
        """Short names for the UIDs, as :func:`last_request` writes them."""
        study, series, instance = self.cine_uids
        return {**TUTORIAL_NAMES, study: "{cine_study}", series: "{cine_series}",
                instance: "{cine}"}


def write_samples() -> Samples:
    """Write the tutorial's three files and a ten-frame instance into a temporary folder."""
    folder = temporary_folder()
    green, red, blue = write_tutorial_files(folder)
    (cine,) = write_multiframe_study(folder / "cine")
    header = pydicom.dcmread(cine, stop_before_pixels=True)
    uids = (str(header.StudyInstanceUID), str(header.SeriesInstanceUID),
            str(header.SOPInstanceUID))
    return Samples(folder, green, red, blue, cine, uids)


def last_request(client: Any, samples: Samples | None = None) -> str:
    """The client's last request as ``METHOD path?query``, UIDs written as ``{names}``."""
    exchange = client.last_exchange
    text = f"{exchange.method} {exchange.url.removeprefix(client.url)}"
    names = samples.names() if samples else TUTORIAL_NAMES
    for uid, name in names.items():
        text = text.replace(uid, name)
    return text


def remove_studies(client: Any, studies: Iterable[str]) -> None:
    """Delete these studies if the server has them; say so when the server cannot delete."""
    for study in studies:
        try:
            client.delete(study)
        except dicomframes.NotFound:
            pass                                     # not there: nothing to remove
        except dicomframes.DICOMwebError as error:
            print(f"cannot delete on this server ({error.status}): keeping what it has")


def put_tutorial_study(client: Any, samples: Samples) -> None:
    """Put the tutorial's study on the server as the tutorial has it: three instances.

    An earlier copy is deleted first (where the server can delete), and the files are stored
    one after another (``workers=1``) so that the server lists them in a fixed order.
    """
    remove_studies(client, [STUDY])
    client.store(samples.tutorial_files, workers=1, progress=False)

