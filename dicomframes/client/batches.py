"""One STOW-RS request at a time: group instances into batches, stream a batch as one
``multipart/related`` body from disk, and read each instance's outcome from the answer.

The answer is read whatever its status (200, 202, 409, and 400 from servers that store what
they could): ReferencedSOPSequence items become ``stored``, FailedSOPSequence items ``failed``
(45070 ``already stored``), and instances the answer does not mention ``failed`` with
:data:`NOT_ACKNOWLEDGED` (Orthanc silently ignores parts it does not understand).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import DICOMwebError
from ..standard.mediatypes import DICOM, DICOM_JSON, new_boundary, related_content_type
from ..standard.multipart import encode, encoded_length
from ..standard.paths import ResourcePath
from ..standard.stow import (
    ALREADY_EXISTS,
    OUT_OF_RESOURCES,
    StowAnswer,
    parse_stow_response,
    reason_text,
)
from ..standard.uids import validate_uid
from .discover import ALREADY_STORED, STORED, Instance, short_error
from .failures import not_done
from .surface import DicomwebClient as Client
from .throttle import resend

__all__ = [
    "NOT_ACKNOWLEDGED",
    "OUT_OF_SPACE",
    "batch_size_for",
    "group_batches",
    "out_of_resources",
    "plan_batches",
    "post_batch",
]

NOT_ACKNOWLEDGED = "server did not acknowledge this instance"
#: The message of instances refused or left unsent because the server is out of resources.
OUT_OF_SPACE = "the server is out of resources (disk full?)"


def out_of_resources(instances: Iterable[Instance]) -> bool:
    """True when the server refused one of ``instances`` for lack of resources (0xA700 or
    HTTP 507): sending more, or the same one by one, would only add load."""
    return any(inst.reason == OUT_OF_RESOURCES for inst in instances)


def plan_batches(
    instances: Iterable[Instance], batch_size: int = 100, batch_bytes: int = 64 << 20,
    workers: int = 1,
) -> list[list[Instance]]:
    """Group ``instances`` (in order) into requests of at most ``batch_size`` instances and
    about ``batch_bytes`` bytes (a single larger file gets a request of its own).

    With several ``workers`` the batches are made small enough that every worker gets one.
    """
    instances = list(instances)
    size = batch_size_for(len(instances), batch_size, batch_bytes, workers)
    return list(group_batches(instances, size, batch_bytes))


def batch_size_for(count: int, batch_size: int, batch_bytes: int, workers: int) -> int:
    """Instances per request: ``batch_size``, smaller so that each of ``workers`` gets one."""
    if batch_size < 1 or batch_bytes < 1:
        raise ValueError("batch_size and batch_bytes must be positive")
    if workers > 1 and count:
        return max(1, min(batch_size, -(-count // workers)))
    return batch_size


def group_batches(instances: Iterable[Instance], batch_size: int, batch_bytes: int
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
        # The files of the parts, for the recorded exchange's curl command (only when every
        # part is a file on disk: zip members and in-memory data have no path to give curl).
        self.curl_files = ([(inst.path or "", part_type) for inst in instances]
                           if all(inst.kind == "file" and inst.path for inst in instances)
                           else [])

    def __iter__(self) -> Iterator[bytes]:
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
    """The encoded body length, from :func:`dicomframes.standard.multipart.encoded_length`.

    Zip members are described by placeholders of the same size, so no member is read here.
    """
    headers = {"Content-Type": part_type}
    parts: list[tuple[Mapping[str, str], Any]] = [
        (headers, inst.data or b"") if inst.kind == "bytes"
        else (headers, inst.path or "") if inst.kind == "file"
        else (headers, _Placeholder(inst.size))
        for inst in instances]
    try:
        return encoded_length(parts, boundary)
    except Exception:
        return None


class _Placeholder:
    """Stands for a zip member of a known size when computing the request length (it looks
    like a seekable file to :func:`~dicomframes.standard.multipart.encoded_length`; never read)."""

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
    return str(ResourcePath(validate_uid(study, "study"))) if study else "studies"


def post_batch(
    client: Client,
    instances: Sequence[Instance],
    study: str | None = None,
    *,
    part_type: str = DICOM,
    on_bytes: Callable[[int], None] | None = None,
    split_on_error: bool = True,
) -> int | None:
    """Send ``instances`` in one STOW-RS request and record each one's outcome on it.

    The body is streamed from disk by :func:`dicomframes.standard.multipart.encode`; the
    answer is read as the module docstring says. When the whole request fails without a DICOM
    answer, each instance of a multi-instance request is sent again on its own so that one bad
    file does not sink the others (``split_on_error``). ``part_type`` is the Content-Type of
    each part (the request itself is always ``multipart/related; type="application/dicom"``).
    Returns the HTTP status of the request (None when no answer came).
    """
    boundary = new_boundary()
    length = _content_length(instances, boundary, part_type)
    headers = {
        "Content-Type": related_content_type(boundary, DICOM),
        "Accept": DICOM_JSON,
    }
    summary = (f"({len(instances)} DICOM part{'s' if len(instances) != 1 else ''}, "
               f"{sum(i.size for i in instances) / 1e6:.1f} MB, streamed)")

    def send() -> Any:  # a new body each time: a throttled or refused one is sent again
        body: _Body = (
            _SizedBody(instances, boundary, part_type, on_bytes, length=length)
            if length is not None else _Body(instances, boundary, part_type, on_bytes)
        )
        return client.request("POST", _stow_path(study), headers=headers, data=body,
                               summary=summary)

    status: int | None
    answered: Mapping[str, str] = {}
    try:
        response = resend(client, send)
        status, answer, text = response.status_code, response.content, ""
        answered = response.headers
    except DICOMwebError as exc:
        status, text = exc.status, exc.message
        answer = getattr(exc, "body", None) or exc.message
    except Exception as exc:  # connection refused, reset, timeout, unreadable file...
        for inst in instances:
            inst.fail(f"request failed: {short_error(exc)}")
        return None
    result = parse_stow_response(answer)
    if status == 507 or (result is not None and any(
            f.reason == OUT_OF_RESOURCES for f in result.failed)):
        if result is not None:
            _record_outcomes(instances, result, status)
        said = f" (HTTP {status})"
        if result is None and text:
            said = f" (HTTP {status}: {short_error(Exception(text))})"
        for inst in instances:
            if inst.status not in (STORED, ALREADY_STORED):
                inst.fail(OUT_OF_SPACE + said, OUT_OF_RESOURCES)
        return status
    if result is None:
        if split_on_error and len(instances) > 1 and (status == 400 or status >= 500):
            for inst in instances:
                post_batch(client, [inst], study, part_type=part_type, on_bytes=on_bytes,
                           split_on_error=False)
            return status
        if status < 400:  # a redirect to a login page, an HTML page: not a STOW-RS answer
            why = not_done(status, answered, answer if isinstance(answer, bytes) else b"")
            message = f"{why or f'HTTP {status} without a STOW-RS answer'}: outcome unknown"
        else:
            message = f"HTTP {status}: {short_error(Exception(text)) if text else 'no details'}"
        for inst in instances:
            inst.fail(message)
        return status
    _record_outcomes(instances, result, status)
    return status


def _record_outcomes(instances: Sequence[Instance], answer: StowAnswer, status: int) -> None:
    """Each instance's outcome from the server's answer; failures without a UID name nobody."""
    referenced = {r.sop_instance: r for r in answer.referenced}
    failed = {f.sop_instance: f.reason for f in answer.failed if f.sop_instance}
    for inst in instances:
        uid = inst.sop_instance_uid or ""
        if uid in referenced:
            item = referenced[uid]
            inst.status, inst.retrieve_url, inst.reason = STORED, item.retrieve_url, item.warning
            inst.message = f"warning: {reason_text(item.warning)}" if item.warning else ""
        elif uid in failed:
            code = failed[uid]
            if code == ALREADY_EXISTS:
                inst.status, inst.reason, inst.message = ALREADY_STORED, code, ""
            else:
                inst.fail(reason_text(code), code)
        else:
            suffix = "" if status in (200, 202, 409) else f" (HTTP {status})"
            inst.fail(NOT_ACKNOWLEDGED + suffix)

