"""Streaming encode of multipart/related bodies (RFC 2046, RFC 2387).

:func:`encode` is a generator: files given by path or as open file objects are read in
``chunk_size`` pieces while the body is sent, never held whole. :func:`encoded_length` gives the
exact length beforehand when every size is known, so a sender can set ``Content-Length``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO, TypeAlias

from ..mediatypes import TOKEN_RE, check_boundary
from .parts import Part

__all__ = ["Content", "encode"]

#: What :func:`encode` accepts as a part's content: bytes in memory, a file path (``str`` or
#: ``os.PathLike``) or a binary file object open for reading (read from its current position).
Content: TypeAlias = bytes | bytearray | memoryview | os.PathLike[str] | str | BinaryIO


def _unpack(item: Any) -> tuple[Mapping[str, str], Any]:
    if isinstance(item, Part):
        return item.headers, item.content
    try:
        headers, content = item
    except (TypeError, ValueError):
        raise TypeError("each part is a (headers, content) pair or a Part") from None
    return headers, content


def _header_block(headers: Mapping[str, str], length: int | None = None) -> bytes:
    lines = []
    has_length = False
    for name, value in headers.items():
        value = str(value)
        if not TOKEN_RE.match(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid part header {name!r}: {value!r}")
        has_length = has_length or name.lower() == "content-length"
        lines.append(f"{name}: {value}\r\n")
    if length is not None and not has_length:
        lines.append(f"Content-Length: {length}\r\n")
    return "".join(lines).encode("utf-8") + b"\r\n"


def _is_path(content: object) -> bool:
    return isinstance(content, str | os.PathLike)


def _content_size(content: object) -> int | None:
    if isinstance(content, bytes | bytearray):
        return len(content)
    if isinstance(content, memoryview):
        return content.nbytes
    if _is_path(content):
        return os.stat(content).st_size  # type: ignore[arg-type]
    if hasattr(content, "read"):
        try:
            if not content.seekable():  # type: ignore[attr-defined]
                return None
            here = content.tell()  # type: ignore[attr-defined]
            size = content.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
            content.seek(here)  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            return None
        return max(size - here, 0)
    raise TypeError(f"unsupported part content: {type(content).__name__} "
                    "(bytes, memoryview, a path or a binary file object)")


def _read_pieces(stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    while True:
        piece = stream.read(chunk_size)
        if not piece:
            return
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError(f"part file object returned {type(piece).__name__}, not bytes "
                            "(open it in binary mode)")
        yield bytes(piece) if not isinstance(piece, bytes) else piece


def _content_pieces(content: object, chunk_size: int) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content  # already in memory: no copy
    elif isinstance(content, bytearray | memoryview):
        view = memoryview(content).cast("B")
        for i in range(0, view.nbytes, chunk_size):
            yield view[i : i + chunk_size].tobytes()
    elif isinstance(content, str | os.PathLike):
        with open(content, "rb") as stream:
            yield from _read_pieces(stream, chunk_size)
    elif hasattr(content, "read"):
        yield from _read_pieces(content, chunk_size)  # type: ignore[arg-type]
    else:
        raise TypeError(f"unsupported part content: {type(content).__name__} "
                        "(bytes, memoryview, a path or a binary file object)")


def encode(
    parts: Iterable[tuple[Mapping[str, str], Content] | Part],
    boundary: str,
    chunk_size: int = 1 << 20,
    *,
    content_length: bool = False,
) -> Iterator[bytes]:
    """Encode a multipart body as a stream of byte chunks (for a request or response body).

    Each part is ``(headers, content)`` (or a :class:`Part`); content is bytes, a memoryview,
    a file path (``str`` or ``os.PathLike``) or a binary file object read from its current
    position (not closed). Files are read ``chunk_size`` bytes at a time while the chunks are
    consumed; ``bytes`` contents are passed through without a copy; small pieces (boundary
    lines, headers, small parts) are gathered into chunks of up to ``chunk_size``. The body is
    ``--boundary CRLF headers CRLF content`` per part, then ``CRLF --boundary--``. Header names
    must be tokens and values must not contain line breaks (``ValueError``). Use
    :func:`new_boundary` for a boundary that cannot occur in the content.

    ``content_length=True`` adds a ``Content-Length`` header to every part whose size is known
    and that has none (as Orthanc does): :func:`decode` and :func:`iter_parts` then check the
    delimiter at that offset instead of searching the content for it.
    """
    raw = check_boundary(boundary)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    out = bytearray()
    for piece in _raw_pieces(parts, raw, chunk_size, content_length):
        if len(out) + len(piece) <= chunk_size:
            out += piece
            continue
        if out:
            yield bytes(out)
            out.clear()
        if len(piece) >= chunk_size:
            yield piece
        else:
            out += piece
    if out:
        yield bytes(out)


def _raw_pieces(parts: Iterable[Any], raw: bytes, chunk_size: int,
                content_length: bool) -> Iterator[bytes]:
    """The body's pieces in order, before :func:`encode` gathers the small ones."""
    opening = b"--" + raw + b"\r\n"
    for item in parts:
        headers, content = _unpack(item)
        yield opening + _header_block(headers, _content_size(content) if content_length else None)
        opening = b"\r\n--" + raw + b"\r\n"
        yield from _content_pieces(content, chunk_size)
    yield opening[:-2] + b"--\r\n"


def encoded_length(
    parts: Iterable[tuple[Mapping[str, str], Content] | Part],
    boundary: str,
    *,
    content_length: bool = False,
) -> int | None:
    """Exact byte length of ``encode(parts, boundary, content_length=...)``, or None if a size
    is unknown.

    Sizes come from ``len``, ``os.stat`` for paths and ``seek``/``tell`` for seekable file
    objects (a non-seekable one gives None). ``parts`` must be a sequence (it is iterated
    twice: here and by :func:`encode`); an iterator raises ``TypeError``. Files must not
    change between this call and the encoding.
    """
    if iter(parts) is parts:
        raise TypeError("encoded_length() needs a sequence of parts (it would use up an iterator)")
    raw = check_boundary(boundary)
    total = 0
    count = 0
    for item in parts:
        headers, content = _unpack(item)
        size = _content_size(content)
        if size is None:
            return None
        block = _header_block(headers, size if content_length else None)
        total += len(raw) + 4 + len(block) + size + (2 if count else 0)
        count += 1
    return total + len(raw) + 6 + (2 if count else 0)
