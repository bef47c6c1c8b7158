"""Rendered studies and series, and thumbnails (PS3.18 8.3.5, 10.4.1.1.6).

``/studies/{S}/rendered`` and ``/studies/{S}/series/{SE}/rendered``: a multipart/related answer
of one rendered image per instance with pixel data (its first frame, as the instance's
``/rendered`` gives), ``type="image/jpeg"`` or ``"image/png"`` as the Accept header asks.

``.../thumbnail`` of a study, series, instance or frame list: one small image/jpeg or image/png
(per Accept) of a representative frame: the middle instance of the study or series (in the
order stored) and its middle frame, or the middle of the frames listed. Its size is at most
``THUMBNAIL_SIZE`` pixels a side unless ``viewport=width,height`` asks for another;
``window`` and ``quality`` are honoured as for rendered images.

Every image is made before the answer starts: an instance that cannot be rendered is a 406
naming it, never a cut-short 200 (a thumbnail tries the other instances first).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..standard.mediatypes import new_boundary, parse_accept, related_content_type
from ..standard.pixellayout import PixelDataError
from .budget import MemoryBudget
from .costs import pixel_problem, render_cost
from .negotiation import rendered_type
from .pixeldata import render_frame
from .storage import Archive, InstanceRecord
from .wado import check_file, middle_frame, render_options
from .web import HTTPProblem, multipart_response, not_found_message, request_path

THUMBNAIL_SIZE = 128  # pixels a side, unless viewport asks for another size
IMAGE_TYPES = ("image/jpeg", "image/png")


def rendered_parts_type(request: Request) -> str:
    """The image type of the parts of a rendered study or series (multipart/related; 406
    naming the types available when the Accept header allows none)."""
    for r in parse_accept(request.headers.get("accept")):
        if r.type in ("*/*", "multipart/*"):
            return "image/jpeg"
        if r.type == "multipart/related":
            inner = r.inner[0]
            if inner in IMAGE_TYPES:
                return inner
            if inner in ("*/*", "image/*"):
                return "image/jpeg"
    raise HTTPProblem(406, "a rendered study or series is multipart/related; "
                      "type=\"image/jpeg\" or type=\"image/png\" (one rendered image per "
                      f"instance); Accept {request.headers.get('accept')!r} allows neither")


def _with_pixels(records: list[InstanceRecord]) -> list[InstanceRecord]:
    """The records that have pixel data, whose files are whole and whose declared sizes the
    pixel data holds."""
    return [r for r in records if r.pixels.kind != "none" and check_file(r) is None
            and pixel_problem(r) is None]


def _middle_first(items: list[Any]) -> list[Any]:
    """``items`` from the middle outwards (the middle one first)."""
    middle = (len(items) - 1) // 2
    order = sorted(range(len(items)), key=lambda i: abs(i - middle))
    return [items[i] for i in order]


class RenderRoutes:
    """The handlers of rendered studies and series and of thumbnails, bound to one archive."""

    def __init__(self, archive: Archive, budget: MemoryBudget) -> None:
        self.archive = archive
        self.budget = budget

    async def _records(self, request: Request) -> list[InstanceRecord]:
        """The whole instances with pixel data of the study, series or instance requested
        (404 when there is none)."""
        path = request_path(request)
        assert path.study is not None
        if path.instance is not None and path.series is not None:
            record = await run_in_threadpool(self.archive.instance, path.study, path.series,
                                             path.instance)
            if record is None:
                raise HTTPProblem(404, not_found_message(path))
            problem = await run_in_threadpool(check_file, record) or pixel_problem(record)
            if problem is not None:
                raise problem
            records = [record]
        else:
            records = await run_in_threadpool(self.archive.instances, path.study, path.series)
            if not records:
                raise HTTPProblem(404, not_found_message(path))
            records = await run_in_threadpool(_with_pixels, records)
        records = [r for r in records if r.pixels.kind != "none"]
        if not records:
            what = "instance" if path.instance else "series" if path.series else "study"
            raise HTTPProblem(404, f"the {what} has no instance with pixel data to render")
        return records

    async def rendered(self, request: Request) -> Response:
        """GET a study's or series' /rendered: multipart/related of rendered images."""
        media_type = rendered_parts_type(request)
        window, quality, viewport = render_options(request)
        records = await self._records(request)

        def render_all() -> list[tuple[dict[str, str], bytes]]:
            parts = []
            for record in records:
                try:
                    data = render_frame(record.path, 0, media_type, window=window,
                                        quality=quality, viewport=viewport)
                except PixelDataError as exc:
                    raise HTTPProblem(406, f"instance {record.sop_instance} cannot be "
                                      f"rendered: {exc}") from None
                parts.append(({"Content-Type": media_type}, data))
            return parts

        # one instance is rendered at a time; the images made are small
        reservation = await self.budget.reserve(max(render_cost(r) for r in records),
                                                "rendering the instances")
        try:
            parts = await run_in_threadpool(render_all)
        finally:
            reservation.release()
        boundary = new_boundary()
        return await multipart_response(lambda: parts, boundary,
                                        related_content_type(boundary, media_type),
                                        sum(len(data) for _, data in parts))

    async def thumbnail(self, request: Request) -> Response:
        """GET .../thumbnail of a study, series, instance or frame list: one small image."""
        media_type = rendered_type(request)
        window, quality, viewport = render_options(request)
        records = await self._records(request)
        frames = request.path_params.get("frames")
        size = viewport or (THUMBNAIL_SIZE, THUMBNAIL_SIZE)

        candidates = _middle_first(records)[:5]

        def make() -> bytes:
            why = ""
            for record in candidates:
                number = middle_frame(frames, record.pixels.frames)
                try:
                    return render_frame(record.path, number - 1, media_type, window=window,
                                        quality=quality, viewport=size)
                except PixelDataError as exc:
                    why = f"instance {record.sop_instance} cannot be rendered: {exc}"
            raise HTTPProblem(406, f"no thumbnail can be made ({why})")

        reservation = await self.budget.reserve(max(render_cost(r) for r in candidates),
                                                "making a thumbnail")
        try:
            return Response(await run_in_threadpool(make), media_type=media_type)
        finally:
            reservation.release()
