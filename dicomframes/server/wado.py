"""WADO-RS (PS3.18 10.4): instances, metadata, frames, rendered images and bulk data.

404 for unknown UIDs and frames past the last, 400 for a malformed UID or frame list (or frame
0), 406 when no acceptable media type or transfer syntax exists (see :mod:`.negotiation`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..standard.mediatypes import (
    DICOM,
    OCTET_STREAM,
    MediaRange,
    new_boundary,
    parse_accept,
    related_content_type,
)
from ..standard.multipart import encoded_length
from ..standard.paths import parse_frame_list
from ..standard.pixellayout import PixelDataError, PixelLayout
from ..standard.transfer_syntax import EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_LE
from ..standard.transfer_syntax import media_type_of
from .budget import FRAME_LIST_REPEATS, MAX_FRAME_LIST, MemoryBudget
from .costs import decode_cost, pixel_problem, render_cost, transcode_cost
from .negotiation import dicom_plan, frame_plan, rendered_type, require_json
from .pixeldata import (
    bulk_value,
    native_frame,
    read_range,
    render_frame,
    stored_frame,
    transcode_to_explicit_le,
)
from .query import absolute_bulk_uris
from .storage import Archive, InstanceRecord
from .web import (
    HTTPProblem,
    Spool,
    encode_parts,
    file_chunks,
    json_response,
    multipart_response,
    not_found_message,
    request_path,
    service_base,
)


def frame_numbers(text: str, count: int) -> list[int]:
    """The frame numbers of a frames path segment: 400 when malformed or longer than the
    instance has frames (repeats count; a few repeats are always allowed, at most
    ``FRAME_LIST_REPEATS``; never more than ``MAX_FRAME_LIST``), 404 past the last."""
    if text.count(",") >= MAX_FRAME_LIST:
        raise HTTPProblem(400, f"the frame list holds {text.count(',') + 1} numbers: at most "
                          f"{MAX_FRAME_LIST} per request")
    try:
        numbers = parse_frame_list(text)
    except ValueError as exc:
        raise HTTPProblem(400, str(exc)) from None
    past = [n for n in numbers if n > count]
    if past:
        raise HTTPProblem(404, f"frame {past[0]} does not exist: the instance has {count} "
                          f"frame(s)")
    allowed = max(count, FRAME_LIST_REPEATS)
    if len(numbers) > allowed:
        raise HTTPProblem(400, f"the frame list holds {len(numbers)} numbers (repeats "
                          f"included): at most {allowed} for an instance of {count} frame(s)")
    return numbers


def middle_frame(text: str | None, count: int) -> int:
    """The frame a thumbnail shows: the middle of the frames listed in ``text`` (checked as
    :func:`frame_numbers` does), else of all ``count`` frames (no list is made of them)."""
    if text:
        numbers = frame_numbers(text, count)
        return numbers[(len(numbers) - 1) // 2]
    return (count - 1) // 2 + 1


MAX_VIEWPORT = 16384
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _whole(name: str, text: str, low: int, high: int) -> int:
    """An integer parameter in ASCII digits between ``low`` and ``high`` (else 400)."""
    text = text.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 12:
        raise HTTPProblem(400, f"{name} must be a whole number, not {text!r}")
    number = int(text)
    if not low <= number <= high:
        raise HTTPProblem(400, f"{name} must be between {low} and {high}, not {number}")
    return number


def _window(text: str) -> tuple[float, float, str]:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4; else 400 naming what is wrong)."""
    values = [v.strip() for v in text.split(",")]
    if len(values) not in (2, 3):
        raise HTTPProblem(400, f"window={text!r}: give center,width[,function]")
    try:
        center, width = float(values[0]), float(values[1])
    except ValueError:
        raise HTTPProblem(400, f"window={text!r}: center and width must be numbers") from None
    if not (math.isfinite(center) and math.isfinite(width)) or \
            max(abs(center), abs(width)) > 1e12:
        raise HTTPProblem(400, f"window={text!r}: center and width must be finite numbers")
    function = values[2].upper() if len(values) == 3 else "LINEAR"
    if function not in WINDOW_FUNCTIONS:
        raise HTTPProblem(400, f"window={text!r}: the function must be one of "
                          f"{', '.join(WINDOW_FUNCTIONS)}, not {values[2]!r}")
    if width < 1 if function == "LINEAR" else width <= 0:
        raise HTTPProblem(400, f"window={text!r}: the width must be "
                          f"{'at least 1' if function == 'LINEAR' else 'above 0'} for "
                          f"{function}")
    return center, width, function


