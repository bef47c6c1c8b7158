"""STOW-RS answers (PS3.18 10.5.3, PS3.4 C.4.1.1.3.1): reason codes, building and reading.

The server builds its answer with :func:`stow_response`; the client reads any server's answer
with :func:`parse_stow_response`. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .dicomjson import first_value
from .tags import tag_hex, tag_of

__all__ = [
    "ALREADY_EXISTS",
    "BEING_CREATED",
    "INVALID",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "REASONS",
    "WRONG_STUDY",
    "Failed",
    "Referenced",
    "StowAnswer",
    "parse_stow_response",
    "reason_text",
    "stow_response",
]

PROCESSING_FAILURE = 0x0110  # 272
OUT_OF_RESOURCES = 0xA700  # 42752
INVALID = 0xA900  # 43264: validation failed (PS3.18's A9xx: does not match the SOP class)
WRONG_STUDY = 0xA901  # 43265 (Azure): not of the study in the URL (POST /studies/{study})
ALREADY_EXISTS = 0xB00E  # 45070 (Azure and the embedded server)
BEING_CREATED = 0xB00F  # 45071 (Azure)

#: PS3.4 / PS3.18 status codes a STOW answer may carry, and Azure's additions.
REASONS: dict[int, str] = {
    PROCESSING_FAILURE: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    OUT_OF_RESOURCES: "out of resources",
    INVALID: "data set does not match the SOP class (validation failed)",
    WRONG_STUDY: "instance is not of the study in the URL",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match the SOP class",
    ALREADY_EXISTS: "already stored",
    BEING_CREATED: "being created by another request",
}

_RETRIEVE_URL = tag_hex(tag_of("RetrieveURL"))
_FAILED_SEQUENCE = tag_hex(tag_of("FailedSOPSequence"))
_REFERENCED_SEQUENCE = tag_hex(tag_of("ReferencedSOPSequence"))
_SOP_CLASS = tag_hex(tag_of("ReferencedSOPClassUID"))
_SOP_INSTANCE = tag_hex(tag_of("ReferencedSOPInstanceUID"))
_FAILURE_REASON = tag_hex(tag_of("FailureReason"))
_WARNING_REASON = tag_hex(tag_of("WarningReason"))


def reason_text(code: int | None) -> str:
    """A reason code in words with its hex value ("already stored (0xb00e)"); "" for None."""
    if code is None:
        return ""
    text = REASONS.get(code)
    return f"{text} ({code:#06x})" if text else f"status {code:#06x}"


@dataclass(frozen=True)
class Referenced:
    """An instance the server stored (an item of ReferencedSOPSequence)."""

    sop_class: str | None
    sop_instance: str
    retrieve_url: str | None = None
    warning: int | None = None


@dataclass(frozen=True)
class Failed:
    """An instance the server refused (an item of FailedSOPSequence)."""

    sop_class: str | None
    sop_instance: str | None
    reason: int


@dataclass(frozen=True)
class StowAnswer:
    """A STOW-RS answer: what was stored, what failed, and the study's RetrieveURL."""

    referenced: tuple[Referenced, ...]
    failed: tuple[Failed, ...]
    retrieve_url: str | None = None


def _element(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value is not None else {"vr": vr}


def stow_response(referenced: Iterable[Referenced], failed: Iterable[Failed],
                  retrieve_url: str | None = None) -> dict[str, Any]:
    """The DICOM JSON object of a STOW-RS answer (PS3.18 Table 10.5.3-1)."""
    obj: dict[str, Any] = {}
    if retrieve_url:
        obj[_RETRIEVE_URL] = _element("UR", retrieve_url)
    failures = []
    for f in failed:
        item: dict[str, Any] = {}
        if f.sop_class:
            item[_SOP_CLASS] = _element("UI", f.sop_class)
        if f.sop_instance:
            item[_SOP_INSTANCE] = _element("UI", f.sop_instance)
        item[_FAILURE_REASON] = _element("US", f.reason)
        failures.append(item)
    if failures:
        obj[_FAILED_SEQUENCE] = {"vr": "SQ", "Value": failures}
    stored = []
    for r in referenced:
        item = {}
        if r.sop_class:
            item[_SOP_CLASS] = _element("UI", r.sop_class)
        item[_SOP_INSTANCE] = _element("UI", r.sop_instance)
        if r.retrieve_url:
            item[_RETRIEVE_URL] = _element("UR", r.retrieve_url)
        if r.warning is not None:
            item[_WARNING_REASON] = _element("US", r.warning)
        stored.append(item)
    if stored:
        obj[_REFERENCED_SEQUENCE] = {"vr": "SQ", "Value": stored}
    # sorted: DICOM JSON objects list their attributes in tag order
    return dict(sorted(obj.items()))


def _first(item: Any, tag: str) -> Any:
    """First value of ``tag`` in a sequence item (None when the item is not an object)."""
    return first_value(item, tag) if isinstance(item, dict) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _items(obj: dict[str, Any], tag: str) -> list[Any]:
    element = obj.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values if isinstance(values, list) else []


def parse_stow_response(answer: bytes | str | dict[str, Any] | list[Any]) -> StowAnswer | None:
    """Read a STOW-RS answer body (DICOM JSON, as an object or a one-item list).

    Returns None when the body is not a STOW answer (empty, not JSON, no Referenced- nor
    FailedSOPSequence): the caller then decides from the status code alone.
    """
    obj: Any = answer
    if isinstance(answer, bytes | str):
        if not answer:
            return None
        try:
            obj = json.loads(answer)
        except ValueError:
            return None
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, dict) or not ({_REFERENCED_SEQUENCE, _FAILED_SEQUENCE} & obj.keys()):
        return None
    referenced = []
    for item in _items(obj, _REFERENCED_SEQUENCE):
        uid = _text(_first(item, _SOP_INSTANCE))
        if uid:
            referenced.append(Referenced(_text(_first(item, _SOP_CLASS)), uid,
                                         _text(_first(item, _RETRIEVE_URL)),
                                         _int(_first(item, _WARNING_REASON))))
    failed = []
    for item in _items(obj, _FAILED_SEQUENCE):
        reason = _int(_first(item, _FAILURE_REASON))
        failed.append(Failed(_text(_first(item, _SOP_CLASS)),
                             _text(_first(item, _SOP_INSTANCE)),
                             PROCESSING_FAILURE if reason is None else reason))
    return StowAnswer(tuple(referenced), tuple(failed), _text(_first(obj, _RETRIEVE_URL)))
