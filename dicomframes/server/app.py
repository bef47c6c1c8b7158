"""The DICOMweb ASGI app (Starlette): STOW-RS, WADO-RS, QIDO-RS and DELETE (PS3.18).

Every route answers at the root and under ``/v1`` and ``/v2``. Status codes follow PS3.18 and
the Azure tutorial: STOW 200 (all stored) / 202 (some failed) / 409 (none stored) / 415 (not
``multipart/related; type="application/dicom"`` nor ``application/dicom``) / 406 (Accept is not
DICOM JSON) / 413 (body larger than the limit); retrieve 404 (unknown UIDs, frame past the last),
400 (malformed UID or frame list, frame 0), 406 (no acceptable media type or transfer syntax).

Content negotiation for instances and frames: ``transfer-syntax=*`` or the stored syntax return
the stored bytes unchanged; ``1.2.840.10008.1.2.1`` (Explicit VR Little Endian, the PS3.18
default when a DICOM media range names no syntax) decodes compressed data with pydicom and its
plug-ins (JPEG YCbCr comes back as RGB); any other syntax is 406. With no Accept header, or
``*/*``, the stored representation is returned.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from ..errors import MultipartError
from ..standard.dicomjson import dataset_to_json
from ..standard.multipart import (
    boundary_of,
    encode,
    encoded_length,
    iter_parts,
    new_boundary,
    parse_media_type,
    related_content_type,
)
from ..standard.uids import validate_uid
from .pixeldata import (
    EXPLICIT_LE,
    MEDIA_ALIASES,
    PixelDataError,
    PixelLayout,
    can_decode,
    media_type_of,
    native_frame,
    read_range,
    render_frame,
    stored_frame,
    transcode_to_explicit_le,
)
from .query import QueryError, absolute_bulk_uris, parse_query, search
from .storage import PROCESSING_FAILURE, Archive, InstanceRecord, Stored, StoreFailure

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = {DICOM_JSON, "application/json", "*/*", "application/*"}
CHUNK = 1 << 20


def _encode(parts: Any, boundary: str) -> Iterator[bytes]:
    """Every answer part carries its Content-Length, so a client can jump to the next boundary
    instead of searching the content for it."""
    return encode(parts, boundary, CHUNK, content_length=True)


class HTTPProblem(Exception):
    """An error answer: status and a message for the client (text/plain)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _problem(status: int, message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=status)


