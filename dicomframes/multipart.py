"""multipart/related bodies (RFC 2046, RFC 2387): media types, streaming decode and encode.

This is the only place in dicomframes that reads or writes multipart bodies; the client and the
embedded server both use it. It knows nothing about DICOM: a part is headers plus bytes.

Decoding keeps every part's headers (so a frame's ``Content-Type`` and its ``transfer-syntax``
survive) and copies as little as possible:

* :func:`decode` works on a body already in memory and returns parts whose content are
  ``memoryview`` slices of that body (no copy at all).
* :func:`iter_parts` works on any iterable of byte chunks (``response.iter_content(1 << 20)``)
  and searches each new byte once. A part that lies inside one chunk is a ``memoryview`` of that
  chunk; a part spread over several chunks is joined once. A body that stops before the closing
  ``--boundary--`` raises :class:`~dicomframes.errors.MultipartError` ("truncated"), which is
  how a retrieve that ends at connection close (Orthanc) is checked.

Encoding (:func:`encode`) is a generator: files given by path or as open file objects are read
in ``chunk_size`` pieces while the body is sent, never held whole. :func:`encoded_length` gives
the exact length beforehand when every size is known, so a server can send ``Content-Length``.
"""

from __future__ import annotations

import os
import re
import secrets
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, BinaryIO, TypeAlias

from .errors import MultipartError

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

#: What :func:`encode` accepts as a part's content: bytes in memory, a file path (``str`` or
#: ``os.PathLike``) or a binary file object open for reading (read from its current position).
Content: TypeAlias = bytes | bytearray | memoryview | os.PathLike[str] | str | BinaryIO

