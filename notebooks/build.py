#!/usr/bin/env python
"""Write the teaching notebooks with nbformat and run them with nbclient, keeping their outputs.

    python notebooks/build.py               # write and execute every notebook
    python notebooks/build.py 03 05         # only the notebooks whose names start so
    python notebooks/build.py --no-execute  # write them without outputs

The notebooks run in the order of their names in one fresh temporary archive (the embedded
server; DICOMWEB_URL and DICOMWEB_TOKEN are ignored), as `python -m pytest notebooks` does, so the
stored outputs are what nbval compares against. Edit the cells here, never the .ipynb files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(textwrap.dedent(text).strip())


# The first code cell of every notebook.
CONNECT = code("""
    import dicomframes

    client = dicomframes.connect()   # no URL: DICOMWEB_URL if set, else the embedded server
    client
""")

CONNECT_NOTE = """
    With no settings, `dicomframes.connect()` starts a small DICOMweb server inside this
    notebook; it keeps its files in `~/.cache/dicomframes/archive` (or in the folder named by
    `DICOMFRAMES_DATA`). To run the same cells against another server, set `DICOMWEB_URL` (and
    `DICOMWEB_TOKEN` for a bearer token) before starting Jupyter. A cell that asks for something
    that server does not offer prints the server's answer instead of stopping the notebook.
"""

# Sample files and UIDs, shared by the notebooks that use the tutorial's three files.
SAMPLES = code("""
    import tempfile
    from pathlib import Path

    import pydicom
    from dicomframes.samples import TUTORIAL, write_multiframe_study, write_tutorial_files

    folder = Path(tempfile.mkdtemp(prefix="dicomframes-samples-"))
    green, red, blue = write_tutorial_files(folder)
    cine = write_multiframe_study(folder / "cine")[0]

    STUDY, SERIES_1, GREEN = TUTORIAL["green-square"]
    _, _, RED = TUTORIAL["red-triangle"]
    _, SERIES_2, BLUE = TUTORIAL["blue-circle"]
    header = pydicom.dcmread(cine, stop_before_pixels=True)
    CINE = (header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)

    NAMES = {STUDY: "{study}", SERIES_1: "{series1}", SERIES_2: "{series2}", GREEN: "{green}",
             RED: "{red}", BLUE: "{blue}", CINE[0]: "{cine_study}", CINE[1]: "{cine_series}",
             CINE[2]: "{cine}"}


    def last_request():
        \"\"\"The client's last request as 'METHOD path?query', UIDs written as {names}.\"\"\"
        exchange = client.last_exchange
        text = f"{exchange.method} {exchange.url.removeprefix(client.url)}"
        for uid, name in NAMES.items():
            text = text.replace(uid, name)
        return text
""")

RESET_NOTE = """
    We start from the tutorial's state: its study with three instances. If the study is already
    on the server, we delete it first, so that this page shows the same output every time it
    runs. `workers=1` stores the files one after another, so the server lists them in a fixed
    order.
"""

RESET = code("""
    def reset():
        \"\"\"Put the tutorial's study on the server as the tutorial has it: three instances.\"\"\"
        try:
            client.delete(STUDY)
        except dicomframes.NotFound:
            pass                                      # not there yet
        except dicomframes.DICOMwebError as error:
            print(f"cannot delete on this server ({error.status}): keeping what it has")
        client.store([green, red, blue], workers=1, progress=False)


    reset()
    print(len(client.search_instances(study=STUDY)), "instances in the tutorial's study")
