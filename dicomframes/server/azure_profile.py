"""An Azure-strict profile of the embedded server: QIDO-RS refused where the Azure DICOM
service refuses it, so that code tested here also runs against Azure.

``serve(..., profile="azure")`` (``dicomframes serve --azure-strict``) wraps the app in
:class:`AzureStrict`, which checks each search before the server sees it, following the Azure
DICOM service's conformance statement (API v2, "Search (QIDO-RS)"):

- only the attributes Azure lists as searchable, each for the search targets it lists;
- exact matching only: no ``*`` or ``?`` wildcards, no empty values; ranges (``a-b``, ``a-``,
  ``-b``) on StudyDate and PatientBirthDate only; ``fuzzymatching`` and the other reserved keys
  as PS3.18 and Azure define them, with ``limit`` from 1 to 200;
- a search that matches nothing answers ``204 No Content`` (no body), as Azure does.

A refused search answers ``400`` with a text that names what Azure would not accept. Nothing
else changes: the other services are the embedded server's own.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..standard import tags

__all__ = ["PROFILES", "AzureStrict", "azure_refusal"]

#: The server profiles that :func:`dicomframes.server.serve` accepts.
PROFILES = ("default", "azure")

_STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
               "AccessionNumber", "ReferringPhysicianName", "StudyDate", "StudyDescription",
               "ModalitiesInStudy")
_SERIES_KEYS = ("SeriesInstanceUID", "Modality", "PerformedProcedureStepStartDate",
                "ManufacturerModelName")

# The searchable attributes of each search target (Azure's "Searchable attributes" table):
# a search inside a study or a series takes only the keys below that level.
_TARGET_KEYS: dict[str, frozenset[str]] = {
    "studies": frozenset(_STUDY_KEYS),
    "series": frozenset((*_STUDY_KEYS, *_SERIES_KEYS)),
    "instances": frozenset((*_STUDY_KEYS, *_SERIES_KEYS, "SOPInstanceUID")),
    "study/series": frozenset(_SERIES_KEYS),
    "study/instances": frozenset((*_SERIES_KEYS, "SOPInstanceUID")),
    "study/series/instances": frozenset(("SOPInstanceUID",)),
}
_RANGE_KEYS = frozenset(("StudyDate", "PatientBirthDate"))
_RESERVED = frozenset(("includefield", "limit", "offset", "fuzzymatching"))
_MAX_LIMIT = 200

_UID = r"[0-9.]+"
_SEARCH = re.compile(rf"^(?:/v\d+)?(?:/studies/(?P<study>{_UID})(?:/series/(?P<series>{_UID}))?)?"
                     r"/(?P<level>studies|series|instances)/?$")


def _target(path: str) -> str | None:
    """The search target of ``path`` (a key of ``_TARGET_KEYS``), None if not a search."""
    match = _SEARCH.match(path)
    if match is None:
        return None
    level, study, series = match["level"], match["study"], match["series"]
    if series:
        return "study/series/instances" if level == "instances" else None
    if study:
        return f"study/{level}" if level != "studies" else None
    return level


def _keyword(name: str) -> str | None:
    """The keyword of a query key given as keyword or 8-hex-digit tag (None if neither)."""
    try:
        tag = tags.tag_of(name)
    except (KeyError, ValueError):
        return None
    try:
        return tags.keyword_of(tag)
    except KeyError:
        return None


def azure_refusal(path: str, query: str) -> str | None:
    """Why the Azure DICOM service would refuse the search ``path?query`` (None: it accepts it,
    or ``path`` is not a search)."""
    target = _target(path)
    if target is None:
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        lower = name.lower()
        if lower in _RESERVED:
            if lower == "limit" and not (value.isdigit() and 1 <= int(value) <= _MAX_LIMIT):
                return f"limit must be between 1 and {_MAX_LIMIT} (got {value!r})"
            if lower == "offset" and not value.isdigit():
                return f"offset must be a whole number (got {value!r})"
            if lower == "fuzzymatching" and value.lower() not in ("true", "false"):
                return f"fuzzymatching must be true or false (got {value!r})"
            continue
        keyword = _keyword(name)
        if keyword is None or keyword not in _TARGET_KEYS[target]:
            where = target.replace("study/", "a study's ").replace("series/", "series' ")
            return (f"{name} is not a searchable attribute for {where} on the Azure DICOM "
                    f"service (searchable: {', '.join(sorted(_TARGET_KEYS[target]))})")
        if value == "":
            return f"{name}: the Azure DICOM service does not search for empty values"
        if "*" in value or "?" in value:
            return (f"{name}={value}: the Azure DICOM service has no wildcard matching "
                    "(exact match; ranges on dates; fuzzymatching=true on person names)")
        if "-" in value and keyword in _RANGE_KEYS:
            if value == "-":
                return f"{name}=-: a range needs at least one end"
        elif "," in value and keyword not in ("StudyInstanceUID", "SeriesInstanceUID",
                                               "SOPInstanceUID"):
            return f"{name}={value}: the Azure DICOM service matches one value, not a list"
    return None


class AzureStrict:
    """ASGI middleware: the Azure-strict profile (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if _target(path) is None:
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        refusal = azure_refusal(path, query)
        if refusal is not None:
            await PlainTextResponse(refusal + "\n", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, _EmptyAs204(send))


class _EmptyAs204:
    """Turns a 200 answer whose JSON body is ``[]`` into ``204 No Content`` (Azure's answer to
    a search without matches); every other answer passes unchanged."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 200:
            self.start = message               # held until the body says whether it is empty
            return
        if self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        start, self.start = self.start, None
        if _is_empty_list(self.body):
            headers = [(k, v) for k, v in start.get("headers", [])
                       if k.lower() not in (b"content-length", b"content-type")]
            await self.send({**start, "status": 204, "headers": headers})
            await self.send({"type": "http.response.body", "body": b""})
            return
        await self.send(start)
        await self.send({"type": "http.response.body", "body": self.body})


def _is_empty_list(body: bytes) -> bool:
    try:
        return json.loads(body or b"null") == []
    except ValueError:
        return False
