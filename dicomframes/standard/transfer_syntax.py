"""Transfer syntaxes (PS3.5 A, PS3.6 A) and the frame media types of PS3.18 Table 8.7.3-2.

Written once for the client (which syntax did a frame part arrive in?) and the server (which
media type does a stored syntax go out as?). No I/O here.
"""

from __future__ import annotations

from .mediatypes import MEDIA_ALIASES, OCTET_STREAM, parse_media_type, transfer_syntax_of

__all__ = [
    "DEFLATED_IMAGE_FRAME",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "LOSSY_SYNTAXES",
    "is_native",
    "media_type_of",
    "syntax_for_media_type",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_IMAGE_FRAME = "1.2.840.10008.1.2.8.1"

#: Transfer syntaxes whose frames are raw pixel bytes. A deflated data set is inflated before
#: frames are cut from it, so its frames are raw too.
_NATIVE_SYNTAXES: frozenset[str] = frozenset({
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    _ENCAPSULATED_UNCOMPRESSED,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
})

#: Media type of the frames of each compressed syntax (PS3.18 Table 8.7.3-2).
_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}

#: Syntaxes whose compression loses information (PS3.5 8.2): a server that sends them as
#: stored says so, a decoder cannot give back the original pixels.
LOSSY_SYNTAXES: frozenset[str] = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106",
})

# The default syntax of each frame media type when a part's Content-Type names none
# (PS3.18 Table 8.7.3-2, the "default" column).
_DEFAULT_SYNTAX: dict[str, str] = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
}


def is_native(transfer_syntax: str | None) -> bool:
    """True when frames of ``transfer_syntax`` are raw pixel bytes (None means the default,
    Explicit VR Little Endian)."""
    return not transfer_syntax or str(transfer_syntax) in _NATIVE_SYNTAXES


def media_type_of(transfer_syntax: str) -> str:
    """Media type of frames in ``transfer_syntax`` (application/octet-stream when native)."""
    return _MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def syntax_for_media_type(content_type: str | None) -> str:
    """Transfer syntax UID of a frame part, from its Content-Type.

    Uses the ``transfer-syntax`` parameter when present (also inside a quoted ``type``
    parameter, as Orthanc sends it), else the default of the media type (PS3.18 Table
    8.7.3-2); no Content-Type at all means Explicit VR Little Endian.
    """
    if not content_type:
        return EXPLICIT_VR_LITTLE_ENDIAN
    syntax = transfer_syntax_of(content_type)
    if syntax:
        return syntax
    media_type, params = parse_media_type(content_type)
    if media_type == "multipart/related" and "type" in params:
        media_type, _ = parse_media_type(params["type"])
    media_type = MEDIA_ALIASES.get(media_type, media_type)
    return _DEFAULT_SYNTAX.get(media_type, EXPLICIT_VR_LITTLE_ENDIAN)
