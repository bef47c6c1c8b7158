"""DICOM UID validation: every UID is checked here before it reaches a URL or a file path."""

from __future__ import annotations

import re

from pydicom.uid import generate_uid

# fullmatch, not "$": "$" would let a trailing newline through
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: object) -> bool:
    """Return True when ``value`` is a syntactically valid DICOM UID (PS3.5 9.1)."""
    return (isinstance(value, str) and 0 < len(value) <= 64
            and _UID_RE.fullmatch(value) is not None)


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` unchanged if it is a valid DICOM UID, else raise ``ValueError``.

    The message names ``what`` (e.g. "StudyInstanceUID") and the offending value, so a user
    sees which argument was wrong. Valid UIDs contain only digits and dots, have no empty
    component and no leading zero in a component, and are at most 64 characters long.
    """
    if not is_valid_uid(value):
        raise ValueError(
            f"invalid {what}: {value!r} (a DICOM UID is digits and dots, at most 64 characters)"
        )
    return value  # type: ignore[return-value]


def new_uid() -> str:
    """Return a new, globally unique DICOM UID."""
    return str(generate_uid())
