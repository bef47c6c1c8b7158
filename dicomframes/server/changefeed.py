"""``GET /changefeed`` and ``GET /changefeed/latest``: the change feed of the Azure DICOM
service (Microsoft Learn, "Change feed overview"; microsoft/dicom-server
``docs/concepts/change-feed.md``), served under the root and ``/v1`` and ``/v2``.

Under ``/v1`` the paging is API v1's (``offset`` a Sequence, ``limit`` a span of Sequences,
default 10, at most 100); under ``/v2`` and at the root it is v2's (``startTime`` /
``endTime`` window, ``offset`` entries skipped, ``limit`` default 100, at most 200); see
:mod:`dicomframes.standard.changefeed`. ``includeMetadata`` (default true, as documented)
adds the current DICOM JSON of entries whose State is "current". 400 names a malformed
parameter; ``/changefeed/latest`` of an empty feed answers 204.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..standard.changefeed import (
    CURRENT,
    format_timestamp,
    microseconds,
    paging_of,
    parse_timestamp,
    version_of_path,
)
from .feedlog import Entry, after_sequence, current_metadata, in_window, latest
from .query import absolute_bulk_uris
from .storage import Archive
from .web import HTTPProblem, service_base

_JSON = "application/json"


def _flag(request: Request, name: str, default: bool) -> bool:
    for key, value in request.query_params.items():
        if key.lower() == name.lower():
            if value.lower() in ("true", "1", ""):
                return True
            if value.lower() in ("false", "0"):
                return False
            raise HTTPProblem(400, f"{name} must be true or false, not {value!r}")
    return default


def _param(request: Request, name: str) -> str | None:
    for key, value in request.query_params.items():
        if key.lower() == name.lower():
            return value
    return None


def _integer(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = _param(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPProblem(400, f"{name} must be an integer, not {text!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise HTTPProblem(400, f"{name} must be {bound}, not {value}")
    return value


def _time(request: Request, name: str) -> int | None:
    text = _param(request, name)
    if text is None or not text.strip():
        return None
    try:
        return microseconds(parse_timestamp(text))
    except ValueError:
        raise HTTPProblem(400, f"{name} must be an ISO 8601 date and time, not {text!r}") \
            from None


def _object(entry: Entry, metadata: str | None) -> str:
    fields: dict[str, Any] = {
        "Sequence": entry.sequence, "StudyInstanceUid": entry.study,
        "SeriesInstanceUid": entry.series, "SopInstanceUid": entry.sop,
        "Action": entry.action, "Timestamp": format_timestamp(entry.timestamp),
        "State": entry.state}
    text = json.dumps(fields, separators=(",", ":"))
    if metadata is None:
        return text
    return text[:-1] + ',"Metadata":' + metadata + "}"


class ChangeFeedRoutes:
    """The change feed handlers bound to one archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def _texts(self, entries: list[Entry], with_metadata: bool, base: str) -> list[str]:
        texts = {}
        if with_metadata:
            wanted = [e.sop for e in entries if e.state == CURRENT]
            texts = current_metadata(self.archive.db, wanted) if wanted else {}
        return [_object(e, absolute_bulk_uris(texts[e.sop], base)
                        if e.state == CURRENT and e.sop in texts else None) for e in entries]

    async def feed(self, request: Request) -> Response:
        """GET /changefeed: a page of entries, paged as the API version of the path says."""
        base = service_base(request)
        rules = paging_of(version_of_path(request.scope.get("root_path", "")))
        limit = _integer(request, "limit", rules.default_limit, 1, rules.max_limit)
        offset = _integer(request, "offset", 0, 0, None)
        with_metadata = _flag(request, "includeMetadata", True)
        if rules.windows:
            start, end = _time(request, "startTime"), _time(request, "endTime")
            if start is not None and end is not None and end < start:
                raise HTTPProblem(400, "endTime must not be before startTime")

            def read() -> list[str]:
                entries = in_window(self.archive.db, start, end, offset, limit)
                return self._texts(entries, with_metadata, base)
        else:
            for name in ("startTime", "endTime"):
                if _param(request, name) is not None:
                    raise HTTPProblem(400, f"{name} needs API v2 (/v2/changefeed); v1 pages "
                                      "by Sequence only")

            def read() -> list[str]:
                return self._texts(after_sequence(self.archive.db, offset, limit),
                                   with_metadata, base)
        texts = await run_in_threadpool(read)
        return Response(("[" + ",".join(texts) + "]").encode("utf-8"), media_type=_JSON)

    async def latest(self, request: Request) -> Response:
        """GET /changefeed/latest: the last entry (204 when the feed is empty)."""
        base = service_base(request)
        with_metadata = _flag(request, "includeMetadata", True)

        def read() -> str | None:
            entry = latest(self.archive.db)
            return None if entry is None else self._texts([entry], with_metadata, base)[0]

        text = await run_in_threadpool(read)
        if text is None:
            return Response(status_code=204)
        return Response(text.encode("utf-8"), media_type=_JSON)

    def routes(self) -> list[BaseRoute]:
        """The routes, relative to a service root."""
        return [Route("/changefeed", self.feed, methods=["GET"]),
                Route("/changefeed/latest", self.latest, methods=["GET"])]
