"""WADO-RS (PS3.18 10.4): instances, metadata, frames, rendered images and bulk data.

404 for unknown UIDs and frames past the last, 400 for a malformed UID or frame list (or frame
0), 406 when no acceptable media type or transfer syntax exists (see :mod:`.negotiation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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
    SMALL_BODY,
    HTTPProblem,
    encode_parts,
    file_chunks,
    json_response,
    multipart_response,
    not_found_message,
    request_path,
    service_base,
)


def _frame_numbers(text: str, count: int) -> list[int]:
    """The frame numbers of a frames path segment: 400 when malformed, 404 past the last."""
    try:
        numbers = parse_frame_list(text)
    except ValueError as exc:
        raise HTTPProblem(400, str(exc)) from None
    past = [n for n in numbers if n > count]
    if past:
        raise HTTPProblem(404, f"frame {past[0]} does not exist: the instance has {count} "
                          f"frame(s)")
    return numbers


def _frames_size(layout: PixelLayout, numbers: list[int]) -> int | None:
    """Bytes of the requested frames as stored (None when unknown)."""
    if layout.kind == "native":
        return layout.frame_nbytes * len(numbers)
    if layout.kind == "encapsulated":
        return sum(length for n in numbers for _, length in layout.fragments[n - 1])
    return None


class WadoRoutes:
    """The WADO-RS handlers bound to one archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

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
        ranges = parse_accept(request.headers.get("accept"))
        multipart, syntaxes = dicom_plan(ranges, [r.transfer_syntax for r in records],
                                         allow_single=path.instance is not None)
        base = service_base(request)
        if not multipart:
            record, syntax = records[0], syntaxes[0]
            ctype = f"application/dicom; transfer-syntax={syntax}"
            if syntax == record.transfer_syntax:
                return StreamingResponse(file_chunks(record.path), media_type=ctype,
                                         headers={"Content-Length": str(record.size)})
            body = await run_in_threadpool(self._transcode, record.path)
            return Response(body, media_type=ctype)
        boundary = new_boundary()
        parts: list[tuple[dict[str, str], Any]] = []
        lazy = False
        for record, syntax in zip(records, syntaxes, strict=True):
            headers = {"Content-Type": f"application/dicom; transfer-syntax={syntax}",
                       "Content-Location": record.resource.url(base)}
            if syntax == record.transfer_syntax:
                parts.append((headers, str(record.path)))
            else:
                lazy = True
                parts.append((headers, record.path))
        content_type = related_content_type(boundary, DICOM)
        if not lazy:
            length = await run_in_threadpool(self._length, parts, boundary)
            return await multipart_response(lambda: parts, boundary, content_type, length,
                                             exact=True)

        def transcoded() -> Iterator[tuple[dict[str, str], Any]]:
            for headers, content in parts:
                yield (headers, content) if isinstance(content, str) else \
                    (headers, self._transcode(content))

        return StreamingResponse(encode_parts(transcoded(), boundary), media_type=content_type)

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
        return record

    # -- WADO-RS: frames, rendered, bulk data ------------------------------------------------

    async def frames(self, request: Request) -> Response:
        """GET .../frames/{list}: one part per requested frame."""
        record = await self._record(request)
        layout = record.pixels
        if layout.kind == "none":
            raise HTTPProblem(404, f"instance {record.sop_instance} has no pixel data")
        numbers = _frame_numbers(request.path_params["frames"], layout.frames)
        plan = frame_plan(parse_accept(request.headers.get("accept")), layout,
                           record.transfer_syntax, len(numbers) == 1)
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"
        read = native_frame if plan.decode or layout.is_native else stored_frame
        if not plan.multipart:
            data = await run_in_threadpool(self._frame, read, record, numbers[0] - 1)
            return Response(data, media_type=part_type)
        base = record.resource.url(service_base(request))

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
        return await multipart_response(parts, boundary, content_type, size)

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
        plan = frame_plan(ranges, layout, record.transfer_syntax, layout.frames == 1)
        read = native_frame if plan.decode or layout.is_native else stored_frame
        part_type = f"{plan.media_type}; transfer-syntax={plan.syntax}"

        def parts() -> Iterator[tuple[dict[str, str], bytes]]:
            for index in range(layout.frames):
                yield {"Content-Type": part_type}, self._frame(read, record, index)

        boundary = new_boundary()
        return StreamingResponse(encode_parts(parts(), boundary),
                                 media_type=related_content_type(boundary, plan.media_type))

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
