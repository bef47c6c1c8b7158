"""STOW-RS (PS3.18 10.5): storing instances sent as multipart/related or application/dicom.

200 when all were stored, 202 when some failed, 409 when none were; 415 for another media type,
406 when Accept does not allow DICOM JSON, 413 for a body larger than the limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import MultipartError
from ..standard.mediatypes import DICOM, DICOM_JSON, boundary_of, parse_media_type
from ..standard.multipart import iter_parts
from ..standard.paths import ResourcePath
from ..standard.stow import PROCESSING_FAILURE, Failed, Referenced, stow_response
from .negotiation import require_json
from .parsers import Job
from .storage import Archive, Stored, StoreFailure
from .web import CHUNK, HTTPProblem, request_path, service_base

IN_THREAD_BYTES = 1 << 20  # larger parts are written by the request's thread


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c != '"' else " " for c in text)


class StowRoutes:
    """The STOW-RS handler bound to one archive."""

    def __init__(self, archive: Archive, max_request_bytes: int) -> None:
        self.archive = archive
        self.max_request_bytes = max_request_bytes

    async def stow(self, request: Request) -> Response:
        """POST /studies[/{study}]: store multipart/related or single-part application/dicom."""
        study = request_path(request).study
        require_json(request)
        content_type = request.headers.get("content-type", "")
        media, params = parse_media_type(content_type) if content_type else ("", {})
        if media == "multipart/related":
            part_type = parse_media_type(params.get("type") or DICOM)[0]
            if part_type != DICOM:
                raise HTTPProblem(415, f"STOW-RS here takes multipart/related parts of type "
                                  f"application/dicom, not {part_type}")
            try:
                boundary: str | None = boundary_of(content_type)
            except MultipartError as exc:
                raise HTTPProblem(400, str(exc)) from None
        elif media == DICOM:
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
        return self._stow_response(outcomes, study, service_base(request))

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
        # each part to its own file in tmp/ (None: a part that is not application/dicom),
        # written and parsed by the parser processes while the body is still being split
        temps: list[Path | None] = []
        failure: StoreFailure | None = None
        batch = self.archive.batch(study)
        try:
            with open(spool, "rb") as fp:
                try:
                    for part in iter_parts(iter(lambda: fp.read(CHUNK), b""), boundary):
                        part_type = parse_media_type(part.content_type or DICOM)[0]
                        if part_type != DICOM:
                            temps.append(None)
                            continue
                        temp = self.archive.temp_path()
                        temps.append(temp)
                        if len(part.content) > IN_THREAD_BYTES:  # not worth a copy to a worker
                            with open(temp, "wb") as out:
                                out.write(part.content)
                            batch.add(Job(temp, max_inflated=self.archive.max_inflated))
                        else:
                            batch.add(Job(temp, content=bytes(part.content),
                                          max_inflated=self.archive.max_inflated))
                except MultipartError as exc:
                    if not temps:
                        raise HTTPProblem(400, str(exc)) from None
                    failure = StoreFailure(PROCESSING_FAILURE, str(exc))
            if not temps:
                raise HTTPProblem(400, "the multipart body has no parts")
            placed = [t for t in temps if t is not None]
            stored = iter(self.archive.store_files(placed, study, prepared=batch.outcomes()))
        finally:
            batch.wait()  # no worker may still write a file that is removed here
            for leftover in temps:
                if leftover is not None and leftover.exists():
                    leftover.unlink()
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
        studies = {s.study for s in stored} | ({study} if study else set())
        retrieve_url = ResourcePath(next(iter(studies))).url(base) if len(studies) == 1 \
            else None
        answer = stow_response(
            [Referenced(s.sop_class, s.sop_instance,
                        ResourcePath(s.study, s.series, s.sop_instance).url(base))
             for s in stored],
            [Failed(f.sop_class, f.sop_instance, f.reason) for f in failed],
            retrieve_url)
        status = 200 if not failed else 202 if stored else 409
        headers = {}
        if failed:
            reasons = "; ".join(f"{f.reason}: {f}" for f in failed)[:2000]
            headers["Warning"] = f'299 dicomframes "{_header_safe(reasons)}"'
        body = json.dumps(answer, separators=(",", ":")).encode("utf-8")
        return Response(body, status_code=status, media_type=DICOM_JSON, headers=headers)
