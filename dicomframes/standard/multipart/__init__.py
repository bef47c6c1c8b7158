"""multipart/related bodies (RFC 2046, RFC 2387): streaming decode and encode.

The only place in dicomframes that reads or writes multipart bodies; the client and the
embedded server both use it. It knows nothing about DICOM: a part is headers plus bytes.
Media type helpers (``boundary_of``, ``related_content_type``...) live in
:mod:`dicomframes.standard.mediatypes` and are re-exported here for convenience.
"""

from ..mediatypes import (
    boundary_of,
    new_boundary,
    parse_media_type,
    related_content_type,
    transfer_syntax_of,
)
from .decode import decode, iter_parts
from .encode import Content, encode, encoded_length
from .parts import Headers, Part

__all__ = [
    "Content",
    "Headers",
    "Part",
    "boundary_of",
    "decode",
    "encode",
    "encoded_length",
    "iter_parts",
    "new_boundary",
    "parse_media_type",
    "related_content_type",
    "transfer_syntax_of",
]