# --------------------------------------------------------------------------------------------
# content negotiation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: media type, parameters (without q) and quality."""

    type: str
    params: dict[str, str]
    q: float

    @property
    def inner(self) -> tuple[str, str | None]:
        """For ``multipart/related``: the ``type`` parameter and the transfer syntax (given
        as a parameter of the range or inside the quoted ``type``, Orthanc-style)."""
        inner_type, inner_params = parse_media_type(self.params.get("type") or "*/*")
        syntax = self.params.get("transfer-syntax") or inner_params.get("transfer-syntax")
        return MEDIA_ALIASES.get(inner_type, inner_type), syntax or None

    @property
    def syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter of a single-part range."""
        return self.params.get("transfer-syntax") or None


def _split_header(value: str) -> list[str]:
    pieces, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def parse_accept(value: str | None) -> list[MediaRange]:
    """Accept header -> media ranges, best first (stable for equal q). Empty -> ``*/*``."""
    if not value or not value.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges = []
    for piece in _split_header(value):
        media, params = parse_media_type(piece)
        try:
            q = float(params.pop("q", "1") or 1)
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(MEDIA_ALIASES.get(media, media), params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges


def _accepts_json(request: Request) -> bool:
    return any(r.type in _JSON_TYPES for r in parse_accept(request.headers.get("accept")))


def _require_json(request: Request) -> None:
    if not _accepts_json(request):
        raise HTTPProblem(406, f"this resource is {DICOM_JSON}; Accept "
                          f"{request.headers.get('accept')!r} does not allow it")


def _dicom_syntax(record: InstanceRecord, wanted: str | None) -> str | None:
    """The transfer syntax to send ``record`` in, for a requested one (None: the PS3.18 default
    Explicit VR Little Endian); None when impossible."""
    stored = record.transfer_syntax
    if wanted == "*" or wanted == stored:
        return stored
    if (wanted or EXPLICIT_LE) == EXPLICIT_LE:
        return EXPLICIT_LE if can_decode(stored) else None
    return None


def _dicom_plan(ranges: list[MediaRange], records: list[InstanceRecord],
                allow_single: bool) -> tuple[bool, list[str]]:
    """Choose multipart or single part and each instance's transfer syntax (406 if none)."""
    for r in ranges:
        if r.type in ("*/*", "multipart/*", "multipart/related"):
            if r.type == "multipart/related":
                inner, wanted = r.inner
                if inner not in ("application/dicom", "*/*", "application/*"):
                    continue
                if inner != "application/dicom" and wanted is None:
                    wanted = "*"
            else:
                wanted = "*"
            syntaxes = [_dicom_syntax(rec, wanted) for rec in records]
            if all(syntaxes):
                return True, [s for s in syntaxes if s]
        elif r.type == "application/dicom" and allow_single:
            syntaxes = [_dicom_syntax(rec, r.syntax) for rec in records]
            if all(syntaxes):
                return False, [s for s in syntaxes if s]
    raise HTTPProblem(406, "no acceptable representation: instances are available as "
                      "multipart/related; type=\"application/dicom\" (or application/dicom for "
                      "one instance) with transfer-syntax=* (as stored), the stored syntax, or "
                      f"{EXPLICIT_LE}")


@dataclass(frozen=True)
class FramePlan:
    """How to send frames: multipart or not, each part's media type and syntax, and whether to
    decode to native."""

    multipart: bool
    media_type: str
    syntax: str
    decode: bool


def _frame_option(part_type: str, wanted: str | None, layout: PixelLayout,
                  stored: str) -> FramePlan | None:
    compressed = not layout.is_native
    natural = media_type_of(stored) if compressed else "application/octet-stream"
    if part_type in ("*/*", "*"):
        if wanted in (None, "*") or wanted == stored:
            return FramePlan(True, natural, stored if compressed else EXPLICIT_LE, False)
        part_type = "application/octet-stream"
    if part_type == "application/octet-stream":
        if wanted is None:
            wanted = EXPLICIT_LE
        if not compressed and wanted in ("*", EXPLICIT_LE, stored):
            return FramePlan(True, part_type, EXPLICIT_LE, False)
        if compressed and wanted in ("*", stored):
            return FramePlan(True, part_type, stored, False)
        if compressed and wanted == EXPLICIT_LE and can_decode(stored):
            return FramePlan(True, part_type, EXPLICIT_LE, True)
        return None
    if compressed and wanted in (None, "*", stored) and (
            part_type == natural or part_type == natural.split("/")[0] + "/*"):
        return FramePlan(True, natural, stored, False)
    return None


def _frame_plan(ranges: list[MediaRange], layout: PixelLayout, stored: str,
                single_frame: bool) -> FramePlan:
    for r in ranges:
        if r.type in ("multipart/related", "multipart/*"):
            inner, wanted = r.inner if r.type == "multipart/related" else ("*/*", None)
            plan = _frame_option(inner, wanted, layout, stored)
        elif r.type == "*/*":
            plan = _frame_option("*/*", None, layout, stored)
        elif single_frame:
            plan = _frame_option(r.type, r.syntax, layout, stored)
            if plan is not None:
                plan = FramePlan(False, plan.media_type, plan.syntax, plan.decode)
        else:
            plan = None
        if plan is not None:
            return plan
    natural = media_type_of(stored)
    raise HTTPProblem(406, "no acceptable representation of these frames: they are stored as "
                      f"{stored} and available as multipart/related; type=\"{natural}\" "
                      "(transfer-syntax=* or the stored one) or type=\"application/octet-stream\""
                      + (f" with transfer-syntax={EXPLICIT_LE}" if can_decode(stored) else ""))


