"""Finding what to upload: expand paths, folders, globs, zip files, Datasets and bytes into
:class:`Instance` records, and read the header of each (never its pixel data).

A file that cannot be used becomes a ``failed`` record with a message and never stops the
rest; a file cut short inside its Pixel Data is caught here, since servers refuse such files
without saying why or drop them silently.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from ..standard.pixellayout import PixelDataError, read_pixel_data_header

__all__ = ["Instance", "discover"]

STORED = "stored"
ALREADY_STORED = "already stored"
FAILED = "failed"
SKIPPED = "skipped"

_HEADER_TAGS = [Tag(0x00080016), Tag(0x00080018), Tag(0x0020000D), Tag(0x0020000E)]
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_GLOB_CHARS = frozenset("*?[")


@dataclass
class Instance:
    """One input item and, after :func:`post_batch`, its outcome.

    ``kind`` says where the bytes live: ``"file"`` (``path``), ``"zip"`` (``member`` of the zip
    file at ``path``) or ``"bytes"`` (``data``). ``size`` is the Part-10 size in bytes.
    """

    source: str
    kind: str
    path: str | None = None
    member: str | None = None
    data: bytes | None = None
    size: int = 0
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    status: str | None = None
    reason: int | None = None
    message: str = ""
    retrieve_url: str | None = None

    def fail(self, message: str, reason: int | None = None) -> None:
        """Mark this instance as failed with ``message``."""
        self.status, self.reason, self.message = FAILED, reason, message

    def skip(self, message: str) -> None:
        """Mark this instance as skipped (not sent) with ``message``."""
        self.status, self.message = SKIPPED, message

    def row(self) -> dict[str, Any]:
        """This instance as one row of the outcome table."""
        return {
            "source": self.source,
            "SOPInstanceUID": self.sop_instance_uid,
            "StudyInstanceUID": self.study_instance_uid,
            "SeriesInstanceUID": self.series_instance_uid,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "RetrieveURL": self.retrieve_url,
        }



def discover(items: Any, *, follow_symlinks: bool = False) -> list[Instance]:
    """Expand ``items`` into :class:`Instance` objects and read the header of each one.

    ``items`` is one item or an iterable of them: a path (str or ``os.PathLike``) to a file, a
    folder (walked recursively; hidden files and folders are ignored), a zip file (its members),
    a glob pattern (``"scans/**/*.dcm"``), a :class:`pydicom.Dataset`, ``bytes`` of a Part-10
    file or of a zip file, or a ``(name, bytes)`` pair (the name shows as the row's source).
    Only the header is read (``stop_before_pixels``). Inputs that cannot be used get
    ``status="failed"`` and a message (also a file cut short inside its native Pixel Data);
    DICOMDIR index files are ``skipped``. Zip members whose names climb out of the archive
    (``..``, absolute paths) are ``failed``. Symbolic links found inside a folder that point
    out of it are ``skipped`` unless ``follow_symlinks`` (links within it are followed).
    """
    found = expand(items, follow_symlinks=follow_symlinks)
    for inst in found:
        if inst.status is None:
            read_header(inst)
    return found


def expand(items: Any, *, follow_symlinks: bool = False) -> list[Instance]:
    """Like :func:`discover` without reading anything: files are listed (with their sizes),
    folders walked, globs matched and zip directories read, but no header is parsed yet."""
    found: list[Instance] = []
    counters = {"dataset": 0, "bytes": 0}
    for item in _as_list(items):
        found.extend(_expand(item, counters, follow_symlinks))
    return found


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview, Dataset)):
        return [items]
    if (isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], str)
            and isinstance(items[1], (bytes, bytearray, memoryview))):
        return [items]
    return list(items)


def _expand(item: Any, counters: dict[str, int], follow: bool) -> Iterator[Instance]:
    if isinstance(item, Dataset):
        counters["dataset"] += 1
        source = f"<Dataset {counters['dataset']}>"
        try:
            data = _dataset_bytes(item)
        except Exception as exc:
            inst = Instance(source, "bytes")
            inst.fail(f"cannot write this Dataset as a DICOM file: {exc}")
            yield inst
            return
        yield Instance(source, "bytes", data=data, size=len(data))
        return
    name: str | None = None
    if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            and isinstance(item[1], (bytes, bytearray, memoryview))):
        name, item = item
    if isinstance(item, (bytes, bytearray, memoryview)):
        counters["bytes"] += 1
        data = bytes(item)
        source = name or f"<bytes {counters['bytes']}>"
        if data[:4] == b"PK\x03\x04":
            yield from _expand_zip_bytes(source, data)
            return
        yield Instance(source, "bytes", data=data, size=len(data))
        return
    if not isinstance(item, (str, os.PathLike)):
        inst = Instance(repr(item)[:80], "bytes")
        inst.fail(f"cannot upload an object of type {type(item).__name__}: "
                  "give paths, folders, glob patterns, zip files, Datasets or bytes")
        yield inst
        return
    text = os.path.expanduser(os.fspath(item))
    path = Path(text)
    if path.is_dir():
        yield from _walk(path, follow)
    elif path.is_file():
        yield from _expand_file(path)
    elif _GLOB_CHARS & set(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            inst = Instance(text, "file", path=text)
            inst.fail("no file matches this pattern")
            yield inst
        for match in matches:
            if os.path.isdir(match):
                yield from _walk(Path(match), follow)
            else:
                yield from _expand_file(Path(match))
    else:
        inst = Instance(text, "file", path=text)
        inst.fail("no such file or folder")
        yield inst


def _expand_zip_bytes(source: str, data: bytes) -> Iterator[Instance]:
    """Members of a zip file given as bytes (e.g. from a browser upload), each as bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                unsafe = _unsafe_member(f"{source}!{info.filename}", info.filename)
                if unsafe is not None:
                    yield unsafe
                elif not info.is_dir() and not _hidden_member(info.filename):
                    content = zf.read(info)
                    yield Instance(f"{source}!{info.filename}", "bytes", data=content,
                                   size=len(content))
    except (OSError, zipfile.BadZipFile) as exc:
        inst = Instance(source, "bytes")
        inst.fail(f"cannot read this zip file: {exc}")
        yield inst


def _walk(folder: Path, follow: bool) -> Iterator[Instance]:
    """The files of ``folder``, recursively (hidden ones left out). A symbolic link that points
    out of the folder is a ``skipped`` row unless ``follow``; a broken one a ``failed`` row;
    a folder reached twice through links is walked once."""
    top = folder.resolve()
    seen = {top}
    todo = [folder]
    while todo:
        current = todo.pop(0)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            inst = Instance(str(current), "file", path=str(current))
            inst.fail(f"cannot read this folder: {exc.strerror or exc}")
            yield inst
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__MACOSX":
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                refused = _refused_link(path, top, follow)
                if refused is not None:
                    yield refused
                    continue
            if entry.is_dir():
                real = path.resolve()
                if real not in seen:
                    seen.add(real)
                    folders.append(path)
            else:
                yield from _expand_file(path)
        todo[:0] = folders  # depth first, in name order


def _refused_link(path: Path, top: Path, follow: bool) -> Instance | None:
    """A row for a symbolic link that is not followed (broken, or out of the folder without
    ``follow``); None when it is followed."""
    source = str(path)
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        inst = Instance(source, "file", path=source)
        inst.fail("broken symbolic link: it points to nothing")
        return inst
    if follow or target == top or top in target.parents:
        return None
    inst = Instance(source, "file", path=source)
    inst.skip(f"symbolic link to {target}, outside the folder: not followed (pass "
              "follow_symlinks=True to upload what it points to)")
    return inst


def _expand_file(path: Path) -> Iterator[Instance]:
    source = str(path)
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = list(zf.infolist())
        except (OSError, zipfile.BadZipFile) as exc:
            inst = Instance(source, "file", path=source)
            inst.fail(f"cannot read this zip file: {exc}")
            yield inst
            return
        for info in infos:
            unsafe = _unsafe_member(f"{source}!{info.filename}", info.filename)
            if unsafe is not None:
                yield unsafe
            elif not info.is_dir() and not _hidden_member(info.filename):
                yield Instance(f"{source}!{info.filename}", "zip", path=source,
                               member=info.filename, size=info.file_size)
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        inst = Instance(source, "file", path=source)
        inst.fail(f"cannot read this file: {exc.strerror or exc}")
        yield inst
        return
    yield Instance(source, "file", path=source, size=size)


def _unsafe_member(source: str, name: str) -> Instance | None:
    """A ``failed`` row for a zip member whose name climbs out of the archive (``..``, an
    absolute path, a drive letter); None for a safe name."""
    parts = name.replace("\\", "/").split("/")
    if ".." in parts or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        inst = Instance(source, "bytes")
        inst.fail(f"unsafe zip member name {name!r} (it climbs out of the archive): not "
                  "uploaded")
        return inst
    return None


def _hidden_member(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _dataset_bytes(ds: Dataset) -> bytes:
    """Serialise a Dataset as a Part-10 file without changing the caller's object."""
    meta = FileMetaDataset(ds.file_meta) if getattr(ds, "file_meta", None) else FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    shallow = copy.copy(ds)
    shallow.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, shallow, enforce_file_format=True)
    return buffer.getvalue()



def read_header(inst: Instance) -> None:
    """Read the identifying attributes of ``inst`` and check that it is a DICOM Part-10 file."""
    try:
        with _open_instance(inst) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            shortfall = _pixel_data_shortfall(fh, ds, inst.size)
    except OSError as exc:
        inst.fail(f"cannot read this file: {exc.strerror or exc}")
        return
    except InvalidDicomError:
        inst.fail("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
        return
    except Exception as exc:
        inst.fail(f"not a readable DICOM file ({short_error(exc)})")
        return
    meta = getattr(ds, "file_meta", None)
    sop = _text(ds.get("SOPInstanceUID")) or _text(meta.get("MediaStorageSOPInstanceUID") if meta
                                                     else None)
    inst.sop_instance_uid = sop
    inst.sop_class_uid = _text(ds.get("SOPClassUID")) or (
        _text(meta.get("MediaStorageSOPClassUID")) if meta else None)
    inst.study_instance_uid = _text(ds.get("StudyInstanceUID"))
    inst.series_instance_uid = _text(ds.get("SeriesInstanceUID"))
    if inst.sop_class_uid == _DICOMDIR_CLASS:
        inst.skip("DICOMDIR is an index of a DICOM medium, not an instance to store")
    elif shortfall:
        inst.fail(shortfall)
    elif not sop:
        inst.fail("not a DICOM instance: no SOPInstanceUID")
    elif not inst.study_instance_uid:
        inst.fail("not a DICOM instance: no StudyInstanceUID")


def _pixel_data_shortfall(fh: BinaryIO, ds: Dataset, size: int) -> str | None:
    """After ``dcmread(fh, stop_before_pixels=True)``: a message when the Pixel Data value
    declares more bytes than the file holds, else None (reads one element header)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax or size <= 0:
        return None
    try:
        header = read_pixel_data_header(fh, syntax, size)
    except PixelDataError:
        return "truncated DICOM file: it ends inside the Pixel Data element header"
    except ValueError:  # not a transfer syntax pydicom knows: nothing to check
        return None
    missing = header.shortfall(size) if header is not None else 0
    if not missing or header is None:
        return None
    present = max(size - header.value_offset, 0)
    return (f"truncated DICOM file: its Pixel Data declares {header.length} bytes, only "
            f"{present} are present")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().rstrip("\x00").strip()
    return text or None


def short_error(exc: BaseException) -> str:
    """An exception as one short line for a row's message."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def _open_instance(inst: Instance) -> Iterator[BinaryIO]:
    """The bytes of ``inst`` as an open binary stream (file, zip member or memory)."""
    if inst.kind == "bytes":
        yield io.BytesIO(inst.data or b"")
    elif inst.kind == "zip":
        with zipfile.ZipFile(inst.path or "") as zf, zf.open(inst.member or "") as fh:
            yield fh  # type: ignore[misc]
    else:
        with open(inst.path or "", "rb") as fh:
            yield fh

