"""Streaming decode of multipart/related bodies (RFC 2046, RFC 2387).

Decoding keeps every part's headers (so a frame's ``Content-Type`` and its ``transfer-syntax``
survive) and copies as little as possible:

* :func:`decode` works on a body already in memory and returns parts whose content are
  ``memoryview`` slices of that body (no copy at all).
* :func:`iter_parts` works on any iterable of byte chunks (``response.iter_content(1 << 20)``)
  and searches each new byte once. A part that lies inside one chunk is a ``memoryview`` of that
  chunk; a part spread over several chunks is joined once. A body that stops before the closing
  ``--boundary--`` raises :class:`~dicomframes.errors.MultipartError` ("truncated"), which is
  how a retrieve that ends at connection close (Orthanc) is checked.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from functools import lru_cache

from ...errors import MultipartError
from ..mediatypes import boundary_of, parse_media_type
from .parts import Headers, Part

__all__ = ["decode"]


def boundary_bytes(boundary: str | bytes) -> bytes:
    """A boundary for decoding: lenient (servers send what they send), but never empty."""
    try:
        raw = boundary.encode("latin-1") if isinstance(boundary, str) else bytes(boundary)
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > 256 or any(c in raw for c in b"\r\n"):
        raise MultipartError(f"unusable multipart boundary {boundary!r}")
    return raw


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
    parser = _Parser(boundary_bytes(boundary))
    if isinstance(chunks, bytes | bytearray | memoryview):
        # a whole body is one chunk (iterating it would give ints)
        chunks = [bytes(chunks) if isinstance(chunks, memoryview) else chunks]
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
    parser = _Parser(boundary_bytes(boundary_of(content_type)))
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
