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
import json
import os
import re
import shlex
import shutil
import subprocess
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
_samples: list[Samples] = []


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
    samples = Samples(folder, green, red, blue, cine, uids)
    _samples.append(samples)
    return samples


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



# ---- showing a request: the curl command and the exchange, within 120 characters ----------

#: Output lines are kept within this width (longer ones are wrapped).
WIDTH = 120
_UID_IN_PATH = re.compile(r"/(studies|series|instances)/([0-9.]+)")
_UID_IN_QUERY = re.compile(r"(StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID)=([0-9.]+)")
_LEVEL_NAMES = {"studies": "study", "series": "series", "instances": "instance",
                "StudyInstanceUID": "study", "SeriesInstanceUID": "series",
                "SOPInstanceUID": "instance"}


def _variables(url: str, base: str) -> tuple[str, dict[str, str]]:
    """``url`` written with shell variables (``$base``, ``$study``...), and their values."""
    values: dict[str, str] = {"base": base}
    by_uid: dict[str, str] = {}

    def name_for(level: str, uid: str) -> str:
        if uid not in by_uid:
            name, number = _LEVEL_NAMES[level], 1
            while (name if number == 1 else f"{name}{number}") in values:
                number += 1
            name = name if number == 1 else f"{name}{number}"
            values[name] = uid
            by_uid[uid] = name
        return by_uid[uid]

    rest = url[len(base):] if url.startswith(base) else url
    rest = _UID_IN_PATH.sub(lambda m: f"/{m[1]}/${{{name_for(m[1], m[2])}}}", rest)
    rest = _UID_IN_QUERY.sub(lambda m: f"{m[1]}=${{{name_for(m[1], m[2])}}}", rest)
    return rest, values


def curl_script(client: Any, exchange: Any = None) -> str:
    """The exchange's ``curl`` command as a short shell script that runs as printed: the base
    URL and the UIDs as shell variables, one option per line when the line would be long."""
    exchange = exchange or client.last_exchange
    words = shlex.split(exchange.curl())
    url = words.pop()
    rest, values = _variables(url, client.url)
    escaped = re.sub(r"\$(?!\{(?:base|study|series|instance)\d*\})", r"\\$",
                     rest.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`"))
    quoted = []
    for word in words:
        folder = next((str(x.folder) for x in _samples if str(x.folder) + "/" in word), None)
        if folder is not None:                  # the sample files: "${files}/NAME"
            values.setdefault("files", folder)
            quoted.append('"' + _in_double_quotes(word).replace(folder, "${files}") + '"')
        elif word.startswith("Authorization: Bearer $"):
            quoted.append(f'"{word}"')
        else:
            quoted.append(shlex.quote(word))
    units: list[str] = []                       # an option and its value stay on one line
    for word in quoted:
        if units and units[-1].startswith("-") and " " not in units[-1] and units[-1] not in (
                "curl",) and not word.startswith("-"):
            units[-1] += " " + word
        else:
            units.append(word)
    units.append(f'"${{base}}{escaped}"')
    pieces, line = [], ""
    for unit in units:
        joined = f"{line} {unit}" if line else unit
        if line and len(joined) > WIDTH - 2:
            pieces.append(line + " \\")
            line = "  " + unit
        else:
            line = joined
    pieces.append(line)
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join([*lines, *pieces])


def _in_double_quotes(text: str) -> str:
    """``text`` escaped for a double-quoted shell word."""
    return re.sub(r'([\\"`$])', r"\\\1", text)


def _uid_names(client: Any) -> dict[str, str]:
    names = {uid: name for uid, name in TUTORIAL_NAMES.items()}
    for samples in _samples:
        names.update(samples.names())
    return names


def shorten(text: str, client: Any = None) -> str:
    """``text`` with the tutorial's UIDs written as ``{names}`` and lines kept within
    :data:`WIDTH` (a longer line continues on the next, indented)."""
    for uid, name in _uid_names(client).items():
        text = text.replace(uid, name)
    out = []
    for line in text.splitlines():
        while len(line) > WIDTH:
            cut = line.rfind(" ", 40, WIDTH - 1)        # at a space, so that no word is split
            cut = cut if cut > 0 else WIDTH - 1
            out.append(line[:cut] + "\\")
            line = "    " + line[cut:].lstrip()
        out.append(line)
    return "\n".join(out)


def show(client: Any, exchange: bool = True, lines: int | None = None) -> None:
    """Print the client's last request as a curl command (a script that runs as printed), then
    the exchange as it went over the wire (UIDs as ``{names}``) unless ``exchange=False``;
    ``lines``: only the exchange's first lines."""
    last = client.last_exchange
    print("# the same request with curl, from a shell")
    print(curl_script(client, last))
    if os.environ.get(CHECK_ENV):
        _check_curl(client, last)
    if exchange:
        print()
        text = shorten(str(last), client).splitlines()
        print("\n".join(text if lines is None or len(text) <= lines
                        else [*text[:lines], "  ..."]))


def refused(error: Exception) -> str:
    """A short line for a refused request: its status and the server's words."""
    status = getattr(error, "status", None)
    message = " ".join(str(getattr(error, "message", "") or error).split())
    return shorten(f"refused ({status}): {message[:200]}")


# ---- check mode (tests only): every curl command shown is run, and its status compared ----

#: When set (to a file), :func:`show` also runs each curl command it prints and appends a
#: JSON line to that file: the command, the Python call's status and curl's.
CHECK_ENV = "DICOMFRAMES_CURL_CHECK"


def _check_curl(client: Any, exchange: Any) -> None:
    """Run ``exchange``'s curl command on the same server in the state the Python call found:
    what the call stored is deleted first, what it deleted is stored again."""
    if exchange.status is None:
        return
    helper = dicomframes.connect(client.url)
    if exchange.method == "POST" and exchange.status in (200, 202):
        for item in _referenced(exchange):
            helper.delete(*item)
    elif exchange.method == "DELETE" and exchange.status < 300:
        _restore(helper, exchange.url[len(client.url):])
    script = curl_script(client, exchange)
    if "--output" not in script:
        script += " --output /dev/null"
    script += " --silent --show-error --write-out '%{http_code}'"
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "DICOMWEB_TOKEN": os.environ.get("DICOMWEB_TOKEN", "none")}
        run = subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=300)
    record = {"command": script, "python": exchange.status,
              "curl": int(run.stdout[-3:]) if run.stdout[-3:].isdigit() else run.stderr}
    with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def _referenced(exchange: Any) -> list[tuple[str, str, str]]:
    """(study, series, instance) of each instance a STOW answer says it stored."""
    try:
        answer = json.loads(exchange.body_preview or b"{}")
    except ValueError:
        return []
    found = []
    for item in answer.get("00081199", {}).get("Value", []):
        url = item.get("00081190", {}).get("Value", [""])[0]
        parts = re.findall(r"/(?:studies|series|instances)/([0-9.]+)", url)
        if len(parts) == 3:
            found.append((parts[0], parts[1], parts[2]))
    return found


def _restore(helper: Any, path: str) -> None:
    """Store again the sample files under ``path`` (``/studies/{s}[/series/{s}[...]]``)."""
    uids = re.findall(r"/(?:studies|series|instances)/([0-9.]+)", path)
    files = []
    for samples in _samples:
        for file in samples.folder.rglob("*.dcm"):
            ds = pydicom.dcmread(file, stop_before_pixels=True)
            own = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
            if own[:len(uids)] == uids:
                files.append(file)
    if files:
        helper.store(files, workers=1, progress=False)