def _rendered_type(request: Request) -> str:
    for r in parse_accept(request.headers.get("accept")):
        if r.type in ("image/jpeg", "image/png"):
            return r.type
        if r.type in ("*/*", "image/*"):
            return "image/jpeg"
    raise HTTPProblem(406, "rendered images are available as image/jpeg or image/png")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _service_base(request: Request) -> str:
    """The URL of the service root this request came through (with /v1 or /v2 if used)."""
    root = request.scope.get("root_path", "")
    app_root = request.scope.get("app_root_path", "")
    prefix = root[len(app_root):] if root.startswith(app_root) else root
    base = str(request.base_url).rstrip("/")
    server = request.scope.get("server")
    host = request.headers.get("host", "")
    # some clients (dicomweb-client) send Host without the port: use the port we listen on
    if server and server[1] not in (None, 80, 443) and host and not re.search(r":\d+$", host):
        base = f"{request.url.scheme}://{host}:{server[1]}{app_root.rstrip('/')}"
    return base + prefix


def _uids(request: Request) -> tuple[str | None, str | None, str | None]:
    params = request.path_params
    result = []
    for key, what in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"),
                      ("instance", "SOPInstanceUID")):
        value = params.get(key)
        if value is not None:
            try:
                validate_uid(value, what)
            except ValueError as exc:
                raise HTTPProblem(400, str(exc)) from None
        result.append(value)
    return result[0], result[1], result[2]


def _instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"


def _json_response(texts: list[str], status: int = 200) -> Response:
    body = ("[" + ",".join(texts) + "]").encode("utf-8")
    return Response(body, status_code=status, media_type=DICOM_JSON)