# ---------------------------------------------------------------------------------------------
# Media types
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 2046 5.1.1: 1 to 70 characters from bchars, not ending with a space.
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a ``Content-Type`` value into its media type and parameters.

    The type/subtype and the parameter names are lowercased; parameter values are unquoted
    (backslash escapes inside quotes are resolved) and keep their case. A ``;`` inside a quoted
    value does not end it, so Orthanc's
    ``multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1";
    boundary=abc`` gives ``{"type": "application/octet-stream; transfer-syntax=...",
    "boundary": "abc"}``. A parameter given twice keeps its first value.
    """
    if not isinstance(value, str):
        raise TypeError(f"a media type is a str, not {type(value).__name__}")
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        j = i
        while j < n and rest[j] not in "=;":
            j += 1
        name = rest[i:j].strip().lower()
        if j >= n or rest[j] == ";":  # a parameter without "=": keep its name with ""
            if name:
                params.setdefault(name, "")
            i = j + 1
            continue
        j += 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            j += 1
            chars: list[str] = []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(rest[j])
                j += 1
            param_value = "".join(chars)
            end = rest.find(";", j)  # anything between the closing quote and ";" is ignored
        else:
            end = rest.find(";", j)
            param_value = rest[j : n if end < 0 else end].strip()
        if name:
            params.setdefault(name, param_value)
        i = n if end < 0 else end + 1
    return head.strip().lower(), params


def boundary_of(content_type: str) -> str:
    """Return the ``boundary`` parameter of a multipart ``Content-Type`` (quoted or not).

    Raises :class:`MultipartError` when there is none (e.g. a server answered with a single
    part's media type, or an error page).
    """
    _, params = parse_media_type(content_type)
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartError(f"no boundary parameter in Content-Type {content_type!r}")
    return boundary


def transfer_syntax_of(content_type: str) -> str | None:
    """Return the ``transfer-syntax`` parameter of a media type, or None.

    Looks at the top-level parameters first, then inside the quoted ``type`` parameter of a
    multipart type, where Orthanc puts it:
    ``multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"``.
    """
    _, params = parse_media_type(content_type)
    syntax = params.get("transfer-syntax")
    if not syntax and params.get("type"):
        syntax = parse_media_type(params["type"])[1].get("transfer-syntax")
    return syntax or None


def new_boundary() -> str:
    """Return a fresh random boundary: 64 hex digits (256 random bits).

    Long on purpose: decoders search for the boundary, and the longer it is the faster their
    search skips through the content (RFC 2046 allows 70 characters).
    """
    return secrets.token_hex(32)


def _quote(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"line break or NUL in a media type parameter: {value!r}")
    if _TOKEN_RE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def related_content_type(boundary: str, type_: str, **params: str) -> str:
    """Build ``multipart/related; type="..."; <params>; boundary=...``.

    Keyword names have ``_`` replaced by ``-`` (``transfer_syntax="1.2.840.10008.1.2.1"`` ->
    ``transfer-syntax=1.2.840.10008.1.2.1``); values are quoted when they need it.
    """
    _check_boundary(boundary)
    items = [f"multipart/related; type={_quote(type_)}"]
    for name, value in params.items():
        items.append(f"{name.replace('_', '-')}={_quote(str(value))}")
    items.append(f"boundary={_quote(boundary)}")
    return "; ".join(items)


def _check_boundary(boundary: str) -> bytes:
    """Validate a boundary for encoding (RFC 2046 bchars, 1 to 70 characters)."""
    if not isinstance(boundary, str) or not _BOUNDARY_RE.match(boundary):
        raise ValueError(
            f"invalid multipart boundary {boundary!r}: 1 to 70 characters from "
            "letters, digits and '()+_,-./:=? (not ending with a space)")
    return boundary.encode("ascii")


def _boundary_bytes(boundary: str | bytes) -> bytes:
    """A boundary for decoding: lenient (servers send what they send), but never empty."""
    try:
        raw = boundary.encode("latin-1") if isinstance(boundary, str) else bytes(boundary)
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > 256 or any(c in raw for c in b"\r\n"):
        raise MultipartError(f"unusable multipart boundary {boundary!r}")
    return raw


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------


class Headers(MutableMapping[str, str]):
    """Header fields of one part: case-insensitive lookup, names kept as they were sent."""

    __slots__ = ("_items",)

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                 /, **fields: str) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        if data is not None:
            self.update(data)
        if fields:
            self.update(fields)

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def get(self, name: str, default: Any = None) -> Any:
        """The value of header ``name`` (any case), or ``default``."""
        item = self._items.get(name.lower()) if isinstance(name, str) else None
        return default if item is None else item[1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return {k: v for k, (_, v) in self._items.items()} == {
            str(k).lower(): v for k, v in other.items()}

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"

    def copy(self) -> Headers:
        """Return an independent copy."""
        return Headers(self)


@dataclass(repr=False)
class Part:
    """One body part: its header fields and its content.

    ``content`` is ``bytes`` or a ``memoryview`` (decoders return views into the body or the
    received chunks; ``bytes(part.content)`` makes an independent copy, ``numpy.frombuffer``
    reads it without one).
    """

    headers: Headers = field(default_factory=Headers)
    content: bytes | memoryview = b""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    @property
    def content_type(self) -> str | None:
        """The part's ``Content-Type`` header, or None."""
        return self.headers.get("Content-Type")

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter of the part's ``Content-Type``, or None."""
        content_type = self.content_type
        return transfer_syntax_of(content_type) if content_type else None

    @property
    def location(self) -> str | None:
        """The part's ``Content-Location`` header, or None."""
        return self.headers.get("Content-Location")

    def __len__(self) -> int:
        return self.content.nbytes if isinstance(self.content, memoryview) else len(self.content)

    def __repr__(self) -> str:
        return f"Part({dict(self.headers.items())!r}, {len(self)} bytes)"


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

_COALESCE = 1 << 16  # chunks smaller than this are gathered into one buffer before searching
_GROW_AT = 8 << 20  # a part larger than this is gathered into one buffer as it arrives
_MAX_HEADER = 1 << 16  # a part's header block larger than this is an error
_MAX_PADDING = 256  # whitespace allowed after a boundary on its line
_BLANK_LINE = re.compile(rb"\n\r?\n")


class _Acc(bytearray):
    """A segment made of small chunks that the buffer may still extend (never exported)."""

    __slots__ = ()


@lru_cache(maxsize=32)
def _literal(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(re.escape(pattern))


def _seg_find(seg: bytes | bytearray | memoryview, pattern: bytes, start: int) -> int:
    if isinstance(seg, memoryview):  # memoryview has no find(); re reads any buffer
        match = _literal(pattern).search(seg, start)
        return match.start() if match else -1
    return seg.find(pattern, start)


class _Segments:
    """Received, not yet consumed bytes: a list of segments addressed by absolute offsets.

    Large chunks stay as they came (no copy); small ones are gathered into an :class:`_Acc`
    so that the number of segments stays small whatever the producer's chunk size. For a very
    large part, :meth:`grow` gathers everything into one bytearray that later chunks extend:
    still one copy, but the chunks are freed as they come instead of being joined at the end
    (which would need twice the part's size).
    """

    __slots__ = ("end", "growing", "pos", "segs", "starts")

    def __init__(self) -> None:
        self.segs: list[bytes | bytearray | memoryview] = []
        self.starts: list[int] = []  # absolute offset of each segment's first byte
        self.pos = 0  # absolute offset of the first unconsumed byte
        self.end = 0  # absolute offset just past the last received byte
        self.growing: bytearray | None = None  # the last segment, while grow() is in effect

    def grow(self) -> None:
        """From now on, gather the unconsumed bytes and every new chunk into one bytearray."""
        if self.growing is not None:
            return
        big = bytearray()
        i = self._index(self.pos)
        for seg, seg_start in zip(self.segs[i:], self.starts[i:], strict=True):
            with memoryview(seg) as view:
                big += view[max(self.pos - seg_start, 0) :]
        self.segs, self.starts, self.growing = [big], [self.pos], big

    def append(self, chunk: bytes | bytearray | memoryview) -> None:
        size = len(chunk)
        if not size:
            return
        if self.growing is not None:
            self.growing += chunk
            self.end += size
            return
        segs = self.segs
        if size < _COALESCE:
            last = segs[-1] if segs else None
            if type(last) is _Acc and len(last) < _COALESCE:
                last += chunk
            else:
                segs.append(_Acc(chunk))
                self.starts.append(self.end)
        else:
            segs.append(chunk)
            self.starts.append(self.end)
        self.end += size

    def _index(self, offset: int) -> int:
        return bisect_right(self.starts, offset) - 1

    def find(self, pattern: bytes, start: int) -> int:
        """Absolute offset of the first ``pattern`` wholly received at or after ``start``."""
        if start >= self.end:
            return -1
        segs, starts = self.segs, self.starts
        plen = len(pattern)
        for i in range(self._index(start), len(segs)):
            seg_start = starts[i]
            if seg_start > start and plen > 1:  # a match across the junction with segment i-1
                lo = max(start, seg_start - plen + 1)
                window = self.gather(lo, min(self.end, seg_start + plen - 1))
                j = window.find(pattern)
                if j >= 0 and lo + j < seg_start:
                    return lo + j
            j = _seg_find(segs[i], pattern, max(start - seg_start, 0))
            if j >= 0:
                return seg_start + j
        return -1

    def gather(self, lo: int, hi: int) -> bytes:
        """A copy of the bytes in ``[lo, hi)`` (used for small things: headers, look-ahead)."""
        if lo >= hi:
            return b""
        segs, starts = self.segs, self.starts
        i = bisect_right(starts, lo) - 1
        seg, seg_start = segs[i], starts[i]
        if hi - seg_start <= len(seg) and type(seg) is bytes:
            return seg[lo - seg_start : hi - seg_start]
        pieces = []
        while lo < hi:
            seg, seg_start = segs[i], starts[i]
            stop = min(hi - seg_start, len(seg))
            pieces.append(seg[lo - seg_start : stop])
            lo = seg_start + stop
            i += 1
        return pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces)

    def take(self, lo: int, hi: int) -> bytes | memoryview:
        """The bytes in ``[lo, hi)`` as a view of one segment when possible, else joined once."""
        self.growing = None  # the view below pins that bytearray: it must not grow any more
        i = self._index(lo)
        seg, seg_start = self.segs[i], self.starts[i]
        if hi - seg_start <= len(seg):
            if type(seg) is _Acc:  # the buffer may grow it later: hand out a copy
                with memoryview(seg) as view:
                    return view[lo - seg_start : hi - seg_start].tobytes()
            return memoryview(seg)[lo - seg_start : hi - seg_start]
        pieces = []
        segs, starts = self.segs, self.starts
        while lo < hi:
            seg, seg_start = segs[i], starts[i]
            stop = min(hi - seg_start, len(seg))
            pieces.append(memoryview(seg)[lo - seg_start : stop])
            lo = seg_start + stop
            i += 1
        joined = b"".join(pieces)
        for piece in pieces:
            piece.release()
        return joined

    def consume(self, offset: int) -> None:
        """Forget everything before ``offset``."""
        self.pos = offset
        if offset >= self.end:
            self.segs.clear()
            self.starts.clear()
            return
        k = self._index(offset)
        if k > 0:
            del self.segs[:k]
            del self.starts[:k]


_PREAMBLE, _HEADERS, _BODY, _DONE = range(4)
_NEED, _OPEN, _CLOSE, _INVALID = range(4)


class _Parser:
    """Push parser: :meth:`append` data, iterate :meth:`parts`; at the end of the data set
    ``eof``, iterate :meth:`parts` once more, then call :meth:`finish`."""

    def __init__(self, boundary: bytes) -> None:
        self.boundary = boundary
        self.dash = b"--" + boundary
        self.delim = b"\n--" + boundary  # CRLF (or a bare LF) then the dash-boundary
        self.crlf_dash = b"\r\n" + self.dash
        self.buf = _Segments()
        self.state = _PREAMBLE
        self.at_start = True  # the first dash-boundary may open the body without a line break
        self.scan = 0  # absolute offset where the next search starts (no byte is searched twice)
        self.body_start = 0
        self.expect = -1  # the part's Content-Length, when it announced a usable one
        self.headers = Headers()
        self.count = 0
        self.eof = False

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def append(self, chunk: bytes | bytearray | memoryview) -> None:
        self.buf.append(chunk)

    def _after_boundary(self, offset: int) -> tuple[int, int]:
        """Classify what follows a dash-boundary ending at ``offset``."""
        buf = self.buf
        if buf.end - offset < 2:
            return _NEED, 0
        two = buf.gather(offset, offset + 2)
        if two == b"\r\n":
            return _OPEN, offset + 2
        if two == b"--":
            return _CLOSE, offset + 2
        if two[0] not in b" \t\r\n":
            return _INVALID, 0  # a longer string that starts like the boundary: content
        line = buf.gather(offset, min(buf.end, offset + _MAX_PADDING))
        newline = line.find(b"\n")
        if newline < 0:
            if len(line) >= _MAX_PADDING:
                raise MultipartError(f"malformed multipart body: boundary line {line[:40]!r}...")
            return _NEED, 0
        if line[:newline].strip(b" \t\r"):
            raise MultipartError(f"malformed multipart body: boundary line {line[:newline]!r}")
        return _OPEN, offset + newline + 1

    def parts(self) -> Iterator[Part]:
        """Yield every part wholly received so far."""
        while True:
            state = self.state
            if state == _BODY:
                found = self._end_of_body()
                if found is None:
                    if self.buf.end - self.body_start > _GROW_AT:
                        self.buf.grow()
                    return
                end, verdict, after = found
                self.count += 1
                yield Part(self.headers, self.buf.take(self.body_start, end))
                self._next(verdict, after)
            elif state == _HEADERS:
                if not self._read_headers():
                    return
            elif state == _PREAMBLE:
                if not self._find_first():
                    return
            else:
                return

    def _end_of_body(self) -> tuple[int, int, int] | None:
        """(content end, verdict, next offset) once the part's delimiter has arrived."""
        buf, delim = self.buf, self.delim
        if self.expect >= 0:
            # the part announced its length (Orthanc does): check there, search nothing
            end = self.body_start + self.expect
            mark = end + len(self.crlf_dash)
            if buf.end >= mark + 2:
                if buf.gather(end, mark) == self.crlf_dash:
                    verdict, after = self._after_boundary(mark)
                    if verdict in (_OPEN, _CLOSE):
                        return end, verdict, after
            elif not self.eof:
                return None
            self.expect = -1  # a wrong Content-Length: find the delimiter instead
        while True:
            idx = buf.find(delim, self.scan)
            if idx < 0:
                self.scan = max(self.scan, buf.end - len(delim) + 1)
                return None
            verdict, after = self._after_boundary(idx + len(delim))
            if verdict == _NEED:
                self.scan = idx
                return None
            if verdict == _INVALID:
                self.scan = idx + 1
                continue
            end = idx
            if end > self.body_start and buf.gather(end - 1, end) == b"\r":
                end -= 1
            # "\r\n\r\n--b": an empty part whose blank line doubles as the delimiter's CRLF
            return max(end, self.body_start), verdict, after

    def _next(self, verdict: int, after: int) -> None:
        self.buf.consume(after)
        self.scan = after
        self.state = _DONE if verdict == _CLOSE else _HEADERS
        if verdict == _CLOSE:
            self.buf = _Segments()  # drop the epilogue and any reference to the chunks

    def _find_first(self) -> bool:
        buf, dash = self.buf, self.dash
        if self.at_start:
            if buf.end < len(dash) + 2 and not self.eof:
                return False
            if buf.gather(0, min(buf.end, len(dash))) == dash:
                verdict, after = self._after_boundary(len(dash))
                if verdict == _NEED and not self.eof:
                    return False
                if verdict in (_OPEN, _CLOSE):
                    self._next(verdict, after)
                    return True
            self.at_start = False
        idx = buf.find(self.delim, self.scan)
        if idx < 0:
            self.scan = max(self.scan, buf.end - len(self.delim) + 1)
            buf.consume(self.scan)  # the preamble is of no interest
            return False
        verdict, after = self._after_boundary(idx + len(self.delim))
        if verdict == _NEED:
            self.scan = idx
            return False
        if verdict == _INVALID:
            self.scan = idx + 1
            return True
        self._next(verdict, after)
        return True

    def _read_headers(self) -> bool:
        buf = self.buf
        start = buf.pos
        first = buf.gather(start, min(buf.end, start + 2))
        if first[:1] == b"\n" or first == b"\r\n":  # no header fields at all
            header_end, body_start = start, start + len(first.partition(b"\n")[0]) + 1
        elif len(first) < 2:
            return False
        else:
            lo = max(start, self.scan - 3)
            match = None
            for size in (1024, _MAX_HEADER + 3):  # most header blocks are short: copy little
                hi = min(buf.end, start + size)
                window = buf.gather(lo, hi)
                match = _BLANK_LINE.search(window)
                if match is not None or hi == buf.end:
                    break
            if match is None:
                if buf.end - start > _MAX_HEADER:
                    raise MultipartError(
                        f"malformed multipart body: headers of part {self.count + 1} longer "
                        f"than {_MAX_HEADER} bytes")
                self.scan = buf.end
                return False
            header_end, body_start = lo + match.start() + 1, lo + match.end()
        self.headers = headers = _parse_headers(buf.gather(start, header_end), self.count + 1)
        length = headers.get("Content-Length", "").strip()
        self.expect = int(length) if length.isdigit() and length.isascii() else -1
        # keep the blank line's "\n": an empty part may share it with the next delimiter
        buf.consume(body_start - 1)
        self.scan = body_start - 1
        self.body_start = body_start
        self.state = _BODY
        return True

    def finish(self) -> None:
        """Check, at the end of the data, that the closing boundary arrived."""
        if self.state == _DONE:
            return
        closing = (b"--" + self.boundary + b"--").decode("latin-1")
        if self.state == _PREAMBLE:
            raise MultipartError(
                f"truncated or not a multipart body: no boundary line {closing[:-2]!r} found")
        raise MultipartError(
            f"truncated multipart body: it ended after {self.count} complete part(s) without "
            f"the closing boundary {closing!r}")


def _parse_headers(block: bytes, number: int) -> Headers:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    headers = Headers()
    name = ""
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line:
            continue
        if line[0] in " \t" and name:  # obsolete line folding
            headers[name] = f"{headers[name]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name:
            raise MultipartError(f"malformed multipart body: part {number} header line {line!r}")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def iter_parts(chunks: Iterable[bytes], boundary: str) -> Iterator[Part]:
    """Decode a multipart body arriving as byte chunks of any sizes, yielding parts as they end.

    ``chunks`` is e.g. ``response.iter_content(1 << 20)`` of a streamed ``requests`` response.
    Each part keeps its headers. Its content is a ``memoryview`` of the chunk it arrived in when
    it lies in one chunk, else ``bytes`` joined once. Chunks that are not ``bytes`` are copied
    first (a producer may reuse its buffer). A preamble and an epilogue are ignored, bare LF line
    breaks are tolerated, and reading stops at the closing ``--boundary--`` (the rest of the
    stream is not consumed). Raises :class:`MultipartError` if the data ends before the closing
    boundary ("truncated") or is malformed.
    """
    parser = _Parser(_boundary_bytes(boundary))
    if isinstance(chunks, bytes | bytearray | memoryview):
        chunks = [chunks]  # a whole body is one chunk (iterating it would give ints)
    for chunk in chunks:
        if type(chunk) is not bytes:
            if not isinstance(chunk, bytearray | memoryview):
                raise TypeError(f"iter_parts() needs byte chunks, got {type(chunk).__name__}")
            chunk = bytes(chunk)
        if not chunk:
            continue
        parser.append(chunk)
        yield from parser.parts()
        if parser.done:
            return
    parser.eof = True
    yield from parser.parts()
    parser.finish()


def decode(body: bytes | bytearray | memoryview, content_type: str) -> list[Part]:
    """Decode a whole multipart body in memory; part contents are ``memoryview`` slices of it.

    Nothing is copied: keep ``body`` unchanged while the parts are in use (or copy a part with
    ``bytes(part.content)``). ``content_type`` is the response's ``Content-Type`` (its boundary
    is used). Raises :class:`MultipartError` for a non-multipart type, a missing boundary, a
    malformed body or one without its closing boundary.
    """
    media_type, _ = parse_media_type(content_type)
    if not media_type.startswith("multipart/"):
        raise MultipartError(f"not a multipart body: Content-Type {content_type!r}")
    parser = _Parser(_boundary_bytes(boundary_of(content_type)))
    data: bytes | bytearray | memoryview = body
    if isinstance(body, memoryview):
        if body.format != "B" or body.ndim != 1:
            body = body.cast("B")
        data = body
        if (isinstance(body.obj, bytes | bytearray) and body.c_contiguous
                and body.nbytes == len(body.obj)):
            data = body.obj  # the same memory, with a fast find()
    elif not isinstance(body, bytes | bytearray):
        raise TypeError(f"decode() takes bytes, bytearray or memoryview, not {type(body).__name__}")
    if len(data):
        parser.buf.segs.append(data)  # one segment, never copied nor extended
        parser.buf.starts.append(0)
        parser.buf.end = len(data)
    parser.eof = True
    parts = list(parser.parts())
    parser.finish()
    return parts


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


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
        if not _TOKEN_RE.match(name) or any(c in value for c in "\r\n\0"):
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
    elif _is_path(content):
        with open(content, "rb") as stream:  # type: ignore[arg-type]
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
    raw = _check_boundary(boundary)
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
    raw = _check_boundary(boundary)
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