""")


# ---------------------------------------------------------------------------------------------
# 01 store
# ---------------------------------------------------------------------------------------------

STORE = [
    md("""
        # 1 · Storing DICOM files (STOW-RS)

        DICOMweb has one way to put files on a server: **STOW-RS**, an HTTP `POST` whose body
        carries one or more DICOM files. This notebook sends the tutorial's three sample files in
        each form that servers accept, reads the answers, and then does the same job with one
        line of `dicomframes`.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    md("""
        ## The sample files

        `dicomframes.samples` writes the tutorial's three pictures (a green square, a red
        triangle and a blue circle) as DICOM files with the tutorial's UIDs, so that every UID
        below is the tutorial's. All three belong to one study. The square and the triangle
        share series 1, and the circle has series 2 to itself. We also write a small
        **second study**, one instance of ten frames, to show what a server does with a file
        sent to the wrong study.
    """),
    SAMPLES,
    code("""
        for path in (green, red, blue, cine):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            print(f"{path.name:24} {path.stat().st_size:>9,} bytes   {ds.Modality}  "
                  f"series {ds.SeriesNumber}  instance {ds.InstanceNumber}  "
                  f"{ds.get('NumberOfFrames', 1)} frame(s)")
    """),
    md("""
        ## A known starting point

        A notebook that runs twice should show the same thing twice. So we first remove both
        studies in case an earlier run left them on the server. `NotFound` only means that
        there was nothing to remove. Some servers, Orthanc among them, have no DICOMweb
        `DELETE`. This cell then says so, and the stores below report "already stored".
    """),
    code("""
        for study in (STUDY, CINE[0]):
            try:
                client.delete(study)
            except dicomframes.NotFound:
                pass                                  # not there: nothing to remove
            except dicomframes.DICOMwebError as error:
                print(f"cannot delete {study}: {error.message}")
    """),
    md("""
        ## Form 1: `POST /studies` with a multipart body

        A STOW request body is `multipart/related`. The files come one after another, each
        behind a short header (`Content-Type: application/dicom`), separated by a *boundary*:
        a random string that the request's `Content-Type` names. Below we build that body with
        `dicomframes.standard.multipart` and send it with `client.request`, the client's bare HTTP call.
        It adds the base URL and the credentials, nothing else. `client.last_exchange` records
        what went over the wire. Printing it shows the request (`>` lines), the answer (`<`
        lines) and a summary of each body.
    """),
    code("""
        from dicomframes.standard import multipart


        def stow_body(*paths):
            \"\"\"A multipart/related body with one DICOM file per part, and its Content-Type.\"\"\"
            boundary = multipart.new_boundary()
            parts = [({"Content-Type": "application/dicom"}, path) for path in paths]
            body = b"".join(multipart.encode(parts, boundary))
            return body, multipart.related_content_type(boundary, "application/dicom")


        body, content_type = stow_body(green, red)
        response = client.request("POST", "studies", data=body,
                                  headers={"Content-Type": content_type,
                                           "Accept": "application/dicom+json"})
        print(client.last_exchange)
    """),
    md("""
        The answer (200 OK) is **DICOM JSON**: each attribute is keyed by its tag. `00081199` is
        the *ReferencedSOPSequence*, with one item per stored instance and the URL to fetch it
        back (*RetrieveURL*). `dicomframes.standard.dicomjson.json_to_dataset` turns the answer into a
        pydicom Dataset, whose attributes have names:
    """),
    code("""
        from dicomframes.standard.dicomjson import json_to_dataset

        answer = json_to_dataset(response.json())
        for item in answer.ReferencedSOPSequence:
            print("stored", item.ReferencedSOPInstanceUID)
    """),
    md("""
        ## Form 2: `POST /studies/{study}`

        With the study in the URL, the server checks that every file belongs to that study. We
        send the blue circle, which does, together with the ten-frame instance of the second
        study, which does not. The server stores the circle and refuses the other file with
        failure reason **43264** (hex A900: it does not match the study). The status is
        **202 Accepted**, which means some files were stored and some were not. Had every file
        been refused, the status would be 409.
    """),
    code("""
        import json

        body, content_type = stow_body(blue, cine)
        try:
            response = client.request("POST", f"studies/{STUDY}", data=body,
                                      headers={"Content-Type": content_type,
                                               "Accept": "application/dicom+json"})
            print("HTTP", response.status_code)
            answer = json_to_dataset(response.json())
        except dicomframes.DICOMwebError as error:   # 409: nothing was stored
            print("HTTP", error.status)
            answer = json_to_dataset(json.loads(error.message))
        for item in answer.get("ReferencedSOPSequence", []):
            print("stored", item.ReferencedSOPInstanceUID)
        for item in answer.get("FailedSOPSequence", []):
            print("failed", item.ReferencedSOPInstanceUID, "reason", item.FailureReason)
    """),
    md("""
        ## Form 3: one file as the whole body

        Some servers (Azure's DICOM service and the embedded one) also take a single file
        posted as `Content-Type: application/dicom`, without the multipart wrapping. The DICOM
        standard does not define this form, so other servers may answer 415 (unsupported media
        type). We store the ten-frame instance this way:
    """),
    code("""
        try:
            response = client.request("POST", "studies", data=cine.read_bytes(),
                                      headers={"Content-Type": "application/dicom",
                                               "Accept": "application/dicom+json"})
            print("HTTP", response.status_code)
            for item in json_to_dataset(response.json()).ReferencedSOPSequence:
                print("stored", item.ReferencedSOPInstanceUID)
        except dicomframes.DICOMwebError as error:
            print(f"this server refuses single-part STOW ({error.status}): {error.message}")
    """),
    md("""
        ## Storing the same file twice: 409 and reason 45070

        What if the server already has an instance with that SOPInstanceUID? The standard
        leaves that to the server. Azure and the embedded server keep the copy they have and
        refuse the new one. The instance is listed in the *FailedSOPSequence* with reason
        **45070** ("already exists"). Because nothing was stored, the status is
        **409 Conflict**. Your data is fine: the server already holds it. To replace an
        instance, delete it first. Orthanc answers 200 instead and keeps a single copy.
    """),
    code("""
        body, content_type = stow_body(blue)
        try:
            client.request("POST", "studies", data=body,
                           headers={"Content-Type": content_type,
                                    "Accept": "application/dicom+json"})
            print("stored again: this server accepts duplicates")
        except dicomframes.DICOMwebError:
            pass
        print(client.last_exchange)
    """),
    md("""
        ## The one-liner: `client.store`

        `client.store` does all of the above. It takes files, folders, glob patterns, zip files
        or pydicom Datasets. It sends them in a few parallel multipart requests streamed from
        disk (never the whole upload in memory), reads every answer and returns a DataFrame with
        one row per file. A duplicate becomes a row saying `already stored` instead of an
        exception. `client.store` shows a progress bar unless you pass `progress=False`. We
        turn it off here to keep the page short.

        We empty the two studies again and store the whole folder:
    """),
    code("""
        for study in (STUDY, CINE[0]):
            try:
                client.delete(study)
            except dicomframes.DICOMwebError:
                pass                                 # absent, or a server without DELETE

        outcome = client.store(folder, progress=False)
        outcome["file"] = outcome["source"].map(lambda source: Path(source).name)
        outcome[["file", "SOPInstanceUID", "status", "reason", "message"]]
    """),
    md("""
        A second run sends the files again and reports what the server said (45070 for each):
    """),
    code("""
        again = client.store(folder, progress=False)
        again.value_counts(["status", "reason"], dropna=False)
    """),
    md("""
        With `skip_existing=True`, `store` first asks the server which instances it already
        has (a QIDO-RS search) and sends only the others. That is how an interrupted upload
        resumes without sending anything twice:
    """),
    code("""
        resumed = client.store(folder, skip_existing=True, progress=False)
        resumed.value_counts(["status", "message"])
    """),
    md("""
        Form 2 as a one-liner is `client.store(files, study=...)`. The file of the other study
        comes back `failed`, and the table says why:
    """),
    code("""
        checked = client.store([green, cine], study=STUDY, progress=False)
        checked["file"] = checked["source"].map(lambda source: Path(source).name)
        checked[["file", "status", "reason", "message"]]
    """),
    md("""
        ## Watching the wire

        Inside `with client.trace():` the client prints every exchange once it is complete. The
        request below carries one file the server already holds:
    """),
    code("""
        with client.trace():
            client.store(red, progress=False)
    """),
    md("""
        **Next:** [2 · Retrieving](02-retrieve.ipynb) gets these files back as files, metadata
        tables, numpy arrays and pictures.
    """),
]


# ---------------------------------------------------------------------------------------------
# 02 retrieve
# ---------------------------------------------------------------------------------------------