def render_options(request: Request) -> tuple[Any, int, Any]:
    """window, quality and viewport of a rendered request (400 naming a bad one)."""
    params = request.query_params
    window = None
    if params.get("window"):
        window = _window(params["window"])
    quality = _whole("quality", params.get("quality", "90"), 1, 100)
    viewport = None
    if params.get("viewport"):
        size = params["viewport"].split(",")
        if len(size) < 2:
            raise HTTPProblem(400, f"viewport={params['viewport']!r}: give width,height "
                              "in pixels")
        viewport = (_whole("viewport width", size[0], 1, MAX_VIEWPORT),
                    _whole("viewport height", size[1], 1, MAX_VIEWPORT))
    return window, quality, viewport


def check_file(record: InstanceRecord) -> HTTPProblem | None:
    """Why the file of ``record`` cannot be served, or None when it is whole: 404 when it is
    gone (deleted meanwhile, or removed outside the server), 500 when its size is not the one
    stored (changed outside the server), so that a 200 never carries fewer bytes than it
    declares."""
    try:
        size = os.stat(record.path).st_size
    except FileNotFoundError:
        return HTTPProblem(404, f"the file of instance {record.sop_instance} is missing from "
                           "the archive (deleted, or removed outside the server)")
    except OSError as exc:
        return HTTPProblem(500, f"the file of instance {record.sop_instance} cannot be read: "
                           f"{exc.strerror}")
    if size != record.size:
        return HTTPProblem(500, f"the file of instance {record.sop_instance} has {size} bytes "
                           f"where {record.size} were stored (changed outside the server); "
                           "it is not served")
    return None


def _whole_records(records: list[InstanceRecord]
                   ) -> tuple[list[InstanceRecord], list[HTTPProblem]]:
    """The records whose files are whole, and why each other one cannot be served."""
    good, bad = [], []
    for record in records:
        problem = check_file(record)
        if problem is None:
            good.append(record)
        else:
            bad.append(problem)
    return good, bad


def _partial_warning(problems: list[HTTPProblem]) -> dict[str, str]:
    """The Warning header of a 206 answer that leaves out the instances of ``problems``."""
    text = "; ".join(p.message for p in problems)[:2000].replace('"', "'")
    return {"Warning": f'299 dicomframes "{len(problems)} instance(s) left out: {text}"'}


def _frames_size(layout: PixelLayout, numbers: list[int]) -> int | None:
    """Bytes of the requested frames as stored (None when unknown)."""
    if layout.kind == "native":
        return layout.frame_nbytes * len(numbers)
    if layout.kind == "encapsulated":
        return sum(length for n in numbers for _, length in layout.fragments[n - 1])
    return None