def _file_chunks(path: os.PathLike[str] | str, offset: int = 0,
                 length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as fp:
        fp.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            chunk = fp.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def _frame_numbers(text: str, count: int) -> list[int]:
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise HTTPProblem(400, f"frame list {text!r}: {item!r} is not a frame number "
                              "(frames are numbered from 1, e.g. 1,3)")
        number = int(item)
        if number < 1:
            raise HTTPProblem(400, f"frame numbers start at 1; {number} is not valid")
        numbers.append(number)
    if not numbers:
        raise HTTPProblem(400, "empty frame list")
    past = [n for n in numbers if n > count]
    if past:
        raise HTTPProblem(404, f"frame {past[0]} does not exist: the instance has {count} "
                          f"frame(s)")
    return numbers


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------


class DICOMwebApp:
    """Route handlers bound to one archive."""

    def __init__(self, archive: Archive, max_request_bytes: int) -> None:
        self.archive = archive
        self.max_request_bytes = max_request_bytes

    # -- STOW-RS ----------------------------------------------------------------------------

    async def stow(self, request: Request) -> Response:
        """POST /studies[/{study}]: store multipart/related or single-part application/dicom."""
        study, _, _ = _uids(request)
        _require_json(request)
        content_type = request.headers.get("content-type", "")
        media, params = parse_media_type(content_type) if content_type else ("", {})
        if media == "multipart/related":
            part_type = parse_media_type(params.get("type") or "application/dicom")[0]
            if part_type != "application/dicom":
                raise HTTPProblem(415, f"STOW-RS here takes multipart/related parts of type "
                                  f"application/dicom, not {part_type}")
            try:
                boundary: str | None = boundary_of(content_type)
            except MultipartError as exc:
                raise HTTPProblem(400, str(exc)) from None
        elif media == "application/dicom":
            boundary = None
        else:
            raise HTTPProblem(415, "STOW-RS takes Content-Type multipart/related; "
                              f"type=\"application/dicom\" or application/dicom, not {media!r}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_request_bytes:
            raise HTTPProblem(413, f"request body of {declared} bytes is larger than the "
                              f"limit of {self.max_request_bytes} bytes")
        spool = self.archive.temp_path(".upload")
        try:
            size = 0
            with open(spool, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_request_bytes:
                        raise HTTPProblem(413, "request body is larger than the limit of "
                                          f"{self.max_request_bytes} bytes")
                    out.write(chunk)
            if size == 0:
                raise HTTPProblem(400, "empty request body")
            outcomes = await run_in_threadpool(self._store_spool, spool, boundary, study)
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            if spool.exists():
                spool.unlink()
        return self._stow_response(outcomes, study, _service_base(request))

    def _store_spool(self, spool: Any, boundary: str | None,
                     study: str | None) -> list[Stored | StoreFailure]:
        if boundary is None:
            return [self._store_one(spool, study)]
        closing = b"--" + boundary.encode("latin-1") + b"--"
        with open(spool, "rb") as fp:
            fp.seek(max(0, os.fstat(fp.fileno()).st_size - (1 << 16)))
            if closing not in fp.read():
                raise HTTPProblem(400, "truncated multipart body: the closing boundary "
                                  f"{closing.decode('latin-1')!r} is missing")
        # each part to its own file in tmp/ (None: a part that is not application/dicom)
        temps: list[Path | None] = []
        failure: StoreFailure | None = None
        try:
            with open(spool, "rb") as fp:
                try:
                    for part in iter_parts(iter(lambda: fp.read(CHUNK), b""), boundary):
                        part_type = parse_media_type(part.content_type or "application/dicom")[0]
                        if part_type != "application/dicom":
                            temps.append(None)
                            continue
                        temp = self.archive.temp_path()
                        temps.append(temp)
                        with open(temp, "wb") as out:
                            out.write(part.content)
                except MultipartError as exc:
                    if not temps:
                        raise HTTPProblem(400, str(exc)) from None
                    failure = StoreFailure(PROCESSING_FAILURE, str(exc))
            if not temps:
                raise HTTPProblem(400, "the multipart body has no parts")
            stored = iter(self.archive.store_files([t for t in temps if t is not None], study))
        finally:
            for temp in temps:
                if temp is not None and temp.exists():
                    temp.unlink()
        outcomes: list[Stored | StoreFailure] = [
            next(stored) if temp is not None else StoreFailure(
                PROCESSING_FAILURE, "a part that is not application/dicom")
            for temp in temps]
        if failure is not None:
            outcomes.append(failure)
        return outcomes

    def _store_one(self, temp: Any, study: str | None) -> Stored | StoreFailure:
        try:
            return self.archive.store_file(temp, study)
        except StoreFailure as failure:
            return failure

    @staticmethod
    def _stow_response(outcomes: list[Stored | StoreFailure], study: str | None,
                       base: str) -> Response:
        stored = [o for o in outcomes if isinstance(o, Stored)]
        failed = [o for o in outcomes if isinstance(o, StoreFailure)]
        ds = pydicom.Dataset()
        studies = {s.study for s in stored} | ({study} if study else set())
        if len(studies) == 1:
            ds.RetrieveURL = f"{base}/studies/{next(iter(studies))}"
        if failed:
            items = []
            for failure in failed:
                item = pydicom.Dataset()
                if failure.sop_class:
                    item.ReferencedSOPClassUID = failure.sop_class
                if failure.sop_instance:
                    item.ReferencedSOPInstanceUID = failure.sop_instance
                item.FailureReason = failure.reason
                items.append(item)
            ds.FailedSOPSequence = items
        if stored:
            items = []
            for s in stored:
                item = pydicom.Dataset()
                item.ReferencedSOPClassUID = s.sop_class
                item.ReferencedSOPInstanceUID = s.sop_instance
                item.RetrieveURL = _instance_url(base, s.study, s.series, s.sop_instance)
                items.append(item)
            ds.ReferencedSOPSequence = items
        status = 200 if not failed else 202 if stored else 409
        headers = {}
        if failed:
            reasons = "; ".join(f"{f.reason}: {f}" for f in failed)[:2000]
            headers["Warning"] = f'299 dicomframes "{_header_safe(reasons)}"'
        body = json.dumps(dataset_to_json(ds), separators=(",", ":")).encode("utf-8")
        return Response(body, status_code=status, media_type=DICOM_JSON, headers=headers)

    # -- QIDO-RS ----------------------------------------------------------------------------

    def _qido(self, level: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            study, series, _ = _uids(request)
            _require_json(request)
            try:
                query = parse_query(level, request.query_params.multi_items(), study, series)
            except QueryError as exc:
                raise HTTPProblem(400, str(exc)) from None
            texts = await run_in_threadpool(search, self.archive, query, _service_base(request))
            return _json_response(texts)

        return handler

    # -- WADO-RS: instances -----------------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        """GET a study, series or instance as DICOM (multipart, or one part for an instance)."""
        study, series, sop = _uids(request)
        assert study is not None
        if sop is not None and series is not None:
            record = await run_in_threadpool(self.archive.instance, study, series, sop)
            records = [record] if record else []
        else:
            records = await run_in_threadpool(self.archive.instances, study, series)
        if not records:
            raise HTTPProblem(404, self._not_found(study, series, sop))
        ranges = parse_accept(request.headers.get("accept"))
        multipart, syntaxes = _dicom_plan(ranges, records, allow_single=sop is not None)
        base = _service_base(request)
        if not multipart:
            record, syntax = records[0], syntaxes[0]
            ctype = f"application/dicom; transfer-syntax={syntax}"
            if syntax == record.transfer_syntax:
                return StreamingResponse(_file_chunks(record.path), media_type=ctype,
                                         headers={"Content-Length": str(record.size)})
            body = await run_in_threadpool(self._transcode, record.path)
            return Response(body, media_type=ctype)
        boundary = new_boundary()
        parts: list[tuple[dict[str, str], Any]] = []
        lazy = False
        for record, syntax in zip(records, syntaxes, strict=True):
            headers = {"Content-Type": f"application/dicom; transfer-syntax={syntax}",
                       "Content-Location": _instance_url(base, record.study, record.series,
                                                         record.sop_instance)}
            if syntax == record.transfer_syntax:
                parts.append((headers, str(record.path)))
            else:
                lazy = True
                parts.append((headers, record.path))
        content_type = related_content_type(boundary, "application/dicom")
        if not lazy:
            length = await run_in_threadpool(self._length, parts, boundary)
            return await _multipart_response(lambda: parts, boundary, content_type, length,
                                             exact=True)

        def transcoded() -> Iterator[tuple[dict[str, str], Any]]:
            for headers, content in parts:
                yield (headers, content) if isinstance(content, str) else \
                    (headers, self._transcode(content))

        return StreamingResponse(_encode(transcoded(), boundary), media_type=content_type)

    @staticmethod
    def _length(parts: list[tuple[dict[str, str], Any]], boundary: str) -> int | None:
        try:
            return encoded_length(parts, boundary, content_length=True)
        except OSError:
            return None

    @staticmethod
    def _transcode(path: Any) -> bytes:
        try:
            return transcode_to_explicit_le(path)
        except PixelDataError as exc:
            raise HTTPProblem(406, str(exc)) from None

    @staticmethod
    def _not_found(study: str, series: str | None, sop: str | None) -> str:
        if sop is not None:
            return f"instance {sop} not found in series {series} of study {study}"
        if series is not None:
            return f"series {series} not found in study {study}"
        return f"study {study} not found"

    async def metadata(self, request: Request) -> Response:
        """GET .../metadata at the study, series or instance level (DICOM JSON)."""
        study, series, sop = _uids(request)
        assert study is not None
        _require_json(request)
        texts = await run_in_threadpool(self.archive.metadata, study, series, sop)
        if not texts:
            raise HTTPProblem(404, self._not_found(study, series, sop))
        base = _service_base(request)
        return _json_response([absolute_bulk_uris(t, base) for t in texts])

    async def _record(self, request: Request) -> InstanceRecord:
        study, series, sop = _uids(request)
        assert study is not None and series is not None and sop is not None
        record = await run_in_threadpool(self.archive.instance, study, series, sop)
        if record is None:
            raise HTTPProblem(404, self._not_found(study, series, sop))
        return record

    # -- WADO-RS: frames, rendered, bulk data ------------------------------------------------

    async def frames(self, request: Request) -> Response:
        """GET .../frames/{list}: one part per requested frame."""
        record = await self._record(request)
        layout = record.pixels
        if layout.kind == "none":
            raise HTTPProblem(404, f"instance {record.sop_instance} has no pixel data")
        numbers = _frame_numbers(request.path_params["frames"], layout.frames)
        plan = _frame_plan(parse_accept(request.headers.get("accept")), layout,
                           record.transfer_syntax, len(numbers) == 1)
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"
        read = native_frame if plan.decode or layout.is_native else stored_frame
        if not plan.multipart:
            data = await run_in_threadpool(self._frame, read, record, numbers[0] - 1)
            return Response(data, media_type=part_type)
        base = _instance_url(_service_base(request), record.study, record.series,
                             record.sop_instance)

        size = _frames_size(layout, numbers) if read is not native_frame or \
            layout.kind == "native" else None
        # a large answer is streamed: its first frame is read before answering, so that an
        # error still gets its status
        first = await run_in_threadpool(self._frame, read, record, numbers[0] - 1) \
            if size is None or size > SMALL_BODY else None

        def parts() -> Iterator[tuple[dict[str, str], bytes]]:
            for position, number in enumerate(numbers):
                yield ({"Content-Type": part_type,
                        "Content-Location": f"{base}/frames/{number}"},
                       first if position == 0 and first is not None
                       else self._frame(read, record, number - 1))

        boundary = new_boundary()
        content_type = related_content_type(boundary, plan.media_type,
                                            transfer_syntax=plan.syntax)
        return await _multipart_response(parts, boundary, content_type, size)

    @staticmethod
    def _frame(read: Callable[[Any, PixelLayout, int], bytes], record: InstanceRecord,
               index: int) -> bytes:
        try:
            return read(record.path, record.pixels, index)
        except PixelDataError as exc:
            raise HTTPProblem(406, str(exc)) from None

    async def rendered(self, request: Request) -> Response:
        """GET .../rendered or .../frames/{n}/rendered: image/jpeg or image/png."""
        record = await self._record(request)
        if record.pixels.kind == "none":
            raise HTTPProblem(404, f"instance {record.sop_instance} has no pixel data")
        media_type = _rendered_type(request)
        frames = request.path_params.get("frames")
        numbers = _frame_numbers(frames, record.pixels.frames) if frames else [1]
        if len(numbers) != 1:
            raise HTTPProblem(400, "rendered frames are returned one at a time: ask for one "
                              "frame number")
        window, quality, viewport = self._render_options(request)
        try:
            data = await run_in_threadpool(render_frame, record.path, numbers[0] - 1, media_type,
                                           window=window, quality=quality, viewport=viewport)
        except PixelDataError as exc:
            raise HTTPProblem(406, str(exc)) from None
        return Response(data, media_type=media_type)

    @staticmethod
    def _render_options(request: Request) -> tuple[Any, int, Any]:
        params = request.query_params
        window = None
        try:
            if params.get("window"):
                values = params["window"].split(",")
                window = (float(values[0]), float(values[1]),
                          values[2].strip().upper() if len(values) > 2 else "LINEAR")
            quality = int(params.get("quality", "90"))
            viewport = None
            if params.get("viewport"):
                size = params["viewport"].split(",")
                viewport = (int(size[0]), int(size[1]))
        except (ValueError, IndexError):
            raise HTTPProblem(400, "rendered options: window=center,width[,function], "
                              "quality=1..100, viewport=width,height") from None
        if not 1 <= quality <= 100:
            raise HTTPProblem(400, f"quality must be between 1 and 100, not {quality}")
        return window, quality, viewport

    async def bulkdata(self, request: Request) -> Response:
        """GET the value behind a BulkDataURI (multipart/related octet-stream, or one part)."""
        record = await self._record(request)
        steps = request.path_params["path"].strip("/").split("/")
        tag_path: list[int | str] = []
        try:
            for i, step in enumerate(steps):
                if i % 2 == 0:
                    if len(step) != 8:
                        raise ValueError(step)
                    tag_path.append(int(step, 16))
                else:
                    tag_path.append(str(int(step)))
        except ValueError:
            raise HTTPProblem(400, f"malformed bulk data path {request.path_params['path']!r}"
                              ) from None
        if len(tag_path) % 2 == 0:
            raise HTTPProblem(400, "a bulk data path ends with a tag")
        layout = record.pixels
        ranges = parse_accept(request.headers.get("accept"))
        if len(tag_path) == 1 and tag_path[0] == layout.tag and layout.kind != "none":
            if (not layout.is_native and layout.frames > 1) or layout.kind == "opaque":
                return await self._bulk_frames(request, record, ranges)
            if layout.kind == "native":
                data = await run_in_threadpool(read_range, record.path,
                                               [(layout.offset, layout.length)])
            else:
                data = await run_in_threadpool(stored_frame, record.path, layout, 0)
            syntax = EXPLICIT_LE if layout.is_native else record.transfer_syntax
            media = "application/octet-stream" if layout.is_native else \
                media_type_of(record.transfer_syntax)
        else:
            from .pixeldata import bulk_value

            try:
                data = await run_in_threadpool(bulk_value, record.path, tag_path)
            except KeyError:
                raise HTTPProblem(404, "no bulk data at "
                                  f"{request.path_params['path']!r}") from None
            syntax, media = "", "application/octet-stream"
        return self._bulk_response(ranges, data, media, syntax)

    async def _bulk_frames(self, request: Request, record: InstanceRecord,
                           ranges: list[MediaRange]) -> Response:
        layout = record.pixels
        plan = _frame_plan(ranges, layout, record.transfer_syntax, layout.frames == 1)
        read = native_frame if plan.decode or layout.is_native else stored_frame
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"

        def parts() -> Iterator[tuple[dict[str, str], bytes]]:
            for index in range(layout.frames):
                yield {"Content-Type": part_type}, self._frame(read, record, index)

        boundary = new_boundary()
        return StreamingResponse(_encode(parts(), boundary),
                                 media_type=related_content_type(boundary, plan.media_type))

    @staticmethod
    def _bulk_response(ranges: list[MediaRange], data: bytes, media: str,
                       syntax: str) -> Response:
        part_type = f"{media}; transfer-syntax={syntax}" if syntax else media
        for r in ranges:
            if r.type in ("*/*", "multipart/*") or (
                    r.type == "multipart/related" and r.inner[0] in ("*/*", media,
                                                                     "application/octet-stream")):
                boundary = new_boundary()
                body = b"".join(_encode([({"Content-Type": part_type}, data)], boundary))
                return Response(body, media_type=related_content_type(boundary, media))
            if r.type in (media, "application/octet-stream"):
                return Response(data, media_type=part_type)
        raise HTTPProblem(406, f"bulk data is available as multipart/related; type=\"{media}\" "
                          f"or {media}")

    # -- DELETE -----------------------------------------------------------------------------

    async def delete(self, request: Request) -> Response:
        """DELETE a study, series or instance: 204, or 404 when there is nothing to delete."""
        study, series, sop = _uids(request)
        assert study is not None
        count = await run_in_threadpool(self.archive.delete, study, series, sop)
        if not count:
            raise HTTPProblem(404, self._not_found(study, series, sop))
        return Response(status_code=204)

    async def root(self, request: Request) -> Response:
        """GET /: a short description of the service."""
        base = _service_base(request)
        return PlainTextResponse(
            f"dicomframes DICOMweb server (PS3.18 STOW-RS, WADO-RS, QIDO-RS, DELETE)\n"
            f"studies: {base}/studies\n")

    # -- routing ----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to a service root."""
        s = "/studies/{study}"
        se = s + "/series/{series}"
        i = se + "/instances/{instance}"
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/studies", self.stow, methods=["POST"]),
            Route("/studies", self._qido("study"), methods=["GET"]),
            Route("/series", self._qido("series"), methods=["GET"]),
            Route("/instances", self._qido("instance"), methods=["GET"]),
            Route(s, self.stow, methods=["POST"]),
            Route(s, self.retrieve, methods=["GET"]),
            Route(s, self.delete, methods=["DELETE"]),
            Route(s + "/metadata", self.metadata, methods=["GET"]),
            Route(s + "/series", self._qido("series"), methods=["GET"]),
            Route(s + "/instances", self._qido("instance"), methods=["GET"]),
            Route(se, self.retrieve, methods=["GET"]),
            Route(se, self.delete, methods=["DELETE"]),
            Route(se + "/metadata", self.metadata, methods=["GET"]),
            Route(se + "/instances", self._qido("instance"), methods=["GET"]),
            Route(i, self.retrieve, methods=["GET"]),
            Route(i, self.delete, methods=["DELETE"]),
            Route(i + "/metadata", self.metadata, methods=["GET"]),
            Route(i + "/rendered", self.rendered, methods=["GET"]),
            Route(i + "/frames/{frames}", self.frames, methods=["GET"]),
            Route(i + "/frames/{frames}/rendered", self.rendered, methods=["GET"]),
            Route(i + "/bulkdata/{path:path}", self.bulkdata, methods=["GET"]),
        ]


SMALL_BODY = 4 << 20  # multipart answers up to this size are built at once, not streamed


def _frames_size(layout: PixelLayout, numbers: list[int]) -> int | None:
    """Bytes of the requested frames as stored (None when unknown)."""
    if layout.kind == "native":
        return layout.frame_nbytes * len(numbers)
    if layout.kind == "encapsulated":
        return sum(length for n in numbers for _, length in layout.fragments[n - 1])
    return None


async def _multipart_response(parts: Callable[[], Any], boundary: str, content_type: str,
                              size: int | None, exact: bool = False) -> Response:
    """A multipart answer: built in one go when small (fewer thread hand-offs), else streamed
    (with Content-Length when ``size`` is the ``exact`` encoded length)."""
    if size is not None and size <= SMALL_BODY:
        body = await run_in_threadpool(lambda: b"".join(_encode(parts(), boundary)))
        return Response(body, media_type=content_type)
    headers = {"Content-Length": str(size)} if exact and size is not None else None
    return StreamingResponse(_encode(parts(), boundary), media_type=content_type,
                             headers=headers)


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != '"' else " " for c in text)


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return _problem(exc.status, exc.message)


def create_app(archive: Archive, *, max_request_bytes: int = 2 << 30) -> Starlette:
    """The Starlette app serving ``archive`` at ``/``, ``/v1`` and ``/v2``."""
    handlers = DICOMwebApp(archive, max_request_bytes)
    routes = handlers.routes()
    app = Starlette(routes=[Mount("/v1", routes=routes), Mount("/v2", routes=routes), *routes],
                    exception_handlers={HTTPProblem: _on_problem})
    app.state.archive = archive
    return app