RETRIEVE = [
    md("""
        # 2 · Retrieving files, metadata and pixels (WADO-RS)

        **WADO-RS** is the DICOMweb service for getting data back. It serves three kinds of
        answer: whole DICOM files (a study, a series or one instance), metadata without
        pixels, and the pixels of single frames. This notebook makes each request of the
        tutorial, first by hand to see the answer, then in one line that returns pydicom
        Datasets, pandas DataFrames and numpy arrays. It ends with pictures.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    md("""
        The tutorial's three files, plus a ten-frame instance for the frame requests.
    """),
    SAMPLES,
    md(RESET_NOTE),
    RESET,
    code("""
        import io
        import json

        import numpy as np
        import pandas as pd
        from dicomframes.standard import multipart

        outcome = client.store(cine, progress=False)        # stored, or already there
    """),
    md("""
        ## A whole study: `GET /studies/{study}`

        We ask for `multipart/related; type="application/dicom"`, that is, one DICOM file per
        part. `transfer-syntax=*` means "as stored, no conversion". For a study or a series it
        is the one value that every server accepts.
    """),
    code("""
        response = client.request(
            "GET", f"studies/{STUDY}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        print(client.last_exchange)
    """),
    md("""
        What does a multipart body look like? It starts with the boundary line and the headers
        of the first part, then an empty line, then the bytes of the first file. A DICOM file
        starts with 128 bytes of preamble followed by the letters `DICM`.
    """),
    code("""
        body = response.content
        end_of_headers = body.index(b"\\r\\n\\r\\n") + 4
        print(body[:end_of_headers].decode())
        print(body[end_of_headers + 128:end_of_headers + 132])
    """),
    md("""
        `dicomframes.standard.multipart.decode` splits the body into parts. Each part keeps its own
        headers, and its content can be read by pydicom:
    """),
    code("""
        parts = multipart.decode(body, response.headers["Content-Type"])
        rows = []
        for part in parts:
            ds = pydicom.dcmread(io.BytesIO(part.content))
            rows.append((ds.SeriesNumber, ds.InstanceNumber, ds.ImageComments,
                         len(part.content), part.content_type))
        pd.DataFrame(rows, columns=["series", "instance", "comment", "bytes", "Content-Type"]
                     ).sort_values(["series", "instance"], ignore_index=True)
    """),
    md("""
        The one-liner is `client.retrieve`. It streams the parts and returns one pydicom Dataset
        per instance; `client.iter_retrieve` yields them one at a time instead. The server
        chooses the order of the parts, so we sort them.
    """),
    code("""
        datasets = client.retrieve(STUDY)
        sorted((int(ds.SeriesNumber), int(ds.InstanceNumber), ds.ImageComments) for ds in datasets)
    """),
    md("""
        ## Metadata of a study: `GET /studies/{study}/metadata`

        Metadata is every attribute except the bulk data, as DICOM JSON: a list with one object
        per instance. Large binary values such as the pixels are replaced by a *BulkDataURI*,
        the address where the value can be fetched on its own.
    """),
    code("""
        objects = client.metadata_json(STUDY)
        print(len(objects), "objects")
        square = next(o for o in objects if o["00080018"]["Value"] == [GREEN])
        for tag in ("00100010", "00280010", "7FE00010"):
            print(tag, json.dumps(square[tag]))
    """),
    md("""
        `client.metadata` turns that list into a DataFrame, with one row per instance and one
        column per attribute named by its keyword. Values are typed: dates become timestamps,
        numbers become numbers, person names become readable text.
    """),
    code("""
        meta = client.metadata(STUDY)
        print(meta.shape[1], "columns")
        meta[["SeriesNumber", "InstanceNumber", "ImageComments", "StudyDate", "PatientName",
              "Rows", "Columns", "PhotometricInterpretation"]].sort_values(
            ["SeriesNumber", "InstanceNumber"], ignore_index=True)
    """),
    md("""
        ## A series: `GET /studies/{study}/series/{series}` and its `/metadata`

        The same two requests one level down: series 1 holds the square and the triangle.
    """),
    code("""
        sorted(ds.ImageComments for ds in client.retrieve(STUDY, SERIES_1))
    """),
    code("""
        client.metadata(STUDY, SERIES_1)[["InstanceNumber", "ImageComments", "SOPInstanceUID"]
                                         ].sort_values("InstanceNumber", ignore_index=True)
    """),
    md("""
        ## One instance: `GET .../instances/{instance}` and its `/metadata`

        A single instance can come as a plain DICOM file (`Accept: application/dicom`), with
        no multipart wrapping. Most servers offer this; Orthanc, for one, only sends
        multipart:
    """),
    code("""
        path = f"studies/{STUDY}/series/{SERIES_1}/instances/{GREEN}"
        try:
            response = client.request("GET", path,
                                      headers={"Accept": "application/dicom; transfer-syntax=*"})
            print(client.last_exchange)
            ds = pydicom.dcmread(io.BytesIO(response.content))
            print(ds.ImageComments, ds.Rows, "x", ds.Columns, ds.PhotometricInterpretation)
        except dicomframes.DICOMwebError as error:
            print(f"this server sends no single-part file ({error.status}): {error.message}")
    """),
    code("""
        ds = client.retrieve(STUDY, SERIES_1, GREEN)[0]    # the one-liner: a list of one Dataset
        ds.ImageComments
    """),
    md("""
        The metadata of one instance is a one-row DataFrame. Taking its row as a pandas Series
        gives a readable list of everything the file says about itself (`PixelData` is a
        BulkDataURI here):
    """),
    code("""
        client.metadata(STUDY, SERIES_1, GREEN).iloc[0]
    """),
    md("""
        ## Frames: `GET .../instances/{instance}/frames/{list}`

        Frames are the pixels alone, without any DICOM header. We ask for
        `type="application/octet-stream"` in the default transfer syntax
        `1.2.840.10008.1.2.1` (Explicit VR Little Endian, uncompressed). Each part is then the
        raw bytes of one frame: rows × columns × samples × bytes per sample.
    """),
    code("""
        response = client.request(
            "GET", f"studies/{STUDY}/series/{SERIES_1}/instances/{GREEN}/frames/1",
            headers={"Accept": 'multipart/related; type="application/octet-stream"; '
                               'transfer-syntax=1.2.840.10008.1.2.1'})
        print(client.last_exchange)
    """),
    md("""
        Nothing in those bytes says how to arrange them: the shape comes from the metadata
        (*Rows*, *Columns*, *SamplesPerPixel*, *BitsAllocated*). For the square that is
        979 × 985 RGB pixels of one byte each:
    """),
    code("""
        (part,) = multipart.decode(response.content, response.headers["Content-Type"])
        row = meta[meta["SOPInstanceUID"] == GREEN].iloc[0]
        by_hand = np.frombuffer(part.content, dtype=np.uint8).reshape(
            row["Rows"], row["Columns"], row["SamplesPerPixel"])
        print(len(part.content), "bytes ->", by_hand.shape, by_hand.dtype)
    """),
    md("""
        `client.frames` does this for any pixel format. It reads the metadata once (and caches
        it), asks for the frames as stored (`transfer-syntax=*`, so compressed data travels
        compressed) and decodes them into a numpy array. Compressed data needs the optional
        decoders, installed by `pip install "dicomframes[codecs]"`.
    """),
    code("""
        pixels = client.frames(STUDY, SERIES_1, GREEN, frames=1)
        print(pixels.shape, pixels.dtype, "same as by hand:", np.array_equal(pixels, by_hand))
    """),
    md("""
        Several frames in one request, as `frames/1,2,3`, from the ten-frame instance. Without
        `frames=` you get all of them, stacked along the first axis:
    """),
    code("""
        first_three = client.frames(*CINE, frames=[1, 2, 3])
        print(last_request())
        print(first_three.shape, first_three.dtype)
        cine_frames = client.frames(*CINE)
        print(cine_frames.shape)
    """),
    md("""
        Frame numbers start at 1. Asking for frame 0, or for a frame past the last, is an error
        that the server reports with its own words:
    """),
    code("""
        for number in (0, 11):
            try:
                client.request("GET", "studies/{}/series/{}/instances/{}/frames/{}".format(
                    *CINE, number), headers={"Accept": "multipart/related; "
                                                       'type="application/octet-stream"'})
            except dicomframes.DICOMwebError as error:
                print(f"frame {number}: {error.status} {type(error).__name__}: {error.message}")
    """),
    md("""
        ## Pictures

        An RGB frame goes straight to matplotlib:
    """),
    code("""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
        for ax, (name, uids) in zip(axes, TUTORIAL.items()):
            ax.imshow(client.frames(*uids, frames=1))
            ax.set_title(name)
            ax.axis("off")
        plt.show()
    """),
    md("""
        `dicomframes.plotting` has helpers for grey images. `montage` lays frames out in a
        grid on one grey scale, so that the frames can be compared:
    """),
    code("""
        from dicomframes import plotting

        fig = plotting.montage(cine_frames, cols=5, suptitle="the ten frames of one instance")
    """),
    md("""
        `show_frame` also accepts a row of a metadata table. It fetches the pixels through the
        client that made the table:
    """),
    code("""
        ax = plotting.show_frame(meta[meta["SOPInstanceUID"] == BLUE].iloc[0])
    """),
    md("""
        Servers can also render a frame as an ordinary picture (`.../rendered`, PNG or JPEG).
        This is handy for thumbnails, but the pixel values are then display values, not data:
    """),
    code("""
        try:
            thumbnail = client.rendered(STUDY, SERIES_2, BLUE)
            print(last_request(), "->", thumbnail.shape, thumbnail.dtype)
        except dicomframes.DICOMwebError as error:
            print(f"this server does not render ({error.status}): {error.message}")
    """),
    md("""
        And the BulkDataURI from the metadata gives the raw pixel data value itself:
    """),
    code("""
        data = client.bulkdata(square["7FE00010"]["BulkDataURI"])
        print(len(data), "bytes of PixelData")
    """),
    md("""
        ## From a search to arrays

        Every DataFrame that `dicomframes` returns knows its client. The `.dicom` accessor then
        runs the follow-up calls for its rows. Here we get the pixels of every instance found
        by a search, stacked into one array (ordered by instance number, or by position for
        slices of a volume). `stack=False` gives a list with one array per row instead:
    """),
    code("""
        instances = client.search_instances(study=STUDY)
        stack = instances.dicom.frames()
        print(stack.shape, stack.dtype)
        [array.shape for array in instances.dicom.frames(stack=False)]
    """),
    md("""
        **Next:** [3 · Searching](03-search.ipynb) finds studies, series and instances by their
        attributes.
    """),
]


# ---------------------------------------------------------------------------------------------
# 03 search
# ---------------------------------------------------------------------------------------------

ARCHIVE_NOTE = """
    `dicomframes.samples.write_archive` writes a made-up archive: {patients} patients with
    PatientIDs `DF0001`, `DF0002`, ... and one to three studies each (CT, MR, chest X-ray or
    secondary captures) dated between 2012 and 2024. The same arguments always give the same
    files and UIDs. `skip_existing=True` sends only what the server lacks, so after this cell the
    server holds the whole archive, however often the cell runs.
"""

ARCHIVE = code("""
    from dicomframes.samples import write_archive

    archive = write_archive(folder / "archive", patients=10, seed=0)
    client.store(archive, skip_existing=True, progress=False)
    print(len(archive), "files,", sum(path.stat().st_size for path in archive) // 1_000_000, "MB")
""")

SEARCH = [
    md("""
        # 3 · Searching (QIDO-RS)

        **QIDO-RS** answers "which studies, series or instances match these attributes?". A
        search is a `GET` with the attributes in the query string, and the answer is a list of
        DICOM JSON objects, one per match. `dicomframes` returns that list as a DataFrame.
        This notebook makes the tutorial's six searches with its UIDs, then uses wildcards,
        date ranges, extra fields and paging on a larger made-up archive.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    SAMPLES,
    md(RESET_NOTE),
    RESET,
    code("""
        import json
        from datetime import date

        import pandas as pd
    """),
    md("""
        ## Studies: `GET /studies?StudyInstanceUID=...`

        The bare request first. The answer is a JSON array with one object per matching study.
        A study-level answer carries the study's attributes and the patient's, plus counts of
        its series and instances:
    """),
    code("""
        client.request("GET", "studies", params={"StudyInstanceUID": STUDY},
                       headers={"Accept": "application/dicom+json"})
        print(client.last_exchange)
    """),
    md("""
        `client.search_studies` sends the same request and returns a DataFrame. The filters are
        keyword arguments named after DICOM attributes:
    """),
    code("""
        client.search_studies(StudyInstanceUID=STUDY)
    """),
    md("""
        Any attribute the server indexes works as a filter; the patient's name, for example:
    """),
    code("""
        client.search_studies(PatientName="Anony Mous")[["PatientName", "PatientID", "StudyDate",
                                                          "NumberOfStudyRelatedInstances"]]
    """),
    md("""
        ## Series: `GET /series?...` and `GET /studies/{study}/series?...`

        Series can be searched across the whole archive or inside one study. `last_request()`
        (defined at the top of this notebook) prints the request that each call made, with the
        tutorial's UIDs written as names such as `{study}` so that the lines stay short.
    """),
    code("""
        found = client.search_series(SeriesInstanceUID=SERIES_1)
        print(last_request())
        found[["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"]]
    """),
    code("""
        found = client.search_series(STUDY, SeriesInstanceUID=SERIES_1)
        print(last_request())
        found[["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"]]
    """),
    md("""
        ## Instances: in the archive, in a study, in a series

        Three scopes for the same question: `/instances`, `/studies/{study}/instances` and
        `/studies/{study}/series/{series}/instances`.
    """),
    code("""
        for scope in ((), (STUDY,), (STUDY, SERIES_1)):
            found = client.search_instances(*scope, SOPInstanceUID=GREEN)
            print(f"{last_request():70} {len(found)} match")
        found[["InstanceNumber", "Rows", "Columns", "SOPInstanceUID"]]
    """),
    md("""
        ## A bigger archive
    """),
    md(ARCHIVE_NOTE.format(patients="ten")),
    ARCHIVE,
    code("""
        studies = client.search_studies(PatientID="DF*")
        print(len(studies), "studies of", studies["PatientID"].nunique(), "patients")
    """),
    md("""
        ## Wildcards

        In text attributes `*` matches any run of characters and `?` matches exactly one.
        Names come back readable (`Family, Given`). On the wire, DICOM writes them as
        `Family^Given`:
    """),
    code("""
        client.search_studies(PatientName="Mü*")[
            ["PatientName", "PatientID", "StudyDate", "ModalitiesInStudy"]
        ].sort_values("StudyDate", ignore_index=True)
    """),
    code("""
        found = client.search_studies(PatientID="DF000?")
        sorted(found["PatientID"].unique())
    """),
    md("""
        ## Date ranges

        A range is written `start-end` in DICOM (`20150101-20181231`). From Python, give a
        `(start, end)` tuple of dates or ISO strings. Leave one end as `None` for an open
        range.
    """),
    code("""
        as_text = client.search_studies(StudyDate="20150101-20181231", PatientID="DF*")
        as_dates = client.search_studies(StudyDate=(date(2015, 1, 1), date(2018, 12, 31)),
                                         PatientID="DF*")
        print(last_request())
        print(len(as_text), "studies; the same with dates:",
              set(as_text["StudyInstanceUID"]) == set(as_dates["StudyInstanceUID"]))
        sorted(as_text["StudyDate"].dt.strftime("%Y-%m-%d"))
    """),
    code("""
        since_2022 = client.search_studies(StudyDate=("2022-01-01", None), PatientID="DF*")
        before_2014 = client.search_studies(StudyDate=(None, "2013-12-31"), PatientID="DF*")
        print(len(since_2022), "studies since 2022,", len(before_2014), "before 2014")
    """),
    md("""
        Filters combine with AND. Series-level attributes such as *Modality* go to a series
        search:
    """),
    code("""
        mr = client.search_series(Modality="MR", PatientID="DF*")
        mr.value_counts("SeriesDescription")
    """),
    md("""
        ## More attributes: `includefield`

        A server returns a fixed set of attributes for each level. `includefield` asks for
        more, either by name or with `"all"`:
    """),
    code("""
        plain = client.search_studies(PatientID="DF0001")
        more = client.search_studies(PatientID="DF0001",
                                     includefield=["StudyDescription", "PatientAge"])
        print(last_request())
        print("added:", sorted(set(more.columns) - set(plain.columns)))
        everything = client.search_studies(PatientID="DF0001", includefield="all")
        print("with all:", sorted(set(everything.columns) - set(plain.columns)))
    """),
    md("""
        ## Fuzzy matching

        Azure and the embedded server accept `fuzzymatching=true`. A name then matches when any
        of its words starts with the text you give, in any case:
    """),
    code("""
        try:
            fuzzy = client.search_studies(PatientName="luc", fuzzymatching=True)
            print(sorted(fuzzy["PatientName"].unique()))
        except dicomframes.DICOMwebError as error:
            print(f"this server refuses fuzzy matching ({error.status}): {error.message}")
    """),
    md("""
        ## Paging: `limit` and `offset`

        Servers return results in pages. Azure, for example, returns at most 200 per request.
        `limit` is the page size and `offset` says how many results to skip. Walking the pages
        by hand:
    """),
    code("""
        pages = []
        offset = 0
        while True:
            page = client.search_studies(PatientID="DF*", limit=8, offset=offset)
            print(f"{last_request():45} -> {len(page)} rows")
            pages.append(page)
            if len(page) < 8:
                break
            offset += len(page)
        walked = pd.concat(pages)
        print(len(walked), "studies,", walked["StudyInstanceUID"].nunique(), "different")
    """),
    md("""
        Without `limit`, `search_*` walks the pages for you with `client.page_size` results per
        request. It shows a progress bar for long searches, which we switch off here:
    """),
    code("""
        client.page_size, client.progress = 8, False
        client.history.clear()                     # the client keeps its last 20 exchanges
        every = client.search_studies(PatientID="DF*")
        for exchange in client.history:
            print(exchange.method, exchange.url.removeprefix(client.url))
        print(len(every), "studies in", len(client.history), "requests")
        client.page_size, client.progress = 100, True
    """),
    md("""
        ## No match

        No match is not an error. Some servers answer `204 No Content`, others an empty list,
        and you get an empty DataFrame that still has the usual columns:
    """),
    code("""
        nobody = client.search_studies(PatientName="Nobody*")
        print(nobody.shape)
        list(nobody.columns[:6])
    """),
    md("""
        ## The raw answer and the next step

        `search_json` returns the DICOM JSON as it came. A search DataFrame can also start the
        next search through its `.dicom` accessor. Here we list the series of every CT study:
    """),
    code("""
        raw = client.search_json("study", PatientID="DF0001")
        print(json.dumps(raw[0]["00100010"], ensure_ascii=False))
        ct_studies = studies[studies["ModalitiesInStudy"] == "CT"]
        ct_series = ct_studies.dicom.series()
        print(len(ct_studies), "CT studies,", len(ct_series), "series,",
              ct_series["NumberOfSeriesRelatedInstances"].sum(), "slices")
    """),
    md("""
        **Next:** [4 · Deleting](04-delete.ipynb), and [5 · Exploring](05-explore.ipynb) for
        what a data scientist does with these tables.
    """),
]

# ---------------------------------------------------------------------------------------------
# 04 delete
# ---------------------------------------------------------------------------------------------

DELETE = [
    md("""
        # 4 · Deleting

        The DICOM standard has no `DELETE`: archives are meant to keep things. Azure's DICOM
        service, the embedded server and a few others add it anyway, at the three levels of the
        tutorial: one instance, one series, one study. Each deletion below is checked with a
        search. On a server without `DELETE` (Orthanc, for one, answers 405) each cell prints
        the server's answer. Such servers delete through their own API.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    SAMPLES,
    md(RESET_NOTE),
    RESET,
    md("""
        `contents()` says what the server holds of the study: the instance numbers in each
        series. Series 1 holds the triangle (instance 1) and the square (instance 2), and
        series 2 holds the circle.
    """),
    code("""
        def contents():
            \"\"\"What the server holds of the tutorial's study: instance numbers by series.\"\"\"
            found = client.search_instances(study=STUDY)
            if found.empty:
                return "the study is gone"
            by_series = found.groupby("SeriesNumber")["InstanceNumber"]
            return "; ".join(f"series {number}: instances {sorted(map(int, numbers))}"
                             for number, numbers in by_series)


        contents()
    """),
    md("""

        ## One instance: `DELETE /studies/{study}/series/{series}/instances/{instance}`

        The bare request first. A success is `204 No Content`, with an empty body:
    """),
    code("""
        try:
            client.request("DELETE", f"studies/{STUDY}/series/{SERIES_1}/instances/{RED}")
        except dicomframes.DICOMwebError as error:
            print(f"not deleted ({error.status}): {error.message or 'the server gave no reason'}")
        print(client.last_exchange)
    """),
    code("""
        found = client.search_instances(SOPInstanceUID=RED)
        print(len(found), "instances found with the triangle's UID")
        contents()
    """),
    md("""
        Deleting it again is an error: the server says `404 Not Found`, which `dicomframes`
        raises as `dicomframes.NotFound`:
    """),
    code("""
        try:
            client.delete(STUDY, SERIES_1, RED)
        except dicomframes.NotFound as error:
            print(error.status, error.message)
        except dicomframes.DICOMwebError as error:
            print(f"not deleted ({error.status}): {error.message}")
    """),
    md("""
        ## One series: `DELETE /studies/{study}/series/{series}`

        The one-liner is `client.delete(study, series)`. Series 1 goes, with the square still
        in it:
    """),
    code("""
        try:
            client.delete(STUDY, SERIES_1)
            print(last_request(), "->", client.last_exchange.status)
        except dicomframes.DICOMwebError as error:
            print(f"not deleted ({error.status}): {error.message}")
        print(len(client.search_series(STUDY)), "series left in the study")
        contents()
    """),
    md("""
        ## One study: `DELETE /studies/{study}`
    """),
    code("""
        try:
            client.delete(STUDY)
            print(last_request(), "->", client.last_exchange.status)
        except dicomframes.DICOMwebError as error:
            print(f"not deleted ({error.status}): {error.message}")
        print(len(client.search_studies(StudyInstanceUID=STUDY)), "studies with that UID")
        contents()
    """),
    md("""
        Deleting also works from a search table: `df.dicom.delete()` deletes the rows' instances,
        series or studies. We store the study again and then delete every study of the patient
        named "Anony Mous":
    """),
    code("""
        reset()
        print("before:", contents())
        try:
            client.search_studies(PatientName="Anony Mous").dicom.delete()
        except dicomframes.DICOMwebError as error:
            print(f"not deleted ({error.status}): {error.message}")
        print("after:", contents())
    """),
    md("""
        **Next:** [5 · Exploring](05-explore.ipynb) a larger archive with pandas and
        matplotlib.
    """),
]


# ---------------------------------------------------------------------------------------------
# 05 explore
# ---------------------------------------------------------------------------------------------

EXPLORE = [
    md("""
        # 5 · Exploring an archive with pandas, numpy and matplotlib

        The first four notebooks covered the API. This one puts it to work. We take a made-up
        archive of ten patients, count what it holds, plot it, and then load one CT series as a
        3-D numpy array to look inside it.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    md(ARCHIVE_NOTE.format(patients="ten")),
    code("""
        import tempfile
        from pathlib import Path

        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd
        from dicomframes import plotting

        folder = Path(tempfile.mkdtemp(prefix="dicomframes-samples-"))
    """),
    ARCHIVE,
    md("""
        ## One table of studies

        One search gives the table. `PatientID="DF*"` keeps us to this archive, whatever else
        the server holds. `includefield` adds two attributes that a study search does not
        return by default.
    """),
    code("""
        studies = client.search_studies(PatientID="DF*",
                                        includefield=["StudyDescription", "PatientAge"])
        studies = studies.sort_values(["PatientID", "StudyDate"], ignore_index=True)
        studies[["PatientID", "PatientName", "PatientSex", "PatientAge", "StudyDate",
                 "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances"]]
    """),
    md("""
        The columns have proper types, so the usual pandas tools work directly: dates are
        timestamps and counts are integers.
    """),
    code("""
        studies[["StudyDate", "PatientAge", "NumberOfStudyRelatedInstances"]].dtypes
    """),
    md("""
        ## Grouping and counting

        `ModalitiesInStudy` can hold several values (a study with CT and PET images, say). In
        this archive every study has one modality, so it groups like any text column.
    """),
    code("""
        per_modality = studies.groupby("ModalitiesInStudy").agg(
            studies=("StudyInstanceUID", "size"),
            patients=("PatientID", "nunique"),
            instances=("NumberOfStudyRelatedInstances", "sum"),
        )
        per_modality
    """),
    code("""
        patients = studies.groupby(["PatientID", "PatientName", "PatientSex"]).agg(
            studies=("StudyInstanceUID", "size"),
            first=("StudyDate", "min"),
            last=("StudyDate", "max"),
            modalities=("ModalitiesInStudy", lambda m: ", ".join(sorted(set(m)))),
        )
        patients
    """),
    md("""
        *PatientAge* is a DICOM age string such as `045Y`. Its number gives the age at the time
        of each study:
    """),
    code("""
        studies["age"] = studies["PatientAge"].str[:3].astype(int)
        studies.groupby("ModalitiesInStudy")["age"].describe()[["count", "mean", "min", "max"]]
    """),
    md("""
        ## Plots: studies per modality, and over time
    """),
    code("""
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        per_modality["studies"].plot.bar(ax=left, color="tab:blue", rot=0)
        left.set(title="Studies per modality", xlabel="", ylabel="studies")

        by_year = (studies.groupby([studies["StudyDate"].dt.year, "ModalitiesInStudy"]).size()
                   .unstack(fill_value=0)
                   .reindex(range(2012, 2025), fill_value=0))
        by_year.plot.bar(ax=right, stacked=True, rot=45, width=0.8)
        right.set(title="Studies per year", xlabel="", ylabel="studies")
        right.legend(title="modality", fontsize=8)
        fig.tight_layout()
        plt.show()
    """),
    md("""
        A timeline draws each patient's studies on one line, one marker per modality:
    """),
    code("""
        fig, ax = plt.subplots(figsize=(10, 3.6))
        markers = {"CT": "o", "MR": "s", "CR": "^", "OT": "D"}
        rows = {pid: i for i, pid in enumerate(sorted(studies["PatientID"].unique()))}
        for modality, group in studies.groupby("ModalitiesInStudy"):
            ax.scatter(group["StudyDate"], group["PatientID"].map(rows), label=modality,
                       marker=markers.get(modality, "x"), s=60)
        ax.set_yticks(list(rows.values()), list(rows.keys()))
        ax.set(title="Studies per patient over time", xlabel="study date")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        plt.show()
    """),
    md("""
        ## Series

        A series search gives one row per series. Its description tells the MR sequences apart
        (T1 and T2):
    """),
    code("""
        series = client.search_series(PatientID="DF*")
        series.groupby(["Modality", "SeriesDescription"]).agg(
            series=("SeriesInstanceUID", "size"),
            instances=("NumberOfSeriesRelatedInstances", "sum"),
        )
    """),
    md("""
        ## One CT series, slice by slice

        We pick the first patient's CT series and read its metadata: one row per slice, with
        everything we need to turn stored values into Hounsfield units (*RescaleSlope*,
        *RescaleIntercept*) and the suggested display windows (*WindowCenter* / *WindowWidth*,
        two of them here).
    """),
    code("""
        ct = series[series["Modality"] == "CT"].sort_values("PatientID").iloc[0]
        meta = client.metadata(ct["StudyInstanceUID"], ct["SeriesInstanceUID"])
        meta = meta.sort_values("InstanceNumber", ignore_index=True)
        print(ct["PatientID"], ct["SeriesDescription"], "-", len(meta), "slices")
        meta[["InstanceNumber", "ImagePositionPatient", "SliceThickness", "PixelSpacing",
              "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"]].head()
    """),
    md("""
        `show_series` draws evenly spaced slices. Given the metadata table, it fetches the
        volume through the client, rescales it, and uses the first suggested window
        (soft tissue, centre 40 and width 400):
    """),
    code("""
        fig = plotting.show_series(meta, count=6)
    """),
    md("""
        ## The volume as an array

        `client.volume` fetches every slice of the series into one numpy array, ordered along
        the patient's axis (by *ImagePositionPatient*, not by the order the server lists them).
        Applying the rescale gives Hounsfield units:
    """),
    code("""
        volume = client.volume(ct["StudyInstanceUID"], ct["SeriesInstanceUID"])
        print(volume.shape, volume.dtype)
        slope, intercept = meta.loc[0, ["RescaleSlope", "RescaleIntercept"]]
        hu = volume * slope + intercept
        print(f"{hu.min():.0f} to {hu.max():.0f} HU")
    """),
    md("""
        The same slices in the second window, the lung window (centre −600, width 1500). A
        window maps `centre ± width/2` to black and white:
    """),
    code("""
        center, width = meta.loc[0, "WindowCenter"][1], meta.loc[0, "WindowWidth"][1]
        fig = plotting.show_series(hu, count=6, window=(center, width),
                                   title=f"lung window ({center:g} / {width:g})")
    """),
    md("""
        Numpy indexing cuts the volume along the other two axes, and a maximum along one axis
        gives a maximum-intensity projection. The aspect ratio comes from the spacing between
        slices and from the pixel spacing:
    """),
    code("""
        from dicomframes.pixels import apply_window

        spacing_z = meta.loc[0, "SliceThickness"]
        spacing_y, spacing_x = meta.loc[0, "PixelSpacing"]
        slices, rows, cols = hu.shape
        views = {
            "axial (middle slice)": (hu[slices // 2], spacing_y / spacing_x),
            "coronal": (hu[:, rows // 2, :], spacing_z / spacing_x),
            "sagittal": (hu[:, :, cols // 2], spacing_z / spacing_y),
            "maximum along the slices": (hu.max(axis=0), spacing_y / spacing_x),
        }
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        for ax, (title, (image, aspect)) in zip(axes, views.items()):
            ax.imshow(apply_window(image, 40, 400), cmap="gray", vmin=0, vmax=1, aspect=aspect)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        plt.show()
    """),
    md("""
        Numbers per slice are one reduction away. Here is the share of each slice that is air
        (below −500 HU) and that is soft tissue (−100 to 100 HU):
    """),
    code("""
        per_slice = pd.DataFrame({
            "z (mm)": [position[2] for position in meta["ImagePositionPatient"]],
            "air": (hu < -500).mean(axis=(1, 2)),
            "soft tissue": ((hu > -100) & (hu < 100)).mean(axis=(1, 2)),
        }).set_index("z (mm)")
        ax = per_slice.plot(figsize=(7, 3), title="Share of each slice", ylabel="fraction")
        plt.show()
        per_slice.describe().loc[["mean", "min", "max"]].round(3)
    """),
    md("""
        ## Other kinds of image

        An MR study of this archive has two series, T1 and T2, of the same slices. Side by side,
        their middle slices:
    """),
    code("""
        mr_study = studies[studies["ModalitiesInStudy"] == "MR"].iloc[0]["StudyInstanceUID"]
        mr_series = client.search_series(mr_study).sort_values("SeriesNumber", ignore_index=True)
        fig, axes = plt.subplots(1, len(mr_series), figsize=(7, 3.5))
        for ax, (_, s) in zip(axes, mr_series.iterrows()):
            mr = client.volume(mr_study, s["SeriesInstanceUID"])
            plotting.show_frame(mr[len(mr) // 2], ax=ax,
                                title=f"{s['SeriesDescription']}: {len(mr)} slices")
        plt.show()
    """),
    md("""
        Chest X-rays here are stored `MONOCHROME1`, where high values are dark. `show_frame`
        takes a metadata row, reads the photometric interpretation and inverts the greys to
        match:
    """),
    code("""
        cr = series[series["Modality"] == "CR"].sort_values("PatientID").iloc[0]
        cr_meta = client.metadata(cr["StudyInstanceUID"], cr["SeriesInstanceUID"])
        cr_meta = cr_meta.sort_values("InstanceNumber", ignore_index=True)
        print(cr_meta.loc[0, ["PhotometricInterpretation", "Rows", "Columns", "BitsStored"]]
              .to_dict())
        fig, axes = plt.subplots(1, len(cr_meta), figsize=(7, 3.5))
        for ax, (_, row) in zip(axes, cr_meta.iterrows()):
            plotting.show_frame(row, ax=ax)
        plt.show()
    """),
    md("""
        Some instances hold many frames (a cine loop). Their frames are the first axis of
        `client.frames`:
    """),
    code("""
        ot = client.search_instances(PatientID="DF*", Modality="OT",
                                     includefield=["NumberOfFrames"])
        multi_frame = ot[ot["NumberOfFrames"].fillna(1).astype(int) > 1]
        multi = multi_frame.sort_values("SOPInstanceUID").iloc[0]
        frames = client.frames(multi["StudyInstanceUID"], multi["SeriesInstanceUID"],
                               multi["SOPInstanceUID"])
        print(frames.shape, frames.dtype)
        fig = plotting.montage(frames, cols=6, suptitle="a cine loop, frame by frame")
    """),
    md("""
        That is the whole path: a search becomes a table, the table picks what to load, and the
        pixels arrive as numpy arrays ready for analysis.

        **Next:** [6 · Widgets](06-widgets.ipynb) shows the same archive through a point-and-click
        browser and an upload panel.
    """),
]


# ---------------------------------------------------------------------------------------------
# 06 widgets
# ---------------------------------------------------------------------------------------------

WIDGETS = [
    md("""
        # 6 · Widgets: a study browser and an uploader

        Two small apps for a notebook, built with ipywidgets on top of the same client:
        `StudyBrowser` searches, lists and shows images, and `Uploader` stores files. They
        work in JupyterLab and in Jupyter Notebook 7 (and in VS Code) with a live kernel. On a
        static page such as a rendered `.ipynb`, you see only their last state, or nothing.
    """),
    md(CONNECT_NOTE),
    CONNECT,
    SAMPLES,
    md(RESET_NOTE),
    RESET,
    code("""
        outcome = client.store(cine, progress=False)        # stored, or already there
    """),
    md("""
        ## StudyBrowser

        Fill in the form and press *Search*. Choosing a study lists its series, and choosing a
        series lists its instances and shows the first one. The sliders move through frames
        and change the grey window. *Download* writes the chosen study, series or instance to
        a folder, and *Delete…* removes it from the server after asking for confirmation.
    """),
    code("""
        # NBVAL_IGNORE_OUTPUT
        # (the output of this cell is the widget itself)
        from dicomframes.widgets import StudyBrowser, Uploader

        browser = StudyBrowser(client)
        browser
    """),
    md("""
        Every part of the widget is a public attribute, so code can drive it too. That is
        useful for a demonstration, and it is how the widget is tested. The browser above
        follows along:
    """),
    code("""
        browser.patient_name.value = "Anony"
        browser.search()
        print(browser.filters())
        browser.study_table[["PatientName", "StudyDate", "ModalitiesInStudy",
                             "NumberOfStudyRelatedInstances"]]
    """),
    code("""
        browser.studies.value = STUDY           # as if clicked: lists the study's series
        browser.series.value = SERIES_1         # lists its instances and shows the first
        print(browser.image_info.value)
        browser.instance_table[["InstanceNumber", "SOPInstanceUID"]]
    """),
    md("""
        The ten-frame instance has a frame slider and a grey window:
    """),
    code("""
        browser.patient_name.value = ""
        browser.patient_id.value = header.PatientID
        browser.search()
        browser.studies.value = CINE[0]
        browser.series.value = CINE[1]
        browser.frame.value = 4
        print(browser.image_info.value)
        print("window: center", browser.center.value, "width", browser.width.value)
        print("frame shown:", browser.pixels.shape, browser.pixels.dtype)
    """),
    md("""
        ## Uploader

        Pick files in the browser (zip files are unpacked), or type a folder or a pattern such
        as `scans/**/*.dcm` that the kernel can read, then press *Upload*. The upload runs in
        the background: the notebook stays usable and *Cancel* stops it after the requests that
        are under way. Each file gets a row in the outcome table.
    """),
    code("""
        # NBVAL_IGNORE_OUTPUT
        # (the output of this cell is the widget itself)
        uploader = Uploader(client)
        uploader
    """),
    md("""
        Driven from code: we upload the sample folder, which the server already holds.
    """),
    code("""
        uploader.folder.value = str(folder)
        uploader.start()
        result = uploader.wait()
        print(uploader.status.value.split(",")[0])
        result.assign(file=result["source"].map(lambda source: Path(source).name))[
            ["file", "status", "reason"]]
    """),
    md("""
        With *skip what the server has* ticked, nothing is sent again:
    """),
    code("""
        uploader.skip_existing.value = True
        uploader.start()
        uploader.wait()["status"].value_counts()
    """),
    md("""
        That is the tour. The [README](../README.md) lists every call and the HTTP request it
        makes.
    """),
]


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {
    "01-store": STORE,
    "02-retrieve": RETRIEVE,
    "03-search": SEARCH,
    "04-delete": DELETE,
    "05-explore": EXPLORE,
    "06-widgets": WIDGETS,
}


def build(name: str, cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[nbformat.from_dict(dict(cell)) for cell in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def execute(nb: nbformat.NotebookNode) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                   store_widget_state=True,
                   resources={"metadata": {"path": str(HERE)}}).execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="name prefixes, e.g. 01 05")
    parser.add_argument("--no-execute", action="store_true", help="write without outputs")
    parser.add_argument("--data", help="archive folder to use (default: a fresh temporary one)")
    args = parser.parse_args(argv)

    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(p) for p in args.only)]
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="dicomframes-nb-"))
    os.environ["DICOMFRAMES_DATA"] = str(data)
    for variable in ("DICOMWEB_URL", "DICOMWEB_TOKEN"):
        os.environ.pop(variable, None)
    failed = []
    try:
        for name in names:
            nb = build(name, NOTEBOOKS[name])
            if not args.no_execute:
                started = time.perf_counter()
                try:
                    execute(nb)
                except CellExecutionError as error:
                    failed.append(name)
                    print(f"{name}: FAILED\n{strip_ansi(str(error))[-3000:]}", file=sys.stderr)
                else:
                    print(f"{name}: executed in {time.perf_counter() - started:.1f} s")
            nbformat.validate(nb)
            nbformat.write(nb, HERE / f"{name}.ipynb")
    finally:
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