class WadoRoutes:
    """The WADO-RS handlers bound to one archive; what they decode, render or transcode is
    reserved from ``budget`` first."""

    def __init__(self, archive: Archive, budget: MemoryBudget) -> None:
        self.archive = archive
        self.budget = budget

    async def retrieve(self, request: Request) -> Response:
        """GET a study, series or instance as DICOM (multipart, or one part for an instance)."""
        path = request_path(request)
        assert path.study is not None
        if path.instance is not None and path.series is not None:
            record = await run_in_threadpool(self.archive.instance, path.study, path.series,
                                             path.instance)
            records = [record] if record else []
        else:
            records = await run_in_threadpool(self.archive.instances, path.study, path.series)
        if not records:
            raise HTTPProblem(404, not_found_message(path))
        records, problems = await run_in_threadpool(_whole_records, records)
        if not records:
            raise problems[0]
        status, warning = (206, _partial_warning(problems)) if problems else (200, {})
        ranges = parse_accept(request.headers.get("accept"))
        # what a transcoding may hold: the costliest instance, one at a time
        reservation = await self.budget.reserve(
            max(transcode_cost(r) for r in records), "transcoding the instances")
        spool = Spool()
        try:
            multipart, syntaxes, made = await run_in_threadpool(
                self._prepare, ranges, records, path.instance is not None, spool)
        except BaseException:
            spool.close()
            raise
        finally:
            reservation.release()
        base = service_base(request)
        if not multipart:
            record, syntax = records[0], syntaxes[0]
            ctype = f"application/dicom; transfer-syntax={syntax}"
            if syntax == record.transfer_syntax:
                return StreamingResponse(file_chunks(record.path), media_type=ctype,
                                         headers={"Content-Length": str(record.size)})
            content = made[0]
            body = content if isinstance(content, bytes) else content.read()
            spool.close()
            return Response(body, media_type=ctype)
        boundary = new_boundary()
        parts: list[tuple[dict[str, str], Any]] = []
        for position, (record, syntax) in enumerate(zip(records, syntaxes, strict=True)):
            # each part says what was sent: the stored syntax, or the one transcoded to
            headers = {"Content-Type": f"application/dicom; transfer-syntax={syntax}",
                       "Content-Location": record.resource.url(base)}
            parts.append((headers, made.get(position, str(record.path))))
        content_type = related_content_type(boundary, DICOM)
        length = await run_in_threadpool(self._length, parts, boundary)
        answer = await multipart_response(lambda: parts, boundary, content_type, length,
                                          exact=True)
        answer.status_code = status
        answer.headers.update(warning)
        answer.background = BackgroundTask(spool.close)
        return answer

    def _prepare(self, ranges: list[MediaRange], records: list[InstanceRecord],
                 allow_single: bool, spool: Spool) -> tuple[bool, list[str], dict[int, Any]]:
        """Plan the answer and transcode what it needs, all before answering: an instance
        whose transcoding fails is planned again without it (sent as stored where the Accept
        header and PS3.18 allow, else 406 naming why). Returns (multipart, the syntax of each
        instance, the transcoded contents by position)."""
        stored = [r.transfer_syntax for r in records]
        failed: dict[int, str] = {}
        made: dict[int, Any] = {}
        while True:
            why = "; ".join(f"instance {records[i].sop_instance}: {text}"
                            for i, text in list(failed.items())[:3])
            multipart, syntaxes = dicom_plan(ranges, stored, allow_single, failed, why)
            todo = [i for i, syntax in enumerate(syntaxes)
                    if syntax != stored[i] and i not in made]
            new_failure = False
            for i in todo:
                try:
                    made[i] = spool.add(transcode_to_explicit_le(records[i].path))
                except PixelDataError as exc:
                    failed[i] = str(exc).splitlines()[0][:300]
                    new_failure = True
                    break
            if not new_failure:
                # only what the final plan sends transcoded is kept
                return multipart, syntaxes, {i: c for i, c in made.items()
                                             if syntaxes[i] != stored[i]}

    @staticmethod
    def _length(parts: list[tuple[dict[str, str], Any]], boundary: str) -> int | None:
        try:
            return encoded_length(parts, boundary, content_length=True)
        except OSError:
            return None

    async def metadata(self, request: Request) -> Response:
        """GET .../metadata at the study, series or instance level (DICOM JSON)."""
        path = request_path(request)
        assert path.study is not None
        require_json(request)
        texts = await run_in_threadpool(self.archive.metadata, path.study, path.series,
                                        path.instance)
        if not texts:
            raise HTTPProblem(404, not_found_message(path))
        base = service_base(request)
        return json_response([absolute_bulk_uris(t, base) for t in texts])

    async def _record(self, request: Request) -> InstanceRecord:
        path = request_path(request)
        assert path.study is not None and path.series is not None and path.instance is not None
        record = await run_in_threadpool(self.archive.instance, path.study, path.series,
                                         path.instance)
        if record is None:
            raise HTTPProblem(404, not_found_message(path))
        problem = await run_in_threadpool(check_file, record) or pixel_problem(record)
        if problem is not None:
            raise problem
        return record

    # -- WADO-RS: frames, rendered, bulk data ------------------------------------------------

    async def frames(self, request: Request) -> Response:
        """GET .../frames/{list}: one part per requested frame."""
        record = await self._record(request)
        layout = record.pixels
        if layout.kind == "none":
            raise HTTPProblem(404, f"instance {record.sop_instance} has no pixel data")
        numbers = frame_numbers(request.path_params["frames"], layout.frames)
        plan = frame_plan(parse_accept(request.headers.get("accept")), layout,
                           record.transfer_syntax, len(numbers) == 1)
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"
        read = native_frame if plan.decode or layout.is_native else stored_frame
        plain = layout.kind == "native" or (layout.kind == "encapsulated" and
                                            read is stored_frame)
        if not plan.multipart:
            reservation = await self.budget.reserve(
                0 if plain else decode_cost(record), f"decoding frame {numbers[0]}")
            try:
                data = await run_in_threadpool(self._frame, read, record, numbers[0] - 1)
            finally:
                reservation.release()
            return Response(data, media_type=part_type)
        base = record.resource.url(service_base(request))

        boundary = new_boundary()
        content_type = related_content_type(boundary, plan.media_type,
                                            transfer_syntax=plan.syntax)
        if not plain:
            # decoded (or found by parsing): every frame is made before answering, so that a
            # frame that cannot be decoded is a 406, never a cut-short 200
            answer, spool = await self._spooled_frames(read, record, numbers, part_type,
                                                       base, boundary, content_type)
            answer.background = BackgroundTask(spool.close)
            return answer

        def parts() -> Iterator[tuple[dict[str, str], bytes]]:
            for number in numbers:  # byte ranges of a file whose size was checked
                yield ({"Content-Type": part_type,
                        "Content-Location": f"{base}/frames/{number}"},
                       self._frame(read, record, number - 1))

        return await multipart_response(parts, boundary, content_type,
                                        _frames_size(layout, numbers))

    async def _spooled_frames(self, read: Callable[[Any, PixelLayout, int], bytes],
                              record: InstanceRecord, numbers: list[int], part_type: str,
                              base: str | None, boundary: str,
                              content_type: str) -> tuple[Response, Spool]:
        """A multipart answer of frames all read (decoded) before it starts; their memory
        is held from the budget until the answer is sent."""
        reservation = await self.budget.reserve(decode_cost(record, len(numbers)),
                                                f"decoding {len(numbers)} frame(s)")
        spool = Spool()
        spool.on_close = reservation.release

        def make() -> list[tuple[dict[str, str], Any]]:
            made = []
            for number in numbers:
                headers = {"Content-Type": part_type}
                if base is not None:
                    headers["Content-Location"] = f"{base}/frames/{number}"
                made.append((headers, spool.add(self._frame(read, record, number - 1))))
            return made

        try:
            parts = await run_in_threadpool(make)
            length = await run_in_threadpool(self._length, parts, boundary)
        except BaseException:
            spool.close()
            raise
        return await multipart_response(lambda: parts, boundary, content_type, length,
                                        exact=True), spool

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
        media_type = rendered_type(request)
        frames = request.path_params.get("frames")
        numbers = frame_numbers(frames, record.pixels.frames) if frames else [1]
        if len(numbers) != 1:
            raise HTTPProblem(400, "rendered frames are returned one at a time: ask for one "
                              "frame number")
        window, quality, viewport = render_options(request)
        reservation = await self.budget.reserve(render_cost(record),
                                                f"rendering frame {numbers[0]}")
        try:
            data = await run_in_threadpool(render_frame, record.path, numbers[0] - 1, media_type,
                                           window=window, quality=quality, viewport=viewport)
        except PixelDataError as exc:
            raise HTTPProblem(406, str(exc)) from None
        finally:
            reservation.release()
        return Response(data, media_type=media_type)

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
        whole_pixels = len(tag_path) == 1 and tag_path[0] == layout.tag and \
            layout.kind != "none"
        if whole_pixels and ((not layout.is_native and layout.frames > 1) or
                             layout.kind == "opaque"):
            return await self._bulk_frames(request, record, ranges)
        # the value is read into memory (at most the file), twice while the answer is made
        reservation = await self.budget.reserve(2 * record.size, "reading the bulk data")
        try:
            return await self._bulk_value(request, record, tag_path, ranges)
        finally:
            reservation.release()

    async def _bulk_value(self, request: Request, record: InstanceRecord,
                          tag_path: list[int | str], ranges: list[MediaRange]) -> Response:
        layout = record.pixels
        if len(tag_path) == 1 and tag_path[0] == layout.tag and layout.kind != "none":
            if layout.kind == "native":
                data = await run_in_threadpool(read_range, record.path,
                                               [(layout.offset, layout.length)])
            else:
                data = await run_in_threadpool(stored_frame, record.path, layout, 0)
            syntax = EXPLICIT_LE if layout.is_native else record.transfer_syntax
            media = OCTET_STREAM if layout.is_native else \
                media_type_of(record.transfer_syntax)
        else:
            try:
                data = await run_in_threadpool(bulk_value, record.path, tag_path)
            except KeyError:
                raise HTTPProblem(404, "no bulk data at "
                                  f"{request.path_params['path']!r}") from None
            syntax, media = "", OCTET_STREAM
        return self._bulk_response(ranges, data, media, syntax)

    async def _bulk_frames(self, request: Request, record: InstanceRecord,
                           ranges: list[MediaRange]) -> Response:
        layout = record.pixels
        if layout.frames > MAX_FRAME_LIST:
            raise HTTPProblem(413, f"the Pixel Data holds {layout.frames} frames: at most "
                              f"{MAX_FRAME_LIST} are sent in one answer; ask for them by "
                              ".../frames/{list}")
        plan = frame_plan(ranges, layout, record.transfer_syntax, layout.frames == 1)
        read = native_frame if plan.decode or layout.is_native else stored_frame
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"
        boundary = new_boundary()
        answer, spool = await self._spooled_frames(
            read, record, list(range(1, layout.frames + 1)), part_type, None, boundary,
            related_content_type(boundary, plan.media_type))
        answer.background = BackgroundTask(spool.close)
        return answer

    @staticmethod
    def _bulk_response(ranges: list[MediaRange], data: bytes, media: str,
                       syntax: str) -> Response:
        part_type = f"{media}; transfer-syntax={syntax}" if syntax else media
        for r in ranges:
            if r.type in ("*/*", "multipart/*") or (
                    r.type == "multipart/related" and r.inner[0] in ("*/*", media,
                                                                     OCTET_STREAM)):
                boundary = new_boundary()
                body = b"".join(encode_parts([({"Content-Type": part_type}, data)], boundary))
                return Response(body, media_type=related_content_type(boundary, media))
            if r.type in (media, OCTET_STREAM):
                return Response(data, media_type=part_type)
        raise HTTPProblem(406, f"bulk data is available as multipart/related; type=\"{media}\" "
                          f"or {media}")
