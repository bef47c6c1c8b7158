"""Content negotiation (PS3.18 8.7): which media type and transfer syntax an answer is sent in.

Instances and frames: ``transfer-syntax=*`` or the stored syntax give the stored bytes
unchanged; ``1.2.840.10008.1.2.1`` (Explicit VR Little Endian, the PS3.18 default when a DICOM
media range names no syntax) decodes compressed data with pydicom and its plug-ins; any other
syntax is 406. With no Accept header, ``*/*`` or a DICOM media range naming no syntax, instances
are sent in Explicit VR Little Endian (lossy data that cannot be decoded: as stored, as
PS3.18 8.7.3.5.2 allows); each part's Content-Type names the syntax sent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from starlette.requests import Request

from ..standard.mediatypes import DICOM, DICOM_JSON, OCTET_STREAM, MediaRange, parse_accept
from ..standard.pixellayout import PixelLayout
from ..standard.transfer_syntax import EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_LE
from ..standard.transfer_syntax import LOSSY_SYNTAXES, media_type_of
from .pixeldata import can_decode
from .web import HTTPProblem

_JSON_TYPES = {DICOM_JSON, "application/json", "*/*", "application/*"}


def accepts_json(request: Request) -> bool:
    """True when the request's Accept header allows DICOM JSON."""
    return any(r.type in _JSON_TYPES for r in parse_accept(request.headers.get("accept")))


def require_json(request: Request) -> None:
    """406 unless the request's Accept header allows DICOM JSON."""
    if not accepts_json(request):
        raise HTTPProblem(406, f"this resource is {DICOM_JSON}; Accept "
                          f"{request.headers.get('accept')!r} does not allow it")


def _dicom_syntax(stored: str, wanted: str | None, decodable: bool) -> str | None:
    """The transfer syntax to send an instance stored in ``stored`` in, for a requested one
    (None: none named, the PS3.18 default Explicit VR Little Endian); None when impossible.

    ``decodable``: the instance can be rewritten in Explicit VR Little Endian. With no syntax
    named, lossy data that cannot be decoded are sent as stored (PS3.18 8.7.3.5.2: the default
    applies unless the origin server only has the pixel data in lossy compressed form)."""
    if wanted == "*" or wanted == stored:
        return stored
    if wanted is None and not decodable and stored in LOSSY_SYNTAXES:
        return stored
    if (wanted or EXPLICIT_LE) == EXPLICIT_LE:
        return EXPLICIT_LE if decodable else None
    return None


def dicom_plan(ranges: list[MediaRange], stored: list[str], allow_single: bool,
               undecodable: Collection[int] = (), why: str = "") -> tuple[bool, list[str]]:
    """Choose multipart or single part and the transfer syntax of each instance (stored in
    ``stored``) for an Accept header (406 if none).

    A media range naming no transfer syntax (``*/*``, no Accept, ``application/dicom``) asks
    for the default, Explicit VR Little Endian (PS3.18 Table 8.7.3-1); ``transfer-syntax=*``
    asks for the stored bytes. ``undecodable``: positions of instances whose transcoding was
    tried and failed (``why`` says how, for the 406)."""
    decodable = [can_decode(ts) and i not in undecodable for i, ts in enumerate(stored)]
    for r in ranges:
        if r.type in ("*/*", "multipart/*", "multipart/related"):
            wanted = None
            if r.type == "multipart/related":
                inner, wanted = r.inner
                if inner not in (DICOM, "*/*", "application/*"):
                    continue
            syntaxes = [_dicom_syntax(ts, wanted, ok)
                        for ts, ok in zip(stored, decodable, strict=True)]
            if all(syntaxes):
                return True, [s for s in syntaxes if s]
        elif r.type == DICOM and allow_single:
            syntaxes = [_dicom_syntax(ts, r.syntax, ok)
                        for ts, ok in zip(stored, decodable, strict=True)]
            if all(syntaxes):
                return False, [s for s in syntaxes if s]
    cannot = [ts for ts, ok in zip(stored, decodable, strict=True) if not ok]
    detail = f" ({why})" if why else (
        f" ({cannot[0]} cannot be decoded here)" if cannot else "")
    raise HTTPProblem(406, "no acceptable representation: instances are available as "
                      "multipart/related; type=\"application/dicom\" (or application/dicom for "
                      "one instance) with transfer-syntax=* (as stored), the stored syntax, or "
                      f"{EXPLICIT_LE}" + (" where they can be decoded" if cannot else "")
                      + detail)


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
    natural = media_type_of(stored) if compressed else OCTET_STREAM
    if part_type in ("*/*", "*"):
        if wanted in (None, "*") or wanted == stored:
            return FramePlan(True, natural, stored if compressed else EXPLICIT_LE, False)
        part_type = OCTET_STREAM
    if part_type == OCTET_STREAM:
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


def frame_plan(ranges: list[MediaRange], layout: PixelLayout, stored: str,
               single_frame: bool) -> FramePlan:
    """Choose how to send frames stored in ``stored`` for an Accept header (406 if none)."""
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


def rendered_type(request: Request) -> str:
    """The image type of a rendered answer: image/jpeg or image/png (406 if neither)."""
    for r in parse_accept(request.headers.get("accept")):
        if r.type in ("image/jpeg", "image/png"):
            return r.type
        if r.type in ("*/*", "image/*"):
            return "image/jpeg"
    raise HTTPProblem(406, "rendered images are available as image/jpeg or image/png")
