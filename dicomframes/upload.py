"""Bulk STOW-RS: discover DICOM files, batch them, stream them in parallel, report each one.

:func:`store` is what :meth:`dicomframes.Client.store` calls. It takes paths, folders
(recursive), glob patterns, zip files, pydicom Datasets and raw bytes, mixed, and returns a
DataFrame with one row per input and its outcome (``stored``, ``already stored``, ``failed``,
``skipped``). A file that is not DICOM becomes a ``failed`` row and never stops the rest.

The steps are public so that a notebook can show them one at a time:

* :func:`discover` expands the items and reads only the header of each file (no pixel data);
* :func:`plan_batches` groups the instances into requests by count and by bytes;
* :func:`post_batch` sends one ``multipart/related`` request, streamed from disk, and reads the
  server's answer (ReferencedSOPSequence, FailedSOPSequence, parts silently dropped);
* :func:`existing_instances` asks the server which instances it already has (``skip_existing``).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import logging
import os
import struct
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from .errors import DICOMwebError
from .standard.uids import is_valid_uid, validate_uid

if TYPE_CHECKING:
    import pandas

    from .client import Client

__all__ = [
    "ALREADY_STORED",
    "COLUMNS",
    "FAILED",
    "SKIPPED",
    "STORED",
    "Instance",
    "Progress",
    "discover",
    "existing_instances",
    "expand",
    "plan_batches",
    "post_batch",
    "store",
]

STORED = "stored"
ALREADY_STORED = "already stored"
FAILED = "failed"
SKIPPED = "skipped"

#: Columns of the DataFrame that :func:`store` returns, in order.
COLUMNS = [
    "source",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "status",
    "reason",
    "message",
    "RetrieveURL",
]

#: PS3.4 / PS3.18 status codes a STOW response may carry, and Azure's additions.
REASONS: dict[int, str] = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match the SOP class or the study (validation failed)",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match the SOP class",
    45070: "already stored",
    45071: "being created by another request",
}
ALREADY_EXISTS = 45070
NOT_ACKNOWLEDGED = "server did not acknowledge this instance"

log = logging.getLogger(__name__)

_HEADER_TAGS = [Tag(0x00080016), Tag(0x00080018), Tag(0x0020000D), Tag(0x0020000E)]
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_GLOB_CHARS = frozenset("*?[")
_STOW_ACCEPT = "application/dicom+json"
_PIXEL_TAGS = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})
_PIXEL_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"})
_LITTLE_ENDIAN_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


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


@dataclass(frozen=True)
class Progress:
    """Where an upload stands; passed to the ``callback`` of :func:`store` after each request."""

    instances_done: int
    instances_total: int
    bytes_done: int
    bytes_total: int
    counts: Mapping[str, int]


# ---------------------------------------------------------------------------------------------
# Discovery: expand items, read headers only
# ---------------------------------------------------------------------------------------------


def discover(items: Any) -> list[Instance]:
    """Expand ``items`` into :class:`Instance` objects and read the header of each one.

    ``items`` is one item or an iterable of them: a path (str or ``os.PathLike``) to a file, a
    folder (walked recursively; hidden files and folders are ignored), a zip file (its members),
    a glob pattern (``"scans/**/*.dcm"``), a :class:`pydicom.Dataset`, ``bytes`` of a Part-10
    file or of a zip file, or a ``(name, bytes)`` pair (the name shows as the row's source).
    Only the header is read (``stop_before_pixels``). Inputs that cannot be used get
    ``status="failed"`` and a message (also a file cut short inside its native Pixel Data);
    DICOMDIR index files are ``skipped``.
    """
    found = expand(items)
    for inst in found:
        if inst.status is None:
            _read_header(inst)
    return found


def expand(items: Any) -> list[Instance]:
    """Like :func:`discover` without reading anything: files are listed (with their sizes),
    folders walked, globs matched and zip directories read, but no header is parsed yet."""
    found: list[Instance] = []
    counters = {"dataset": 0, "bytes": 0}
    for item in _as_list(items):
        found.extend(_expand(item, counters))
    return found


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview, Dataset)):
        return [items]
    if (isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], str)
            and isinstance(items[1], (bytes, bytearray, memoryview))):
        return [items]
    return list(items)


def _expand(item: Any, counters: dict[str, int]) -> Iterator[Instance]:
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
        for file in _walk(path):
            yield from _expand_file(file)
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
                for file in _walk(Path(match)):
                    yield from _expand_file(file)
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
                if not info.is_dir() and not _hidden_member(info.filename):
                    content = zf.read(info)
                    yield Instance(f"{source}!{info.filename}", "bytes", data=content,
                                   size=len(content))
    except (OSError, zipfile.BadZipFile) as exc:
        inst = Instance(source, "bytes")
        inst.fail(f"cannot read this zip file: {exc}")
        yield inst


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _expand_file(path: Path) -> Iterator[Instance]:
    source = str(path)
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = [
                    info for info in zf.infolist()
                    if not info.is_dir() and not _hidden_member(info.filename)
                ]
        except (OSError, zipfile.BadZipFile) as exc:
            inst = Instance(source, "file", path=source)
            inst.fail(f"cannot read this zip file: {exc}")
            yield inst
            return
        for info in infos:
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


def _read_header(inst: Instance) -> None:
    """Read the identifying attributes of ``inst`` and check that it is a DICOM Part-10 file."""
    try:
        with _open(inst) as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            shortfall = _pixel_data_shortfall(fh, ds, inst.size)
    except OSError as exc:
        inst.fail(f"cannot read this file: {exc.strerror or exc}")
        return
    except InvalidDicomError:
        inst.fail("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
        return
    except Exception as exc:
        inst.fail(f"not a readable DICOM file ({_short(exc)})")
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
    """After ``dcmread(fh, stop_before_pixels=True)``: a message when the pixel data value
    declares more bytes than the file holds (a truncated file, which servers refuse without
    saying why or drop silently), else None. Reads one element header; checks native little
    endian data of defined length only."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in _LITTLE_ENDIAN_SYNTAXES or size <= 0:
        return None
    start = fh.tell()
    header = fh.read(12)
    if len(header) < 8 or struct.unpack("<HH", header[:4]) not in _PIXEL_TAGS:
        return None
    if header[4:6] in _PIXEL_VRS and header[6:8] == b"\0\0":  # explicit VR
        if len(header) < 12:
            return "truncated DICOM file: it ends inside the Pixel Data element header"
        length, value_offset = struct.unpack("<I", header[8:12])[0], start + 12
    else:
        length, value_offset = struct.unpack("<I", header[4:8])[0], start + 8
    present = max(size - value_offset, 0)
    if length == 0xFFFFFFFF or length <= present:
        return None
    return (f"truncated DICOM file: its Pixel Data declares {length} bytes, only {present} "
            "are present")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().rstrip("\x00").strip()
    return text or None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def _open(inst: Instance) -> Iterator[BinaryIO]:
    if inst.kind == "bytes":
        yield io.BytesIO(inst.data or b"")
    elif inst.kind == "zip":
        with zipfile.ZipFile(inst.path or "") as zf, zf.open(inst.member or "") as fh:
            yield fh  # type: ignore[misc]
    else:
        with open(inst.path or "", "rb") as fh:
            yield fh


# ---------------------------------------------------------------------------------------------
# Batching and sending
# ---------------------------------------------------------------------------------------------


def plan_batches(
    instances: Iterable[Instance], batch_size: int = 100, batch_bytes: int = 64 << 20,
    workers: int = 1,
) -> list[list[Instance]]:
    """Group ``instances`` (in order) into requests of at most ``batch_size`` instances and
    about ``batch_bytes`` bytes (a single larger file gets a request of its own).

    With several ``workers`` the batches are made small enough that every worker gets one.
    """
    instances = list(instances)
    size = _batch_size(len(instances), batch_size, batch_bytes, workers)
    return list(_group(instances, size, batch_bytes))


def _batch_size(count: int, batch_size: int, batch_bytes: int, workers: int) -> int:
    if batch_size < 1 or batch_bytes < 1:
        raise ValueError("batch_size and batch_bytes must be positive")
    if workers > 1 and count:
        return max(1, min(batch_size, -(-count // workers)))
    return batch_size


def _group(instances: Iterable[Instance], batch_size: int, batch_bytes: int
           ) -> Iterator[list[Instance]]:
    """Batches of ``instances``, lazily: the next batch is formed only when it is asked for."""
    current: list[Instance] = []
    current_bytes = 0
    for inst in instances:
        if current and (len(current) >= batch_size or current_bytes + inst.size > batch_bytes):
            yield current
            current, current_bytes = [], 0
        current.append(inst)
        current_bytes += inst.size
    if current:
        yield current


def _iter_parts(instances: Sequence[Instance], part_type: str
                ) -> Iterator[tuple[Mapping[str, str], Any]]:
    """Yield the parts of one request lazily: files are opened only when the encoder gets there,
    and a zip member is closed as soon as the encoder asks for the next part."""
    headers = {"Content-Type": part_type}
    with contextlib.ExitStack() as archives:
        zips: dict[str, zipfile.ZipFile] = {}
        for inst in instances:
            if inst.kind == "bytes":
                yield headers, inst.data or b""
            elif inst.kind == "zip":
                key = inst.path or ""
                if key not in zips:
                    zips[key] = archives.enter_context(zipfile.ZipFile(key))
                with zips[key].open(inst.member or "") as member:
                    yield headers, member
            else:
                yield headers, inst.path or ""


class _Body:
    """A re-iterable streaming request body (so a retried request sends it again).

    Defines ``__len__`` when the encoded length is known, which makes ``requests`` send a
    Content-Length header instead of chunked transfer encoding.
    """

    def __init__(self, instances: Sequence[Instance], boundary: str, part_type: str,
                 on_bytes: Callable[[int], None] | None) -> None:
        self.instances = instances
        self.boundary = boundary
        self.part_type = part_type
        self.on_bytes = on_bytes
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        from .standard.multipart import encode

        if self.sent and self.on_bytes:
            self.on_bytes(-self.sent)  # a retry: count the bytes again from zero
        self.sent = 0
        for chunk in encode(_iter_parts(self.instances, self.part_type), self.boundary):
            self.sent += len(chunk)
            if self.on_bytes:
                self.on_bytes(len(chunk))
            yield chunk


class _SizedBody(_Body):
    def __init__(self, *args: Any, length: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.length = length

    def __len__(self) -> int:
        return self.length


def _content_length(instances: Sequence[Instance], boundary: str, part_type: str) -> int | None:
    """The encoded body length, from :func:`dicomframes.multipart.encoded_length`.

    Zip members are described by placeholders of the same size, so no member is read here.
    """
    try:
        from .standard.multipart import encoded_length
    except ImportError:  # pragma: no cover - multipart without encoded_length
        return None
    headers = {"Content-Type": part_type}
    parts = [(headers, inst.data or b"") if inst.kind == "bytes"
             else (headers, inst.path or "") if inst.kind == "file"
             else (headers, _Placeholder(inst.size))
             for inst in instances]
    try:
        return encoded_length(parts, boundary)
    except Exception:
        return None


class _Placeholder:
    """Stands for a zip member of a known size when computing the request length (it looks
    like a seekable file to :func:`~dicomframes.multipart.encoded_length`; never read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0

    def read(self, n: int = -1) -> bytes:  # pragma: no cover - never encoded
        raise TypeError("a length placeholder cannot be read")

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.size + offset if whence == os.SEEK_END else offset
        return self.position


def _stow_path(study: str | None) -> str:
    return f"/studies/{validate_uid(study, 'study')}" if study else "/studies"


def post_batch(
    client: Client,
    instances: Sequence[Instance],
    study: str | None = None,
    *,
    part_type: str = "application/dicom",
    on_bytes: Callable[[int], None] | None = None,
    split_on_error: bool = True,
) -> int | None:
    """Send ``instances`` in one STOW-RS request and record each one's outcome on it.

    The body is streamed from disk by :func:`dicomframes.multipart.encode`. The response is read
    whatever its status (200, 202, 409, and also 400 from servers that store what they could):
    ReferencedSOPSequence items become ``stored``, FailedSOPSequence items ``failed`` with their
    FailureReason (45070 becomes ``already stored``), and instances the response does not
    mention become ``failed`` with "server did not acknowledge" (Orthanc silently ignores parts
    it does not understand). When the whole request fails without a DICOM answer, each instance
    of a multi-instance request is sent again on its own so that one bad file does not sink the
    others (``split_on_error``). ``part_type`` is the Content-Type of each part (the request
    itself is always ``multipart/related; type="application/dicom"``). Returns the HTTP status
    of the request (None when no answer came).
    """
    from .standard.multipart import new_boundary, related_content_type

    boundary = new_boundary()
    length = _content_length(instances, boundary, part_type)
    body: _Body = (
        _SizedBody(instances, boundary, part_type, on_bytes, length=length)
        if length is not None else _Body(instances, boundary, part_type, on_bytes)
    )
    headers = {
        "Content-Type": related_content_type(boundary, "application/dicom"),
        "Accept": _STOW_ACCEPT,
    }
    status: int | None
    try:
        summary = (f"({len(instances)} DICOM part{'s' if len(instances) != 1 else ''}, "
                   f"{sum(i.size for i in instances) / 1e6:.1f} MB, streamed)")
        response = client.request("POST", _stow_path(study), headers=headers, data=body,
                                  summary=summary)
        status, answer, text = response.status_code, response.content, ""
    except DICOMwebError as exc:
        status, text = exc.status, exc.message
        answer = getattr(exc, "body", None) or exc.message
    except Exception as exc:  # connection refused, reset, timeout, unreadable file...
        for inst in instances:
            inst.fail(f"request failed: {_short(exc)}")
        return None
    result = _parse_stow(answer)
    if result is None:
        if split_on_error and len(instances) > 1 and (status == 400 or status >= 500):
            for inst in instances:
                post_batch(client, [inst], study, part_type=part_type, on_bytes=on_bytes,
                           split_on_error=False)
            return status
        if status < 300:
            message = f"HTTP {status} without a STOW-RS answer: outcome unknown"
        else:
            message = f"HTTP {status}: {_short(Exception(text)) if text else 'no details'}"
        for inst in instances:
            inst.fail(message)
        return status
    referenced, failed = result
    for inst in instances:
        uid = inst.sop_instance_uid or ""
        if uid in referenced:
            inst.status, inst.retrieve_url, warning = STORED, referenced[uid][0], referenced[uid][1]
            inst.reason = warning
            inst.message = f"warning: {_reason_text(warning)}" if warning else ""
        elif uid in failed:
            code = failed[uid]
            if code == ALREADY_EXISTS:
                inst.status, inst.reason, inst.message = ALREADY_STORED, code, ""
            else:
                inst.fail(_reason_text(code) if code is not None else "failed", code)
        else:
            suffix = "" if status in (200, 202, 409) else f" (HTTP {status})"
            inst.fail(NOT_ACKNOWLEDGED + suffix)
    return status


def _reason_text(code: int | None) -> str:
    if code is None:
        return ""
    text = REASONS.get(code)
    return f"{text} ({code:#06x})" if text else f"status {code:#06x}"


def _parse_stow(answer: bytes | str) -> tuple[dict[str, tuple[str | None, int | None]],
                                              dict[str, int | None]] | None:
    """Read a STOW response body: {uid: (RetrieveURL, WarningReason)}, {uid: FailureReason}."""
    import json

    from .standard.dicomjson import json_to_dataset

    if not answer:
        return None
    try:
        obj = json.loads(answer)
    except ValueError:
        return None
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, dict) or not ({"00081199", "00081198"} & obj.keys()):
        return None
    try:
        ds = json_to_dataset(obj)
    except Exception:
        return None
    referenced: dict[str, tuple[str | None, int | None]] = {}
    for item in ds.get("ReferencedSOPSequence") or []:
        uid = _text(item.get("ReferencedSOPInstanceUID"))
        if uid:
            referenced[uid] = (_text(item.get("RetrieveURL")), _int(item.get("WarningReason")))
    failed: dict[str, int | None] = {}
    for item in ds.get("FailedSOPSequence") or []:
        uid = _text(item.get("ReferencedSOPInstanceUID"))
        if uid:
            failed[uid] = _int(item.get("FailureReason"))
    return referenced, failed


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# What the server already has
# ---------------------------------------------------------------------------------------------


def existing_instances(client: Client, uids_by_study: Mapping[str, Iterable[str]],
                       chunk: int = 50) -> set[str]:
    """Return the SOPInstanceUIDs among ``uids_by_study`` that the server already has.

    Asks QIDO-RS ``/studies/{study}/instances`` with UID lists (``SOPInstanceUID=a,b,c``),
    ``chunk`` UIDs per request; a server that refuses UID lists (400) is asked for every
    instance of the study instead.
    """
    from .errors import BadRequest, NotFound

    present: set[str] = set()
    for study, uids in uids_by_study.items():
        wanted = sorted({u for u in uids if is_valid_uid(u)})
        if not is_valid_uid(study) or not wanted:
            continue
        try:
            for start in range(0, len(wanted), chunk):
                part = wanted[start:start + chunk]
                df = client.search_instances(study=study, SOPInstanceUID=part, limit=len(part))
                present |= _uids_in(df) & set(part)
        except NotFound:
            continue
        except BadRequest:
            try:
                present |= _uids_in(client.search_instances(study=study)) & set(wanted)
            except NotFound:
                continue
    return present


def _uids_in(df: pandas.DataFrame) -> set[str]:
    if df is None or len(df) == 0 or "SOPInstanceUID" not in df.columns:
        return set()
    return {str(u) for u in df["SOPInstanceUID"].dropna()}


# ---------------------------------------------------------------------------------------------
# The whole upload
# ---------------------------------------------------------------------------------------------


def store(
    client: Client,
    items: Any,
    study: str | None = None,
    *,
    batch_size: int = 100,
    batch_bytes: int = 64 << 20,
    workers: int = 4,
    skip_existing: bool = False,
    progress: bool = True,
    callback: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> pandas.DataFrame:
    """Store DICOM instances on the server of ``client`` (STOW-RS) and report each one.

    Parameters
    ----------
    items:
        Paths, folders (recursive), glob patterns, zip files, pydicom Datasets or bytes, mixed
        (see :func:`discover`). Files are streamed from disk, never a whole request in memory.
    study:
        Post to ``/studies/{study}``: the server then refuses instances of other studies.
    batch_size, batch_bytes:
        Most instances and about the most bytes per request.
    workers:
        Requests sent in parallel.
    skip_existing:
        Ask the server first which instances it has and send only the others (``skipped``
        rows), so an interrupted upload resumes without sending anything twice.
    progress:
        Show a tqdm progress bar (a widget in Jupyter, text elsewhere).
    callback:
        Called with a :class:`Progress` after each request (from the calling thread).
    cancel:
        A :class:`threading.Event`; once set, requests not yet started are not sent (their
        rows are ``skipped`` with "cancelled before sending"); requests under way finish.

    Returns
    -------
    A DataFrame with one row per input instance and the columns :data:`COLUMNS`: ``status`` is
    ``stored``, ``already stored``, ``failed`` or ``skipped``; ``reason`` the DICOM status
    code (nullable integer); ``message`` says why; ``RetrieveURL`` where the server keeps it.
    ``df.attrs["summary"]`` counts each status and gives the requests sent, the bytes sent
    (request bodies) and the seconds taken.
    Instances the same upload already contains (same SOPInstanceUID) are ``skipped``.

    Headers are read while the first requests are already under way: the calling thread
    reads the next batch's headers while ``workers`` threads send the previous ones.
    """
    started = time.perf_counter()
    if study is not None:
        validate_uid(study, "study")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    instances = expand(items)
    candidates = [inst for inst in instances if inst.status is None]
    size = _batch_size(len(candidates), batch_size, batch_bytes, workers)
    tracker = _Tracker(len(candidates), sum(i.size for i in candidates), progress, callback)
    first: dict[str, Instance] = {}
    copies: dict[str, list[Instance]] = {}

    def ready() -> Iterator[Instance]:
        for inst in candidates:
            if cancel is not None and cancel.is_set():
                inst.skip("cancelled before sending")
            else:
                _read_header(inst)
            uid = inst.sop_instance_uid or ""
            if inst.status is None and uid in first:
                inst.skip(f"same SOPInstanceUID as {first[uid].source} in this upload")
                copies.setdefault(uid, []).append(inst)
            if inst.status is not None:
                tracker.settled([inst])
                continue
            first[uid] = inst
            yield inst

    sender = _Sender(client, study, workers, skip_existing, cancel, tracker)
    try:
        sender.run(_group(ready(), size, batch_bytes))
        # A copy whose first occurrence failed (e.g. a truncated file) gets its own chance.
        retry = _second_chances(list(first.values()), copies)
        while retry:
            tracker.add(len(retry), sum(i.size for i in retry))
            sender.run(_group(retry, _batch_size(len(retry), batch_size, batch_bytes, workers),
                              batch_bytes))
            retry = _second_chances(retry, copies)
    finally:
        tracker.close()
    return _result(instances, sender.requests, tracker.bytes_sent,
                   time.perf_counter() - started)


def _second_chances(sent: list[Instance], copies: dict[str, list[Instance]]) -> list[Instance]:
    retry = []
    for inst in sent:
        uid = inst.sop_instance_uid or ""
        if inst.status != FAILED or not copies.get(uid):
            continue
        if inst.message.startswith("request failed"):
            continue  # no answer from the server: a copy would fare no better
        replacement = copies[uid].pop(0)
        replacement.status, replacement.message = None, ""
        for other in copies[uid]:
            other.message = f"same SOPInstanceUID as {replacement.source} in this upload"
        retry.append(replacement)
    return retry


class _Tracker:
    """Counts what is done, drives the progress bar and calls the callback."""

    def __init__(self, instances: int, nbytes: int, progress: bool,
                 callback: Callable[[Progress], None] | None) -> None:
        self.instances_total = instances
        self.bytes_total = nbytes
        self.instances_done = 0
        self.bytes_done = 0
        self.bytes_sent = 0
        self.counts: dict[str, int] = {}
        self.callback = callback
        self._lock = threading.Lock()
        self.bar = _progress_bar(nbytes, instances) if progress and instances else None

    def add(self, instances: int, nbytes: int) -> None:
        with self._lock:
            self.instances_total += instances
            self.bytes_total += nbytes
            if self.bar is not None:
                self.bar.total = self.bytes_total
                self.bar.refresh()

    def sent_bytes(self, n: int) -> None:
        """Called by the sending threads as body chunks go out."""
        with self._lock:
            self.bytes_sent += n
            self.bytes_done += n
            if self.bar is not None:
                self.bar.update(n)

    def settled(self, instances: Sequence[Instance], sent: int = 0) -> None:
        """``instances`` have their outcome; ``sent`` of their bytes were already counted."""
        unsent = sum(i.size for i in instances) - sent
        with self._lock:
            self.instances_done += len(instances)
            for inst in instances:
                key = inst.status or FAILED
                self.counts[key] = self.counts.get(key, 0) + 1
            if unsent > 0:  # not sent (failed or skipped): the bar moves on all the same
                self.bytes_done += unsent
                if self.bar is not None:
                    self.bar.update(unsent)
            if self.bar is not None:
                self.bar.set_postfix_str(
                    f"{self.instances_done}/{self.instances_total} instances", refresh=True)
            snapshot = Progress(self.instances_done, self.instances_total, self.bytes_done,
                                self.bytes_total, dict(self.counts))
        if self.callback is not None:
            self.callback(snapshot)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Sender:
    """Sends batches with at most ``workers`` requests in flight; pulls the next batch from
    its (lazy) iterator only when a worker is free."""

    def __init__(self, client: Client, study: str | None, workers: int, skip_existing: bool,
                 cancel: threading.Event | None, tracker: _Tracker) -> None:
        self.client = client
        self.study = study
        self.workers = workers
        self.skip_existing = skip_existing
        self.cancel = cancel
        self.tracker = tracker
        self.requests = 0

    def _send(self, batch: list[Instance]) -> tuple[int, int]:
        if self.cancel is not None and self.cancel.is_set():
            for inst in batch:
                inst.skip("cancelled before sending")
            return 0, 0
        todo = batch
        if self.skip_existing:
            by_study: dict[str, list[str]] = {}
            for inst in batch:
                by_study.setdefault(inst.study_instance_uid or "", []).append(
                    inst.sop_instance_uid or "")
            try:
                present = existing_instances(self.client, by_study)
            except Exception as exc:  # the check failed: send them; duplicates are harmless
                log.warning("could not ask the server which instances it has (%s); sending "
                            "them all", _short(exc))
                present = set()
            for inst in batch:
                if inst.sop_instance_uid in present:
                    inst.skip("already on the server")
            todo = [inst for inst in batch if inst.status is None]
        if not todo:
            return 0, 0
        sent = [0]

        def on_bytes(n: int) -> None:
            sent[0] += n
            self.tracker.sent_bytes(n)

        post_batch(self.client, todo, self.study, on_bytes=on_bytes)
        return 1, sent[0]

    def run(self, batches: Iterator[list[Instance]]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="dicomframes-upload") as pool:
            running: dict[Future[tuple[int, int]], list[Instance]] = {}
            exhausted = False
            while True:
                while not exhausted and len(running) < self.workers:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                    else:
                        running[pool.submit(self._send, batch)] = batch
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch = running.pop(future)
                    try:
                        requests, sent = future.result()
                    except Exception as exc:  # a bug must not lose the other rows
                        requests, sent = 0, 0
                        for inst in batch:
                            if inst.status is None:
                                inst.fail(f"upload error: {_short(exc)}")
                    self.requests += requests
                    self.tracker.settled(batch, sent)


def _progress_bar(total_bytes: int, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"STOW {total} files", leave=True)


def _result(instances: list[Instance], requests_sent: int, total_bytes: int,
            seconds: float) -> pandas.DataFrame:
    import pandas as pd

    rows = [inst.row() for inst in instances]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["reason"] = pd.array([r["reason"] for r in rows], dtype="Int64")
    for column in COLUMNS:
        if column != "reason":
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    df["message"] = df["message"].fillna("")
    counts = {s: int((df["status"] == s).sum()) for s in (STORED, ALREADY_STORED, FAILED,
                                                           SKIPPED)}
    df.attrs["summary"] = {
        **counts,
        "instances": len(df),
        "requests": requests_sent,
        "bytes": total_bytes,
        "seconds": round(seconds, 3),
    }
    return df


def summary_text(df: pandas.DataFrame) -> str:
    """One line that counts the outcomes of a :func:`store` result."""
    s = df.attrs.get("summary") or {}
    parts = [f"{s.get(k, 0)} {k}" for k in (STORED, ALREADY_STORED, SKIPPED, FAILED)
             if s.get(k)]
    text = ", ".join(parts) or "nothing to store"
    if s.get("seconds") is not None:
        text += f" in {s['seconds']:.1f} s"
    return text
